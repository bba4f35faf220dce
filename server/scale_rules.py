"""scale_service's rules, pure: the override entry, the rolling rules, the host check, the suggestion.

The flow that writes and applies them is server/scale.py.

Horizontal (replicas) is refused where two copies cannot run (the rolling rules: a
``container_name``, a fixed host port) and needs ``confirm`` where they would share a read-write
named volume; vertical (limits, reservations) comes with a suggestion from what the service's
containers use. Both are checked against the host (server.policy.resources, the pre-flight's
rules) before anything is written. The entry is written next to a rollback's ``x-dsm-pins``
(server.deploy.override), which every deploy keeps, so the next deploy_stack and a plain
``docker compose up`` run the same replicas and limits. Then the deploy transaction runs for the
service: lock, backup, ``up``, gate, verify, and on failure the one rollback, whose file restore
puts this service's previous entry back (:class:`Scaling`, a wrapper around the executor).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from server.errors import ConfirmationRequired, DsmError
from server.policy.sizing import MIB, human_bytes
from server.scale_models import Ask, Suggestion
from server.stackmodel import LoadedStack
from server.stackview import cpu_limit, memory_limit, parse_bytes

UNCHANGED = "nothing was changed"
HEADROOM = 1.5
"""A suggested limit is this many times the observed peak (rounded up to 16 MiB / 0.05 CPU)."""


# -- what the entry becomes ---------------------------------------------------------------------
_KEYS: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    # (Ask field, the service-level spelling, the deploy spelling). Compose refuses distinct values
    # on both spellings of one setting, so ours follows the one the files (or our entry) use.
    ("replicas", "scale", ("deploy", "replicas")),
    ("memory", "mem_limit", ("deploy", "resources", "limits", "memory")),
    ("cpus", "cpus", ("deploy", "resources", "limits", "cpus")),
    ("reserve_memory", "mem_reservation", ("deploy", "resources", "reservations", "memory")),
    ("reserve_cpus", None, ("deploy", "resources", "reservations", "cpus")),
)


def memory_value(raw: str | None, what: str) -> str | None:
    """``512m`` / ``1g`` / bytes, as Compose reads it: ``NNNm`` when whole MiB, else bytes."""
    if raw is None:
        return None
    n = parse_bytes(raw)
    if n is None or n < 6 * MIB:  # the engine's own minimum is 6 MiB
        raise DsmError(f"{what} {raw!r} is not a memory size of at least 6m", state=UNCHANGED,
                       next_step="pass a size such as 256m or 1g")
    return f"{n // MIB}m" if n % MIB == 0 else str(n)


def new_entry(body: Mapping[str, Any], old: Mapping[str, Any], ask: Ask) -> dict[str, Any]:
    """Our override entry for the service after ``ask`` (``body``: the service as rendered now)."""
    entry = copy.deepcopy(dict(old))
    values = {"replicas": ask.replicas, "cpus": ask.cpus, "reserve_cpus": ask.reserve_cpus,
              "memory": memory_value(ask.memory, "memory"),
              "reserve_memory": memory_value(ask.reserve_memory, "reserve_memory")}
    for field, flat, path in _KEYS:
        value = values[field]
        if value is None:
            continue
        if flat is not None and (flat in body or (field == "replicas" and not _has(body, path))):
            # Replicas go in as ``scale`` unless the files say deploy.replicas: Compose leaves both out
            # of the config hash, but a ``deploy`` block that was not there changes it, and scaling
            # out would recreate the containers already running.
            entry[flat] = value
            continue
        node = entry
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return entry


def _has(body: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = body
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def merged(body: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with ``entry`` merged over it, the way Compose merges an override's mappings."""
    out = copy.deepcopy(dict(body))
    for key, value in entry.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def replicas_of(body: Mapping[str, Any]) -> int:
    from server.policy.shape import replicas

    return replicas(dict(body))


