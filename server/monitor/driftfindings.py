"""Drift since the last recorded deployment (server.monitor.driftcheck) as diagnose_stack findings.

The model drift of issue 17 (server.monitor.drift: the running stack against its files) already
names a detached network, a missing container or another image, with the call that repairs it.
When the recorded deployment says the same thing, its "what changed and since when" is added to
that finding's evidence instead of a second finding; every other change (recreated, scaled, a
file edited, ...) is one ``drift-since-deploy`` finding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from server.monitor.driftcheck import DriftItem, DriftReport, check
from server.monitor.resolve import StackRef
from server.monitor.status import Observed
from server.runtime import Runtime

log = logging.getLogger("docker_stack_mcp.monitor")

RULE = "drift-since-deploy"
_SAME = {"network-detached": "network", "container-missing": "removed", "image-drift": "image"}
_CAUSE = {
    "removed": "the container was removed by hand (docker rm, docker compose rm/down) or by another tool",
    "added": "a service was started by hand (docker compose up SERVICE) after the files were edited",
    "image": "docker compose up or docker run by hand with another image or tag",
    "config": "docker compose up by hand after the files or .env were edited",
    "recreated": "docker compose up --force-recreate (or rm and up) by hand",
    "replicas": "docker compose up --scale (or docker compose scale) by hand",
    "network": "docker network disconnect/connect by hand, or the network was recreated under it",
    "file": "the file was edited on the host after the deployment",
}


async def recorded(runtime: Runtime, ref: StackRef, observed: list[Observed]) -> DriftReport | None:
    """The stack's drift since its last recorded deployment; None for a stack outside the root."""
    if ref.location is None:
        return None
    try:
        return await check(runtime.settings, runtime.engine(), ref.name, ref.location.directory,
                           [o.summary for o in observed], operations=runtime.operations())
    except Exception as exc:  # drift is one check among many: its failure must not hide the others
        log.warning("drift of %s not compared: %s", ref.name, exc)
        return None


def _line(report: DriftReport, item: DriftItem) -> str:
    return f"since deployment {report.deployment}: {item.change} (since {item.since})"


def evidence_for(report: DriftReport | None, service: str, rule: str) -> list[str]:
    """What the recorded deployment adds to a model drift finding of ``rule`` on ``service``."""
    kind = _SAME.get(rule)
    if report is None or kind is None:
        return []
    return [_line(report, i) for i in report.items if i.kind == kind and i.service == service]


def cause_for(report: DriftReport | None, service: str, rule: str, default: str) -> str:
    """A model drift finding's likely cause, worded by what drifted since the recorded deployment:
    the container (replaced by hand) or the files (edited, not deployed), when the record says."""
    if report is None or rule != "image-drift":
        return default
    container = any(i.kind in ("image", "config", "recreated") and i.service == service for i in report.items)
    files = [i.change.split()[0] for i in report.items if i.kind == "file"]
    if container and files:
        return (f"both moved since the deployment: the container was replaced by hand with another image, and "
                f"{', '.join(files)} edited since")
    if container:
        return ("the container was replaced by hand with another image (docker compose up or docker run with "
                "another image or tag); the files are as deployed")
    if files:
        return f"{', '.join(files)} edited since the deployment and not deployed yet; the container is as deployed"
    return default


def add_findings(add: Callable[..., Any], report: DriftReport | None, model_rules: set[tuple[str, str]],
                 only: str | None, deploy_call: Callable[[str], str]) -> None:
    """One finding per drift item not already told by a model drift finding ((service, rule))."""
    if report is None:
        return
    told = {(service, _SAME[rule]) for service, rule in model_rules if rule in _SAME}
    for item in report.items:
        if only is not None and item.service not in (only, None):
            continue
        if (item.service or "", item.kind) in told:
            continue
        if item.kind == "file":
            fix = (f"review the change: deploy_stack applies it, or rollback(to_deployment='{report.deployment}') "
                   "puts that deployment's files back")
        else:
            fix = (f"{deploy_call(item.service or '')} puts the files' state back, or keep the change by writing "
                   "it into the compose files and deploying")
        add(RULE, "warning", "drift", item.service, f"{item.service or 'stack files'}: {item.change}",
            likely_cause=_CAUSE.get(item.kind, "changed outside the server"), fix=fix,
            evidence=[f"since {item.since}", f"compared with deployment {report.deployment}"])


def summary(report: DriftReport | None) -> str | None:
    """Diagnosis.drift: what the stack was compared with, or why not."""
    if report is None:
        return None
    if report.note:
        return report.note
    return f"compared with deployment {report.deployment}: {len(report.items)} change(s)"
