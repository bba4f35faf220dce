"""Where the Docker engine is: one endpoint, resolved once, used by every adapter.

The docker-py client, the Compose CLI, the registry reads that go through the engine and the
backups all act on the engine this module names; none of them reads ``DOCKER_HOST``,
``DOCKER_CONTEXT`` or the CLI's current context on its own. Before, docker-py ignored
``DOCKER_CONTEXT`` while Compose honoured it: ``up`` ran on the context's engine while
pre-flight, the backup and the health gate looked at the local one.

The order is the docker CLI's (checked against docker CLI 28.2): ``DOCKER_HOST`` (the CLI then
uses its ``default`` context, whatever DOCKER_CONTEXT says), else ``DOCKER_CONTEXT``, else
``currentContext`` in ``$DOCKER_CONFIG/config.json``, else the default socket. A named context
that does not exist is an error, as the CLI's "context not found" is: never a silent fall-back to
the local engine. Resolution reads two small files and starts no process.

Several engines (issue 19, DSM_ENGINES): each entry is resolved here the same way, a URL as
given, a context name through the same context files; one ``EndpointSource`` per target.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from server.enginespec import EngineSpec
from server.errors import DockerUnavailable
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.endpoint")

DEFAULT_HOST = "unix:///var/run/docker.sock"
Source = Literal["DOCKER_HOST", "DOCKER_CONTEXT", "currentContext", "default", "DSM_ENGINES"]
CLIENT_VARS = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_TLS", "DOCKER_CERT_PATH")
"""The variables that choose the engine: a docker/compose child gets them from the endpoint alone."""


@dataclass(frozen=True)
class TLS:
    """TLS material for a tcp:// engine: file paths (never their contents) and whether to verify."""

    directory: str
    """Where ca.pem, cert.pem and key.pem are (DOCKER_CERT_PATH for the CLI)."""
    verify: bool
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One engine: a host URL (unix://, tcp://, ssh://) and TLS material when it has some."""

    name: str
    """The docker context's name; ``default`` when DOCKER_HOST or nothing chose the engine."""
    host: str
    source: Source
    tls: TLS | None = None

    @property
    def local(self) -> bool:
        """A socket on this machine (its /proc and disk are the engine's)."""
        return self.host.startswith(("unix://", "npipe://"))

    def describe(self) -> str:
        """``tcp://nas:2376 (context 'nas', from DOCKER_CONTEXT)``: for messages and reports."""
        if self.source == "DOCKER_HOST":
            return f"{self.host} (from DOCKER_HOST)"
        if self.source == "default":
            return f"{self.host} (default socket)"
        if self.source == "DSM_ENGINES":
            return f"{self.host} ({self.name!r} from DSM_ENGINES)"
        return f"{self.host} (context {self.name!r}, from {self.source})"

    def client_env(self) -> dict[str, str]:
        """What a docker or compose child must see to reach exactly this engine.

        DOCKER_HOST is always set, so the CLI's own context resolution cannot pick another engine
        (with DOCKER_HOST set it uses its ``default`` context); DOCKER_CONTEXT is never passed.
        """
        env = {"DOCKER_HOST": self.host}
        if self.tls is not None:
            env["DOCKER_CERT_PATH"] = self.tls.directory
            env["DOCKER_TLS_VERIFY" if self.tls.verify else "DOCKER_TLS"] = "1"
        return env


def docker_config_dir(env: Mapping[str, str]) -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker``: where the CLI keeps config.json and its contexts."""
    configured = env.get("DOCKER_CONFIG")
    if configured:
        return Path(configured)
    return Path(env.get("HOME") or Path.home()) / ".docker"


def resolve_endpoint(settings: Settings, env: Mapping[str, str] | None = None,
                     spec: EngineSpec | None = None) -> Endpoint:
    """The engine the docker CLI would use with this environment (or the DSM_ENGINES entry
    ``spec``). Raises DockerUnavailable when a named context does not exist or cannot be read
    (nothing falls back to the local socket)."""
    env = os.environ if env is None else env
    if spec is not None:
        if spec.is_url:
            # DOCKER_HOST's TLS material belongs to DOCKER_HOST's engine, no other.
            tls = _env_tls(env) if spec.where == settings.docker_host else None
            return Endpoint(spec.name, spec.where, "DSM_ENGINES", tls)
        return _from_context(spec.where, "DSM_ENGINES", docker_config_dir(env))
    if settings.docker_host:
        return Endpoint("default", settings.docker_host, "DOCKER_HOST", _env_tls(env))
    config_dir = docker_config_dir(env)
    if settings.docker_context:
        return _from_context(settings.docker_context, "DOCKER_CONTEXT", config_dir)
    current = _current_context(config_dir)
    if current:
        return _from_context(current, "currentContext", config_dir)
    return Endpoint("default", DEFAULT_HOST, "default")


def _env_tls(env: Mapping[str, str]) -> TLS | None:
    """TLS for DOCKER_HOST as the CLI reads it: any non-empty DOCKER_TLS_VERIFY verifies, DOCKER_TLS
    alone encrypts without verifying; the material is in DOCKER_CERT_PATH (else the config dir)."""
    verify = bool(env.get("DOCKER_TLS_VERIFY"))
    if not verify and not env.get("DOCKER_TLS"):
        return None
    return _tls_files(str(env.get("DOCKER_CERT_PATH") or docker_config_dir(env)), verify)


def _tls_files(directory: str, verify: bool) -> TLS:
    def present(name: str) -> str | None:
        path = os.path.join(directory, name)
        return path if os.path.isfile(path) else None

    return TLS(directory=directory, verify=verify, ca=present("ca.pem"), cert=present("cert.pem"),
               key=present("key.pem"))


def _current_context(config_dir: Path) -> str | None:
    """``currentContext`` of config.json; an unreadable file counts as none (the CLI warns and goes on)."""
    path = config_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("could not read %s: using the default engine, as the docker CLI does", path)
        return None
    name = data.get("currentContext") if isinstance(data, dict) else None
    return str(name) if name and name != "default" else None


def _from_context(name: str, source: Source, config_dir: Path) -> Endpoint:
    if name == "default":  # DOCKER_HOST is unset here, so the default context is the default socket
        return Endpoint("default", DEFAULT_HOST, source)
    context_id = hashlib.sha256(name.encode("utf-8")).hexdigest()
    meta = config_dir / "contexts" / "meta" / context_id / "meta.json"
    where = f"{source}={name}" if source != "currentContext" else f"currentContext {name!r} in {config_dir}/config.json"
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        docker = (data.get("Endpoints") or {}).get("docker") or {}
        host = str(docker.get("Host") or "")
    except FileNotFoundError:
        raise DockerUnavailable(
            f"the docker context {name!r} ({where}) does not exist under {config_dir}/contexts",
            state="nothing was run on any engine",
            next_step="run `docker context ls`, then fix or unset DOCKER_CONTEXT (or `docker context use`) and "
            "restart the server",
        ) from None
    except (OSError, ValueError, AttributeError) as exc:
        raise DockerUnavailable(
            f"the docker context {name!r} ({where}) cannot be read: {type(exc).__name__}",
            state="nothing was run on any engine",
            next_step="run `docker context inspect " + name + "` and repair or recreate the context",
        ) from None
    if not host:
        raise DockerUnavailable(
            f"the docker context {name!r} ({where}) names no Docker endpoint",
            state="nothing was run on any engine",
            next_step="recreate it with `docker context create " + name + " --docker host=...`",
        )
    tls_dir = config_dir / "contexts" / "tls" / context_id / "docker"
    skip_verify = bool(docker.get("SkipTLSVerify"))
    tls = _tls_files(str(tls_dir), not skip_verify) if tls_dir.is_dir() or skip_verify else None
    return Endpoint(name, host, source, tls)


class EndpointSource:
    """The endpoint of one runtime, resolved on first use and then fixed: the adapters sharing this
    object can never disagree about the engine. A failed resolution is not cached (it raises again
    with the same message on the next call, and succeeds once the context is repaired)."""

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None,
                 spec: EngineSpec | None = None) -> None:
        self._settings = settings
        self._env = env
        self.spec = spec
        """The DSM_ENGINES entry this source resolves; None: the current engine (DOCKER_HOST...)."""
        self._endpoint: Endpoint | None = None
        self._lock = threading.Lock()

    def get(self) -> Endpoint:
        with self._lock:
            if self._endpoint is None:
                self._endpoint = resolve_endpoint(self._settings, self._env, self.spec)
                log.info("Docker engine: %s", self._endpoint.describe())
            return self._endpoint