def describe(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``replicas 1 -> 3``, ``memory limit 64 MiB -> 128 MiB``: what differs, for the answer."""
    res = ("deploy", "resources", "reservations")

    def reservation(body: Mapping[str, Any], key: str) -> Any:
        node: Any = body
        for k in res:
            node = (node or {}).get(k) if isinstance(node, Mapping) else None
        value = (node or {}).get(key) if isinstance(node, Mapping) else None
        return value if value is not None else (body.get("mem_reservation") if key == "memory" else None)

    def cpus(v: Any) -> str:
        return f"{v:g}"

    pairs: list[tuple[str, Any, Any, Callable[[Any], str]]] = [
        ("replicas", replicas_of(before), replicas_of(after), str),
        ("memory limit", memory_limit(dict(before)), memory_limit(dict(after)), human_bytes),
        ("CPU limit", cpu_limit(dict(before)), cpu_limit(dict(after)), cpus),
        ("memory reservation", parse_bytes(reservation(before, "memory")), parse_bytes(reservation(after, "memory")),
         human_bytes),
        ("CPU reservation", _float(reservation(before, "cpus")), _float(reservation(after, "cpus")), cpus),
    ]
    return [f"{name} {show(a) if a is not None else 'none'} -> {show(b) if b is not None else 'none'}"
            for name, a, b, show in pairs if a != b]


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# -- the rolling rules ----------------------------------------------------------------------------
def check_rules(service: str, body: Mapping[str, Any], replicas: int, *, confirm: bool) -> None:
    """Raise when ``replicas`` copies of the service cannot run side by side (nothing written yet)."""
    if replicas < 2:
        return
    if body.get("container_name"):
        raise DsmError(f"rule container-name: service {service!r} sets container_name "
                       f"{body['container_name']!r}, and a container name exists once: it cannot run "
                       f"{replicas} replicas", state=UNCHANGED,
                       next_step="remove container_name from the compose file, then scale again")
    for port in body.get("ports") or []:
        raw = str((port or {}).get("published") or "") if isinstance(port, Mapping) else ""
        low, _, high = raw.partition("-")
        if raw and low.isdigit() and (int(high or low) - int(low) + 1) < replicas:
            raise DsmError(f"rule fixed-host-port: service {service!r} publishes host port {raw}, which one "
                           f"container at a time can bind: it cannot run {replicas} replicas", state=UNCHANGED,
                           next_step="publish the container port without a host port (or a range of at least "
                           f"{replicas} ports), or put a proxy in front, then scale again")
    shared = [str(v.get("source")) for v in body.get("volumes") or []
              if isinstance(v, Mapping) and v.get("type") == "volume" and v.get("source") and not v.get("read_only")]
    if shared and not confirm:
        raise ConfirmationRequired(
            f"rule shared-volume: {replicas} replicas of {service!r} would all write named volume(s) "
            f"{', '.join(shared)}: two writers on one data directory can corrupt data", state=UNCHANGED,
            next_step="only if the service is built for concurrent writers (ask the user), call again with "
            "confirm=true; or mount the volume read_only")


# -- the host check -------------------------------------------------------------------------------
def check_fit(stack: LoadedStack, service: str, before: Mapping[str, Any], after: Mapping[str, Any],
              facts: Any) -> str:
    """The pre-flight's resource rules on the stack as it will be; raise when it does not fit.
    Only a bigger demand is judged: scaling down is never refused because the host is already full."""
    from server.policy import LintContext
    from server.policy import resources as rules

    rendered = copy.deepcopy(stack.rendered)
    rendered.setdefault("services", {})[service] = dict(after)
    ctx = LintContext(stack=dataclasses.replace(stack, rendered=rendered), facts=facts)
    want = next(r for r in rules.requests(ctx) if r.service == service)
    if want.memory_bytes is None:
        verdict = (f"{want.replicas} replica(s) with no memory limit or reservation: what they use cannot be "
                   "judged before they run")
    else:
        verdict = f"{want.replicas} x {human_bytes(want.memory_bytes)} ({want.memory_source})"
    old_ctx = LintContext(stack=stack, facts=facts)
    had = next(r for r in rules.requests(old_ctx) if r.service == service)
    reserved = _float((((after.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("cpus"))
    grows = want.total_memory > had.total_memory or (want.cpus or 0) * want.replicas > (had.cpus or 0) * had.replicas \
        or bool(reserved)
    if not grows or facts is None:
        return verdict
    errors = [(f.rule, f.message, f.evidence) for f in [*rules.insufficient_resources(ctx),
                                                          *rules.cpu_limit_exceeds_host(ctx)]
              if f.severity == "error" and (f.service in (None, service))]
    if reserved and facts.cpus and reserved * want.replicas > facts.cpus:
        errors.append(("insufficient-resources", f"{want.replicas} x {reserved:g} reserved CPUs exceed the "
                       f"host's {facts.cpus}", []))
    if errors:
        rule, message, evidence = errors[0]
        raise DsmError(f"rule {rule}: {service} at {verdict} does not fit this host: {message}"
                       + (f" ({'; '.join(evidence[:4])})" if evidence else ""), state=UNCHANGED,
                       next_step="ask for fewer replicas or a smaller limit, or free memory first "
                       "(check_resources lists the biggest containers)")
    free = facts.memory_available_bytes
    return verdict + (f"; fits ({human_bytes(free)} available now)" if free is not None else "; fits")


# -- the suggestion -------------------------------------------------------------------------------
def suggest(peaks: list[int | None], now: list[int | None], cpu: list[float | None]) -> Suggestion:
    """Limits from what the service's containers use: HEADROOM x the peak (the current use where
    the kernel keeps no peak), memory rounded up to 16 MiB, CPU to 0.05; reservation = current."""
    mem = [m for p, n in zip(peaks, now, strict=True) if (m := p if p is not None else n)]
    current = [n for n in now if n]
    cpus = [c for c in cpu if c is not None]
    if not mem:
        return Suggestion(basis="no running container of the service to measure: start it, then ask again")
    peak = max(mem)
    step = 16 * MIB
    limit = max(step * 2, math.ceil(peak * HEADROOM / step) * step)
    cpu_limit_s = round(max(0.1, math.ceil(max(cpus) / 100 * HEADROOM / 0.05) * 0.05), 2) if cpus else None
    reserve = math.ceil(max(current) / MIB) if current else None
    basis = (f"{len(mem)} container(s): memory peak {human_bytes(peak)}, now {human_bytes(max(current or [0]))}"
             + (f", CPU {max(cpus):g}% over a short sample" if cpus else ", CPU not sampled")
             + f"; limits = {HEADROOM:g} x observed, rounded up")
    return Suggestion(memory=f"{limit // MIB}m", reserve_memory=f"{reserve}m" if reserve else None,
                      cpus=cpu_limit_s, basis=basis)
