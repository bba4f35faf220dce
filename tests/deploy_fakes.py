"""Fakes at the deploy pipeline's own seams (Runtime.engine/compose/operations/memory/backups), for
unit tests of its decisions: what is done, in which order, what is recorded. Every fake appends
to one shared ``events`` list, so a test can assert the order across them. The real engine tests
(tests/test_deploy_engine.py) remain the test of the capability itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from server.backups.models import BackupManifest, DatabaseDump, PinnedImage
from server.deploy import override
from server.deploy.compose_executor import ComposeExecutor
from server.deploy.executor import Change
from server.deploy.health import GateResult, Watched
from server.deploy.plan import IMAGE_LABEL
from server.deploy.report import BackupPlan, DeployPlan, ServicePlan
from server.deploy.steps import StepLog
from server.engine import ContainerSummary
from server.errors import DsmError, StackBusy
from server.runtime import Runtime
from server.settings import Settings
from server.stackmodel import LoadedStack, SourceLines
from server.xdsm import parse_service_settings, parse_stack_settings

STACK = "unit"


# -- engine ----------------------------------------------------------------------------------------
class _Api:
    """The docker-py APIClient calls the engine helpers make (inspect, logs, tag)."""

    def __init__(self, engine: FakeEngine) -> None:
        self._engine = engine

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        from docker.errors import NotFound

        if container_id in self._engine.read_errors:
            raise self._engine.read_errors[container_id]
        later = self._engine.later.get(container_id)
        if later and container_id in self._engine.inspected:  # the container changes between polls
            self._engine.infos[container_id] = later.pop(0)
        self._engine.inspected.add(container_id)
        info = self._engine.infos.get(container_id)
        if info is None:
            raise NotFound(f"no container {container_id}")
        return info

    def logs(self, container_id: str, *, tail: int, **_: Any) -> bytes:
        if container_id in self._engine.log_errors:
            raise self._engine.log_errors[container_id]
        lines = self._engine.logs.get(container_id, [])[-tail:]
        return "".join(f"2026-01-01T00:00:00Z {ln}\n" for ln in lines).encode()

    def tag(self, image_id: str, repo: str, tag: str, force: bool = False) -> None:
        self._engine.events.append(("tag", image_id, f"{repo}:{tag}"))

    def containers(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``docker ps`` rows (server.ownership): the stack's containers, started from its directory."""
        return [{"Id": c.id, "Names": [f"/{c.name}"], "State": c.state, "Image": c.image, "Mounts": [],
                 "Labels": {**c.labels, "com.docker.compose.project.working_dir": str(self._engine.directory)}}
                for c in self._engine.containers]

    def stop(self, container_id: str, timeout: int = 10) -> None:
        self._engine.events.append(("stop", container_id))


class FakeEngine:
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events
        self.containers: list[ContainerSummary] = []
        self.infos: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[str]] = {}
        self.log_errors: dict[str, Exception] = {}
        """What reading a container's logs raises (a 409 while it is being removed, NotFound)."""
        self.read_errors: dict[str, Exception] = {}
        """What inspecting a container raises."""
        self.images: dict[str, dict[str, Any]] = {}
        self.later: dict[str, list[dict[str, Any]]] = {}
        self.inspected: set[str] = set()
        """Inspect results a container moves through, one per later inspect."""
        self.directory: Path | None = None
        """The stack directory its containers were started from (their working_dir label)."""
        self.api = _Api(self)

    def add(self, service: str, *, status: str = "running", health: str | None = "healthy", restarts: int = 0,
            exit_code: int = 0, oom: bool = False, image_id: str | None = None, oneoff: bool = False,
            started_ago: float = 3600.0, cid: str | None = None) -> str:
        """A container of ``service`` as `docker ps` and `docker inspect` show it."""
        import time

        cid = cid or f"{service}-c{len(self.containers)}"
        labels = {"com.docker.compose.project": STACK, "com.docker.compose.service": service}
        if image_id:
            labels[IMAGE_LABEL] = image_id
        if oneoff:
            labels["com.docker.compose.oneoff"] = "True"
        self.containers.append(ContainerSummary(
            id=cid, name=f"{STACK}-{service}-1", project=STACK, service=service, state=status, status=status,
            health=health, image=f"img/{service}", labels=labels))
        started = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(time.time() - started_ago))
        state: dict[str, Any] = {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "StartedAt": started}
        if health:
            state["Health"] = {"Status": health, "Log": [{"Output": f"{service} probe"}]}
        self.infos[cid] = {"Id": cid, "Name": f"/{STACK}-{service}-1", "State": state, "RestartCount": restarts}
        return cid

    async def compose_containers(self, project: str | None = None) -> list[ContainerSummary]:
        # Strict: the pipeline only ever asks for its own stack (None would list every project).
        assert project == STACK, f"containers of {project!r} asked for"
        return list(self.containers)

    async def image_attrs(self, ref: str) -> dict[str, Any] | None:
        return self.images.get(ref)

    async def call(self, fn: Callable[[Any], Any], what: str) -> Any:
        return fn(self)

    def close(self) -> None:
        pass


