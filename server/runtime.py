"""Process-wide state shared by the tools: settings and lazily opened adapters.

Nothing heavy happens at construction: the Docker client and the memory store open on first
use, so ``initialize`` and ``tools/list`` stay at the SDK's own start-up cost.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from server.endpoint import Endpoint, EndpointSource
from server.settings import Settings
from server.targets import Target, Targets, targets_of

if TYPE_CHECKING:
    from server.backups.store import BackupStore
    from server.compose import ComposeRunner
    from server.engine import Engine
    from server.memory import Memory
    from server.memory.outbox import MemoryOutbox
    from server.operations import Operations


class Runtime:
    """The adapters of one target (server/targets.py). The server's own Runtime is the default
    target's; it holds the others (:meth:`targets`), which share its memory."""

    def __init__(self, settings: Settings, *, target: Target | None = None, parent: Runtime | None = None) -> None:
        self.root_settings = settings
        """The server's settings (state_dir is the server's own, not this target's)."""
        self.target = target or targets_of(settings)[0]
        self.settings = settings if self.target.default else dataclasses.replace(
            settings, state_dir=self.target.state_dir(settings.state_dir))
        """This target's settings: its state_dir keys locks, journal, backups, pins, watcher state."""
        self._parent = parent
        self._targets: Targets | None = None
        self._lock = threading.Lock()
        self._tracks_children = False
        self.endpoint_source = EndpointSource(settings, spec=self.target.spec)
        """The one engine every adapter of this runtime uses (resolved on first use, then fixed)."""
        self._engine: Engine | None = None
        self._compose: ComposeRunner | None = None
        self._memory: Memory | None = None
        self._operations: Operations | None = None
        self._outbox: MemoryOutbox | None = None
        self.shutdown_grace_s = 30.0
        """At a normal end (the client closed stdin), how long running operations may go on."""
        self.terminating = False
        """Set by SIGTERM: running operations are cancelled at once (they roll back)."""

    def targets(self) -> Targets:
        """Every engine of this server (DSM_ENGINES) and its Runtime; this one is the default's."""
        if self._parent is not None:
            return self._parent.targets()
        with self._lock:
            if self._targets is None:
                self._targets = Targets(self)
            return self._targets

    async def for_stack(self, stack: str, *, mutating: bool = False) -> Runtime:
        """The Runtime of the engine ``stack`` runs on (x-dsm engine, else where it runs, else the
        default); a mutating tool is refused on a read-only engine or an ambiguous stack."""
        return await self.targets().for_stack(stack, mutating=mutating)

    def endpoint(self) -> Endpoint:
        """Where the engine is (DOCKER_HOST, DOCKER_CONTEXT, the CLI's current context); raises
        DockerUnavailable when a named context does not exist."""
        return self.endpoint_source.get()

    def engine(self) -> Engine:
        """The docker-py adapter; raises DockerUnavailable on first real call if the daemon is away."""
        with self._lock:
            if self._engine is None:
                from server.engine import Engine

                self._engine = Engine(self.settings, self.endpoint_source)
            return self._engine

    def compose(self) -> ComposeRunner:
        """The Compose CLI, on the same endpoint as :meth:`engine`."""
        with self._lock:
            if self._compose is None:
                from server.compose import ComposeRunner

                self._compose = ComposeRunner(self.settings, self.endpoint_source)
            return self._compose

    def memory(self) -> Memory:
        """The incident/deployment memory (embedded Qdrant or a Qdrant server), opened on first use."""
        if self._parent is not None:  # one memory per server, whatever the engine
            return self._parent.memory()
        with self._lock:
            if self._memory is None:
                from server.memory import open_memory

                self._memory = open_memory(self.settings)
            return self._memory

    def memory_outbox(self) -> MemoryOutbox:
        """Deployment records on their way to the memory (written after the deploy answered;
        durable on disk until then, drained again at start-up)."""
        if self._parent is not None:
            return self._parent.memory_outbox()
        with self._lock:
            if self._outbox is None:
                from server.memory.outbox import MemoryOutbox

                self._outbox = MemoryOutbox(self.settings.state_dir / "memory-outbox", self.memory)
            return self._outbox

    def operations(self) -> Operations:
        """The operation journal, per-stack locks and recovery (files under DSM_STATE_DIR)."""
        with self._lock:
            if self._operations is None:
                from server.operations import Operations

                self._operations = Operations(self.settings, stack_state=self._stack_state,
                                              repair=self._repair_stack)
            return self._operations

    def backups(self) -> BackupStore:
        """The backup store over this runtime's engine and Compose runner (it holds no state of its
        own, so one per call; the deploy pipeline's seam for it, see server.deploy.seams)."""
        from server.backups.store import BackupStore

        return BackupStore(self.settings, self.engine(), self.compose())

    def _stack_state(self, stack: str) -> list[dict[str, object]]:
        # Recorded with an interrupted operation: what the stack's containers look like now.
        return self.engine().project_state_blocking(stack)

    def track_children(self) -> None:
        """From now on every process group this process starts is recorded under the state
        directory until it ends, for :meth:`recover_operations` of the next start to reap should
        this server be killed (server.operations.children). Set by a server at start-up."""
        from server.operations.children import ChildRegistry
        from server.process import track_children

        self._tracks_children = True
        track_children(ChildRegistry(self.settings.state_dir / "children"))

    def _repair_stack(self, stack: str) -> dict[str, object]:
        # Crash recovery: start what a dead backup or restore stopped, remove its helper containers.
        from server.backups.recovery import repair_blocking

        return repair_blocking(self.settings, self.engine(), stack)

    def recover_operations(self) -> None:
        """Crash recovery at start-up (run off the start path): operations a dead server left
        unended get their process groups stopped and are recorded interrupted; any other process
        group a dead server left running (a ``compose config`` under a killed server) is stopped;
        deployment records it left in the memory outbox are written. Never raises."""
        import logging

        try:
            if (self.settings.state_dir / "journal" / "journal.jsonl").exists():
                self.operations().recover()
        except Exception:
            logging.getLogger("docker_stack_mcp.runtime").exception("start-up recovery of operations failed")
        for target in self.targets().targets if self._parent is None else ():
            # Each other engine's journal (state_dir/engines/<name>), through that engine.
            try:
                if not target.default and (target.state_dir(self.settings.state_dir) / "journal" /
                                           "journal.jsonl").exists():
                    self.targets().runtime(target.name).operations().recover()
            except Exception:
                logging.getLogger("docker_stack_mcp.runtime").exception(
                    "start-up recovery of operations on engine %s failed", target.name)
        try:
            # After the journal's recovery, which records what it stopped with the operation.
            from server.operations.children import ChildRegistry

            ChildRegistry(self.settings.state_dir / "children").reap()
        except Exception:
            logging.getLogger("docker_stack_mcp.runtime").exception("start-up reaping of child processes failed")
        try:
            # Deployment records a stopped server posted but did not write to the memory yet.
            outbox = self.memory_outbox()
            if outbox.pending():
                outbox.kick()
        except Exception:
            logging.getLogger("docker_stack_mcp.runtime").exception("start-up drain of the memory outbox failed")

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Let operations running in this process finish (then cancel them) before closing."""
        for other in self._others():
            await other.shutdown(grace_s)
        if self._operations is not None:
            await self._operations.shutdown(grace_s)

    def _others(self) -> list[Runtime]:
        """The other targets' Runtimes opened so far (the server's own Runtime holds them)."""
        targets = self._targets
        return [rt for rt in targets.opened() if rt is not self] if targets is not None else []

    def close(self) -> None:
        for other in self._others():
            other.close()
        if self._tracks_children:
            from server.process import track_children

            track_children(None)
            self._tracks_children = False
        # Records posted to the outbox are written before the memory closes (SIGTERM waits less:
        # what is not written by then stays in the outbox for the next start).
        outbox = self._outbox
        if outbox is not None:
            outbox.close(5.0 if self.terminating else 30.0)
            self._outbox = None
        with self._lock:
            for closable in (self._memory, self._engine):
                if closable is not None:
                    closable.close()
            self._memory = None
            self._engine = None
