"""Every setting at its edges: the last accepted value, the first refused one, and an error that
names the variable and the value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.errors import SettingsError
from server.settings import Settings


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "stacks").mkdir()
    return {"HOME": str(tmp_path), "DSM_STACKS_ROOT": str(tmp_path / "stacks")}


@pytest.mark.parametrize(
    ("name", "raw", "attr", "value"),
    [
        ("DSM_COMPOSE_TIMEOUT", "1", "compose_timeout_s", 1.0),
        ("DSM_COMPOSE_TIMEOUT", "3600", "compose_timeout_s", 3600.0),
        ("DSM_COMPOSE_TIMEOUT", "2.5", "compose_timeout_s", 2.5),
        ("DSM_YAML_MAX_BYTES", "1024", "yaml_max_bytes", 1024),
        ("DSM_YAML_MAX_BYTES", "64000000", "yaml_max_bytes", 64_000_000),
        ("DSM_YAML_MAX_BYTES", "2048.9", "yaml_max_bytes", 2048),
        ("DSM_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("DSM_LOG_LEVEL", "Warning", "log_level", "WARNING"),
        ("DSM_LOG_LEVEL", "ERROR", "log_level", "ERROR"),
        ("QDRANT_URL", "https://q.example:6333", "qdrant_url", "https://q.example:6333"),
        ("QDRANT_URL", "http://127.0.0.1:6333", "qdrant_url", "http://127.0.0.1:6333"),
        ("QDRANT_URL", "", "qdrant_url", None),
        ("QDRANT_API_KEY", "k", "qdrant_api_key", "k"),
        ("QDRANT_API_KEY", "", "qdrant_api_key", None),
        ("DOCKER_HOST", "ssh://nas", "docker_host", "ssh://nas"),
        ("DOCKER_HOST", "", "docker_host", None),
        ("DOCKER_CONTEXT", "nas", "docker_context", "nas"),
        ("DOCKER_CONTEXT", "", "docker_context", None),
        ("DSM_COMPOSE_BIN", "", "compose_bin", None),
    ],
)
def test_accepted_values(base: dict[str, str], name: str, raw: str, attr: str, value: object) -> None:
    assert getattr(Settings.from_env({**base, name: raw}), attr) == value


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", " yes ", "on", "On"])
def test_read_only_true(base: dict[str, str], raw: str) -> None:
    assert Settings.from_env({**base, "DSM_READ_ONLY": raw}).read_only is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", "", "  "])
def test_read_only_false(base: dict[str, str], raw: str) -> None:
    assert Settings.from_env({**base, "DSM_READ_ONLY": raw}).read_only is False


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("DSM_COMPOSE_TIMEOUT", "0.99", "DSM_COMPOSE_TIMEOUT='0.99' must be between 1 and 3600"),
        ("DSM_COMPOSE_TIMEOUT", "3601", "DSM_COMPOSE_TIMEOUT='3601' must be between 1 and 3600"),
        ("DSM_COMPOSE_TIMEOUT", "nan", "must be between"),
        ("DSM_COMPOSE_TIMEOUT", "-5", "must be between"),
        ("DSM_COMPOSE_TIMEOUT", "2m", "DSM_COMPOSE_TIMEOUT='2m' is not a number"),
        ("DSM_YAML_MAX_BYTES", "1023", "DSM_YAML_MAX_BYTES='1023' must be between 1024 and 6.4e+07"),
        ("DSM_YAML_MAX_BYTES", "64000001", "must be between"),
        ("DSM_YAML_MAX_BYTES", "1MB", "is not a number"),
        ("DSM_READ_ONLY", "y", "DSM_READ_ONLY='y' is not a boolean"),
        ("DSM_LOG_LEVEL", "TRACE", "DSM_LOG_LEVEL='TRACE' is not one of"),
        ("QDRANT_URL", "ftp://q", "QDRANT_URL='ftp://q' must start with http:// or https://"),
        ("QDRANT_URL", "q.example:6333", "must start with"),
        ("DSM_COMPOSE_BIN", "/definitely/not/docker-compose", "DSM_COMPOSE_BIN=/definitely/not/docker-compose is not"),
        ("DSM_COMPOSE_BIN", "/", "is not a file"),
        ("DSM_STATE_DIR", "relative/state", "DSM_STATE_DIR='relative/state' must be an absolute path"),
        ("DSM_EMBEDDING_MODEL_PATH", "/definitely/not/a/model", "is not an existing directory"),
        ("DSM_EMBEDDING_MODEL_PATH", "model", "must be an absolute path"),
    ],
)
def test_refused_values_name_the_variable_and_value(base: dict[str, str], name: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("+", r"\+").replace(".", r"\.")):
        Settings.from_env({**base, name: raw})


def test_state_dir_must_lie_outside_the_stacks_root(tmp_path: Path, base: dict[str, str]) -> None:
    root = base["DSM_STACKS_ROOT"]
    for inside in (root, root + "/state", root + "/a/b"):
        with pytest.raises(SettingsError, match="lies inside DSM_STACKS_ROOT"):
            Settings.from_env({**base, "DSM_STATE_DIR": inside})
    # A sibling that only shares the root's spelling as a prefix is outside.
    assert Settings.from_env({**base, "DSM_STATE_DIR": root + "-state"}).state_dir == Path(root + "-state")
    assert Settings.from_env({**base, "DSM_STATE_DIR": str(tmp_path)}).state_dir == tmp_path


def test_state_dir_inside_the_root_through_a_symlink_is_refused(tmp_path: Path, base: dict[str, str]) -> None:
    os.symlink(base["DSM_STACKS_ROOT"], tmp_path / "alias")
    (tmp_path / "stacks" / "state").mkdir()
    with pytest.raises(SettingsError, match="inside"):
        Settings.from_env({**base, "DSM_STATE_DIR": str(tmp_path / "alias" / "state")})


def test_paths_are_resolved(tmp_path: Path, base: dict[str, str]) -> None:
    os.symlink(tmp_path / "stacks", tmp_path / "link")
    s = Settings.from_env({"HOME": str(tmp_path), "DSM_STACKS_ROOT": str(tmp_path / "link")})
    assert s.stacks_root == tmp_path / "stacks"
    model = tmp_path / "model"
    model.mkdir()
    assert Settings.from_env({**base, "DSM_EMBEDDING_MODEL_PATH": str(model)}).embedding_model_path == model
    assert Settings.from_env(base).embedding_model_path is None
    compose = tmp_path / "docker-compose"
    compose.write_text("#!/bin/sh\n")
    assert Settings.from_env({**base, "DSM_COMPOSE_BIN": str(compose)}).compose_bin == str(compose)


def test_default_state_dir_follows_xdg(tmp_path: Path, base: dict[str, str]) -> None:
    s = Settings.from_env({**base, "XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert s.state_dir == tmp_path / "xdg" / "docker-stack-mcp"
    assert Settings.from_env(base).state_dir == tmp_path / ".local" / "state" / "docker-stack-mcp"


def test_defaults(base: dict[str, str]) -> None:
    s = Settings.from_env(base)
    assert (s.compose_timeout_s, s.yaml_max_bytes, s.log_level, s.read_only) == (120.0, 1_048_576, "INFO", False)
    assert (s.compose_bin, s.docker_host, s.docker_context, s.qdrant_url, s.qdrant_api_key) == (None,) * 5


def test_a_state_dir_not_yet_created_is_resolved_before_the_inside_check(tmp_path: Path,
                                                                          base: dict[str, str]) -> None:
    os.symlink(base["DSM_STACKS_ROOT"], tmp_path / "alias")
    with pytest.raises(SettingsError, match="lies inside DSM_STACKS_ROOT"):
        Settings.from_env({**base, "DSM_STATE_DIR": str(tmp_path / "alias" / "not-yet" / "state")})
    os.symlink(tmp_path, tmp_path / "up")
    fine = Settings.from_env({**base, "DSM_STATE_DIR": str(tmp_path / "up" / "new-state")})
    assert fine.state_dir == tmp_path / "new-state"


@pytest.mark.parametrize(
    ("env", "what", "next_step"),
    [
        ({"DSM_STACKS_ROOT": "relative"}, "DSM_STACKS_ROOT='relative' must be an absolute path", ""),
        ({"DSM_STACKS_ROOT": "/definitely/not/here"}, "DSM_STACKS_ROOT=/definitely/not/here is not an existing "
         "directory", "create it or unset DSM_STACKS_ROOT"),
        ({"DSM_EMBEDDING_MODEL_PATH": "model"}, "DSM_EMBEDDING_MODEL_PATH='model' must be an absolute path", ""),
        ({"DSM_EMBEDDING_MODEL_PATH": "/no/model"}, "DSM_EMBEDDING_MODEL_PATH=/no/model is not an existing directory",
         "create it or unset DSM_EMBEDDING_MODEL_PATH"),
        ({"DSM_COMPOSE_BIN": "/no/compose"}, "DSM_COMPOSE_BIN=/no/compose is not a file", "unset it or fix the path"),
    ],
)
def test_errors_name_the_variable_and_the_next_step(base: dict[str, str], env: dict[str, str], what: str,
                                                     next_step: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**base, **env})
    assert info.value.what == what and info.value.next_step == next_step


def test_without_a_mapping_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch,
                                                             base: dict[str, str]) -> None:
    for key, value in base.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DSM_LOG_LEVEL", "debug")
    assert Settings.from_env().log_level == "DEBUG"
