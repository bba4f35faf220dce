from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.errors import SettingsError
from server.settings import DEFAULT_STACKS_ROOT, Settings


def test_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({"HOME": str(tmp_path)})
    assert s.stacks_root == Path(DEFAULT_STACKS_ROOT)
    assert s.state_dir == tmp_path / ".local" / "state" / "docker-stack-mcp"
    assert s.read_only is False


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"DSM_STACKS_ROOT": "relative/dir"}, "absolute"),
        ({"DSM_STACKS_ROOT": "/definitely/not/here"}, "not an existing directory"),
        ({"DSM_READ_ONLY": "maybe"}, "not a boolean"),
        ({"DSM_COMPOSE_TIMEOUT": "soon"}, "not a number"),
        ({"DSM_COMPOSE_TIMEOUT": "0"}, "between"),
        ({"DSM_LOG_LEVEL": "LOUD"}, "DSM_LOG_LEVEL"),
        ({"QDRANT_URL": "localhost:6333"}, "http"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        Settings.from_env(env)


def test_state_inside_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="inside"):
        Settings.from_env({"DSM_STACKS_ROOT": str(tmp_path), "DSM_STATE_DIR": str(tmp_path / "state")})


def test_read_only_flag(tmp_path: Path) -> None:
    assert Settings.from_env({"DSM_STACKS_ROOT": str(tmp_path), "DSM_READ_ONLY": "yes"}).read_only


def test_bad_setting_stops_startup_with_one_line(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "docker-stack-mcp"
    result = subprocess.run(
        [str(exe)], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DSM_READ_ONLY": "perhaps"},
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DSM_READ_ONLY" in lines[0]


def test_version_and_help(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "docker-stack-mcp"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("docker-stack-mcp ")
    helptext = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30)
    assert helptext.returncode == 0 and "DSM_STACKS_ROOT" in helptext.stdout
