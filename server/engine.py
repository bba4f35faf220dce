"""The Docker engine, through docker-py: the only module that imports ``docker``.

docker-py is synchronous, so every call runs in a worker thread. The API version is negotiated
with the daemon (users run engines from Docker 20 to 28). The engine is the runtime's one
endpoint (:mod:`server.endpoint`: DOCKER_HOST, else DOCKER_CONTEXT, else the CLI's current
context), the same one Compose is pointed at. Errors become DockerUnavailable (cannot reach the
daemon) or EngineError (the daemon said no), with advice.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar

import anyio

from server.endpoint import Endpoint, EndpointSource
from server.errors import DockerUnavailable, EngineError
from server.settings import Settings
from server.statefiles import open_private

if TYPE_CHECKING:
    from server.registry import ImageConfig, RegistryView, TagDigest
    from server.sshbridge import SshBridge

log = logging.getLogger("docker_stack_mcp.engine")

T = TypeVar("T")
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"
_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_API_TIMEOUT_S = 30
HELPER_LABEL = "dsm.helper"
"""Containers we create for our own work (archives, restore drills); always removed after use."""
SCRATCH_LABEL = "dsm.scratch"
HELPER_PREFIX = "dsm-helper-"
_CHUNK = 1 << 20
_STDOUT_HEAD = 64 * 1024
_PIPELINE_DEPTH = 8
_STDERR_TAIL = 16 * 1024
_STREAM_TIMEOUT_S = 900  # one read of an archive or exec stream; a stalled engine still ends the call
RegistryState = Literal["present", "absent", "unreachable"]


class Engine:
    """Lazy docker-py client. Construction does no I/O; the first call connects."""

    def __init__(self, settings: Settings, endpoint: EndpointSource | None = None) -> None:
        self.settings = settings
        self.endpoint_source = endpoint or EndpointSource(settings)
        """Shared with the runtime's ComposeRunner: both act on the same engine."""
        self._client: Any = None
        self._stream_client: Any = None
        self._bridge: SshBridge | None = None
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------
    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._new_client(_API_TIMEOUT_S)
                log.info("connected to Docker engine, API %s", self._client.api.api_version)
            return self._client

    def _connect_streaming(self) -> Any:
        """A second client for archives and exec streams: a read may legitimately wait minutes
        (a dump of a big table), which the 30 s timeout of the query client would cut short."""
        with self._lock:
            if self._stream_client is None:
                self._stream_client = self._new_client(_STREAM_TIMEOUT_S)
            return self._stream_client

    def endpoint(self) -> Endpoint:
        """The engine this adapter talks to; raises DockerUnavailable when it cannot be resolved."""
        return self.endpoint_source.get()

    def _new_client(self, timeout: float) -> Any:
        import docker
        from docker.errors import DockerException

        endpoint = self.endpoint()
        try:
            tls: Any = False
            if endpoint.tls is not None:
                from docker.tls import TLSConfig

                material = endpoint.tls
                tls = TLSConfig(
                    client_cert=(material.cert, material.key) if material.cert and material.key else None,
                    ca_cert=material.ca,
                    verify=material.verify,  # with ca_cert: that CA; without: the system's CAs
                )
            base_url = endpoint.host
            if base_url.startswith("ssh://"):  # through the docker CLI's own ssh transport (server.sshbridge)
                if self._bridge is None:
                    from server.sshbridge import SshBridge

                    self._bridge = SshBridge(base_url)
                base_url = self._bridge.host
            return docker.DockerClient(base_url=base_url, tls=tls, version="auto", timeout=timeout)
        except DockerException as exc:
            raise _unavailable(exc, endpoint) from None

    async def call(self, fn: Callable[[Any], T], what: str, *, streaming: bool = False) -> T:
        """Run ``fn(client)`` in a worker thread with errors mapped to ours.

        ``streaming`` uses the long-timeout client (archives, exec streams)."""

        def run() -> T:
            from docker.errors import APIError, DockerException, NotFound
            from requests.exceptions import ConnectionError as RequestsConnectionError
            from requests.exceptions import ReadTimeout

            client = self._connect_streaming() if streaming else self._connect()
            try:
                return fn(client)
            except NotFound:
                raise
            except APIError as exc:
                raise EngineError(
                    f"the Docker engine refused to {what}: {exc.explanation or exc}",
                    # Only this one engine request is known not to have happened: the tool call it
                    # is part of may have changed things before it (a deploy after its backup).
                    state="the engine did not carry out this request",
                ) from None
            except (RequestsConnectionError, ReadTimeout) as exc:
                raise _unavailable(exc, self.endpoint()) from None
            except DockerException as exc:
                raise _unavailable(exc, self.endpoint()) from None

        return await anyio.to_thread.run_sync(run, abandon_on_cancel=True)

    def close(self) -> None:
        with self._lock:
            clients, self._client, self._stream_client = (self._client, self._stream_client), None, None
            bridge, self._bridge = self._bridge, None
        for client in clients:
            if client is not None:
                client.close()
        if bridge is not None:
            bridge.close()

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

    def project_state_blocking(self, project: str) -> list[dict[str, Any]]:
        """Blocking, for crash recovery (which runs inside a synchronous ``begin``): per container
        of ``project`` its service, name, state, health and image. Raises DockerUnavailable."""
        from docker.errors import DockerException
        from requests.exceptions import RequestException

        try:
            rows = self._connect().api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
        except (DockerException, RequestException) as exc:
            raise _unavailable(exc, self.endpoint()) from None
        return [
            {"service": c.service, "name": c.name, "state": c.state, "health": c.health, "image": c.image}
            for c in map(ContainerSummary.from_api, rows)
        ]

    async def image_attrs(self, ref: str) -> dict[str, Any] | None:
        """``docker image inspect`` of a local image, or None when it is not present."""
        from docker.errors import ImageNotFound, NotFound

        def get(c: Any) -> dict[str, Any] | None:
            try:
                return dict(c.api.inspect_image(ref))
            except (ImageNotFound, NotFound):
                return None

        return await self.call(get, f"inspect image {ref}")

    # -- host preflight ---------------------------------------------------------------------
    def endpoint_url(self) -> str:
        """Where the engine is (the runtime's endpoint's host URL); used to decide whether host
        figures can be read from this machine (a unix socket) or must come through the API."""
        return self.endpoint().host

    async def running_containers(self) -> list[RunningContainer]:
        """Every running container (Compose or not), with its full id. One API call."""
        rows = await self.call(lambda c: c.api.containers(all=False), "list containers")
        return [RunningContainer(full_id=row.get("Id", ""), summary=ContainerSummary.from_api(row)) for row in rows]

    async def registry_state(self, ref: str, timeout_s: float) -> tuple[RegistryState, str]:
        """Ask the engine whether ``ref``'s registry has it, without pulling (distribution inspect).

        Returns ``(state, detail)`` with state ``present``, ``absent`` (the registry answered: no
        such manifest, or it needs a login) or ``unreachable`` (no answer within ``timeout_s``,
        DNS, TLS or connection failures: we could not verify).
        """

        def get(c: Any) -> tuple[RegistryState, str]:
            from docker import auth
            from docker.errors import APIError
            from requests.exceptions import ReadTimeout

            api = c.api
            headers = {}
            registry, _ = auth.resolve_repository_name(ref)
            header = auth.get_config_header(api, registry)
            if header:
                headers["X-Registry-Auth"] = header
            try:
                response = api._get(api._url("/distribution/{0}/json", ref), headers=headers, timeout=timeout_s)
                data = api._result(response, True)
            except ReadTimeout:
                return "unreachable", f"could not verify: the registry did not answer within {timeout_s:g}s"
            except APIError as exc:
                return _registry_error(exc)
            digest = ((data or {}).get("Descriptor") or {}).get("digest") or ""
            return "present", f"registry has it{' at ' + digest if digest else ''}"

        return await self.call(get, f"check the registry for {ref}")

    async def registry_image_config(self, ref: str, view: RegistryView, timeout_s: float) -> ImageConfig:
        """``ref``'s config read from its registry without pulling (:mod:`server.registry`).

        Runs in a worker thread, bounded by ``timeout_s``; the docker CLI's stored credentials
        for the registry are used when there are some (config.json, credential helpers).
        """
        from server.registry import read_image_config

        return await anyio.to_thread.run_sync(
            lambda: read_image_config(ref, view, timeout_s=timeout_s, credentials=self._credentials),
            abandon_on_cancel=True,
        )

    async def registry_digest(
        self, ref: str, view: RegistryView, timeout_s: float, *, direct: bool = True
    ) -> TagDigest:
        """The digest ``ref``'s tag points at in its registry now, without pulling.

        ``direct``: one HEAD of the manifest from here (:func:`server.registry.read_digest`, with the
        CLI's stored credentials). Otherwise (a remote engine's loopback registry, which only the
        engine can reach) through the engine's distribution API. Never raises for the registry.
        """
        from server.registry import TagDigest, read_digest

        if direct:
            return await anyio.to_thread.run_sync(
                lambda: read_digest(ref, view, timeout_s=timeout_s, credentials=self._credentials),
                abandon_on_cancel=True,
            )
        try:
            state, detail = await self.registry_state(ref, timeout_s)
        except EngineError as exc:
            return TagDigest("unreachable", f"could not verify: {exc.what}")
        digest = detail.rsplit(" at ", 1)[-1] if state == "present" and " at sha256:" in detail else None
        return TagDigest(state if digest or state != "present" else "unreachable", detail, digest)

    def _credentials(self, registry: str) -> tuple[str, str] | None:
        """The docker CLI's stored credentials for ``registry`` (config.json, credential helpers)."""
        try:
            from docker import auth

            client = self._connect()
            found = auth.resolve_authconfig(client.api._auth_configs, registry) or {}
        except Exception:  # a broken credential store means: anonymous, as the CLI would try
            log.debug("no credentials for %s", registry, exc_info=True)
            return None
        user, password = found.get("username") or found.get("Username"), found.get("password") or found.get(
            "Password")
        return (str(user), str(password)) if user and password else None

    async def container_stats(self, container_id: str, *, one_shot: bool = False) -> dict[str, Any] | None:
        """One ``docker stats`` sample; None when the container is gone.

        The engine takes about a second for a full sample (it waits for two CPU readings);
        ``one_shot`` answers at once, with memory but without a CPU delta (API 1.41+).
        """
        from docker.errors import APIError, InvalidVersion

        def get(c: Any) -> dict[str, Any] | None:
            try:
                try:
                    return dict(c.api.stats(container_id, stream=False, one_shot=one_shot or None))
                except InvalidVersion:  # engines older than API 1.41
                    return dict(c.api.stats(container_id, stream=False))
            except ValueError:  # an empty body from a container being removed
                return None
            except APIError as exc:  # gone, or a 409 while it is being removed
                if vanished(exc):
                    return None
                raise

        return await self.call(get, f"read stats of container {container_id[:12]}")

    # -- volumes, helper containers, archives and exec streams (backups) ----------------------
    # Archives and dumps never pass through memory whole: every stream is copied in chunks of
    # _CHUNK bytes to or from a file, hashed on the way.

    async def project_volumes(self, project: str) -> list[dict[str, Any]]:
        """Named volumes Compose created for ``project`` (label com.docker.compose.project)."""
        data = await self.call(
            lambda c: c.api.volumes(filters={"label": f"{PROJECT_LABEL}={project}"}), "list volumes"
        )
        return sorted((data or {}).get("Volumes") or [], key=lambda v: v.get("Name", ""))

    async def volume_attrs(self, name: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        def get(c: Any) -> dict[str, Any] | None:
            try:
                return dict(c.api.inspect_volume(name))
            except NotFound:
                return None

        return await self.call(get, f"inspect volume {name}")

    async def create_volume(
        self, name: str, *, labels: dict[str, str], driver: str = "local", options: dict[str, str] | None = None
    ) -> None:
        await self.call(
            lambda c: c.api.create_volume(name, driver=driver, driver_opts=options or None, labels=labels),
            f"create volume {name}",
        )

    async def remove_volume(self, name: str) -> None:
        """Remove a volume; a volume already gone is not an error."""
        from docker.errors import NotFound

        def rm(c: Any) -> None:
            with contextlib.suppress(NotFound):
                c.api.remove_volume(name)

        await self.call(rm, f"remove volume {name}")

    async def create_helper(
        self, image: str, volumes: dict[str, str], *, purpose: str, labels: dict[str, str] | None = None
    ) -> str:
        """A container that is created and never started, with ``volumes`` (name -> path) mounted.

        The engine's archive API reads and writes a stopped container's volumes, so nothing runs:
        any local image will do (the service's own, even a distroless one), and nothing is pulled.
        Remove it with :meth:`remove_container` (in a ``finally``). ``labels`` are added to ours
        (the backups label their helpers with stack and owner, so recovery finds orphans).
        """
        name = f"{HELPER_PREFIX}{_slug(purpose)}-{secrets.token_hex(4)}"

        def create(c: Any) -> str:
            host_config = c.api.create_host_config(
                binds={vol: {"bind": path, "mode": "rw"} for vol, path in volumes.items()}
            )
            return str(
                c.api.create_container(
                    image,
                    entrypoint=["/dsm-helper-never-started"],
                    command=[],
                    name=name,
                    labels={**(labels or {}), HELPER_LABEL: "1"},
                    host_config=host_config,
                    network_disabled=True,
                )["Id"]
            )

        return await self.call(create, f"create helper container {name} from {image}")

    async def run_scratch(self, image: str, *, env: dict[str, str], purpose: str) -> str:
        """Start a throw-away container (no network, labelled scratch) from a local image; returns its id.

        Used by restore drills (a scratch database). Remove it with :meth:`remove_container`.
        """
        name = f"{HELPER_PREFIX}{_slug(purpose)}-{secrets.token_hex(4)}"

        def run(c: Any) -> str:
            host_config = c.api.create_host_config(network_mode="none", auto_remove=False)
            cid = str(
                c.api.create_container(
                    image, name=name, environment=env, labels={HELPER_LABEL: "1", SCRATCH_LABEL: "1"},
                    host_config=host_config,
                )["Id"]
            )
            try:
                c.api.start(cid)
            except Exception:
                c.api.remove_container(cid, force=True, v=True)
                raise
            return cid

        return await self.call(run, f"start scratch container {name} from {image}")

    async def remove_container(self, container_id: str) -> None:
        """Force-remove a container with its anonymous volumes; gone already is fine. Never cancelled
        half-way: callers use it for cleanup."""
        from docker.errors import NotFound

        def rm(c: Any) -> None:
            with contextlib.suppress(NotFound):
                c.api.remove_container(container_id, force=True, v=True)

        with anyio.CancelScope(shield=True):
            await self.call(rm, f"remove container {container_id[:12]}")

    async def stop_container(self, container_id: str, timeout_s: int = 30) -> None:
        await self.call(lambda c: c.api.stop(container_id, timeout=timeout_s), f"stop container {container_id[:12]}")

    async def start_container(self, container_id: str) -> None:
        await self.call(lambda c: c.api.start(container_id), f"start container {container_id[:12]}")

    async def container_attrs(self, container_id: str) -> dict[str, Any] | None:
        """``docker inspect`` of a container, or None when it is gone."""
        from docker.errors import NotFound

        def get(c: Any) -> dict[str, Any] | None:
            try:
                return dict(c.api.inspect_container(container_id))
            except NotFound:
                return None

        return await self.call(get, f"inspect container {container_id[:12]}")

    async def archive_to_file(self, container_id: str, path: str, dest: Path) -> StreamedFile:
        """Stream ``GET /containers/{id}/archive?path=`` (a tar) into ``dest``, hashing as it writes.

        Pass ``/dir/.`` to get the directory's content with ``./`` names (restorable anywhere).
        """

        def stream(c: Any) -> StreamedFile:
            chunks, _stat = c.api.get_archive(container_id, path, chunk_size=_CHUNK)
            return _write_stream(chunks, dest)

        return await self.call(stream, f"archive {path} of container {container_id[:12]}", streaming=True)

    async def read_archive(self, container_id: str, path: str, consume: Callable[[BinaryIO], T]) -> T:
        """Stream an archive of ``path`` into ``consume(file_like)`` (run in the worker thread)."""

        def stream(c: Any) -> T:
            chunks, _stat = c.api.get_archive(container_id, path, chunk_size=_CHUNK)
            return consume(io.BufferedReader(_ChunkReader(chunks), buffer_size=_CHUNK))

        return await self.call(stream, f"read {path} of container {container_id[:12]}", streaming=True)

    async def put_archive_from_file(self, container_id: str, path: str, src: Path) -> None:
        """Extract the tar in ``src`` at ``path`` in the container (streamed from disk, not loaded)."""

        def put(c: Any) -> None:
            with src.open("rb") as handle:
                c.api.put_archive(container_id, path, handle)

        await self.call(put, f"extract an archive into {path} of container {container_id[:12]}", streaming=True)

    async def exec_stream(
        self,
        container_id: str,
        argv: list[str],
        *,
        stdout_to: Path | None = None,
        stdin_from: Path | None = None,
        env: dict[str, str] | None = None,
        user: str = "",
        timeout_s: float = 3600,
    ) -> ExecResult:
        """Run ``argv`` in a running container; stdout streams to ``stdout_to`` (hashed) and
        ``stdin_from`` streams to its stdin, both in chunks.

        Without ``stdout_to`` the first 64 KiB of stdout are kept in the result. stderr keeps its
        last 16 KiB. A run past ``timeout_s`` is cut off (its socket shut) and reported as exit
        code -1 with ``timed_out``.
        """

        def run(c: Any) -> ExecResult:
            api = c.api
            exec_id = api.exec_create(
                container_id, argv, stdout=True, stderr=True, stdin=stdin_from is not None,
                environment=env or None, user=user,
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
            raw = getattr(sock, "_sock", sock)
            timed_out = threading.Event()

            def cut() -> None:
                timed_out.set()
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)

            timer = threading.Timer(timeout_s, cut)
            timer.daemon = True
            timer.start()
            try:
                writer = None
                if stdin_from is not None:
                    # A separate thread feeds stdin while this one drains the output: a program
                    # that answers as it reads (psql) would otherwise block us both on full buffers.
                    writer = threading.Thread(target=_feed_socket, args=(raw, stdin_from), daemon=True)
                    writer.start()
                result = _drain_exec(sock, stdout_to)
                if writer is not None:
                    writer.join(timeout=5)
            finally:
                timer.cancel()
                with contextlib.suppress(Exception):
                    sock.close()
            code = None
            for _ in range(50):  # the stream ends a moment before the engine records the exit code
                info = api.exec_inspect(exec_id)
                if not info.get("Running"):
                    code = info.get("ExitCode")
                    break
                time.sleep(0.1)
            if timed_out.is_set():
                return replace(result, exit_code=-1, timed_out=True)
            return replace(result, exit_code=-1 if code is None else int(code))

        return await self.call(run, f"run {argv[0]} in container {container_id[:12]}", streaming=True)

    async def tag_image(self, image_id: str, repository: str, tag: str) -> None:
        await self.call(lambda c: c.api.tag(image_id, repository, tag), f"tag image {repository}:{tag}")

    async def remove_image_tag(self, ref: str) -> bool:
        """Untag ``ref`` (the image itself goes only when nothing else tags or uses it).
        Returns False when the tag was already gone."""
        from docker.errors import ImageNotFound, NotFound

        def rm(c: Any) -> bool:
            try:
                c.api.remove_image(ref, noprune=False)
                return True
            except (ImageNotFound, NotFound):
                return False

        return await self.call(rm, f"remove image tag {ref}")

    async def images_with_prefix(self, repository_prefix: str) -> list[str]:
        """Local tags (repo:tag) whose repository starts with ``repository_prefix``."""
        rows = await self.call(lambda c: c.api.images(), "list images")
        return sorted(t for row in rows for t in (row.get("RepoTags") or [])
                      if t.startswith(repository_prefix) and not t.startswith("<none>"))


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
    image_id: str | None = None
    """The full image id (sha256:...) the container was created from."""
    volumes: dict[str, str] = field(default_factory=dict)
    """Named volumes mounted: volume name -> path in the container."""
    networks: tuple[str, ...] | None = None
    """Names of the networks the container is attached to now (None: the engine did not say)."""

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
            image_id=row.get("ImageID"),
            volumes={m["Name"]: m.get("Destination", "") for m in row.get("Mounts") or []
                     if m.get("Type") == "volume" and m.get("Name")},
            networks=tuple(sorted((row["NetworkSettings"].get("Networks") or {}).keys()))
            if isinstance(row.get("NetworkSettings"), dict) else None,
        )

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def healthy(self) -> bool:
        """Running and either healthy or without a healthcheck to say otherwise."""
        return self.running and self.health in (None, "healthy")


