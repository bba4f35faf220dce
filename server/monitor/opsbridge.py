"""The one seam to the journal, per-stack lock and maintenance windows (server.operations).

Everything the monitor needs from operations goes through here, so it reads the same
journal and locks as deploy_stack, backup_stack and rollback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger("docker_stack_mcp.monitor")


def operations(runtime: Runtime) -> Any:
    return runtime.operations()


def maintenance(runtime: Runtime, stack: str) -> dict[str, Any] | None:
    """The active maintenance window of ``stack`` (None when none or expired)."""
    window = operations(runtime).maintenance(stack)
    return dict(window) if window else None


def running(runtime: Runtime, stack: str) -> Any:
    """The operation holding the stack's lock now (deploy, rollback, backup, control...), or None."""
    return operations(runtime).running(stack)


_CHANGED_NOTHING = frozenset({"unchanged", "blocked", "planned"})


def last_deployment(runtime: Runtime, stack: str) -> Any:
    """The newest deploy or rollback that changed ``stack`` (an OperationRecord), or None.

    A deploy that found nothing to do (``unchanged``) does not hide the release before it, and a
    rollback (by hand or by the watcher) is the newest change: the caller then sees a rollback,
    not a fresh deployment, and must not roll back once more (that would go one release further
    back)."""
    history = operations(runtime).history(stack, kinds=("deploy", "rollback"), limit=50)
    return next((h for h in history if h.status not in _CHANGED_NOTHING), None)


def begin(runtime: Runtime, stack: str, kind: str, params: dict[str, Any] | None = None,
          directory: Path | None = None) -> Any:
    """Take the stack's lock (and its directory's) and open a journaled operation (raises StackBusy
    naming the holder)."""
    return operations(runtime).begin(stack, kind, params or {}, directory=directory)


def set_maintenance(runtime: Runtime, stack: str, until_iso: str | None, reason: str) -> None:
    operations(runtime).set_maintenance(stack, until_iso, reason)


class RollbackUnavailable(Exception):
    """The deploy pipeline's rollback is not available in this build."""


async def rollback(runtime: Runtime, stack: str, reason: str) -> Any:
    """The one seam to the deploy pipeline's rollback (server.deploy): back to the previous
    successful deployment, ``reason`` journaled with it. Returns the pipeline's DeployReport (its
    status says whether it worked: rolled_back, failed, busy); raises RollbackUnavailable when the
    pipeline is not in this build, a DsmError when there is nothing to roll back to."""
    try:
        from server.deploy.pipeline import Deployer  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise RollbackUnavailable(
            "automatic rollback is not available: server.deploy is not part of this build") from exc
    log.warning("rolling back %s: %s", stack, reason)
    return await Deployer(runtime).rollback(stack, confirm=True, reason=reason)
