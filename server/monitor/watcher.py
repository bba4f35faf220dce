"""The watcher: follows Docker events, checks health on an interval, and heals what it may.

Per tick, for every watched stack (those under the stacks root, or the ``--stack`` list):

- a stack under an operation (deploy, rollback, backup, control) or in a maintenance window is
  left alone: the watcher never fights a deploy, and alerts stay muted;
- a service that breaks within ``watch_after_deploy_s`` of a deployment deploy_stack recorded
  (unhealthy, failed, or restarted by the engine's restart policy since) is rolled back once per
  deployment, through the deploy pipeline's rollback; only a ``rolled_back`` report counts, and
  the outcome is alerted and recorded as an incident;
- otherwise unhealthy containers are restarted and failed ones recreated (Compose, no
  dependencies touched; a plain start when the files changed since, so undeployed edits are
  never applied), dependencies first, within a budget per service: ``x-dsm`` recovery
  max_restarts per window_s (3 per 600 s), the first at once, then backoff_s doubling. An
  exhausted budget alerts once, records the incident, and the watcher stops trying;
- the operator's critical thresholds (unavailable longer than unavailable_s, memory or CPU
  above 95%, database connection errors, more than 10 critical log lines a minute) alert, or
  restart when the stack's policy says ``on_threshold: restart``;
- a protected (DSM_POLICY) or critical stack changed behind the server's back since its last
  recorded deployment alerts once per change (server.monitor.driftwatch).

Every attempt is written to DSM_STATE_DIR/watcher/state.json (fsync'd) *before* it is made,
keyed by the container's start/finish time, so a watcher killed mid-way and restarted neither
repeats the action nor forgets its budget. Each action is journaled as a ``recovery``
operation (taking the stack's lock, so it never overlaps a deploy) and recorded as an incident
in the memory. Alerts, incidents, journal details and log messages about a stack go through the
stack's one scrubber (server.stacksecrets), made once per pass: a password from its .env in a
log line reaches neither the alert receiver nor the memory.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from server.compose import services_argv
from server.engine import container_logs, events_iter, restart_container, start_container
from server.errors import DockerUnavailable, DsmError, StackBusy
from server.memory.recorder import MemoryRecorder
from server.monitor import driftwatch, opsbridge
from server.monitor.alerts import Alert, Alerter
from server.monitor.diagnose import DB_CONNECTION
from server.monitor.resolve import managed_locations
from server.monitor.stackpolicy import StackPolicy, stack_policy
from server.monitor.status import Observed, observe, sample_usage
from server.monitor.watchstate import WatchState, iso_to_epoch, now_iso
from server.redact import Scrubber
from server.runtime import Runtime
from server.stacks import StackLocation

log = logging.getLogger("docker_stack_mcp.watcher")

CRITICAL_LINE = re.compile(r"\b(critical|fatal|panic|emerg(?:ency)?)\b|level=(?:fatal|panic|crit)", re.IGNORECASE)
_EVENT_WINDOW_S = 5
_MAX_ACTIONS_KEPT = 200
_IN_FLIGHT_RETRY_S = 30.0
"""An action recorded as started but never finished (the watcher was killed) is issued again after this."""


@dataclass
class Counters:
    """What the watcher did, for Prometheus and tests."""

    ticks: int = 0
    restarts: int = 0
    recreates: int = 0
    rollbacks: int = 0
    gave_up: int = 0
    alerts: int = 0
    events: int = 0
    reconnects: int = 0
    engine_errors: int = 0
    skipped_busy: int = 0
    by_service: dict[str, str] = field(default_factory=dict)


class Watcher:
    def __init__(self, runtime: Runtime, stacks: list[str] | None = None, *, interval_s: float = 10.0,
                 alerter: Alerter | None = None) -> None:
        self.runtime = runtime
        self.only = set(stacks or [])
        self.interval_s = interval_s
        self.alerter = alerter or Alerter(runtime.settings)
        self.state = WatchState(runtime.settings)
        self.recorder = MemoryRecorder(runtime.memory)
        self.counters = Counters()
        self._wake = anyio.Event()
        self._last_event = int(time.time())
        self._connected = True
        self._tg: Any = None
        self._scrubbers: dict[str, Scrubber] = {}

    # -- main loop ------------------------------------------------------------------------------
    async def run(self, stop: anyio.Event | None = None) -> None:
        stop = stop or anyio.Event()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._follow_events, stop)
            while not stop.is_set():
                await self.tick()
                with anyio.move_on_after(self.interval_s):
                    waiter = self._wake
                    async with anyio.create_task_group() as inner:
                        inner.start_soon(_wait_then_cancel, waiter, inner.cancel_scope)
                        inner.start_soon(_wait_then_cancel, stop, inner.cancel_scope)
                self._wake = anyio.Event()
            tg.cancel_scope.cancel()

    async def _follow_events(self, stop: anyio.Event) -> None:
        """Engine events in windows of a few seconds: each call ends on its own (no stream left
        hanging) and starts where the last one ended, so a dropped connection loses nothing."""
        filters = {"type": "container", "label": "com.docker.compose.project"}
        while not stop.is_set():
            since = self._last_event
            until = int(time.time()) + _EVENT_WINDOW_S
            try:
                await anyio.to_thread.run_sync(self._read_events, since, until, filters, abandon_on_cancel=True)
                if not self._connected:
                    self._connected = True
                    self.counters.reconnects += 1
                    log.warning("engine connection is back: catching up")
                    self._wake.set()
                self._last_event = max(self._last_event, until - 1)
            except Exception as exc:  # engine away: wait, then ask again from where we were
                if self._connected:
                    log.warning("engine event stream lost (%s); retrying", type(exc).__name__)
                self._connected = False
                self.counters.engine_errors += 1
                await anyio.sleep(1.0)

    def _read_events(self, since: int, until: int, filters: dict[str, Any]) -> None:
        for event in events_iter(self.runtime.engine(), since, filters, until=until):
            action = str(event.get("Action") or event.get("status") or "")
            if action.startswith(("health_status: unhealthy", "die", "oom", "kill")):
                self.counters.events += 1
                anyio.from_thread.run_sync(self._wake.set)

    # -- one pass -----------------------------------------------------------------------------------
    async def tick(self) -> None:
        self.counters.ticks += 1
        managed = managed_locations(self.runtime.settings)
        watched = self.only or set(managed)
        try:
            observed = await observe(self.runtime, next(iter(watched)) if len(watched) == 1 else None,
                                     keep=lambda c: (c.project or "") in watched)
            running = [o for o in observed if o.summary.running]
            # One CPU/memory sample per pass for every watched container (cgroups: 0.25 s in all).
            usage = await sample_usage(self.runtime, running) if running else {}
        except DockerUnavailable as exc:
            self.counters.engine_errors += 1
            log.warning("engine unreachable: %s", exc.what)
            return
        grouped: dict[str, list[Observed]] = {}
        for o in observed:
            grouped.setdefault(o.summary.project or "", []).append(o)
        for name, containers in sorted(grouped.items()):
            try:
                await self.check_stack(name, containers, managed.get(name), usage)
            except DockerUnavailable as exc:
                self.counters.engine_errors += 1
                log.warning("engine unreachable while checking %s: %s", name, exc.what)
                return
            except Exception:
                log.exception("checking stack %s failed; carrying on", name)

    async def check_stack(self, stack: str, containers: list[Observed], location: StackLocation | None,
                          usage: dict[str, Any] | None = None) -> None:
        from server.stacksecrets import stack_scrubber

        # Read once per pass: its .env and known secrets may have changed with a deploy since.
        self._scrubbers[stack] = await anyio.to_thread.run_sync(
            stack_scrubber, self.runtime.settings, stack, location.directory if location is not None else None,
            [(o.inspect.get("Config") or {}).get("Env") or [] for o in containers])
        paused = self._paused(stack)
        for o in containers:
            self._seen(stack, o, paused)
        if paused:
            self.state.save()
            return
        policy = stack_policy(location, {o.service: o.labels for o in containers})
        await self._restart_storms(stack, containers, policy)
        broken = [(o, kind) for o in _dependency_order(containers) if (kind := _broken(o, policy))]
        restarted = any(int(o.inspect.get("RestartCount") or 0) or o.state.get("Status") == "restarting"
                        for o in containers)
        if (broken or restarted) and await self._rollback_if_fresh_deploy(stack, policy, broken, containers):
            return
        for o, kind in broken:
            await self._recover(stack, o, kind, policy, location)
        await self._thresholds(stack, containers, policy, usage or {})
        try:  # protected or critical stacks: changes behind the server's back alert once (issue 18)
            await driftwatch.watch(self, stack, containers, location, policy)
        except DockerUnavailable:
            raise
        except Exception:
            log.exception("drift check of %s failed; carrying on", stack)
        self.state.save()

    def _paused(self, stack: str) -> str | None:
        try:
            window = opsbridge.maintenance(self.runtime, stack)
            if window:
                return f"maintenance until {window.get('until')}"
            running = opsbridge.running(self.runtime, stack)
        except Exception as exc:  # no journal: nothing can hold the stack
            log.debug("operations unavailable: %s", exc)
            return None
        if running is not None and getattr(running, "kind", "") != "recovery":
            return f"{running.kind} {running.operation_id} running"
        return None

    def _seen(self, stack: str, o: Observed, paused: str | None) -> None:
        rec = self.state.service(stack, o.service)
        status = o.state.get("Status") or o.summary.state
        seen = o.health if status == "running" and o.health else status
        if paused:
            seen = f"{seen} (left alone: {paused})"
        if rec.get("seen") != seen:
            rec["seen"], rec["seen_at"] = seen, now_iso()
        ok = status == "running" and o.health in (None, "healthy", "starting")
        if ok:
            rec.pop("bad_since", None)
            if rec.get("unavailable_alerted"):
                rec.pop("unavailable_alerted")
                self.alerter.forget(f"unavailable:{stack}/{o.service}")
            if rec.get("action") and rec.get("outcome") == "pending" and o.health in (None, "healthy"):
                rec["outcome"] = "recovered"
        else:
            rec.setdefault("bad_since", time.time())
        self.counters.by_service[f"{stack}/{o.service}"] = seen

    # -- recovery -----------------------------------------------------------------------------------
    async def _recover(self, stack: str, o: Observed, kind: str, policy: StackPolicy,
                       location: StackLocation | None) -> None:
        recovery = policy.service(o.service).recovery
        if not recovery.enabled:
            return
        if self.runtime.target.read_only:  # DSM_ENGINES (ro): observed and alerted, never changed
            await self._alert(stack, Alert(
                key=f"read-only:{stack}/{o.service}", level="critical", title=f"{stack}/{o.service}: {kind}",
                what_broke=f"{o.service}: {kind} ({_state_line(o)})",
                what_was_tried=f"nothing: engine {self.runtime.target.name!r} is read-only (rule engine-read-only)",
                what_to_do=f"run diagnose_stack {stack}; fix it on that engine by hand"))
            return
        rec = self.state.service(stack, o.service)
        now = time.time()
        key = f"{o.full_id[:12]}@{o.state.get('StartedAt')}/{o.state.get('FinishedAt')}"
        attempts = [t for t in rec.get("attempts") or [] if now - t < recovery.window_s]
        rec["attempts"] = attempts
        if rec.get("last_key") == key:
            # Already acted on this very failure (also across a restart of the watcher): the
            # container has not started again since. Only an action that a killed watcher left
            # half-done (in_flight) is issued again, and it is not counted twice.
            if not (rec.get("in_flight") and attempts and now - attempts[-1] > _IN_FLIGHT_RETRY_S):
                return
            log.warning("re-issuing the %s of %s/%s interrupted when the watcher stopped", rec.get("action"),
                        stack, o.service)
            await self._act(stack, o, kind, rec, location, len(attempts), attempts)
            return
        if len(attempts) >= recovery.max_restarts:
            if not rec.get("exhausted"):
                rec["exhausted"] = True
                rec["action"], rec["action_at"], rec["outcome"] = "gave-up", now_iso(), "unresolved"
                self.counters.gave_up += 1
                self.state.save()
                await self._give_up(stack, o, kind, len(attempts), recovery.window_s)
            return
        if rec.pop("exhausted", None):
            self.alerter.forget(f"budget:{stack}/{o.service}")
        if attempts:
            wait = recovery.backoff_s * 2 ** (len(attempts) - 1)
            if now - attempts[-1] < wait:
                rec["next_attempt_at"] = attempts[-1] + wait
                return
        attempts.append(now)
        action = "restart" if o.state.get("Status") == "running" else "recreate"
        rec.update(attempts=attempts, last_key=key, action=action, action_at=now_iso(), outcome="pending",
                   in_flight=True)
        rec.pop("next_attempt_at", None)
        self.state.save()  # before acting: a watcher killed now must not act twice
        await self._act(stack, o, kind, rec, location, len(attempts), attempts)

    async def _act(self, stack: str, o: Observed, kind: str, rec: dict[str, Any], location: StackLocation | None,
                   attempt: int, attempts: list[float]) -> None:
        """Restart or recreate under a journaled ``recovery`` operation holding the stack's lock."""
        action = str(rec.get("action") or "restart")
        try:
            op = opsbridge.begin(self.runtime, stack, "recovery",
                                 {"service": o.service, "problem": kind, "attempt": attempt})
        except StackBusy:
            self.counters.skipped_busy += 1
            rec["in_flight"] = True  # not done: the next pass (or a restarted watcher) issues it
            return
        self._log_action(stack, o.service, action, kind)
        status, detail = "done", ""
        try:
            if action == "restart":
                await restart_container(self.runtime.engine(), o.full_id)
                self.counters.restarts += 1
            else:
                detail = await self._recreate(stack, o, location, op)
                self.counters.recreates += 1
        except DsmError as exc:
            status, detail = "failed", self.scrub(stack)(exc.what)
            rec["outcome"] = "failed"
            log.warning("%s of %s/%s failed: %s", action, stack, o.service, detail)
        finally:
            rec.pop("in_flight", None)
            op.phase(action, status, detail=self.scrub(stack)(detail) if detail else f"{kind}; attempt {attempt}")
            op.end("done" if status == "done" else "failed",
                   {"service": o.service, "action": action, "problem": kind, "attempt": attempt})
        self.state.save()
        log.warning("%s %s/%s (%s), attempt %d", action, stack, o.service, kind, attempt)
        self._background(self.recorder.record_incident(
            title=f"{o.service} {kind}: watcher {action}", stack=stack, service=o.service, severity="medium",
            symptoms=f"{o.service} of {stack} was {kind} ({_state_line(o)})", resolution=f"watcher {action}",
            outcome="recovering", source="recovery", tags=["watcher", _slug(kind)], scrub=self.scrub(stack)))

    async def _recreate(self, stack: str, o: Observed, location: StackLocation | None, op: Any) -> str:
        """Compose recreates the service when its files still match the container; else a plain start."""
        if location is not None:
            project = location.project().named(stack)
            try:
                result = await self.runtime.compose().run_project(project, ["config", f"--hash={o.service}"],
                                                                  timeout_s=30)
                now_hash = (result.stdout.split() or ["", ""])[-1]
            except DsmError:
                now_hash = ""
            if now_hash and now_hash == o.labels.get("com.docker.compose.config-hash"):
                await self.runtime.compose().run_project(
                    project, ["up", "-d", "--no-deps", "--force-recreate", *services_argv([o.service])],
                    what="docker compose up (watcher recreate)", on_start=op.child if op is not None else None)
                return "recreated with docker compose up --no-deps --force-recreate"
        await start_container(self.runtime.engine(), o.full_id)
        return "started the existing container (files differ from the running config, or no files)"

    async def _give_up(self, stack: str, o: Observed, kind: str, attempts: int, window_s: int) -> None:
        lines = await self._tail(o, 5)
        alert = Alert(
            key=f"budget:{stack}/{o.service}", level="critical",
            title=f"{stack}/{o.service}: {kind}, the watcher stopped trying",
            what_broke=f"{o.service} of stack {stack} is {kind} ({_state_line(o)}). Last lines: "
            + " | ".join(lines[-3:]),
            what_was_tried=f"{attempts} automatic restarts within {window_s} s, with backoff",
            what_to_do=f"run diagnose_stack {stack} (service {o.service}), fix the cause, then "
            f"stack_control restart; the watcher resumes when the budget window has passed")
        await self._alert(stack, alert)
        try:
            op = opsbridge.begin(self.runtime, stack, "recovery", {"service": o.service, "problem": kind})
            op.phase("gave-up", "failed", detail=f"{attempts} attempts in {window_s}s")
            op.end("failed", {"service": o.service, "action": "gave-up", "problem": kind})
        except Exception as exc:  # busy or no journal: the alert and the incident still say it
            log.info("gave-up not journaled: %s", exc)
        self._log_action(stack, o.service, "gave-up", kind)
        self._background(self.recorder.record_incident(
            title=f"{o.service} of {stack} keeps failing ({kind}); automatic recovery gave up",
            symptoms=f"{o.service} {kind}: {_state_line(o)}", stack=stack, service=o.service, severity="high",
            log_lines=lines, outcome="unresolved", source="recovery",
            tags=["watcher", "budget-exhausted", _slug(kind)], scrub=self.scrub(stack)))

    async def _rollback_if_fresh_deploy(self, stack: str, policy: StackPolicy, broken: list[tuple[Observed, str]],
                                        containers: list[Observed]) -> bool:
        window = policy.settings.watch_after_deploy_s
        try:
            last = opsbridge.last_deployment(self.runtime, stack)
        except Exception:
            return False
        if last is None or window <= 0 or last.kind != "deploy" or last.status != "deployed":
            return False
        ended = iso_to_epoch(last.ended_at or "")
        if ended is None or time.time() - ended > window:
            return False
        done = self.state.data.setdefault("rollbacks", {})
        if last.operation_id in done:
            return False
        since = iso_to_epoch(last.started_at or "") or ended
        listed = {o.full_id for o, _ in broken}
        broken = broken + [(o, kind) for o in _dependency_order(containers)
                           if o.full_id not in listed and (kind := self._crash_looping(stack, o, policy, since))]
        if not broken:
            return False
        done[last.operation_id] = now_iso()
        self.state.save()
        what = ", ".join(f"{o.service} {kind}" for o, kind in broken)
        why = f"{what} within {window} s of deployment {last.operation_id}"
        self._log_action(stack, "*", "rollback", what)
        # The evidence first: the rollback replaces the broken containers and their logs with them.
        lines = [ln for o, _ in broken[:3] for ln in await self._tail(o, 10)]
        started = time.monotonic()
        report: Any = None
        try:
            report = await opsbridge.rollback(self.runtime, stack, f"watcher: {why}")
        except opsbridge.RollbackUnavailable as exc:
            msg = str(exc)
        except DsmError as exc:
            msg = exc.what
        else:
            status = getattr(report, "status", None)
            msg = f"the rollback ended {status}" + (
                f" ({report.rollback.why})" if getattr(report, "rollback", None) is not None else "")
        status = getattr(report, "status", None)
        if status == "busy":
            # Another operation took the stack first: nothing was done; the next pass decides again.
            done.pop(last.operation_id, None)
            self.state.save()
            return False
        ok = status == "rolled_back"
        to = getattr(getattr(report, "rollback", None), "to_deployment", None)
        first, kind = broken[0]
        self._background(self.recorder.record_incident(
            title=f"{first.service} {kind} right after a deployment: automatic rollback "
            + ("done" if ok else "failed"), stack=stack, service=first.service, severity="high",
            symptoms=f"{why} ({_state_line(first)})", log_lines=lines,
            resolution=f"watcher rolled {stack} back to deployment {to}" if ok else f"automatic rollback: {msg}",
            outcome="rolled_back" if ok else "unresolved", source="rollback",
            time_to_recover_s=round(time.monotonic() - started, 1) if ok else None,
            tags=["watcher", "auto-rollback", _slug(kind)], scrub=self.scrub(stack)))
        if ok:
            self.counters.rollbacks += 1
            await self._alert(stack, Alert(
                key=f"rollback:{stack}:{last.operation_id}", level="warning", title=f"{stack}: rolled back",
                what_broke=why, what_was_tried=f"automatic rollback to deployment {to}",
                what_to_do="check the failed release before deploying it again (stack_history, diagnose_stack)"))
            return True
        await self._alert(stack, Alert(
            key=f"rollback-failed:{stack}:{last.operation_id}", level="critical",
            title=f"{stack}: automatic rollback failed", what_broke=f"{what} right after deployment "
            f"{last.operation_id}", what_was_tried=f"automatic rollback: {msg}",
            what_to_do=f"call rollback for {stack} by hand or fix forward; the watcher now restarts services"))
        return False

    def _crash_looping(self, stack: str, o: Observed, policy: StackPolicy, since: float) -> str | None:
        """Restarted by the engine's restart policy since ``since`` (the deployment): broken, though
        ``running`` again most of the time (``restart: unless-stopped`` hides a crash loop)."""
        if policy.service(o.service).is_one_shot or o.labels.get("com.docker.compose.oneoff") == "True":
            return None
        count = int(o.inspect.get("RestartCount") or 0)
        created = iso_to_epoch(str(o.inspect.get("Created") or ""))
        if count and created is not None and created >= since:
            return f"restarted {count} time(s) by the engine since the deployment"
        # A container the deployment did not recreate: the restarts the watcher saw since.
        seen = [t for t in self.state.service(stack, o.service).get("engine_restarts") or [] if t >= since]
        if seen:
            return f"restarted {len(seen)} time(s) by the engine since the deployment"
        if (o.state.get("Status") or o.summary.state) == "restarting":
            return "crashing (restarting under its restart policy)"
        return None

    async def _restart_storms(self, stack: str, containers: list[Observed], policy: StackPolicy) -> None:
        """The engine's own restart policy looping a crashing container: alert once per window."""
        now = time.time()
        for o in containers:
            recovery = policy.service(o.service).recovery
            rec = self.state.service(stack, o.service)
            count = int(o.inspect.get("RestartCount") or 0)
            seen = rec.get("engine_restart_count")
            times = [t for t in rec.get("engine_restarts") or [] if now - t < recovery.window_s]
            if seen is not None and rec.get("engine_restart_id") == o.full_id[:12] and count > seen:
                times.extend([now] * min(count - seen, 20))
            rec.update(engine_restart_count=count, engine_restart_id=o.full_id[:12], engine_restarts=times)
            if len(times) > max(recovery.max_restarts, 1):
                await self._alert(stack, Alert(
                    key=f"restart-storm:{stack}/{o.service}", level="critical",
                    title=f"{stack}/{o.service} is in a restart loop",
                    what_broke=f"the engine restarted {o.service} {len(times)} times in {recovery.window_s} s "
                    f"({_state_line(o)})",
                    what_was_tried="the container's own restart policy",
                    what_to_do=f"run diagnose_stack {stack}; restarts will not fix a crash on start"))

    # -- thresholds ---------------------------------------------------------------------------------
    async def _thresholds(self, stack: str, containers: list[Observed], policy: StackPolicy,
                          usage: dict[str, Any]) -> None:
        watch = policy.settings.watch
        now = time.time()
        running = [o for o in containers if o.summary.running]
        for o in containers:
            rec = self.state.service(stack, o.service)
            bad_since = rec.get("bad_since")
            if bad_since and now - bad_since > watch.unavailable_s and not rec.get("unavailable_alerted"):
                rec["unavailable_alerted"] = True
                await self._alert(stack, Alert(
                    key=f"unavailable:{stack}/{o.service}", level="critical",
                    title=f"{stack}/{o.service} unavailable for {int(now - bad_since)} s",
                    what_broke=f"{o.service} has not been running and healthy since "
                    f"{time.strftime('%H:%M:%S', time.gmtime(bad_since))} UTC ({_state_line(o)})",
                    what_was_tried=f"{len(rec.get('attempts') or [])} automatic restarts",
                    what_to_do=f"run diagnose_stack {stack}"))
            u = usage.get(o.summary.id)
            if u is None:
                continue
            if u.memory_bytes and (u.memory_bytes > (rec.get("peak_memory_bytes") or 0)):
                rec["peak_memory_bytes"] = u.memory_bytes
            limit = o.memory_limit
            if u.memory_bytes and limit and u.memory_bytes * 100 >= watch.memory_percent * limit:
                await self._threshold(stack, o, policy, "memory",
                                      f"memory at {u.memory_bytes * 100 // limit}% of its {limit} byte limit")
            cpus = ((o.inspect.get("HostConfig") or {}).get("NanoCpus") or 0) / 1e9
            if u.cpu_percent and cpus and u.cpu_percent >= watch.cpu_percent * cpus:
                await self._threshold(stack, o, policy, "cpu", f"CPU at {u.cpu_percent}% with a limit of {cpus} CPUs")
        await self._scan_logs(stack, running, policy)

    async def _scan_logs(self, stack: str, running: list[Observed], policy: StackPolicy) -> None:
        watch = policy.settings.watch
        now = time.time()
        for o in running:
            rec = self.state.service(stack, o.service)
            since = int(rec.get("logs_scanned_to") or now - 60)
            if now - since < 5:
                continue
            try:
                lines = [ln.partition(" ")[2] for ln in await container_logs(
                    self.runtime.engine(), o.full_id, tail=1000, since=since, until=int(now))]
            except DsmError:
                continue
            rec["logs_scanned_to"] = int(now)
            minutes = max((now - since) / 60.0, 1.0)
            critical = [ln for ln in lines if CRITICAL_LINE.search(ln)]
            if len(critical) / minutes > watch.critical_lines_per_min:
                await self._threshold(stack, o, policy, "critical-logs",
                                      f"{len(critical)} critical log lines in {int(now - since)} s", critical[-3:])
            db = [ln for ln in lines if DB_CONNECTION.search(ln)]
            if db and watch.database_errors:
                await self._threshold(stack, o, policy, "database-errors",
                                      f"{len(db)} database connection errors in {int(now - since)} s", db[-3:])

    async def _threshold(self, stack: str, o: Observed, policy: StackPolicy, what: str, detail: str,
                         lines: list[str] | None = None) -> None:
        watch = policy.settings.watch
        acted = ""
        if watch.on_threshold == "restart" and what != "database-errors":
            await self._recover(stack, o, f"over threshold ({what})", policy, None)
            acted = "a restart (per policy on_threshold: restart)"
        await self._alert(stack, Alert(
            key=f"threshold:{what}:{stack}/{o.service}", level="critical", title=f"{stack}/{o.service}: {detail}",
            what_broke=detail + (". Lines: " + " | ".join(lines) if lines else ""),
            what_was_tried=acted or "nothing (policy on_threshold: alert)",
            what_to_do=f"run diagnose_stack {stack} and check_resources"))

    # -- helpers ------------------------------------------------------------------------------------
    def scrub(self, stack: str) -> Scrubber:
        """The stack's scrubber of this pass (shapes only before its first pass)."""
        return self._scrubbers.get(stack) or Scrubber()

    async def _alert(self, stack: str, alert: Alert) -> None:
        if self._paused(stack):
            return
        if await self.alerter.send(alert, scrub=self.scrub(stack)):
            self.counters.alerts += 1

    async def _tail(self, o: Observed, n: int) -> list[str]:
        try:
            return [ln.partition(" ")[2] for ln in await container_logs(self.runtime.engine(), o.full_id, tail=n)]
        except DsmError:
            return []

    def _log_action(self, stack: str, service: str, action: str, why: str) -> None:
        actions = self.state.data.setdefault("actions", [])
        actions.append({"time": now_iso(), "stack": stack, "service": service, "action": action, "why": why})
        del actions[:-_MAX_ACTIONS_KEPT]

    def _background(self, coro: Any) -> None:
        """Memory writes must not delay the next action."""
        if self._tg is not None:
            self._tg.start_soon(_swallow, coro)
        else:
            coro.close()


