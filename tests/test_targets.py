"""Targets (issue 19) at our own seams: DSM_ENGINES parsed and checked at start-up, one Runtime per
engine with its own state directory, x-dsm engine validated, read-only engines refused. The real
engines are in tests/test_targets_engine.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.enginespec import EngineSpec, parse_engines
from server.errors import SettingsError
from server.runtime import Runtime
from server.settings import Settings
from server.targets import EngineReadOnly, UnknownEngine
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio


def test_dsm_engines_parsed_with_read_only_marker() -> None:
    specs = parse_engines(" local=unix:///var/run/docker.sock , nas=ssh://admin@nas.lan(ro),mini=mini-ctx")
    assert specs == (EngineSpec("local", "unix:///var/run/docker.sock"),
                     EngineSpec("nas", "ssh://admin@nas.lan", read_only=True),
                     EngineSpec("mini", "mini-ctx"))
    assert parse_engines("") == ()


@pytest.mark.parametrize(("raw", "named"), [
    ("local", "'local'"), ("a=tcp://x,a=tcp://y", "'a' twice"), ("Big=tcp://x", "'Big'"),
    ("a=http://x", "'http://x'"), ("a=tcp://x,", "empty entry"), ("a=no-such-context", "'no-such-context'"),
])
def test_a_bad_dsm_engines_names_the_entry(raw: str, named: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"DSM_ENGINES": raw, "HOME": str(tmp_path), "DSM_STATE_DIR": str(tmp_path / "s")})
    assert named in str(info.value)


def test_a_bad_dsm_engines_stops_the_server_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DSM_STATE_DIR": str(tmp_path / "s"),
           "DSM_ENGINES": "one=tcp://127.0.0.1:1,two=nope-ctx", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "server.cli"], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DSM_ENGINES entry 'two=nope-ctx'" in lines[0], done.stderr
    assert done.stdout == ""


def _settings(tmp_path: Path, engines: str) -> Settings:
    root = tmp_path / "stacks"
    root.mkdir(exist_ok=True)
    return Settings(stacks_root=root, state_dir=tmp_path / "state", engines=parse_engines(engines))


def test_unset_is_the_current_engine_alone_with_todays_state(settings: Settings) -> None:
    runtime = Runtime(settings)
    assert runtime.targets().names == ["default"] and not runtime.targets().several
    assert runtime.settings is settings and runtime.target.spec is None


def test_each_engine_has_its_runtime_endpoint_and_state_dir(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "one=tcp://127.0.0.1:2375,two=tcp://127.0.0.1:2376(ro)")
    root = Runtime(settings)
    two = root.targets().runtime("two")
    assert root.settings.state_dir == settings.state_dir  # the default keeps today's paths
    assert two.settings.state_dir == settings.state_dir / "engines" / "two"
    assert root.endpoint().host == "tcp://127.0.0.1:2375" and two.endpoint().host == "tcp://127.0.0.1:2376"
    assert two.engine().endpoint() is two.compose().endpoint_source.get()  # one endpoint per target
    assert two.memory_outbox() is root.memory_outbox()  # one memory per server
    assert two.target.read_only and not root.target.read_only
    assert root.targets().runtime("two") is two
    with pytest.raises(UnknownEngine, match="'three' is not one of this server's engines \\(one, two\\)"):
        root.targets().runtime("three")


async def test_x_dsm_engine_places_the_stack_and_an_unknown_one_is_a_clear_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "one=tcp://127.0.0.1:9,two=tcp://127.0.0.1:9")
    write_stack(settings.stacks_root, "app", "name: app\nx-dsm: {engine: two}\nservices: {web: {image: x}}\n")
    write_stack(settings.stacks_root, "bad", "name: bad\nx-dsm: {engine: three}\nservices: {web: {image: x}}\n")
    root = Runtime(settings)
    assert (await root.for_stack("app", mutating=True)).target.name == "two"
    with pytest.raises(UnknownEngine, match="three"):
        await root.for_stack("bad", mutating=True)


async def test_one_engine_refuses_a_stack_that_names_another(settings: Settings) -> None:
    write_stack(settings.stacks_root, "app", "name: app\nx-dsm: {engine: nas}\nservices: {web: {image: x}}\n")
    with pytest.raises(UnknownEngine, match="'nas' is not one of this server's engines \\(default\\)"):
        await Runtime(settings).for_stack("app", mutating=True)
    assert (await Runtime(settings).for_stack("app")).target.name == "default"  # still observed


async def test_mutating_tools_refuse_a_read_only_engine_naming_the_rule(tmp_path: Path, mcp_client_for: Any) -> None:
    settings = _settings(tmp_path, "ro=tcp://127.0.0.1:9(ro)")
    write_stack(settings.stacks_root, "app", "name: app\nservices: {web: {image: x}}\n")
    with pytest.raises(EngineReadOnly, match="engine-read-only"):
        await Runtime(settings).for_stack("app", mutating=True)
    assert (await Runtime(settings).for_stack("app")).target.name == "ro"  # reading is fine
    async with mcp_client_for(settings) as client:
        for tool, args in (("stack_control", {"stack": "app", "action": "stop"}),
                           ("deploy_stack", {"path": "app"}),
                           ("backup_stack", {"stack": "app", "action": "create"})):
            result = await client.call_tool(tool, args)
            assert result.is_error and "engine-read-only" in result.content[0].text, (tool, result)


@pytest.fixture
def mcp_client_for() -> Any:
    import contextlib

    from mcp import Client

    from server.app import build_server

    @contextlib.asynccontextmanager
    async def make(settings: Settings) -> Any:
        async with Client(build_server(settings)) as client:
            yield client

    return make


async def test_the_watcher_of_a_read_only_engine_alerts_and_never_acts(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from server.monitor import watcher as watcher_mod
    from server.monitor.stackpolicy import stack_policy
    from tests.test_monitor_units import location, observed

    settings = _settings(tmp_path, "nas=tcp://127.0.0.1:9(ro)")
    runtime = Runtime(settings)
    watcher = watcher_mod.Watcher(runtime, ["p"])
    acted: list[str] = []
    alerts: list[Any] = []

    async def act(*_: Any, **__: Any) -> None:
        acted.append("act")

    async def alert(stack: str, what: Any) -> None:
        alerts.append(what)

    monkeypatch.setattr(watcher, "_act", act)
    monkeypatch.setattr(watcher, "_alert", alert)
    loc = location("services:\n  web:\n    image: x\n", tmp_path)
    await watcher._recover("p", observed("web", "exited", exit_code=1), "exited", stack_policy(loc), loc)
    assert acted == [] and "engine-read-only" in alerts[0].what_was_tried
    runtime.close()


async def test_a_view_over_every_engine_survives_a_slow_or_refusing_engine(tmp_path: Path) -> None:
    import time

    import anyio

    from server.errors import DockerUnavailable, EngineError

    settings = _settings(tmp_path, "a=tcp://127.0.0.1:9,slow=tcp://127.0.0.1:9,no=tcp://127.0.0.1:9,"
                                   "away=tcp://127.0.0.1:9")

    async def ask(rt: Runtime) -> str:
        name = rt.target.name
        if name == "slow":
            await anyio.sleep(30)
        if name == "no":
            raise EngineError("the Docker engine refused to list containers: boom")
        if name == "away":
            raise DockerUnavailable("cannot connect")
        return f"answer of {name}"

    started = time.monotonic()
    results = {rt.target.name: r for rt, r in await Runtime(settings).targets().each(ask, timeout_s=0.5)}
    assert time.monotonic() - started < 3  # in parallel, bounded
    assert results["a"] == "answer of a"
    assert [getattr(results[n], "state", None) for n in ("slow", "no", "away")] == ["unreachable", "error",
                                                                                    "unreachable"]
    assert "no answer within 0.5 s" in results["slow"].describe()  # type: ignore[union-attr]