@dataclass(frozen=True)
class RunningContainer:
    full_id: str
    """The 64-character id (cgroup paths use it)."""
    summary: ContainerSummary


_ABSENT_HINTS = ("manifest unknown", "not found", "name unknown", "repository does not exist", "unauthorized",
                 "denied", "no such image")


def _registry_error(exc: Any) -> tuple[RegistryState, str]:
    """Classify a distribution-inspect error: the registry said no, or we could not reach it."""
    text = str(getattr(exc, "explanation", None) or exc)
    status = getattr(exc, "status_code", None)
    lowered = text.lower()
    if status in (401, 403, 404) or any(h in lowered for h in _ABSENT_HINTS):
        login = " (or it is private and needs docker login)" if "unauthorized" in lowered or "denied" in lowered else ""
        return "absent", f"registry answered: {text[:200]}{login}"
    return "unreachable", f"could not verify: {text[:200]}"


def _unavailable(exc: BaseException, endpoint: Endpoint | None = None) -> DockerUnavailable:
    text = str(exc)
    if endpoint is not None and endpoint.source in ("DOCKER_CONTEXT", "currentContext"):
        hint = (f"start the engine that docker context {endpoint.name!r} points at, or choose another engine "
                "(DOCKER_CONTEXT, `docker context use`, DOCKER_HOST) and restart the server")
    elif "Permission denied" in text:
        hint = "add this user to the docker group or point DOCKER_HOST at a socket it may use"
    elif "No such file" in text or "Connection refused" in text or "Connection aborted" in text:
        hint = "start the Docker daemon (systemctl start docker) or set DOCKER_HOST"
    else:
        hint = "check that the Docker daemon runs and DOCKER_HOST / the docker context point at it"
    where = f" at {endpoint.describe()}" if endpoint is not None else ""
    return DockerUnavailable(
        f"the Docker engine{where} cannot be reached ({text[:200]})",
        state="nothing was changed",
        next_step=hint,
    )