def _broken(o: Observed, policy: StackPolicy) -> str | None:
    status = o.state.get("Status") or o.summary.state
    settings = policy.service(o.service)
    if settings.is_one_shot or o.labels.get("com.docker.compose.oneoff") == "True":
        return None
    if status == "running" and o.health == "unhealthy":
        return "unhealthy"
    if status in ("exited", "dead"):
        if o.state.get("OOMKilled"):
            return "oom-killed"
        code = int(o.state.get("ExitCode") or 0)
        if code != 0:
            return f"exited with code {code}"
    return None


def _dependency_order(containers: list[Observed]) -> list[Observed]:
    """Dependencies before the services that need them (Compose's depends_on label)."""
    from server.monitor.netcheck import dependencies

    by_service = {o.service: o for o in containers}
    ordered: list[Observed] = []
    visiting: set[str] = set()

    def visit(o: Observed) -> None:
        if o in ordered or o.service in visiting:
            return
        visiting.add(o.service)
        for dep in dependencies(o):
            if dep in by_service:
                visit(by_service[dep])
        ordered.append(o)

    for o in sorted(containers, key=lambda c: c.service):
        visit(o)
    return ordered


def _slug(text: str) -> str:
    """A memory tag from a problem ('exited with code 1' -> 'exited-with-code-1')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:64] or "problem"


def _state_line(o: Observed) -> str:
    st = o.state
    parts = [str(st.get("Status"))]
    if o.health:
        parts.append(f"health {o.health}")
    if st.get("Status") in ("exited", "dead"):
        parts.append(f"exit code {st.get('ExitCode')}")
    if st.get("OOMKilled"):
        parts.append("OOM-killed")
    return ", ".join(parts)


async def _wait_then_cancel(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _swallow(coro: Any) -> None:
    try:
        await coro
    except Exception:
        log.debug("background task failed", exc_info=True)
