"""StackCLI: the docker CLI's ``stack``/``service``/``node`` commands on the runtime's one endpoint.

Swarm is driven through the docker CLI rather than docker-py because ``docker stack deploy`` (the
compose-file loader, the stack's networks, configs, secrets and ``--prune``) exists only in the CLI.
Every read the executor, the pre-flight and stack_status need is here, parsed once into plain
dicts, so that a Target per engine later gives each its own StackCLI (``endpoint`` is all it reads).

``docker stack deploy`` needs a docker CLI >= 23: older CLIs (Debian's 20.10) reject Compose v2
files (no ``version:``, the compose-spec keys ``docker compose config`` writes).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from server.errors import DsmError
from server.process import ProcessResult, run_argv

MIN_CLI_MAJOR = 23
NAMESPACE_LABEL = "com.docker.stack.namespace"


class SwarmUnavailable(DsmError):
    """The target cannot run a swarm stack (no CLI >= 23, not a manager)."""


@dataclass(frozen=True)
class SwarmInfo:
    state: str  # "active", "inactive", "pending", "error", "locked"
    manager: bool
    node_id: str
    nodes: int


class StackCLI:
    def __init__(self, env: Callable[[], dict[str, str]], timeout_s: float = 60.0) -> None:
        self._env = env
        """The child environment (server.compose.client_env with the target's endpoint)."""
        self.timeout_s = timeout_s
        self._checked = False

    @classmethod
    def for_runtime(cls, runtime: Any) -> StackCLI:
        from server.compose import client_env

        return cls(lambda: client_env(endpoint=runtime.endpoint()))

    @classmethod
    def for_engine(cls, engine: Any) -> StackCLI:
        """On the engine docker-py talks to (pre-flight has the Engine, not the runtime)."""
        from server.compose import client_env

        return cls(lambda: client_env(endpoint=engine.endpoint()))

    async def run(self, *argv: str, timeout_s: float | None = None, check: bool = True,
                  on_start: Callable[[int], None] | None = None) -> ProcessResult:
        docker = shutil.which("docker")
        if docker is None:
            raise SwarmUnavailable("the docker CLI is not on PATH; Swarm stacks need docker CLI >= 23",
                                   state="nothing was changed", next_step="install docker-ce-cli >= 23")
        result = await run_argv([docker, *argv], timeout_s=timeout_s or self.timeout_s, env=self._env(),
                                term_grace_s=3.0, on_start=on_start)
        if check and result.returncode != 0:
            from server.redact import scrub_seen

            tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
            raise DsmError(f"docker {' '.join(argv[:3])} failed: " + scrub_seen(" | ".join(tail) or "timed out")[:400],
                           state="see the deploy report", next_step="read the error; stack_status shows the tasks")
        return result

    async def check_version(self) -> str:
        """The CLI's version; SwarmUnavailable when it is older than 23 (says which one it found)."""
        result = await self.run("version", "--format", "{{.Client.Version}}", check=False, timeout_s=20)
        version = result.stdout.strip()
        major = version.split(".")[0]
        if not major.isdigit() or int(major) < MIN_CLI_MAJOR:
            raise SwarmUnavailable(
                f"docker stack deploy needs a docker CLI >= {MIN_CLI_MAJOR}; found {version or 'none'}"
                " (older CLIs reject Compose v2 files)", state="nothing was changed",
                next_step="install docker-ce-cli >= 23 (Docker's apt repository) and deploy again")
        self._checked = True
        return version

    async def info(self) -> SwarmInfo:
        out = await self.run("info", "--format", "{{json .Swarm}}", timeout_s=20)
        raw = json.loads(out.stdout or "{}") or {}
        return SwarmInfo(state=str(raw.get("LocalNodeState") or "inactive"), manager=bool(raw.get("ControlAvailable")),
                         node_id=str(raw.get("NodeID") or ""), nodes=int(raw.get("Nodes") or 0))

    async def require_manager(self) -> SwarmInfo:
        info = await self.info()
        if info.state != "active" or not info.manager:
            raise SwarmUnavailable(
                "this engine is not a swarm manager (swarm state: " + info.state
                + (", worker node" if info.state == "active" else "") + "): x-dsm mode: swarm needs one",
                state="nothing was changed",
                next_step="point DOCKER_HOST at a manager (docker node ls there), or `docker swarm init` "
                          "on this engine, or drop x-dsm mode: swarm to deploy with Compose")
        return info

    async def inspect(self, *ids: str) -> list[dict[str, Any]]:
        """``docker inspect`` of nodes, services or tasks (objects gone meanwhile are skipped)."""
        if not ids:
            return []
        out = await self.run("inspect", *ids, check=False, timeout_s=30)
        try:
            parsed = json.loads(out.stdout or "[]")
        except json.JSONDecodeError:
            parsed = []
        return [o for o in parsed if isinstance(o, dict)]

    async def nodes(self) -> list[dict[str, Any]]:
        out = await self.run("node", "ls", "-q", timeout_s=20)
        return await self.inspect(*out.stdout.split())

    async def services(self, stack: str) -> list[dict[str, Any]]:
        out = await self.run("service", "ls", "-q", "--filter", f"label={NAMESPACE_LABEL}={stack}", timeout_s=20)
        return await self.inspect(*out.stdout.split())

    async def tasks(self, stack: str) -> list[dict[str, Any]]:
        out = await self.run("stack", "ps", "-q", "--no-trunc", stack, check=False, timeout_s=30)
        return await self.inspect(*out.stdout.split()) if out.returncode == 0 else []

    async def all_services(self) -> list[dict[str, Any]]:
        out = await self.run("service", "ls", "-q", timeout_s=20)
        return await self.inspect(*out.stdout.split())

    async def deploy(self, file: str, stack: str, *, prune: bool = True, timeout_s: float = 120.0,
                     on_start: Callable[[int], None] | None = None) -> ProcessResult:
        # --resolve-image never: images moved by `docker save | docker load` (and images built
        # locally) have no registry digest; "always" would ask a registry for them and fail or
        # leave the nodes without an image. Each node resolves the reference on its own engine.
        # --with-registry-auth: the nodes pull private images with this client's credentials.
        # --detach=true: the convergence is judged by the gate (tasks across nodes), not the CLI.
        argv: Sequence[str] = ["stack", "deploy", "--detach=true", "--with-registry-auth",
                               "--resolve-image", "never", *(["--prune"] if prune else []), "-c", file, stack]
        return await self.run(*argv, timeout_s=timeout_s, on_start=on_start)

    async def service_rollback(self, name: str) -> ProcessResult:
        return await self.run("service", "rollback", "--detach", name, timeout_s=60)

    async def service_rm(self, *names: str) -> ProcessResult:
        return await self.run("service", "rm", *names, timeout_s=60)

    async def stack_rm(self, stack: str) -> ProcessResult:
        return await self.run("stack", "rm", stack, timeout_s=60)