@dataclass(frozen=True)
class StreamedFile:
    """A stream written to disk: its size and sha256 (hex)."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout_bytes: int
    sha256: str | None
    """sha256 of stdout when it went to a file."""
    stdout: str
    """The start of stdout (64 KiB) when it did not go to a file."""
    stderr: str
    """The last 16 KiB of stderr."""
    timed_out: bool = False


def _write_stream(chunks: Iterable[bytes], dest: Path) -> StreamedFile:
    """Write ``chunks`` to ``dest`` and hash them. A second thread hashes while this one keeps
    reading from the engine (hashlib and socket reads both release the GIL), so the sha256 costs
    little wall time; the queue between them holds at most _PIPELINE_DEPTH chunks."""
    digest = hashlib.sha256()
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=_PIPELINE_DEPTH)
    failure: list[BaseException] = []

    def hash_chunks() -> None:
        try:
            while (chunk := pending.get()) is not None:
                digest.update(chunk)
        except BaseException as exc:  # reported by the writer below; keep draining so it never blocks
            failure.append(exc)
            while pending.get() is not None:
                pass

    hasher = threading.Thread(target=hash_chunks, name="dsm-sha256", daemon=True)
    hasher.start()
    size = 0
    try:
        with open_private(dest) as out:  # backups are state: 0600 (server.statefiles)
            for chunk in chunks:
                if chunk:
                    pending.put(chunk)
                    out.write(chunk)
                    size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    finally:
        pending.put(None)
        hasher.join()
    if failure:
        raise failure[0]
    return StreamedFile(bytes=size, sha256=digest.hexdigest())


class _ChunkReader(io.RawIOBase):
    """A read-only file object over an iterator of byte chunks (for ``tarfile.open(mode='r|')``)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _feed_socket(raw: Any, src: Path) -> None:
    """Copy ``src`` to the exec's stdin in chunks, then half-close so the program sees EOF."""
    try:
        with src.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                raw.sendall(chunk)
    except OSError:
        log.debug("exec stdin closed early", exc_info=True)
    finally:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)


