"""Several engines for real (issue 19): two inner engines (tests/inner_engine.py) named in DSM_ENGINES.

The same project name deployed on both is kept apart (containers, journal, backups, locks); the
views cover both engines and name them; a mutating tool on a stack that runs on both without its
files saying where is refused with both named; an engine stopped mid-test is reported unreachable
within seconds while the other is still served. The engines start once for the module (~3 s each).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from server.app import build_server
from server.enginespec import EngineSpec
from server.settings import Settings
from tests.deploy_helpers import WEB_10, web_service
from tests.inner_engine import InnerEngine, inner_engines

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


@pytest.fixture(scope="module")
def engines(docker_engine: None) -> Iterator[list[InnerEngine]]:
    with inner_engines(2, images=[WEB_10]) as pair:
        yield pair


def _settings(tmp_path: Path, engines: list[InnerEngine]) -> Settings:
    root = tmp_path / "stacks"
    root.mkdir()
    return Settings(stacks_root=root, state_dir=tmp_path / "state",
                    engines=(EngineSpec("one", engines[0].host), EngineSpec("two", engines[1].host)))


def _write(settings: Settings, name: str, engine: str | None) -> None:
    directory = settings.stacks_root / name
    directory.mkdir(exist_ok=True)
    where = f"x-dsm: {{engine: {engine}}}\n" if engine else ""
    (directory / "compose.yaml").write_text(f"name: {name}\n{where}services:\n{web_service()}")


def _containers(engine: InnerEngine, project: str) -> list[str]:
    out = engine.docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout
    return out.decode().split()


async def _call(client: Any, tool: str, args: dict[str, Any]) -> Any:
    result = await client.call_tool(tool, args)
    assert not result.is_error, (tool, result.content[0].text)
    return result.structured_content


async def test_same_project_on_two_engines_is_kept_apart(
    engines: list[InnerEngine], tmp_path: Path, project_name: str
) -> None:
    one, two = engines
    settings = _settings(tmp_path, engines)
    state = settings.state_dir
    async with Client(build_server(settings)) as client:
        operations = []
        for where in ("one", "two"):
            _write(settings, project_name, where)
            report = await _call(client, "deploy_stack", {"path": project_name, "verify_s": 0})
            assert report["status"] == "deployed", json.dumps(report)[:3000]
            operations.append(report["operation_id"])
        for operation_id in operations:  # each engine's journal is searched
            found = await _call(client, "operation_status", {"operation_id": operation_id})
            assert found["status"] == "deployed", found
        assert len(_containers(one, project_name)) == 1 and len(_containers(two, project_name)) == 1

        # State keyed by engine: the default keeps today's paths, the other its own directory.
        for base in (state, state / "engines" / "two"):
            assert list((base / "backups" / project_name).iterdir()), base
            journal = (base / "journal" / "journal.jsonl").read_text()
            assert journal.count('"kind": "deploy"') + journal.count('"kind":"deploy"') >= 1, base
        history = await _call(client, "stack_history", {"stack": project_name})  # x-dsm says two
        assert len(history["deployments"]) == 1

        listing = await _call(client, "list_stacks", {})
        entry = next(s for s in listing["stacks"] if s["name"] == project_name)
        assert entry["engine"] == "two" and entry["running"] == 1
        other = next(o for o in listing["other_projects"] if o["name"] == project_name)
        assert other["engine"] == "one"
        assert listing["engines"] == {"one": "reachable", "two": "reachable"}

        diagnosis = await _call(client, "diagnose_stack", {"stack": project_name})
        assert diagnosis["engine"] == "two"

        # Its files no longer say where: the views cover both, a change is refused naming both.
        _write(settings, project_name, None)
        status = await _call(client, "stack_status", {"stack": project_name})
        assert sorted(s["engine"] for s in status["stacks"]) == ["one", "two"]
        refused = await client.call_tool("stack_control", {"stack": project_name, "action": "restart"})
        assert refused.is_error and "(one, two)" in refused.content[0].text
        assert "x-dsm engine" in refused.content[0].text

    # Locks are per engine: the same stack name locked on one does not hold it on two.
    from server.runtime import Runtime

    runtime = Runtime(settings)
    try:
        held = runtime.operations().begin(project_name, "deploy")
        try:
            other_op = runtime.targets().runtime("two").operations().begin(project_name, "deploy")
            other_op.end("done")
        finally:
            held.end("done")
    finally:
        runtime.close()


async def test_preflight_on_a_remote_engine_measures_through_it_and_flags_client_side_files(
    engines: list[InnerEngine], tmp_path: Path, project_name: str
) -> None:
    settings = _settings(tmp_path, engines)
    directory = settings.stacks_root / project_name
    (directory / "conf").mkdir(parents=True)
    bind = "    volumes: ['./conf:/conf']\n"
    (directory / "compose.yaml").write_text(f"name: {project_name}\nx-dsm: {{engine: two}}\nservices:\n"
                                            f"{web_service(extra=bind)}")
    async with Client(build_server(settings)) as client:
        report = await _call(client, "validate_compose", {"path": project_name, "detail": "full"})
        remote = [f for f in report["findings"] if f["rule"] == "remote-client-files"]
        assert remote and remote[0]["severity"] == "warning" and "/conf" in remote[0]["evidence"][0], report
        resources = await _call(client, "check_resources", {"path": project_name})
        host = resources["host"]
        assert host["engine_local"] is False and engines[1].host in host["engine"]
        assert host["disk_free_bytes"] is None and host["source"]["disk"].startswith("unknown")
        assert "/proc" not in host["source"]["memory_available_bytes"]


async def test_a_context_whose_engine_differs_from_docker_host_drives_every_adapter(
    engines: list[InnerEngine], tmp_path: Path, project_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    one = engines[0]
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))  # the context lives here, not in the user's ~/.docker
    context = f"dsmtest-ctx-{project_name[-8:]}"
    subprocess.run(["docker", "context", "create", context, "--docker", f"host={one.host}"], check=True,
                   capture_output=True, timeout=30)
    try:
        root = tmp_path / "stacks"
        root.mkdir()
        settings = Settings.from_env({"DSM_STACKS_ROOT": str(root), "DSM_STATE_DIR": str(tmp_path / "state"),
                                      "DOCKER_HOST": "unix:///var/run/docker.sock", "DOCKER_CONFIG": str(config),
                                      "DSM_ENGINES": f"ctx={context}", "HOME": str(tmp_path)})
        _write(settings, project_name, None)
        async with Client(build_server(settings)) as client:
            report = await _call(client, "deploy_stack", {"path": project_name, "verify_s": 0})
            assert report["status"] == "deployed", json.dumps(report)[:3000]
            backup = await _call(client, "backup_stack", {"stack": project_name, "action": "create"})
            assert len(backup["backups"]) == 1, backup
            listing = await _call(client, "list_stacks", {})
            assert one.host in listing["engine"] and context in listing["engine"]
        # Compose, the engine client and the backup all acted on the context's engine, none on DOCKER_HOST's.
        assert len(_containers(one, project_name)) == 1
        local = subprocess.run(["docker", "-H", "unix:///var/run/docker.sock", "ps", "-aq", "--filter",
                                f"label=com.docker.compose.project={project_name}"],
                               capture_output=True, text=True, timeout=30).stdout.split()
        assert local == []
        pins = one.docker("images", "-q", "--filter", f"reference=dsm-pin/{project_name}-*").stdout.split()
        assert pins, "the backup pinned the running image on the context's engine"
    finally:
        subprocess.run(["docker", "context", "rm", "-f", context], capture_output=True, timeout=30)


async def test_an_ssh_engine_through_the_ssh_client(
    engines: list[InnerEngine], tmp_path: Path, project_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.local_sshd import local_sshd

    one, two = engines
    with local_sshd(tmp_path / "sshd", docker_host=two.host) as sshd:
        monkeypatch.setenv("PATH", sshd.path)  # the ssh client reads this sshd's config (tests/local_sshd.py)
        root = tmp_path / "stacks"
        root.mkdir()
        settings = Settings(stacks_root=root, state_dir=tmp_path / "state",
                            engines=(EngineSpec("one", one.host), EngineSpec("far", sshd.url)))
        _write(settings, project_name, "far")
        async with Client(build_server(settings)) as client:
            report = await _call(client, "deploy_stack", {"path": project_name, "verify_s": 0})
            assert report["status"] == "deployed", json.dumps(report)[:3000]
            listing = await _call(client, "list_stacks", {})
            assert listing["engines"] == {"one": "reachable", "far": "reachable"}
            entry = next(s for s in listing["stacks"] if s["name"] == project_name)
            assert entry["engine"] == "far" and entry["running"] == 1
        assert len(_containers(two, project_name)) == 1 and _containers(one, project_name) == []


@pytest.mark.serial  # bounds how long the views take with an engine away (see SERIAL in tests/conftest.py)
async def test_a_stopped_engine_is_unreachable_and_the_other_still_served(
    engines: list[InnerEngine], tmp_path: Path, project_name: str
) -> None:
    two = engines[1]
    settings = _settings(tmp_path, engines)
    _write(settings, project_name, "one")
    async with Client(build_server(settings)) as client:
        await _call(client, "deploy_stack", {"path": project_name, "verify_s": 0})
        two.stop()  # the last test of the module: the engine stays stopped
        started = time.monotonic()
        listing = await _call(client, "list_stacks", {})
        assert time.monotonic() - started < 8
        assert listing["engines"]["one"] == "reachable"
        assert listing["engines"]["two"].startswith("unreachable")
        assert any("'two' unreachable" in p for p in listing["problems"])
        entry = next(s for s in listing["stacks"] if s["name"] == project_name)
        assert entry["engine"] == "one" and entry["state"] == "running"
        status = await _call(client, "stack_status", {})
        assert any(s["stack"] == project_name and s["engine"] == "one" for s in status["stacks"])
        assert any("'two' unreachable" in p for p in status["problems"]), json.dumps(status)[:500]

    # The watcher: one per engine; the stopped engine's pass fails fast, the other's goes on.
    from server.cli import watchers_for
    from server.runtime import Runtime

    runtime = Runtime(settings)
    try:
        watchers = watchers_for(runtime, None, 1.0)
        assert [w.runtime.target.name for w in watchers] == ["one", "two"]
        started = time.monotonic()
        for watcher in watchers:
            await watcher.tick()
        assert time.monotonic() - started < 8
        assert watchers[1].counters.engine_errors == 1 and watchers[0].counters.engine_errors == 0
        seen = json.loads((settings.state_dir / "watcher" / "state.json").read_text())
        assert project_name in json.dumps(seen)
    finally:
        runtime.close()
