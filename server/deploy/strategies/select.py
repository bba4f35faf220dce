"""Which strategy rolls a service, and why: pure rules over the rendered service (no engine).

``rolling`` (start-first) needs a service that can run two copies at once: no ``container_name``,
no fixed host port, no read-write named volume its twin would share, not a database, and a
healthcheck to gate the new copies by. Whatever rule forbids it makes the service
``planned_downtime`` (stop-first), and the reason names that rule. ``blue_green`` (server/deploy/
strategies/bluegreen.py) needs what rolling needs plus a proxy in the stack whose network alias can
move; auto picks it for a service marked critical ITSELF (x-dsm ``critical`` on the service, or the
``dsm.critical`` label): a second full copy is the operator's explicit choice per service, not
something a stack-wide flag should impose on every service of a 12-container stack. Without the
memory for the second copy (checked when it runs), an auto blue_green rolls instead and says so.
``recreate`` only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.deploy.executor import StrategyName

NAMES: tuple[str, ...] = ("rolling", "blue_green", "planned_downtime", "recreate")
AVAILABLE: frozenset[str] = frozenset({"rolling", "blue_green", "planned_downtime", "recreate"})
"""Strategies this build executes (blue_green: another branch)."""


AUTO_BLUE_GREEN = ("critical service behind the stack's proxy: blue_green (a gated second copy, then the "
                   "proxy's network alias moves to it; rolling if the host lacks the memory for the copy)")
"""The reason auto gives for blue_green; the strategy reads it to know it may fall back to rolling."""


@dataclass(frozen=True)
class Choice:
    strategy: StrategyName
    reason: str
    refused: str | None = None
    """Set when the strategy ASKED for (argument or x-dsm) cannot run: the plan is blocked."""


def normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def replicas_of(body: dict[str, Any]) -> int:
    deploy = body.get("deploy") or {}
    value = deploy.get("replicas") if deploy.get("replicas") is not None else body.get("scale")
    try:
        return max(0, int(value)) if value is not None else 1
    except (TypeError, ValueError):
        return 1


def rw_named_volumes(body: dict[str, Any]) -> list[str]:
    return [str(v.get("source") or v.get("target")) for v in body.get("volumes") or []
            if isinstance(v, dict) and v.get("type") == "volume" and v.get("source") and not v.get("read_only")]


def fixed_ports(body: dict[str, Any]) -> list[str]:
    return [str(p.get("published")) for p in body.get("ports") or [] if isinstance(p, dict) and p.get("published")]


def rolling_refusal(body: dict[str, Any], *, database: bool, healthcheck: bool | None) -> str | None:
    """Why two copies of this service cannot run side by side (None: they can)."""
    if database:
        return "a database: never two copies on one data directory"
    if body.get("container_name"):
        return f"container_name {body['container_name']!r}: one name cannot be used twice"
    if ports := fixed_ports(body):
        return f"fixed host port {', '.join(ports)}: a port cannot be bound twice"
    if volumes := rw_named_volumes(body):
        single = "single replica" if replicas_of(body) <= 1 else f"{replicas_of(body)} replicas"
        return f"{single} writing named volume {', '.join(volumes)}: two writers can corrupt its data"
    fixed_ips = [str(net) for net, cfg in (body.get("networks") or {}).items()
                 if isinstance(cfg, dict) and (cfg.get("ipv4_address") or cfg.get("ipv6_address"))]
    if fixed_ips:
        return f"fixed address on network {', '.join(fixed_ips)}: an address cannot be held twice"
    if body.get("network_mode") and str(body["network_mode"]) != "bridge":
        return f"network_mode {body['network_mode']}: no network to take an old copy out of"
    if healthcheck is False:
        return "no healthcheck: the new containers could not be gated before the old ones stop"
    if healthcheck is None:
        return "healthcheck unknown (image not local): the new containers could not be gated"
    return None


def choose(body: dict[str, Any], *, asked: str, configured: str, database: bool, critical: bool,
           healthcheck: bool | None, proxied: bool = True, one_shot: bool = False,
           critical_service: bool = False) -> Choice:
    """The strategy that will run. ``asked``: the call's argument (auto: x-dsm's ``configured``,
    then the rules). A one-shot (a migration, an init job) runs to completion: recreated, never rolled.
    ``critical``: the service or its stack is critical; ``critical_service``: the service itself is
    (auto's blue_green); ``proxied``: a proxy other than the service fronts the stack."""
    asked, configured = normalize(asked or "auto"), normalize(configured or "auto")
    if one_shot:
        if asked in ("rolling", "blue_green"):
            return Choice("recreate", "one-shot", refused=f"{asked} cannot run: a one-shot runs to completion, "
                                                          "nothing serves traffic to move")
        return Choice("recreate", "one-shot: runs to completion when its dependencies are ready; nothing serves")
    refusal = rolling_refusal(body, database=database, healthcheck=healthcheck)
    source = "asked" if asked != "auto" else f"x-dsm update.strategy {configured}"
    wanted = asked if asked != "auto" else configured
    if wanted == "auto":
        if refusal:
            return Choice("planned_downtime", f"stop-first: {refusal}")
        if critical_service and proxied:
            return Choice("blue_green", AUTO_BLUE_GREEN)
        if critical:
            hint = ("no proxy in the stack to move traffic for blue_green" if critical_service
                    else "blue_green when the service itself is marked critical and a proxy fronts it")
            return Choice("rolling", f"critical and stateless: rolling (start-first, gated by id); {hint}")
        return Choice("rolling", "stateless with a healthcheck: start-first, new containers gated by id")
    if wanted == "rolling":
        if refusal:
            return Choice("rolling", f"rolling {source}, but {refusal}", refused=f"rolling cannot run: {refusal}")
        return Choice("rolling", f"{source}: start-first, new containers gated by id")
    if wanted == "blue_green":
        if "blue_green" not in AVAILABLE:
            if asked != "auto":
                return Choice("blue_green", "blue_green asked", refused="blue_green is not available in this build")
            fallback = "planned_downtime" if refusal else "rolling"
            return Choice(fallback, f"x-dsm asks blue_green: not available in this build; "  # type: ignore[arg-type]
                                    f"{fallback}" + (f" ({refusal})" if refusal else ""))
        why = refusal or (None if proxied else "no proxy in the stack (x-dsm role proxy or a known proxy image) "
                                                 "whose network alias could move")
        if why:
            return Choice("blue_green", f"blue_green {source}, but {why}", refused=f"blue_green cannot run: {why}")
        return Choice("blue_green", f"{source}: a second copy (<stack>-green) gated and smoke-tested, then the "
                                    "proxy's network alias moved to it")
    if wanted == "planned_downtime":
        return Choice("planned_downtime", f"{source}: stop-first with an announced window")
    if wanted == "recreate":
        return Choice("recreate", f"{source}: stop and start as docker compose up does")
    return Choice("recreate", f"unknown strategy {wanted!r}", refused=f"unknown strategy {wanted!r}: "
                  f"one of auto, {', '.join(NAMES)}")
