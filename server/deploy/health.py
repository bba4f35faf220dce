"""The health gate: our own, not just ``up --wait``.

Polls ``container inspect`` for every container of the stack until all are ready, failing fast:
an exited long-running service, ``unhealthy``, a restart count that rises, an OOM kill. One-shot
services that exit 0 count as done; services without a healthcheck (waived) must stay running
for a grace period. The verification window (verify.py) reuses :func:`assess` every second.
Between polls the gate also listens to the engine's events for the project (health status,
start, die, OOM...), so a container turning healthy is seen when it happens, not at the next
poll; without events (an engine that refuses the stream) it simply polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from server.engine import Engine, events_iter, inspect_container, read_logs
from server.errors import EngineError

log = logging.getLogger("docker_stack_mcp.deploy")

Verdict = Literal["ready", "waiting", "failed"]
POLL_S = 0.25
WAKE_EVENTS = ("health_status", "start", "die", "oom", "restart", "destroy")
GRACE_S = 5.0


@dataclass(frozen=True)
class Watched:
    """A service the gate watches and what counts as ready for it."""

    service: str
    one_shot: bool = False


@dataclass
class Assessment:
    service: str
    container: str
    verdict: Verdict
    state: str
    health: str | None
    why: str = ""
    exit_code: int | None = None
    evidence: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    ok: bool
    assessments: list[Assessment]
    failure: str = ""
    failed_service: str | None = None
    evidence: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def assess(
    info: dict[str, Any], watched: Watched, *, baseline_restarts: int, now: float, grace_s: float = GRACE_S
) -> Assessment:
    """Judge one container from its inspect output."""
    state = info.get("State") or {}
    status = str(state.get("Status") or "unknown")
    health_block = state.get("Health") or {}
    health = health_block.get("Status") if health_block else None
    name = str(info.get("Name") or "").lstrip("/")
    restarts = int(info.get("RestartCount") or 0)
    exit_code = state.get("ExitCode")

    def verdict(v: Verdict, why: str = "", evidence: list[str] | None = None) -> Assessment:
        return Assessment(watched.service, name, v, status, health, why, exit_code if status != "running" else None,
                          evidence or [])

    if state.get("OOMKilled"):
        return verdict("failed", "was killed for running out of memory (OOMKilled)", [f"{name}: OOMKilled=true"])
    if restarts > baseline_restarts:
        return verdict("failed", f"is in a restart loop ({restarts - baseline_restarts} restart(s), last exit "
                       f"code {exit_code})", [f"{name}: RestartCount={restarts}, ExitCode={exit_code}"])
    if status in ("exited", "dead"):
        if watched.one_shot and exit_code == 0:
            return verdict("ready", "one-shot service completed (exit 0)")
        return verdict("failed", f"exited with code {exit_code}", [f"{name}: exited, ExitCode={exit_code}"])
    if status == "restarting":
        return verdict("failed", f"is restarting (last exit code {exit_code})", [f"{name}: restarting"])
    if status != "running":
        return verdict("waiting", f"is {status}")
    if watched.one_shot:
        return verdict("waiting", "one-shot service still running")
    if health == "unhealthy":
        logs = [str(entry.get("Output") or "").strip()[:300] for entry in (health_block.get("Log") or [])[-3:]]
        return verdict("failed", "is unhealthy (healthcheck failing)",
                       [f"{name}: health check output: {o}" for o in logs if o] or [f"{name}: unhealthy"])
    if health == "healthy":
        return verdict("ready", "healthy")
    if health is None:
        started = _parse_time(state.get("StartedAt"))
        up_for = now - started if started else 0.0
        if up_for >= grace_s:
            return verdict("ready", f"running for {up_for:.0f}s (no healthcheck: waived)")
        return verdict("waiting", f"no healthcheck: must stay up {grace_s:.0f}s")
    return verdict("waiting", "health: starting")


async def run_gate(
    engine: Engine,
    project: str,
    watched: list[Watched],
    *,
    timeout_s: float,
    on_wait: Callable[[str], Awaitable[None]] | None = None,
    grace_s: float = GRACE_S,
) -> GateResult:
    """Poll until every watched service is ready, any fails, or ``timeout_s`` passes."""
    waker = _Waker()
    await waker.start(engine, project)  # before the first look: a change after it is not missed
    try:
        return await _gate(engine, project, watched, timeout_s, on_wait, grace_s, waker)
    finally:
        waker.close()


async def _gate(engine: Engine, project: str, watched: list[Watched], timeout_s: float,
                on_wait: Callable[[str], Awaitable[None]] | None, grace_s: float, waker: _Waker) -> GateResult:
    started = time.monotonic()
    baseline: dict[str, int] = {}
    by_service = {w.service: w for w in watched}
    last_report = 0.0
    assessments: list[Assessment] = []
    while True:
        containers = [c for c in await engine.compose_containers(project)
                      if c.service in by_service and c.labels.get("com.docker.compose.oneoff") != "True"]
        assessments = []
        seen = set()
        for c in containers:
            info = await inspect_container(engine, c.id)
            if info is None:
                continue
            seen.add(c.service)
            key = str(info.get("Id"))
            # A restart count that RISES is a loop. The count when first seen is the baseline: a
            # container the deploy left alone may carry restarts from long ago (a crash last month
            # that its restart policy recovered), which say nothing about this deploy.
            baseline.setdefault(key, int(info.get("RestartCount") or 0))
            a = assess(info, by_service[c.service or ""], baseline_restarts=baseline[key], now=time.time(),
                       grace_s=grace_s)
            if a.verdict == "failed":
                a.evidence.extend(await log_tail(engine, key))
                return GateResult(False, [*assessments, a], f"{a.service} {a.why}", a.service, a.evidence,
                                  time.monotonic() - started)
            assessments.append(a)
        for missing in sorted(set(by_service) - seen):
            assessments.append(Assessment(missing, "", "waiting", "absent", None, "no container yet"))
        elapsed = time.monotonic() - started
        if all(a.verdict == "ready" for a in assessments):
            return GateResult(True, assessments, duration_s=elapsed)
        if elapsed >= timeout_s:
            pending = [a for a in assessments if a.verdict != "ready"]
            first = pending[0]
            evidence = []
            for a in pending[:3]:
                evidence.append(f"{a.service}: {a.why}")
            why = f"not ready within {timeout_s:.0f}s: " + ", ".join(f"{a.service} {a.why}" for a in pending)
            return GateResult(False, assessments, why, first.service, evidence, elapsed)
        if on_wait and elapsed - last_report >= 2.0:
            last_report = elapsed
            waiting = ", ".join(f"{a.service} ({a.why})" for a in assessments if a.verdict != "ready")
            await on_wait(f"waiting on health ({elapsed:.0f}s/{timeout_s:.0f}s): {waiting}")
        await waker.wait(POLL_S)


class _Waker:
    """Wakes the gate as soon as the engine reports a change to one of the project's containers.

    Best effort by design: the gate still polls every POLL_S, so a stream that fails to open,
    ends or lags costs speed, never correctness. The stream is read in a daemon thread and
    closed (its socket shut) when the gate ends."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._stream: Any = None
        self._closed = False

    async def start(self, engine: Engine, project: str) -> None:
        filters = {"type": "container", "label": f"com.docker.compose.project={project}", "event": list(WAKE_EVENTS)}
        try:
            self._stream = await anyio.to_thread.run_sync(lambda: events_iter(engine, None, filters))
        except Exception as exc:
            log.debug("health gate: no engine events (%s); polling only", type(exc).__name__)
            return
        token = anyio.lowlevel.current_token()
        threading.Thread(target=self._read, args=(token,), name=f"gate-events-{project}", daemon=True).start()

    def _read(self, token: Any) -> None:
        try:
            for _ in self._stream:
                if self._closed:
                    return
                anyio.from_thread.run_sync(self._set, token=token)
        except Exception:  # closed under us, the engine went away, the loop ended: polling goes on
            return

    def _set(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        """Until an event came in (possibly already) or ``timeout_s`` passed."""
        with anyio.move_on_after(timeout_s):
            await self._event.wait()
        self._event = anyio.Event()

    def close(self) -> None:
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:
                log.debug("health gate: closing the event stream failed", exc_info=True)


async def log_tail(engine: Engine, container_id: str, lines: int = 15) -> list[str]:
    """The container's last log lines as evidence. Never raises for the container: logs are
    evidence, and a container removed meanwhile (a rollback replacing it) must not fail the gate."""
    try:
        found = await read_logs(engine, container_id, tail=lines)
    except EngineError as exc:
        return [f"log: (not readable: {exc.what[:200]})"]
    if found is None:
        return [f"log: (container {container_id[:12]} is gone: removed while its logs were read)"]
    return [f"log: {ln.split(' ', 1)[-1][:300]}" for ln in found if ln.strip()][-lines:]


def _parse_time(value: Any) -> float | None:
    if not value or str(value).startswith("0001-"):
        return None
    import itertools
    from datetime import datetime

    text = str(value)
    if "." in text:  # nanoseconds: datetime takes microseconds
        head, frac = text.split(".", 1)
        digits = "".join(itertools.takewhile(str.isdigit, frac))
        tz = frac[len(digits):]
        text = f"{head}.{digits[:6]}{tz}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
