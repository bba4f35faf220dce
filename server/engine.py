"""The Docker engine, through docker-py: the only module that imports ``docker``.

docker-py is synchronous, so every call runs in a worker thread. The API version is negotiated
with the daemon (users run engines from Docker 20 to 28). ``DOCKER_HOST`` wins; otherwise the
current Docker context is honoured, as the docker CLI would. Errors become DockerUnavailable
(cannot reach the daemon) or EngineError (the daemon said no), with advice.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from server.errors import DockerUnavailable, EngineError
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.engine")

T = TypeVar("T")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"
_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_API_TIMEOUT_S = 30


class Engine:
    """Lazy docker-py client. Construction does no I/O; the first call connects."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    def _connect(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            import docker
            from docker.errors import DockerException

            try:
                if self.settings.docker_host:
                    client = docker.DockerClient(
                        base_url=self.settings.docker_host, version="auto", timeout=_API_TIMEOUT_S
                    )
                else:
                    client = _client_from_context(docker) or docker.DockerClient(
                        base_url="unix:///var/run/docker.sock", version="auto", timeout=_API_TIMEOUT_S
                    )
            except DockerException as exc:
                raise _unavailable(exc) from None
            self._client = client
            log.info("connected to Docker engine, API %s", client.api.api_version)
            return client

    async def call(self, fn: Callable[[Any], T], what: str) -> T:
        """Run ``fn(client)`` in a worker thread with errors mapped to ours."""

        def run() -> T:
            from docker.errors import APIError, DockerException, NotFound
            from requests.exceptions import ConnectionError as RequestsConnectionError
            from requests.exceptions import ReadTimeout

            client = self._connect()
            try:
                return fn(client)
            except NotFound:
                raise
            except APIError as exc:
                raise EngineError(
                    f"the Docker engine refused to {what}: {exc.explanation or exc}",
                    state="nothing was changed by this call",
                ) from None
            except (RequestsConnectionError, ReadTimeout) as exc:
                raise _unavailable(exc) from None
            except DockerException as exc:
                raise _unavailable(exc) from None

        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None

    # -- queries --------------------------------------------------------------------------
    async def version(self) -> dict[str, Any]:
        return await self.call(lambda c: c.version(), "report its version")

    async def info(self) -> dict[str, Any]:
        return await self.call(lambda c: c.info(), "report host information")

    async def compose_containers(self, project: str | None = None) -> list[ContainerSummary]:
        """Containers created by Compose (all states), optionally of one project. One API call."""
        label = f"{PROJECT_LABEL}={project}" if project else PROJECT_LABEL
        rows = await self.call(lambda c: c.api.containers(all=True, filters={"label": label}), "list containers")
        return [ContainerSummary.from_api(row) for row in rows]

    async def image_attrs(self, ref: str) -> dict[str, Any] | None:
        """``docker image inspect`` of a local image, or None when it is not present."""
        from docker.errors import ImageNotFound, NotFound

        def get(c: Any) -> dict[str, Any] | None:
            try:
                return dict(c.api.inspect_image(ref))
            except (ImageNotFound, NotFound):
                return None

        return await self.call(get, f"inspect image {ref}")


@dataclass(frozen=True)
class ContainerSummary:
    """The fields of ``GET /containers/json`` we use, without a per-container inspect."""

    id: str
    name: str
    project: str | None
    service: str | None
    state: str
    status: str
    health: str | None
    image: str | None
    ports: list[dict[str, Any]] = field(default_factory=list)
    created: int | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, row: dict[str, Any]) -> ContainerSummary:
        labels = row.get("Labels") or {}
        status = row.get("Status") or ""
        match = _HEALTH_IN_STATUS.search(status)
        health = match.group(1).replace("health: ", "") if match else None
        names = row.get("Names") or []
        return cls(
            id=row.get("Id", "")[:12],
            name=names[0].lstrip("/") if names else row.get("Id", "")[:12],
            project=labels.get(PROJECT_LABEL),
            service=labels.get(SERVICE_LABEL),
            state=row.get("State") or "unknown",
            status=status,
            health=health,
            image=row.get("Image"),
            ports=row.get("Ports") or [],
            created=row.get("Created"),
            labels=labels,
        )

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def healthy(self) -> bool:
        """Running and either healthy or without a healthcheck to say otherwise."""
        return self.running and self.health in (None, "healthy")


def _client_from_context(docker: Any) -> Any:
    """A client for the current docker context when it is not the default one."""
    try:
        from docker.context import ContextAPI

        context = ContextAPI.get_current_context()
    except Exception:  # a broken ~/.docker/config.json must not stop us from trying the socket
        log.debug("could not read the current docker context", exc_info=True)
        return None
    if context is None or context.Name == "default" or not context.Host:
        return None
    return docker.DockerClient(base_url=context.Host, tls=context.TLSConfig, version="auto", timeout=_API_TIMEOUT_S)


def _unavailable(exc: BaseException) -> DockerUnavailable:
    text = str(exc)
    if "Permission denied" in text:
        hint = "add this user to the docker group or point DOCKER_HOST at a socket it may use"
    elif "No such file" in text or "Connection refused" in text or "Connection aborted" in text:
        hint = "start the Docker daemon (systemctl start docker) or set DOCKER_HOST"
    else:
        hint = "check that the Docker daemon runs and DOCKER_HOST / the docker context point at it"
    return DockerUnavailable(
        f"the Docker engine cannot be reached ({text[:200]})",
        state="nothing was changed",
        next_step=hint,
    )
