"""SwarmExecutor: a plan executed by ``docker stack deploy`` on a swarm manager, under the same
Transaction as Compose (journal, lock, backup, report: server/deploy/transaction.py).

``apply``: the CLI must be >= 23 and the engine a manager (else Blocked: nothing changed); every
service's spec is recorded (the stack-level rollback point); the stack file (server/deploy/swarm/
render.py: strategies written as Swarm's update_config) is deployed with ``--prune``.
``gate``: the stack's tasks across nodes until every watched service has converged on its new spec,
or a task failed, or Swarm rolled a service back, or a task cannot be scheduled, or the timeout.

``restore`` is the stack-level rollback Swarm lacks. After a failed deploy (the executor recorded
every spec before it): a service Swarm already rolled back itself (update_config.failure_action:
rollback, which honours its rollback_config) is left as it is; every other changed service gets
``docker service rollback`` (Swarm returns it to its PreviousSpec: exactly the spec, image
reference included, that ran before; no registry digest is needed, which images loaded with
``docker load`` do not have); services the failed deploy created are removed; services it pruned
are created again from the previous deployment's files. For an explicit ``rollback`` to an earlier
deployment (no spec recorded by this executor) that deployment's kept files are re-deployed with
``--prune``. Nothing is removed when nothing ran before but the stack's services (volumes stay).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from server.deploy import snapshots
from server.deploy.executor import Change, Observed, OnWait, Restored, Snapshot, Start
from server.deploy.health import GateResult, Watched
from server.deploy.steps import Blocked, StepFailed, StepLog, brief
from server.deploy.swarm.cli import StackCLI, SwarmUnavailable
from server.deploy.swarm.render import dumps, stack_file
from server.deploy.swarm.tasks import (
    Service,
    Verdict,
    judge,
    node_names,
    parse_services,
    parse_tasks,
    short_name,
)
from server.errors import DsmError
from server.models import Finding
from server.stackmodel import LoadedStack

log = logging.getLogger(__name__)
POLL_S = 1.0


def strategies_of(stack: LoadedStack, plan: Any = None) -> dict[str, str]:
    """Per service: x-dsm update.strategy when the file names one, else the deploy's forced strategy
    (the plan's, when it is not the Compose default ``recreate``), else rolling."""
    out = {}
    planned = {s.service: s.strategy for s in (plan.services if plan is not None else [])}
    for name in stack.services:
        named = stack.service_settings_for(name).update.strategy
        out[name] = named if named != "auto" else (planned.get(name) if planned.get(name) not in (None, "recreate")
                                                   else "rolling") or "rolling"
    return out


class SwarmExecutor:
    def __init__(self, runtime: Any, cli: StackCLI | None = None, replaced: Any = None) -> None:
        self.runtime = runtime
        self.replaced = replaced
        """The executor this one stands in for (the Compose one), for a Transaction reused on another stack."""
        self.settings = runtime.settings
        self.cli = cli or StackCLI.for_runtime(runtime)
        self.before: dict[str, dict[str, Any]] | None = None
        """service -> its raw service object before ``apply`` (None: no deploy applied by us)."""
        self.notes: list[str] = []
        self._nodes: dict[str, str] = {}

    # -- reads ----------------------------------------------------------------------------------
    async def read(self, stack: str, nodes: dict[str, str] | None = None) -> tuple[dict[str, Service], list[Any]]:
        """Services and tasks; ``nodes`` (id -> hostname) read again when not given or a task's node is unknown."""
        raw_services, raw_tasks, raw_nodes = await _gather(
            self.cli.services(stack), self.cli.tasks(stack), self.cli.nodes() if nodes is None else _none())
        if raw_nodes is not None:
            self._nodes = node_names(raw_nodes)
        elif any(t.get("NodeID") and t["NodeID"] not in self._nodes for t in raw_tasks):
            self._nodes = node_names(await self.cli.nodes())  # a node joined meanwhile
        services = parse_services(raw_services, stack)
        return services, parse_tasks(raw_tasks, services, self._nodes, now=time.time())

    async def observe(self, stack: LoadedStack, services: list[str] | None) -> Observed:
        found, tasks = await self.read(stack.name)
        wanted = [s for s in (services or stack.services) if s in stack.services]
        verdict = judge(found, tasks, wanted, since_s=0)
        return Observed(ready=verdict.state == "converged" and bool(found), services=frozenset(found))

    # -- deploy ---------------------------------------------------------------------------------
    async def apply(self, change: Change, steps: StepLog) -> None:
        stack = change.stack
        async with steps.phase("pull", "swarm: checking the CLI and the manager") as step:
            try:
                version = await self.cli.check_version()
                info = await self.cli.require_manager()
            except SwarmUnavailable as exc:
                raise Blocked("pull", exc.what, [Finding(rule="swarm-not-manager", severity="error",
                                                         category="swarm", message=str(exc))]) from None
            raw = await self.cli.services(stack.name)
            self.before = {short_name(str((r.get("Spec") or {}).get("Name") or ""), stack.name): r for r in raw}
            step.status = "skipped"
            step.detail = (f"docker CLI {version}; manager of {info.nodes} node(s); images are resolved on each "
                           f"node (--resolve-image never); {len(self.before)} service(s) ran before")
        doc, notes = stack_file(stack.name, stack.rendered, strategies_of(stack, change.plan))
        self.notes = notes
        async with steps.phase("up", "swarm: docker stack deploy --prune") as step:
            try:
                await self._deploy(stack, doc, prune=True, timeout_s=max(60.0, change.wait_s),
                                   on_start=getattr(change.op, "child", None))
            except DsmError as exc:
                raise StepFailed("up", f"docker stack deploy failed: {brief(exc)}") from None
            step.detail = "deployed " + ", ".join(sorted(stack.services)) + (f"; {'; '.join(notes)}" if notes else "")
            if change.services:  # a stack deploy takes the whole file: --prune would remove the rest
                step.detail += f"; services={','.join(change.services)} not applied alone: the whole stack was"

    async def _deploy(self, stack: LoadedStack, doc: dict[str, Any], *, prune: bool, timeout_s: float,
                      on_start: Any = None) -> None:
        with tempfile.TemporaryDirectory(prefix="dsm-swarm-") as tmp:
            path = Path(tmp) / "stack.json"
            path.write_text(dumps(doc))
            await self.cli.deploy(str(path), stack.name, prune=prune, timeout_s=timeout_s, on_start=on_start)

    async def gate(self, stack: LoadedStack, watched: list[Watched], timeout_s: float, on_wait: OnWait) -> GateResult:
        names = [w.service for w in watched if not w.one_shot]
        verdict = await self.converge(stack.name, names, timeout_s, on_wait)
        if verdict.state == "converged":
            return GateResult(ok=True, assessments=[])
        return GateResult(ok=False, assessments=[], failure=verdict.why, failed_service=verdict.service,
                          evidence=verdict.evidence)

    async def converge(self, stack: str, names: list[str], timeout_s: float, on_wait: OnWait | None = None,
                       rolling_back: bool = False) -> Verdict:
        began = time.monotonic()
        told = 0.0
        self._nodes = {}
        verdict = Verdict("waiting", why="not read yet")
        while time.monotonic() - began < timeout_s:
            services, tasks = await self.read(stack, self._nodes or None)  # nodes read once per gate
            verdict = judge(services, tasks, names, since_s=time.monotonic() - began, rolling_back=rolling_back)
            if verdict.state != "waiting":
                return verdict
            if on_wait is not None and time.monotonic() - told >= 5:
                told = time.monotonic()
                await on_wait(f"swarm: {verdict.why}"[:300])
            await anyio.sleep(POLL_S)
        return Verdict("failed", None, f"not converged after {timeout_s:.0f}s: {verdict.why}", [verdict.why])

    # -- rollback -------------------------------------------------------------------------------
    async def restore(self, snapshot: Snapshot, steps: StepLog) -> Restored:
        from server.stackload import load_stack

        stack = snapshot.stack
        assert stack.directory is not None
        notes = await snapshots.put_back(self.settings, self.runtime.backups(), snapshot)
        if self.before is not None and not self.before:  # nothing ran before: remove what the deploy made
            await self.cli.stack_rm(stack.name)
            return Restored(None, {}, [*notes, "nothing ran before: the stack's services were removed, volumes kept"])
        old = await load_stack(self.settings, self.runtime.compose(), path=str(stack.directory), env=snapshot.env,
                               dsm_override=False)
        if self.before is None:  # explicit rollback: start() re-deploys these files
            return Restored(old, {}, [*notes, "the deployment's files are re-deployed with docker stack deploy "
                                              "--prune (images as those files name them)"])
        notes.extend(await self._roll_back_services(old))
        return Restored(old, {}, notes)

    async def _roll_back_services(self, old: LoadedStack) -> list[str]:
        """Every service of the stack back to its spec before the failed deploy."""
        assert self.before is not None
        now = await self._settled(old.name)
        notes, back, left, added = [], [], [], sorted(set(now) - set(self.before))
        missing = sorted(set(self.before) - set(now))  # pruned by the failed deploy
        for name, raw in sorted(self.before.items()):
            svc = now.get(name)
            if svc is None:
                continue
            if (svc.update_state or "").startswith("rollback") or \
                    json.dumps(svc.spec, sort_keys=True) == json.dumps(raw.get("Spec"), sort_keys=True):
                # Swarm's own failure_action rolled it back (its rollback_config honoured), or unchanged
                left.append(name)
            elif svc.previous is not None:
                await self.cli.service_rollback(svc.full_name)
                back.append(name)
            else:  # changed, but Swarm keeps no previous spec for it: the previous files define it
                missing.append(name)
        if added:
            await self.cli.service_rm(*[now[n].full_name for n in added])
        if missing:  # only the previous deployment's files can define these again
            doc, _ = stack_file(old.name, old.rendered, strategies_of(old))
            doc["services"] = {n: b for n, b in doc.get("services", {}).items() if n in missing}
            await self._deploy(old, doc, prune=False, timeout_s=120)
        notes.append("stack-level rollback: " + "; ".join(part for part in (
            f"docker service rollback (to its previous spec) of {', '.join(back)}" if back else "",
            f"already back or unchanged: {', '.join(left)}" if left else "",
            f"removed (new in the failed deploy): {', '.join(added)}" if added else "",
            f"re-deployed from the previous files: {', '.join(missing)}" if missing else "") if part))
        return notes

    async def _settled(self, stack: str, timeout_s: float = 90.0) -> dict[str, Service]:
        """The services once no rollback Swarm started by itself (a file's failure_action: rollback)
        is still running: deciding while one runs would race it (its previous spec swaps)."""
        began = time.monotonic()
        while True:
            now = parse_services(await self.cli.services(stack), stack)
            if time.monotonic() - began >= timeout_s or not any(
                    s.update_state == "rollback_started" for s in now.values()):
                return now
            await anyio.sleep(POLL_S)

    async def start(self, start: Start) -> None:
        stack = start.stack
        if start.services is not None:
            return  # "databases first" has no meaning for Swarm: specs are restored together (restore())
        if self.before is None:
            doc, _ = stack_file(stack.name, stack.rendered, strategies_of(stack))
            await self._deploy(stack, doc, prune=True, timeout_s=120, on_start=getattr(start.op, "child", None))
            names = sorted(stack.services)
        else:
            names = sorted(self.before)
        verdict = await self.converge(stack.name, names, start.timeout_s, rolling_back=True)
        if verdict.state != "converged":  # a DsmError: the rollback records its phase as failed with this
            raise DsmError(f"the previous version did not converge: {verdict.why}",
                           state="the stack is between versions", next_step="stack_status shows each task's node")


async def _none() -> None:
    return None


async def _gather(*aws: Any) -> list[Any]:
    out: list[Any] = [None] * len(aws)

    async def one(i: int, aw: Any) -> None:
        out[i] = await aw

    async with anyio.create_task_group() as tg:
        for i, aw in enumerate(aws):
            tg.start_soon(one, i, aw)
    return out
