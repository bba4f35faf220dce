"""The watcher's drift alert: a protected (DSM_POLICY) or critical (x-dsm) stack changed behind
the server's back since its last recorded deployment (server.monitor.driftcheck).

Once, not every pass: the changes already alerted are kept in the watcher's state (per stack, by
what changed), so a drift alerts when it first appears, a new change alerts again, and a change
that went away (fixed, or a deploy recorded a new baseline) is dropped: should it come back, it
alerts again. Each alert has its own key, so the alerter's de-duplication never swallows a new one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from server.monitor.alerts import Alert
from server.monitor.driftcheck import check
from server.monitor.stackpolicy import StackPolicy
from server.monitor.status import Observed
from server.stacks import StackLocation

if TYPE_CHECKING:
    from server.monitor.watcher import Watcher

log = logging.getLogger("docker_stack_mcp.watcher")


def watched_because(watcher: Watcher, stack: str, location: StackLocation, policy: StackPolicy) -> str | None:
    """Why drift of this stack is alerted (critical, protected by the policy), or None."""
    if policy.critical:
        return "critical stack (x-dsm)"
    try:
        from server.safety.gate import current

        hit = current(watcher.runtime.settings).policy.protection((stack, location.directory.name))
    except Exception as exc:  # an unusable policy file: the tools refuse changes and say so
        log.debug("policy unreadable for the drift watch: %s", exc)
        return None
    return f"protected by the safety policy ({hit[0]}: {hit[1]})" if hit else None


async def watch(watcher: Watcher, stack: str, containers: list[Observed], location: StackLocation | None,
                policy: StackPolicy) -> None:
    if location is None:
        return
    why = watched_because(watcher, stack, location, policy)
    if why is None:
        return
    runtime = watcher.runtime
    report = await check(runtime.settings, runtime.engine(), stack, location.directory,
                         [o.summary for o in containers], operations=runtime.operations())
    if report.note:  # nothing compared (no deployment recorded, a deploy running or failed): keep what we know
        return
    drift = watcher.state.data.setdefault("drift", {})
    rec = drift.setdefault(stack, {})
    keys = {f"{i.kind}|{i.service or ''}|{i.change}": i for i in report.items}
    alerted = set(rec.get("alerted") or [])
    new = [keys[k] for k in sorted(set(keys) - alerted)]
    if not keys:
        rec.pop("alerted", None)  # `sent` stays: the next alert's key must differ from the last one's
        return
    rec["alerted"] = sorted(keys)  # a change that went away drops out: if it comes back, it alerts again
    if not new:
        return
    rec["sent"] = int(rec.get("sent") or 0) + 1
    lines = [f"{i.service or 'files'}: {i.change} (since {i.since})" for i in new]
    await watcher._alert(stack, Alert(
        key=f"drift:{stack}:{report.deployment}:{rec['sent']}", level="warning",
        title=f"{stack}: changed outside the server since deployment {report.deployment}",
        what_broke=f"{why}: " + "; ".join(lines[:8]) + (f"; and {len(lines) - 8} more" if len(lines) > 8 else ""),
        what_was_tried="nothing: the watcher does not undo changes made by hand",
        what_to_do=f"find out who changed it; diagnose_stack {stack} lists the drift; deploy_stack (its dry run shows "
        "the drift it overwrites) or rollback puts the deployed state back, or write the change into the files"))
