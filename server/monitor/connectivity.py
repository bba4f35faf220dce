"""Connectivity findings of diagnose_stack, from server.monitor.netcheck's probes.

A dependency is unreachable only when no network of the service reaches it. A probe that could
not run is info ("could not probe: why"), never an error. The compose file is blamed only when
the model itself (the files as Compose renders them) gives the two services no common network;
when it does and a container is not attached, the fix is the deploy_stack call that recreates it.
"""

from __future__ import annotations

from typing import Any, Protocol

from server.errors import DsmError
from server.models import Severity
from server.monitor import drift, netcheck
from server.monitor.resolve import StackRef
from server.monitor.status import Observed
from server.runtime import Runtime


class Add(Protocol):
    def __call__(self, rule: str, severity: Severity, category: str, service: str | None, message: str,
                 likely_cause: str, fix: str | None = None, evidence: list[str] | None = None) -> None: ...


async def check_connectivity(runtime: Runtime, add: Add, ref: StackRef, observed: list[Observed],
                              service: str | None, one_shots: set[str], model: dict[str, Any] | None) -> None:
    """A dependency is unreachable when no network of the service reaches it; a probe that could
    not run is info (it says nothing about the dependency)."""
    try:
        results = await netcheck.check(runtime, observed, only=service, one_shots=one_shots)
    except DsmError as exc:
        add("could-not-probe", "info", "network", service, f"connectivity was not checked: {exc.what}",
                likely_cause="the probe could not run; this says nothing about the services")
        return
    by_target: dict[tuple[str, str], list[netcheck.ProbeResult]] = {}
    for r in results:
        by_target.setdefault((r.service, r.target), []).append(r)
    unprobed: dict[str, list[netcheck.ProbeResult]] = {}
    by_service = {o.service: o for o in observed}
    for (svc, target), rs in sorted(by_target.items()):
        probed = [r for r in rs if r.probed]
        if not probed:
            unprobed.setdefault(svc, []).extend(rs)
            continue
        if any(r.ok for r in probed):  # the container reaches it through one of its networks
            continue
        r = probed[0]
        dns = any(k in r.detail.lower() for k in ("bad address", "resolve", "not known", "name resolution"))
        cause, fix = _unreachable_cause(runtime, ref, model, by_service, r.service, r.dependency, dns, target)
        add("dependency-unreachable", "error", "network", svc,
                f"{svc} cannot reach {target} from network(s) {', '.join(p.network for p in probed)}"
                f" ({'name does not resolve' if dns else 'TCP connect fails'})",
                likely_cause=cause, fix=fix, evidence=[f"probe on network {p.network}: {p.detail}" for p in probed])
    for svc, rs in sorted(unprobed.items()):
        add("could-not-probe", "info", "network", svc,
                f"could not probe {svc}'s dependencies ({', '.join(sorted({r.target for r in rs}))})",
                likely_cause="no local image could run the probe; this says nothing about the dependencies",
                fix="make a small busybox image local on the engine (the probe uses it when the stack's images "
                "lack nc)", evidence=sorted({r.detail for r in rs})[:3])


def _unreachable_cause(runtime: Runtime, ref: StackRef, model: dict[str, Any] | None,
                       by_service: dict[str, Observed], svc: str, dep: str, dns: bool, target: str
                       ) -> tuple[str, str]:
    """(likely cause, fix): the compose file is blamed only when the model itself is at fault."""
    if not dns:
        return (f"{dep} is not listening on that port (or not answering)",
                f"check that {dep} listens on {target.rsplit(':', 1)[1]} (stack_logs of {dep})")
    if model is None:
        return (f"{svc} and {dep} share no network now, or the name is wrong",
                "compare the networks stack_status lists for both with the compose file")
    want_svc = drift.expected_networks(model, ref.name, svc) or set()
    want_dep = drift.expected_networks(model, ref.name, dep) or set()
    common = want_svc & want_dep
    if not common:
        return (f"the compose file gives {svc} and {dep} no common network",
                f"attach {svc} and {dep} to a common network in the compose file, then deploy_stack")
    for name in (svc, dep):
        o = by_service.get(name)
        if o is not None and not (common & set(netcheck.networks(o))):
            return (f"the files give both {', '.join(sorted(common))}, but {name}'s container is not attached to it "
                    "(disconnected by hand, or its network was recreated)",
                    f"{drift.deploy_call(runtime, ref, name)} recreates it on its networks")
    return (f"{dep}'s name does not resolve although both share {', '.join(sorted(common))}",
            f"check the name and aliases of {dep}; stack_control restart of {svc} renews its resolver")
