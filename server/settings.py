"""All configuration, read from the environment once and validated at start-up.

A bad value raises :class:`SettingsError` with one line that names the variable, the value
and what is accepted; the CLI prints that line to stderr and exits 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from server.enginespec import EngineSpec, parse_engines
from server.errors import SettingsError

DEFAULT_STACKS_ROOT = "/opt/stacks"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Build with :meth:`from_env`; tests build it directly."""

    stacks_root: Path
    state_dir: Path
    read_only: bool = False
    log_level: str = "INFO"
    compose_timeout_s: float = 120.0
    yaml_max_bytes: int = 1_048_576
    compose_bin: str | None = None
    docker_host: str | None = None
    docker_context: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    embedding_model_path: Path | None = None
    backup_keep: int = 10
    """Backups kept per stack (newest first); older ones are pruned with their pinned image tags."""
    backup_max_bytes: int = 20 * 1024**3
    """Size cap of one stack's backups; the oldest go first (the newest is always kept)."""
    journal_max_bytes: int = 8 * 1024 * 1024
    """The operation journal is compacted when it grows past this (oldest finished operations go)."""
    alert_urls: tuple[str, ...] = ()
    alert_dedup_s: float = 3600.0
    alert_rate_per_min: int = 10
    metrics_port: int | None = None
    policy_path: Path | None = None
    """DSM_POLICY: the safety policy file (server/safety/policy.py); None = today's behaviour."""
    engines: tuple[EngineSpec, ...] = ()
    """DSM_ENGINES (server/enginespec.py): the engines this server may use, the first is the default;
    empty = the current engine alone (DOCKER_HOST, DOCKER_CONTEXT, the CLI's current context)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        root_raw = env.get("DSM_STACKS_ROOT", "")
        root = (
            _abs_dir("DSM_STACKS_ROOT", root_raw, must_exist=bool(root_raw)) if root_raw else Path(DEFAULT_STACKS_ROOT)
        )
        state_raw = env.get("DSM_STATE_DIR", "")
        state = _abs_dir("DSM_STATE_DIR", state_raw, must_exist=False) if state_raw else _default_state_dir(env)
        if state == root or root in state.parents:
            raise SettingsError(
                f"DSM_STATE_DIR={state} lies inside DSM_STACKS_ROOT={root}",
                next_step="keep state (journal, backups, memory) outside the stacks root",
            )
        model_raw = env.get("DSM_EMBEDDING_MODEL_PATH", "")
        compose_bin = env.get("DSM_COMPOSE_BIN") or None
        if compose_bin and not Path(compose_bin).is_file():
            raise SettingsError(f"DSM_COMPOSE_BIN={compose_bin} is not a file", next_step="unset it or fix the path")
        log_level = env.get("DSM_LOG_LEVEL", "INFO").upper()
        if log_level not in _LOG_LEVELS:
            raise SettingsError(f"DSM_LOG_LEVEL={log_level!r} is not one of {sorted(_LOG_LEVELS)}")
        qdrant_url = env.get("QDRANT_URL") or None
        if qdrant_url and not qdrant_url.startswith(("http://", "https://")):
            raise SettingsError(f"QDRANT_URL={qdrant_url!r} must start with http:// or https://")
        policy_path = _policy(env.get("DSM_POLICY", ""))
        engines = parse_engines(env.get("DSM_ENGINES", ""))
        settings = cls(
            engines=engines,
            policy_path=policy_path,
            stacks_root=root,
            state_dir=state,
            read_only=_flag("DSM_READ_ONLY", env.get("DSM_READ_ONLY", "")),
            log_level=log_level,
            compose_timeout_s=_number("DSM_COMPOSE_TIMEOUT", env.get("DSM_COMPOSE_TIMEOUT", "120"), 1, 3600),
            yaml_max_bytes=int(_number("DSM_YAML_MAX_BYTES", env.get("DSM_YAML_MAX_BYTES", "1048576"), 1024, 64e6)),
            compose_bin=compose_bin,
            docker_host=env.get("DOCKER_HOST") or None,
            docker_context=env.get("DOCKER_CONTEXT") or None,
            qdrant_url=qdrant_url,
            qdrant_api_key=env.get("QDRANT_API_KEY") or None,
            journal_max_bytes=int(
                _number("DSM_JOURNAL_MAX_BYTES", env.get("DSM_JOURNAL_MAX_BYTES", str(8 * 1024 * 1024)), 65536, 1e10)
            ),
            embedding_model_path=_abs_dir("DSM_EMBEDDING_MODEL_PATH", model_raw, must_exist=True)
            if model_raw
            else None,
            backup_keep=int(_number("DSM_BACKUP_KEEP", env.get("DSM_BACKUP_KEEP", "10"), 1, 1000, integer=True)),
            backup_max_bytes=_size("DSM_BACKUP_MAX_BYTES", env.get("DSM_BACKUP_MAX_BYTES", "20GiB")),
            alert_urls=tuple(u for u in re.split(r"[\s,]+", env.get("DSM_ALERT_URLS", "")) if u),
            alert_dedup_s=_number("DSM_ALERT_DEDUP_S", env.get("DSM_ALERT_DEDUP_S", "3600"), 0, 7 * 86400),
            alert_rate_per_min=int(_number("DSM_ALERT_RATE_PER_MIN", env.get("DSM_ALERT_RATE_PER_MIN", "10"), 1, 1000)),
            metrics_port=int(_number("DSM_METRICS_PORT", env["DSM_METRICS_PORT"], 0, 65535))
            if env.get("DSM_METRICS_PORT")
            else None,
        )
        _check_contexts(settings, env)
        return settings


def _check_contexts(settings: Settings, env: Mapping[str, str]) -> None:
    """Every engine of DSM_ENGINES resolves now (a context that does not exist stops the server
    with its entry named); nothing connects to an engine here, only the context files are read."""
    from server.endpoint import resolve_endpoint
    from server.errors import DockerUnavailable

    for spec in settings.engines:
        try:
            resolve_endpoint(settings, env, spec)
        except DockerUnavailable as exc:
            raise SettingsError(f"DSM_ENGINES entry {spec.describe()!r}: {exc.what}",
                                next_step="run `docker context ls` and fix the entry") from None


def _default_state_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "docker-stack-mcp"


def _abs_dir(name: str, raw: str, *, must_exist: bool) -> Path:
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise SettingsError(f"{name}={raw!r} must be an absolute path")
    if must_exist and not path.is_dir():
        raise SettingsError(f"{name}={raw} is not an existing directory", next_step=f"create it or unset {name}")
    # Resolved even when it does not exist yet: a state dir reached through a symlink into the
    # stacks root must be seen as inside it (resolve() follows the part that exists).
    return path.resolve()


def _policy(raw: str) -> Path | None:
    """DSM_POLICY validated now, so a bad file stops the server at start-up with the key named."""
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise SettingsError(f"DSM_POLICY={raw!r} must be an absolute path")
    if not path.is_file():
        raise SettingsError(f"DSM_POLICY={raw} is not a file", next_step="fix the path or unset DSM_POLICY")
    from server.safety.policy import read

    read(path)
    return path


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _number(name: str, raw: str, low: float, high: float, *, integer: bool = False) -> float:
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {'an integer' if integer else 'a number'}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


_SIZE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _size(name: str, raw: str) -> int:
    """Bytes, or a number with a binary unit (20GiB, 500M); between 1 MiB and 1 PiB."""
    match = _SIZE.match(raw)
    if not match:
        raise SettingsError(f"{name}={raw!r} is not a size (bytes, or a number with KiB/MiB/GiB/TiB)")
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2)[:1].lower()]
    if not 1024**2 <= value <= 1024**5:
        raise SettingsError(f"{name}={raw!r} must be between 1MiB and 1PiB")
    return value
