"""The automatic-capture interface: what the deploy, rollback and recovery pipelines call.

A failing memory must never fail a deployment or a rollback, so every method here catches
everything, logs it to stderr and returns None instead of an id. The methods are async and
run the blocking work in a worker thread.

What is recorded is scrubbed by the stack's one scrubber first (server.stacksecrets: its known
secrets, .env credentials and every shape; the memory itself masks shapes only): a password
from the stack's .env in a log line must not be stored and offered to later sessions. The
caller passes ``scrub`` when it has the stack's scrubber at hand (the watcher); otherwise the
stack's known secrets are read from DSM_STATE_DIR (``settings``, or the Runtime whose
``memory`` method was passed as the provider).

Usage from a pipeline::

    recorder = MemoryRecorder(runtime.memory)
    dep_id = await recorder.record_deployment(
        stack="supabase", services=["db", "auth", "rest"], outcome="rolled_back",
        image_digests={"auth": "sha256:..."}, duration_s=93.4, strategy="rolling",
        log_lines=stderr_tail, operation_id=journal_op_id)
    await recorder.record_incident(
        title="auth unhealthy after update to v2.150", symptoms="...", stack="supabase",
        service="auth", severity="high", log_lines=logs, deployment_id=dep_id,
        time_to_recover_s=41.0, outcome="rolled_back", source="rollback")
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from server.errors import DsmError

if TYPE_CHECKING:
    from server.memory.service import Memory
    from server.settings import Settings

Scrub = Callable[[str], str]

log = logging.getLogger("docker_stack_mcp.memory")


class MemoryRecorder:
    """Records deployments and incidents on behalf of the pipelines; never raises."""

    def __init__(self, memory: Callable[[], Memory], settings: Settings | None = None) -> None:
        """``memory`` is a provider (e.g. ``runtime.memory``), called lazily on first record."""
        self._memory = memory
        # runtime.memory is a bound method of the Runtime: its settings locate the known secrets.
        self._settings = settings or getattr(getattr(memory, "__self__", None), "settings", None)

    def _scrubber(self, stack: str | None, scrub: Scrub | None) -> Scrub:
        if scrub is not None:
            return scrub
        from server.stacksecrets import stack_scrubber

        return stack_scrubber(self._settings, stack) if stack else stack_scrubber(None, "")

    async def record_deployment(
        self,
        *,
        stack: str,
        services: Sequence[str],
        outcome: str,
        image_digests: dict[str, str] | None = None,
        duration_s: float | None = None,
        strategy: str | None = None,
        log_lines: Sequence[str] = (),
        notes: str | None = None,
        pattern_id: str | None = None,
        incident_id: str | None = None,
        operation_id: str | None = None,
        scrub: Scrub | None = None,
    ) -> str | None:
        """Store one finished deployment; returns its id, or None when memory failed.

        ``outcome``: success | failure | rolled_back | rollback_failed. ``log_lines``: error
        lines, stored as fingerprints. ``pattern_id``: the deployment pattern that was followed;
        its success/failure count is updated from ``outcome``. ``operation_id``: the journal's
        id, which makes a retried call update instead of duplicate.
        """

        def run() -> str:
            clean = self._scrubber(stack, scrub)
            memory = self._memory()
            deployment_id = memory.record_deployment(
                stack=stack, services=services, outcome=outcome, image_digests=image_digests,
                duration_s=duration_s, strategy=strategy, log_lines=_page(clean, log_lines),
                notes=clean(notes) if notes else notes, pattern_id=pattern_id, incident_id=incident_id,
                operation_id=operation_id)
            if pattern_id:
                memory.record_pattern_outcome(pattern_id, "success" if outcome == "success" else "failure",
                                              notes=f"deployment {deployment_id}: {outcome}")
            return deployment_id

        return await self._safely("record_deployment", run)

    async def record_incident(
        self,
        *,
        title: str,
        symptoms: str,
        stack: str | None = None,
        service: str | None = None,
        severity: str = "high",
        root_cause: str | None = None,
        resolution: str | None = None,
        log_lines: Sequence[str] = (),
        tags: Sequence[str] = (),
        deployment_id: str | None = None,
        image_digests: dict[str, str] | None = None,
        time_to_recover_s: float | None = None,
        outcome: str | None = None,
        source: str = "pipeline",
        scrub: Scrub | None = None,
    ) -> str | None:
        """Store (or count again) an incident seen by a pipeline; returns its id or None.

        ``source`` names the caller (deploy, rollback, recovery, monitor); ``outcome`` says how
        it ended (recovered, rolled_back, unresolved, ...).
        """

        def run() -> str:
            clean = self._scrubber(stack, scrub)
            return self._memory().record_incident(
                title=clean(title), symptoms=clean(symptoms), stack=stack, service=service, severity=severity,
                root_cause=clean(root_cause) if root_cause else root_cause,
                resolution=clean(resolution) if resolution else resolution, log_lines=_page(clean, log_lines),
                tags=tags,
                deployment_id=deployment_id, image_digests=image_digests, time_to_recover_s=time_to_recover_s,
                outcome=outcome, source=source).incident_id

        return await self._safely("record_incident", run)

    async def _safely(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn))
        except anyio.get_cancelled_exc_class():
            raise
        except DsmError as exc:
            log.warning("memory %s refused: %s; the operation itself is unaffected", what, exc)
            return None
        except Exception:
            log.exception("memory %s failed; the operation itself is unaffected", what)
            return None


def _page(clean: Scrub, lines: Sequence[str]) -> list[str]:
    """Log lines scrubbed as one text when ``clean`` is a Scrubber (a PEM key masked whole)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    page = getattr(clean, "page", None)
    return list(page(list(lines))) if page is not None else [clean(str(ln)) for ln in lines]
