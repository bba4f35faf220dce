"""The process choke point: timeouts kill the whole group, output is bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from server.compose import client_env
from server.process import run_argv

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.mark.anyio
async def test_timeout_kills_grandchildren(tmp_path) -> None:
    marker = tmp_path / "pid"
    # The shell starts a grandchild that ignores SIGTERM, as the compose plugin outlives the CLI.
    script = f"sh -c 'trap \"\" TERM; echo $$ > {marker}; sleep 30' & wait"
    start = time.monotonic()
    result = await run_argv(["sh", "-c", script], timeout_s=1, env=ENV, term_grace_s=0.5)
    assert result.timed_out and result.returncode == -9
    assert time.monotonic() - start < 5
    pid = int(marker.read_text())
    time.sleep(0.2)
    assert _gone_or_zombie(pid)


def _gone_or_zombie(pid: int) -> bool:
    # An orphan that was killed may linger as a zombie until PID 1 reaps it: it no longer runs.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


@pytest.mark.anyio
async def test_output_is_bounded_and_exit_code_kept() -> None:
    result = await run_argv(["sh", "-c", "head -c 200000 /dev/zero; exit 3"], timeout_s=10, env=ENV,
                            max_output=1000)
    assert result.returncode == 3 and result.truncated and len(result.stdout) == 1000


@pytest.mark.anyio
async def test_stdin_and_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_OF_SERVER", "hunter22")
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "stray")
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    env = client_env({"TAG": "1.0"})
    assert "SECRET_OF_SERVER" not in env and "COMPOSE_PROJECT_NAME" not in env
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock" and env["TAG"] == "1.0"
    result = await run_argv(["sh", "-c", "cat; echo ${SECRET_OF_SERVER:-unset} $TAG"], timeout_s=10, env=env,
                            stdin=b"hello ")
    assert result.stdout.split() == ["hello", "unset", "1.0"]


@pytest.mark.anyio
async def test_on_start_gets_the_process_group_before_output(tmp_path) -> None:
    seen: list[tuple[int, int]] = []

    def on_start(pgid: int) -> None:
        # Called right after the spawn: the group exists and its leader is the child itself.
        seen.append((pgid, os.getpgid(pgid)))

    # The child outlives the hook (a child that exits at once may be reaped before it runs).
    result = await run_argv(["sh", "-c", "echo $$; exec sleep 0.5"], timeout_s=10, env=ENV, on_start=on_start)
    assert len(seen) == 1
    pgid, group = seen[0]
    assert pgid == group == int(result.stdout.strip()) and pgid != os.getpgid(0)


@pytest.mark.anyio
async def test_on_start_failure_kills_the_group(tmp_path) -> None:
    marker = tmp_path / "pid"

    def on_start(pgid: int) -> None:
        time.sleep(0.3)  # let the shell write its pid first
        raise RuntimeError("journal unwritable")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="journal unwritable"):
        await run_argv(["sh", "-c", f"echo $$ > {marker}; exec sleep 30"], timeout_s=30, env=ENV,
                       on_start=on_start, term_grace_s=0.5)
    assert time.monotonic() - start < 5
    time.sleep(0.2)
    assert _gone_or_zombie(int(marker.read_text()))


@pytest.mark.anyio
async def test_compose_runner_passes_on_start_through(settings) -> None:
    from server.compose import ComposeRunner

    seen: list[int] = []
    result = await ComposeRunner(settings).run([], ["version", "--short"], cwd=None, on_start=seen.append)
    # Locating Compose runs its own probe without the hook: only the call itself is reported.
    assert result.returncode == 0 and len(seen) == 1 and seen[0] > 1


@pytest.mark.anyio
async def test_compose_runs_the_cli_plugin_binary_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_engine: None
) -> None:
    """The plugin `docker compose` would run is found in the docker config's cli-plugins and run
    itself: no docker CLI start-up in front of every Compose call."""
    from server.compose import ComposeRunner, _cli_plugin_binary
    from server.settings import Settings
    from tests.conftest import provision_facts

    real = provision_facts().get("DSM_TEST_COMPOSE_PLUGIN")
    assert real and Path(real).is_file(), "provision.sh records the compose plugin"
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(real)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    assert _cli_plugin_binary() == plugins / "docker-compose"
    runner = ComposeRunner(Settings(stacks_root=tmp_path, state_dir=tmp_path / "state"))
    assert await runner.prefix() == [str(plugins / "docker-compose")]
    result = await runner.run([], ["version", "--short"], cwd=tmp_path, what="compose version")
    assert result.stdout.strip().lstrip("v")[:1] == "2"


def test_a_given_env_cannot_move_compose_to_another_engine_or_binaries() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/root", "DOCKER_HOST": "unix:///var/run/docker.sock"}
    env = client_env({"DOCKER_HOST": "tcp://elsewhere:2375", "DOCKER_CONFIG": "/tmp/x", "PATH": "/tmp/evil",
                      "HOME": "/tmp/evil", "WEB_VERSION": "1.1", "COMPOSE_PROFILES": "debug"}, base=base)
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock" and "DOCKER_CONFIG" not in env
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/root"
    assert env["WEB_VERSION"] == "1.1" and env["COMPOSE_PROFILES"] == "debug"
