"""How long a ``docker compose up`` may run: long enough for the stops it has to wait out.

``up`` stops every container it recreates or removes, and Compose waits the service's
``stop_grace_period`` (default 10 s) for a container that ignores SIGTERM before it kills it. A
fixed timeout (it was 120 s) killed ``up`` part-way through such a stop: the stack was left half
converged, and a service the plan called unchanged could be left stopped.

Which containers ``up`` stops (checked on Docker Compose 2.40.3, engine 28): the ones of services
it recreates or removes; a service whose dependency is recreated is left running, unless its
``depends_on`` entry says ``restart: true``, in which case Compose stops it (its full grace
period) and starts it again even though its own configuration did not change. So those
dependents count too. Stops are budgeted one after another (grace x containers, summed): Compose
runs independent services in parallel, so this is an upper bound, which is what a timeout that
exists to stop a hung command needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_STOP_GRACE_S = 10.0
"""Compose's (and the engine's) default stop timeout."""
BASE_TIMEOUT_S = 120.0
"""What an ``up`` got before grace periods counted: pulls are separate, but creating networks,
volumes and containers and starting them still takes time on a loaded host."""
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(value: Any, default: float = DEFAULT_STOP_GRACE_S) -> float:
    """A Compose duration (``1m30s``, ``90s``, ``1.5h``; a bare number is seconds) in seconds;
    ``default`` when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int | float):
        return max(float(value), 0.0)
    text = str(value).strip()
    if not text:
        return default
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    total, end = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != end:
            return default
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        end = match.end()
    return total if end == len(text) else default


def _containers(body: Mapping[str, Any]) -> int:
    deploy = body.get("deploy") if isinstance(body.get("deploy"), Mapping) else {}
    for raw in (body.get("scale"), (deploy or {}).get("replicas")):
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
            return max(raw, 1)
    return 1


def restarted_with(services: Mapping[str, Mapping[str, Any]], stopped: Iterable[str]) -> set[str]:
    """``stopped`` plus every service that depends (transitively) with ``restart: true`` on one of
    them: Compose stops and starts those too."""
    out = set(stopped)
    changed = True
    while changed:
        changed = False
        for name, body in services.items():
            if name in out:
                continue
            deps = body.get("depends_on") if isinstance(body, Mapping) else None
            if not isinstance(deps, Mapping):
                continue
            if any(dep in out and isinstance(cfg, Mapping) and cfg.get("restart") is True for dep, cfg in deps.items()):
                out.add(name)
                changed = True
    return out


def up_timeout_s(services: Mapping[str, Mapping[str, Any]], stopped: Iterable[str] | None, wait_s: float,
                 base_s: float = BASE_TIMEOUT_S) -> float:
    """The timeout for an ``up`` over the rendered ``services`` that recreates or removes the
    services ``stopped`` (None: any of them, as a rollback may): ``max(wait_s, base_s)`` plus the
    grace period of every container it may have to stop, including the dependents ``restart:
    true`` makes it restart. A service not in ``services`` (one being removed) counts its default."""
    names = set(services) if stopped is None else set(stopped)
    budget = 0.0
    for name in sorted(restarted_with(services, names)):
        body = services.get(name) or {}
        budget += duration_s(body.get("stop_grace_period")) * _containers(body)
    return max(float(wait_s), base_s) + budget


def deploy_up_timeout_s(stack: Any, plan: Any, wait_s: float) -> float:
    """:func:`up_timeout_s` for a deploy: the plan's services other than ``unchanged`` are the
    ones ``up`` stops (``create`` has nothing to stop, but a scale-up may be planned as one)."""
    stopped = [s.service for s in plan.services if s.action != "unchanged"]
    return up_timeout_s(stack.services, stopped, wait_s)


def rollback_up_timeout_s(stack: Any, wait_s: float) -> float:
    """:func:`up_timeout_s` for a rollback's ``up``: any service of the stack may be recreated."""
    return up_timeout_s(stack.services, None, wait_s)
