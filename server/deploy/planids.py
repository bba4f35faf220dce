"""Which stack a plan_id was given for, so that a plan_id passed to another stack is answered as
such ("a plan of stack X") instead of "the plan changed".

A dry run's plan_id is a hash (server/deploy/plan.py): it names nothing. Each one a dry run
answers is remembered as an empty-ish file ``DSM_STATE_DIR/plans/<plan_id>`` holding the stack's
name, kept a day (a plan older than that has surely moved anyway). Reading or writing it never
fails a call: without it the answer is the old "changed".
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.deploy")
KEEP_S = 86400.0
_ID = re.compile(r"[0-9a-f]{8,64}")


def _dir(settings: Settings) -> Path:
    return settings.state_dir / "plans"


def remember(settings: Settings, stack: str, plan_id: str, tool: str) -> None:
    from server.statefiles import private_dir, write_private

    if not _ID.fullmatch(plan_id):
        return
    try:
        directory = private_dir(_dir(settings))
        write_private(directory / plan_id, f"{stack}\n{tool}\n")
        cutoff = time.time() - KEEP_S
        for old in directory.iterdir():
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("plan_id %s not remembered: %s", plan_id, exc)


def owner(settings: Settings, plan_id: str) -> tuple[str, str] | None:
    """(stack, tool) a dry run gave ``plan_id`` for, when remembered."""
    if not _ID.fullmatch(plan_id):
        return None
    try:
        stack, tool = [*(_dir(settings) / plan_id).read_text().splitlines(), "", ""][:2]
    except OSError:
        return None
    return (stack, tool) if stack else None


def mismatch(settings: Settings, stack: str, asked: str) -> str | None:
    """Why ``asked`` is not this stack's plan, when a dry run gave it for another stack."""
    found = owner(settings, asked)
    if found is None or found[0] == stack:
        return None
    return f"plan_id {asked} is a plan of stack {found[0]!r} (a {found[1] or 'dry run'} dry run), not of {stack!r}"
