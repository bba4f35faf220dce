"""Where a stack is and where a rollback goes, read from the journal; and adopting what ran before us.

A stack is at its newest good deployment (``deployed``, ``adopted``, or the deployment a
``rolled_back`` operation returned to). When a deploy or rollback after it was interrupted, or
failed after its backup (it may have changed the stack and not put it back), the stack is NOT
there any more: ``rollback()`` then goes back to that good deployment itself, not to the one
before it.

Adoption: the first time the server changes or backs up a running stack it has no deployment
for, it records the state it found as an ``adopted`` deployment (kind ``deploy``): the files as
found (a deployment snapshot), the images that ran (the backup's pins, with their original
references) and the backup's id, so a rollback can return to it and stack_history shows it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

log = logging.getLogger("docker_stack_mcp.deploy")

GOOD = ("deployed", "rolled_back", "adopted")
TARGETS = ("deployed", "adopted")


def backup_id_of(record: Any) -> str | None:
    """The backup an operation took (its result, else its journaled backup phase)."""
    from server.operations.views import backup_id_of as of

    return of(record)


def _left_dirty(record: Any) -> bool:
    """An operation that may have changed the stack without putting it back."""
    if record.status in ("interrupted", "running"):
        return True
    return bool(record.status == "failed" and backup_id_of(record))


def targets(history: list[Any], to_deployment: str | None) -> tuple[Any, Any]:
    """(current deployment, target): where the stack is, and where ``rollback`` goes (the one
    asked for; else the last good deployment when something after it was interrupted or failed
    without putting the stack back, else the deployment before the current one: after a deploy that
    rolled itself back, the one before the deployment it returned to). ``history`` is newest first."""
    ok = [h for h in history if h.status in GOOD and h.result]
    current = None
    dirty = False
    if ok:
        newest = ok[0]
        current_id = (newest.result or {}).get("current_deployment") or newest.operation_id
        current = next((h for h in history if h.operation_id == current_id), newest)
        dirty = any(_left_dirty(h) for h in history if h.started_at > newest.started_at)
        # A deploy that failed and rolled itself back is NOT dirty: the stack runs its last good
        # deployment again (verified), so "roll back" from there goes to the one before it.
    deployed = [h for h in history if h.status in TARGETS and h.kind == "deploy"]
    if to_deployment:
        return current, next((h for h in deployed if h.operation_id == to_deployment), None)
    if current is None:
        return None, None
    if dirty and current.kind == "deploy" and current.status in TARGETS:
        return current, current
    earlier = [h for h in deployed if h.started_at < current.started_at and h.operation_id != current.operation_id]
    return current, earlier[0] if earlier else None


def backup_after(history: list[Any], target: Any) -> str | None:
    """The data as ``target`` left it: its own backup when adopted (taken as found), else the backup
    taken by the operation that left it the LAST time the stack ran it. A stack returns to a
    deployment (a deploy that rolled itself back, an explicit rollback): the first backup after it
    would then miss every row written since it was returned to. Backups taken while the stack's
    state was unknown (after an interrupted or failed operation that did not put it back) are never
    the target's data. When the stack never left it with a backup, the first backup after it."""
    if target.status == "adopted" and backup_id_of(target):
        return backup_id_of(target)
    later = sorted((h for h in history if h.started_at > target.started_at), key=lambda h: h.started_at)
    current: str | None = target.operation_id
    found: str | None = None
    for h in later:
        if current == target.operation_id and (backup := backup_id_of(h)):
            found = backup
        if h.status in GOOD and h.result:
            current = (h.result or {}).get("current_deployment") or h.operation_id
        elif _left_dirty(h):
            current = None
    if found is None:  # left without a backup of its own: the first one taken after it, as before
        found = next((b for h in later if (b := backup_id_of(h))), None)
    return found


def _just_before(started_at: str | None) -> str:
    from server.operations.models import now_iso

    if not started_at:
        return now_iso()
    try:
        at = datetime.fromisoformat(started_at.replace("Z", "+00:00")) - timedelta(milliseconds=1)
    except ValueError:
        return now_iso()
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def adopt_if_new(runtime: Any, stack: Any, backup: Any, before: str | None = None) -> str | None:
    """Record what runs now as an ``adopted`` deployment when the journal has none for the stack
    (nothing deployed, rolled back or adopted). ``backup`` was just taken of that state; ``before``
    (the started_at of the operation taking it) dates the record just before that operation.
    Returns the adopted deployment id, or None (nothing to adopt, or already known). Never raises:
    adoption is a convenience for later rollbacks, never a reason to fail the caller."""
    try:
        return _adopt(runtime, stack, backup, before)
    except Exception:
        log.exception("adopting the running state of %s failed", getattr(stack, "name", "?"))
        return None


def _adopt(runtime: Any, stack: Any, backup: Any, before: str | None) -> str | None:
    import os

    from server.deploy import snapshots
    from server.operations.models import new_operation_id, now_iso

    if backup is None or not backup.images or stack.directory is None:
        return None  # nothing runs: there is nothing to go back to
    ops = runtime.operations()
    history = ops.history(stack.name, limit=500)
    if any(h.status in GOOD for h in history):
        return None
    op_id = new_operation_id()
    at = _just_before(before)
    snapshots.save(runtime.settings, stack.name, op_id, stack.directory)
    images = [{"service": p.service, "image": p.image, "digest": p.digest} for p in backup.images]
    result = {
        "status": "adopted", "stack": stack.name, "backup_id": backup.backup_id, "current_deployment": op_id,
        "image_ids": {p.service: p.image_id for p in backup.images}, "images": images,
        "summary": f"adopted: what ran before docker-stack-mcp first changed or backed it up (backup "
                   f"{backup.backup_id})",
    }
    ops.journal.append({"op": op_id, "t": "begin", "stack": stack.name, "kind": "deploy", "at": at,
                        "pid": os.getpid(), "params": {"adopted": True}})
    ops.journal.append({"op": op_id, "t": "end", "stack": stack.name, "at": now_iso(), "status": "adopted",
                        "result": result})
    log.info("adopted the running state of %s as deployment %s", stack.name, op_id)
    return op_id