def _drain_exec(sock: Any, stdout_to: Path | None) -> ExecResult:
    """Demultiplex an exec stream: stdout to a file (hashed) or a bounded buffer, stderr's tail kept."""
    from docker.utils.socket import STDERR, frames_iter

    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    tail = bytearray()
    out = open_private(stdout_to) if stdout_to is not None else None
    try:
        for stream, data in frames_iter(sock, False):
            if not data:
                continue
            if stream == STDERR:
                tail += data
                del tail[: max(0, len(tail) - _STDERR_TAIL)]
            elif out is not None:
                out.write(data)
                digest.update(data)
                size += len(data)
            else:
                size += len(data)
                head += data[: max(0, _STDOUT_HEAD - len(head))]
    except OSError:
        log.debug("exec stream ended with a socket error", exc_info=True)
    finally:
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
            out.close()
    return ExecResult(
        exit_code=-1,
        stdout_bytes=size,
        sha256=digest.hexdigest() if out is not None else None,
        stdout=bytes(head).decode("utf-8", "replace"),
        stderr=bytes(tail).decode("utf-8", "replace"),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-.")[:60] or "x"


# -- monitoring (stack_status, stack_logs, diagnose_stack, the watcher) ---------------------------


def vanished(exc: BaseException) -> bool:
    """The engine's answers for a container that is gone or going: NotFound, or a 409 conflict
    ("removal of container ... is already in progress", "... is dead or marked for removal").
    A read (inspect, logs, stats) that meets one treats the container as gone, never as an error:
    a deploy or rollback replaces containers while the gate and verify read them."""
    from docker.errors import APIError, NotFound

    if isinstance(exc, NotFound):
        return True
    if not isinstance(exc, APIError):
        return False
    text = str(exc.explanation or exc).lower()
    if "no such container" in text:
        return True
    return exc.status_code == 409 and any(w in text for w in ("removal", "being removed", "marked for"))


async def inspect_container(engine: Engine, container_id: str) -> dict[str, Any] | None:
    """``docker inspect`` of one container; None when it is gone (or being removed)."""
    from docker.errors import APIError

    def get(c: Any) -> dict[str, Any] | None:
        try:
            return dict(c.api.inspect_container(container_id))
        except APIError as exc:
            if vanished(exc):
                return None
            raise

    return await engine.call(get, f"inspect container {container_id[:12]}")


async def container_logs(
    engine: Engine, container_id: str, *, tail: int, since: float | None = None, until: float | None = None
) -> list[str]:
    """The last ``tail`` log lines (stdout and stderr, with RFC3339 timestamps); [] when gone.

    Bounded by ``tail`` on the engine side, so a chatty container never fills our memory.
    """
    found = await read_logs(engine, container_id, tail=tail, since=since, until=until)
    return [] if found is None else found


async def read_logs(
    engine: Engine, container_id: str, *, tail: int, since: float | None = None, until: float | None = None
) -> list[str] | None:
    """As container_logs, but None when the container is gone or being removed."""
    from docker.errors import APIError

    def get(c: Any) -> list[str] | None:
        try:
            raw = c.api.logs(container_id, stdout=True, stderr=True, timestamps=True, tail=tail,
                             since=since, until=until)
        except APIError as exc:
            if vanished(exc):
                return None
            raise
        return raw.decode("utf-8", "replace").splitlines()

    return await engine.call(get, f"read logs of container {container_id[:12]}")


async def restart_container(engine: Engine, container_id: str, timeout_s: int = 10) -> None:
    await engine.call(lambda c: c.api.restart(container_id, timeout=timeout_s), f"restart {container_id[:12]}")


async def start_container(engine: Engine, container_id: str) -> None:
    await engine.call(lambda c: c.api.start(container_id), f"start {container_id[:12]}")


async def stop_container(engine: Engine, container_id: str, timeout_s: int = 10) -> None:
    await engine.call(lambda c: c.api.stop(container_id, timeout=timeout_s), f"stop {container_id[:12]}")


async def remove_container(engine: Engine, container_id: str) -> None:
    """Remove a stopped container; its named volumes are kept (v=False)."""
    await engine.call(lambda c: c.api.remove_container(container_id, v=False, force=True),
                      f"remove {container_id[:12]}")


async def run_probe(
    engine: Engine, image: str, argv: list[str], network: str, labels: dict[str, str], timeout_s: float = 20
) -> tuple[int | None, str]:
    """Run ``argv`` in a short-lived container on ``network`` (image already local, never pulled).

    Returns (exit code or None on timeout, output). The container is always removed.
    """

    def run(c: Any) -> tuple[int | None, str]:
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import ReadTimeout

        api = c.api
        created = api.create_container(
            image, command=argv, entrypoint=[], labels=labels, user="0",
            host_config=api.create_host_config(network_mode=network, auto_remove=False),
        )
        cid = created["Id"]
        try:
            api.start(cid)
            try:
                result = api.wait(cid, timeout=timeout_s)
                code: int | None = int(result.get("StatusCode", -1))
            except (ReadTimeout, RequestsConnectionError):
                code = None
            out = api.logs(cid, stdout=True, stderr=True, tail=50).decode("utf-8", "replace")
            return code, out
        finally:
            try:
                api.remove_container(cid, force=True)
            except Exception:  # best effort: the label lets a sweep find it
                log.debug("probe container %s not removed", cid[:12], exc_info=True)

    return await engine.call(run, f"run a probe on network {network}")


def events_iter(engine: Engine, since: int | None, filters: dict[str, Any], until: int | None = None) -> Any:
    """A blocking iterator of decoded engine events (call from a worker thread); with ``until``
    the engine ends the stream at that time."""
    client = engine._connect()
    return client.api.events(since=since, until=until, filters=filters, decode=True)


async def events_between(engine: Engine, since: int, until: int, filters: dict[str, Any]) -> list[dict[str, Any]]:
    """Engine events in [since, until] (the engine answers and closes: no stream left open)."""
    return await engine.call(
        lambda c: list(c.api.events(since=since, until=until, filters=filters, decode=True)), "list events"
    )


# -- deployment support (server/deploy) -------------------------------------------------------
# Free functions over Engine.call, next to the monitoring ones the deploy reuses (inspect_container,
# container_logs, run_probe).


async def exec_in(engine: Engine, container_id: str, argv: list[str], *, timeout_s: float = 30) -> tuple[int, str]:
    """Run ``argv`` in a running container; (exit code, combined output tail). No shell."""

    def run(c: Any) -> tuple[int, str]:
        api = c.api
        exec_id = api.exec_create(container_id, argv, stdout=True, stderr=True)["Id"]
        output = api.exec_start(exec_id, stream=False, demux=False)
        code = api.exec_inspect(exec_id).get("ExitCode")
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return (code if isinstance(code, int) else -1), text[-4000:]

    with anyio.fail_after(timeout_s):
        return await engine.call(run, f"exec in container {container_id[:12]}")


async def tag_image(engine: Engine, image_id: str, ref: str) -> None:
    """Tag a local image (``docker tag``)."""
    repo, _, tag = ref.rpartition(":")
    await engine.call(lambda c: c.api.tag(image_id, repo, tag, force=True), f"tag image {image_id[:19]}")


async def object_names(engine: Engine, kind: Literal["volume", "network"]) -> set[str]:
    """Names of every volume or network on the engine (one API call)."""

    def get(c: Any) -> set[str]:
        if kind == "volume":
            return {v["Name"] for v in (c.api.volumes().get("Volumes") or [])}
        return {n["Name"] for n in c.api.networks()}

    return await engine.call(get, f"list {kind}s")


async def image_attrs_digest(engine: Engine, image_id: str) -> str | None:
    """The registry digest of a local image (``repo@sha256:...``), else its id."""
    attrs = await engine.image_attrs(image_id)
    if not attrs:
        return None
    digests = attrs.get("RepoDigests") or []
    return str(digests[0]) if digests else str(attrs.get("Id") or image_id)