# -- compose ---------------------------------------------------------------------------------------
@dataclass
class ComposeCall:
    argv: list[str]
    what: str
    compose_text: str
    """The stack's compose.yaml at the moment of the call (which files the call acted on)."""
    pins: dict[str, str]
    project: Any
    kwargs: dict[str, Any]


class FakeCompose:
    def __init__(self, events: list[tuple[Any, ...]], directory: Path) -> None:
        self.events = events
        self.directory = directory
        self.calls: list[ComposeCall] = []
        self.fail: set[str] = set()
        self.on_call: Callable[[list[str]], None] | None = None

    async def run(self, argv: list[str], *, on_start: Callable[[int], None] | None = None) -> None:
        """Only its signature is read (whether the journal's child recorder can be passed)."""

    async def run_project(self, project: Any, argv: list[str], *, what: str = "", **kwargs: Any) -> None:
        from server.redact import Scrubber

        # Strict: every call names this stack's project and scrubs what it reports.
        assert project is not None and project.name == STACK and project.directory == self.directory, project
        if argv[:2] == ["config", "--hash"]:  # a read (the rollback's "already as defined?"): no hash known
            return SimpleNamespace(stdout="", stderr="", returncode=0)  # type: ignore[return-value]
        if argv[0] in ("up", "down"):  # the rollback's `down` too: its output may echo the stack's secrets
            assert isinstance(kwargs.get("scrub"), Scrubber), "no scrubber"
        path = self.directory / "compose.yaml"
        self.calls.append(ComposeCall(list(argv), what, path.read_text() if path.is_file() else "",
                                      override.pinned_images(self.directory), project, kwargs))
        self.events.append(("compose", argv[0]))
        if self.on_call is not None:
            self.on_call(list(argv))
        if argv[0] in self.fail:
            raise DsmError(f"docker compose {argv[0]} failed: boom")


# -- operations (journal, lock, maintenance) -------------------------------------------------------
class FakeOp:
    def __init__(self, events: list[tuple[Any, ...]], op_id: str, kind: str) -> None:
        self.events = events
        self.id = op_id
        self.kind = kind
        self.status = "running"
        self.result: Any = None
        self.phases: list[tuple[str, str, str]] = []
        self.children: list[int] = []
        self.end_calls = 0

    @property
    def ended(self) -> bool:
        return self.status != "running"

    def phase(self, name: str, status: str, detail: str = "", duration_s: float | None = None) -> None:
        self.phases.append((name, status, detail))

    def child(self, pgid: int) -> None:
        self.children.append(pgid)

    def end(self, status: str, result: Any = None) -> None:
        self.end_calls += 1
        assert not self.ended, "ended twice"
        self.status, self.result = status, result
        self.events.append(("end", status))


class FakeOps:
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events
        self.records: list[Any] = []
        self.window: dict[str, Any] | None = None
        self.maintenance_calls: list[tuple[str, str | None, str]] = []
        self.begun: list[FakeOp] = []
        self.busy = False
        self.history_fails = False
        self.maintenance_fails = False

    def begin(self, stack: str, kind: str, params: Any = None, *, secrets: Any = (), directory: Any = None) -> FakeOp:
        assert stack == STACK and kind in ("deploy", "rollback"), (stack, kind)
        self.secrets = frozenset(secrets)
        if self.busy:
            raise StackBusy(stack, operation_id="op-holder", kind="deploy", started_at="now", pid=1)
        op = FakeOp(self.events, f"op-{kind}-{len(self.begun) + 1}", kind)
        op.params = params  # type: ignore[attr-defined]
        self.begun.append(op)
        self.events.append(("begin", kind))
        return op

    def history(self, stack: str, kinds: Any = ("deploy", "rollback"), limit: int = 20) -> list[Any]:
        assert stack == STACK, stack
        self.history_limit = limit
        if self.history_fails:
            raise OSError("journal unreadable")
        return sorted(self.records, key=lambda r: r.started_at, reverse=True)[:limit]

    def set_maintenance(self, stack: str, until: str | None, reason: str) -> dict[str, Any] | None:
        if self.maintenance_fails:
            raise OSError("read-only state dir")
        self.maintenance_calls.append((stack, until, reason))
        previous, self.window = self.window, ({"until": until, "reason": reason} if until else None)
        return previous

    async def run_detached(self, op: FakeOp, work: Callable[[], Awaitable[Any]]) -> Any:
        assert op is self.begun[-1], op
        return await work()


def record(op_id: str, started_at: str, *, status: str = "deployed", kind: str = "deploy",
           result: dict[str, Any] | None = None) -> Any:
    """A journaled operation as Operations.history returns it (the fields the pipeline reads)."""
    return SimpleNamespace(operation_id=op_id, started_at=started_at, status=status, kind=kind,
                           result=result if result is not None else {"status": status})


# -- backups ---------------------------------------------------------------------------------------
class FakeStore:
    def __init__(self, events: list[tuple[Any, ...]], manifest: BackupManifest, before_files: dict[str, str]) -> None:
        self.events = events
        self.manifest = manifest
        self.manifests: dict[str, BackupManifest] = {manifest.backup_id: manifest}
        self.before_files = before_files
        """The stack's files when the backup was taken (what restore_files writes back)."""
        self.fail_create = False
        self.created: list[dict[str, Any]] = []
        self.restored_data: list[dict[str, Any]] = []

    async def create(self, stack: LoadedStack, *, env: Any = None, reason: str = "") -> BackupManifest:
        assert stack.name == STACK
        self.events.append(("backup", reason))
        if self.fail_create:
            raise OSError("disk full")
        self.created.append({"reason": reason, "env": env})
        return self.manifest

    async def restore_files(self, manifest: BackupManifest, directory: Path) -> None:
        self.events.append(("restore_files", manifest.backup_id))
        for name, text in self.before_files.items():
            (directory / name).write_text(text)

    async def restore_data(self, manifest: BackupManifest, *, services: list[str] | None = None,
                           volumes: bool, dumps: bool) -> list[str]:
        """(Unlike the store, no defaults: the pipeline must say what it restores.)"""
        self.events.append(("restore_data", manifest.backup_id, tuple(services or ()), volumes, dumps))
        self.restored_data.append({"backup": manifest.backup_id, "services": services, "volumes": volumes,
                                   "dumps": dumps})
        return [f"dump of {s} restored" for s in (services or [d.service for d in manifest.dumps])]

    def get(self, stack: str, backup_id: str) -> BackupManifest:
        assert stack == STACK
        return self.manifests[backup_id]


def manifest(backup_id: str = "b-1", *, pins: dict[str, str] | None = None, dumps: tuple[str, ...] = ()
             ) -> BackupManifest:
    return BackupManifest(
        backup_id=backup_id, stack=STACK, created_at="2026-01-01T00:00:00Z", reason="test", files=["compose.yaml"],
        images=[PinnedImage(service=s, image=f"img/{s}", image_id=f"sha256:{s}", pinned_ref=ref)
                for s, ref in (pins or {}).items()],
        volumes=[], bytes=1,
        dumps=[DatabaseDump(service=s, kind="postgres", file=f"{s}.sql", bytes=1, sha256="0", restore=["psql"])
               for s in dumps])


# -- memory ----------------------------------------------------------------------------------------
class FakeMemory:
    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        self.events = events
        self.deployments: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []

    def record_deployment(self, **kw: Any) -> str:
        self.deployments.append(kw)
        self.events.append(("memory", "deployment", kw["outcome"]))
        return f"dep-{len(self.deployments)}"

    def record_incident(self, **kw: Any) -> Any:
        self.incidents.append(kw)
        self.events.append(("memory", "incident", kw.get("outcome")))
        return SimpleNamespace(incident_id=f"inc-{len(self.incidents)}")

    def record_pattern_outcome(self, *a: Any, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


# -- the runtime that hands them out ---------------------------------------------------------------
@dataclass
class World:
    """One stack on disk and every fake the pipeline reaches through its Runtime."""

    settings: Settings
    directory: Path
    events: list[tuple[Any, ...]] = field(default_factory=list)
    engine: FakeEngine = field(init=False)
    compose: FakeCompose = field(init=False)
    ops: FakeOps = field(init=False)
    memory: FakeMemory = field(init=False)
    store: FakeStore = field(init=False)
    runtime: Runtime = field(init=False)

    def __post_init__(self) -> None:
        self.engine = FakeEngine(self.events)
        self.engine.directory = self.directory
        self.compose = FakeCompose(self.events, self.directory)
        self.ops = FakeOps(self.events)
        self.memory = FakeMemory(self.events)
        self.store = FakeStore(self.events, manifest(), {})
        world = self

        class _Runtime(Runtime):
            def engine(self) -> Any:
                return world.engine

            def compose(self) -> Any:
                return world.compose

            def operations(self) -> Any:
                return world.ops

            def memory(self) -> Any:
                return world.memory

            def backups(self) -> Any:
                return world.store

        self.runtime = _Runtime(self.settings)

    def stack(self, services: dict[str, dict[str, Any]], *, service_dsm: dict[str, dict[str, Any]] | None = None,
              x_dsm: dict[str, Any] | None = None, secrets: frozenset[str] = frozenset()) -> LoadedStack:
        return LoadedStack(
            name=STACK, directory=self.directory, files=[self.directory / "compose.yaml"],
            rendered={"name": STACK, "services": services},
            settings=parse_stack_settings(x_dsm),
            service_settings={n: parse_service_settings(n, (service_dsm or {}).get(n)) for n in services},
            lines=SourceLines("compose.yaml"), secret_values=secrets)


def plan(**actions: str) -> DeployPlan:
    """``plan(web="recreate", db="unchanged")``."""
    return DeployPlan(plan_id="plan-1", backup=BackupPlan(), services=[
        ServicePlan(service=s, action=a, strategy="recreate", reason="test")  # type: ignore[arg-type]
        for s, a in actions.items()])


class FakeExecutor(ComposeExecutor):
    """The transaction's executor for unit tests: ``apply`` does what the test says (record the
    change, raise a StepFailed, Blocked or a bug); the gate passes; the rollback's restore and start
    are Compose's, on the world's FakeCompose (so a test sees the rollback's ``up``)."""

    def __init__(self, runtime: Runtime, apply: Callable[[Change], Awaitable[None]] | None = None) -> None:
        super().__init__(runtime)
        self._apply = apply
        self.changes: list[Change] = []

    async def apply(self, change: Change, steps: StepLog) -> None:
        self.changes.append(change)
        if self._apply is not None:
            await self._apply(change)

    async def gate(self, stack: LoadedStack, watched: list[Watched], timeout_s: float,
                   on_wait: Callable[[str], Awaitable[None]]) -> GateResult:
        return GateResult(ok=True, assessments=[])
