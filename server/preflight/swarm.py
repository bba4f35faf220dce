"""Pre-flight rules for a stack with x-dsm ``mode: swarm`` (validate_compose and deploy's pre-flight).

File rules (no engine needed): what ``docker stack deploy`` ignores or rejects (build,
container_name, depends_on ordering, restart instead of deploy.restart_policy), host-mode ports
that two replicas may want on one node, ingress ports and VIPs on a kernel without IPVS, VIP
endpoints updated start-first. Host rules (the target engine): it must be a swarm manager;
placement constraints must name nodes and labels that exist and leave a node to run on; the
reservations of the stack must fit the nodes' resources minus what other services reserve.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from server.deploy.swarm.cli import NAMESPACE_LABEL, StackCLI, SwarmUnavailable
from server.deploy.swarm.executor import strategies_of
from server.deploy.swarm.render import host_ports, update_config
from server.models import Finding
from server.policy import finding
from server.stackmodel import LoadedStack

IPVS_PROC = "/proc/net/ip_vs"
SWARM_REPLACES = frozenset({"port-conflict", "insufficient-resources"})
"""Compose rules measured on this one engine (its ports, its memory, replicas sharing it) that the
swarm rules replace: tasks land on any node (swarm-host-port-collision, swarm-resources-exceeded)."""
_CONSTRAINT = re.compile(r"^\s*([\w.\-/]+)\s*(==|!=)\s*(.+?)\s*$")


def ipvs_available(host: str) -> bool | None:
    """Whether the engine's kernel has IPVS (the swarm VIP and ingress load balancer need it).
    Known only for an engine on this machine's kernel (a unix socket, or loopback TCP: inner
    engines in containers share it); None for a remote engine."""
    local = host.startswith("unix://") or "127.0.0.1" in host or "localhost" in host
    return os.path.exists(IPVS_PROC) if local else None


def file_findings(stack: LoadedStack, ipvs: bool | None) -> list[Finding]:
    out: list[Finding] = []
    strategies = strategies_of(stack)
    for name, body in sorted(stack.services.items()):
        line = stack.line_of(name)
        deploy = body.get("deploy") or {}
        ignored = []
        if body.get("container_name"):
            ignored.append("container_name (tasks are named <stack>_<service>.<slot>)")
        if body.get("restart") and not deploy.get("restart_policy"):
            ignored.append(f"restart: {body['restart']} (Swarm restarts by deploy.restart_policy, default any)")
        if body.get("depends_on"):
            ignored.append("depends_on (Swarm starts every service at once: no order, no condition)")
        if body.get("build") and body.get("image"):
            ignored.append("build (nodes run the image as named: build and push it first)")
        if ignored:
            out.append(finding("swarm-ignored-option", f"docker stack deploy ignores for {name}: "
                               + "; ".join(ignored), service=name, line=line,
                               fix="use deploy.restart_policy / make the service retry its dependencies"))
        if body.get("build") and not body.get("image"):
            out.append(finding("swarm-build-only", f"{name} has build: but no image: Swarm nodes cannot build",
                               service=name, line=line, fix="build and push an image, then name it in image:"))
        replicas = deploy.get("replicas", 1)
        per_node = (deploy.get("placement") or {}).get("max_replicas_per_node")
        if host_ports(body) and deploy.get("mode") != "global" and int(replicas or 1) > 1 and per_node != 1:
            out.append(finding("swarm-host-port-collision", f"{name} publishes host-mode port(s) "
                               f"{', '.join(map(str, host_ports(body)))} with {replicas} replicas: two tasks on "
                               "one node cannot bind the same port (the second stays pending)", service=name,
                               line=line, fix="add deploy.placement.max_replicas_per_node: 1 (and at least as "
                               "many nodes), or use mode: global"))
        ingress = [p for p in body.get("ports") or [] if isinstance(p, dict) and p.get("mode", "ingress") != "host"]
        vip = deploy.get("endpoint_mode", "vip") != "dnsrr"
        if ipvs is False and (ingress or vip):
            out.append(finding(
                "swarm-needs-ipvs", f"{name} needs IPVS, which this engine's kernel lacks: "
                + ("ingress-published port(s) " + ", ".join(str(p.get("published")) for p in ingress)
                   if ingress else "a VIP (endpoint_mode vip, the default)"), service=name, line=line,
                fix="deploy.endpoint_mode: dnsrr and ports with mode: host (or load the ip_vs kernel module)"))
        order = (deploy.get("update_config") or {}).get("order") or update_config(strategies[name], body)[0]["order"]
        if vip and order == "start-first" and ipvs is not False:
            out.append(finding("swarm-vip-start-first", f"{name} is updated start-first behind a VIP: the VIP keeps "
                               "sending requests to the old task while it shuts down", service=name, line=line,
                               fix="deploy.endpoint_mode: dnsrr (clients resolve the running tasks), or a proxy "
                               "with health checks in front"))
    return out


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    role: str
    ready: bool
    labels: dict[str, str]
    engine_labels: dict[str, str]
    cpus: float
    memory: int
    os: str
    arch: str


def parse_nodes(raw: list[dict[str, Any]]) -> list[Node]:
    out = []
    for n in raw:
        desc, spec = n.get("Description") or {}, n.get("Spec") or {}
        res = desc.get("Resources") or {}
        plat = desc.get("Platform") or {}
        out.append(Node(
            id=str(n.get("ID") or ""), hostname=str(desc.get("Hostname") or ""), role=str(spec.get("Role") or ""),
            ready=(n.get("Status") or {}).get("State") == "ready" and spec.get("Availability", "active") == "active",
            labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
            engine_labels={str(k): str(v) for k, v in ((desc.get("Engine") or {}).get("Labels") or {}).items()},
            cpus=int(res.get("NanoCPUs") or 0) / 1e9, memory=int(res.get("MemoryBytes") or 0),
            os=str(plat.get("OS") or ""), arch=str(plat.get("Architecture") or "")))
    return out


def _attribute(node: Node, key: str) -> str | None:
    fixed = {"node.id": node.id, "node.hostname": node.hostname, "node.role": node.role,
             "node.platform.os": node.os, "node.platform.arch": node.arch}
    if key in fixed:
        return fixed[key]
    if key.startswith("node.labels."):
        return node.labels.get(key.removeprefix("node.labels."))
    if key.startswith("engine.labels."):
        return node.engine_labels.get(key.removeprefix("engine.labels."))
    return None


def satisfies(node: Node, constraint: str) -> bool | None:
    """None: a constraint we do not read (left to Swarm)."""
    m = _CONSTRAINT.match(constraint)
    if m is None:
        return None
    key, op, want = m.group(1), m.group(2), m.group(3).strip("'\"")
    if not (key in {"node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch"}
            or key.startswith(("node.labels.", "engine.labels."))):
        return None
    have = _attribute(node, key)
    return (have == want) if op == "==" else (have != want)


def _bytes(value: Any) -> int:
    """Compose renders memory as a byte count; a unit suffix (16M, 1g, 512mb) is read too."""
    text = str(value or "0").strip().lower().removesuffix("b") or "0"
    scale = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(text[-1], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _reservation(body: dict[str, Any]) -> tuple[float, int]:
    res = ((body.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    return float(res.get("cpus") or 0), _bytes(res.get("memory"))


async def host_findings(stack: LoadedStack, cli: StackCLI) -> list[Finding]:
    try:
        await cli.require_manager()
    except SwarmUnavailable as exc:
        return [finding("swarm-not-manager", exc.what, fix=exc.next_step)]
    nodes = [n for n in parse_nodes(await cli.nodes()) if n.ready]
    out: list[Finding] = []
    eligible: dict[str, list[Node]] = {}
    for name, body in sorted(stack.services.items()):
        constraints = [str(c) for c in ((body.get("deploy") or {}).get("placement") or {}).get("constraints") or []]
        fits = [n for n in nodes if all(satisfies(n, c) is not False for c in constraints)]
        eligible[name] = fits
        if constraints and not fits:
            out.append(finding(
                "swarm-placement-unsatisfiable", f"no ready node of the swarm meets the placement of {name}: "
                + "; ".join(constraints), service=name, line=stack.line_of(name),
                evidence=[f"node {n.hostname}: role {n.role}, labels {n.labels or '{}'}" for n in nodes][:8],
                fix="name an existing node or label (`docker node update --label-add key=value NODE`), or relax "
                    "the constraint"))
    out.extend(await _capacity(stack, cli, nodes, eligible))
    return out


async def _capacity(stack: LoadedStack, cli: StackCLI, nodes: list[Node], eligible: dict[str, list[Node]]
                    ) -> list[Finding]:
    """Reservations of the stack against the nodes' resources minus other services' reservations."""
    reserved_cpu = reserved_mem = 0.0
    for svc in await cli.all_services():
        spec = svc.get("Spec") or {}
        if (spec.get("Labels") or {}).get(NAMESPACE_LABEL) == stack.name:
            continue  # replaced by this deploy
        res = ((spec.get("TaskTemplate") or {}).get("Resources") or {}).get("Reservations") or {}
        count = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas") or 1)
        reserved_cpu += count * int(res.get("NanoCPUs") or 0) / 1e9
        reserved_mem += count * int(res.get("MemoryBytes") or 0)
    total_cpu, total_mem = sum(n.cpus for n in nodes), sum(n.memory for n in nodes)
    need_cpu = need_mem = 0.0
    out: list[Finding] = []
    for name, body in sorted(stack.services.items()):
        cpu, mem = _reservation(body)
        replicas = int((body.get("deploy") or {}).get("replicas") or 1)
        need_cpu, need_mem = need_cpu + replicas * cpu, need_mem + replicas * mem
        biggest = max(((n.cpus, n.memory) for n in eligible.get(name) or []), default=(0.0, 0))
        if (cpu and cpu > biggest[0]) or (mem and mem > biggest[1]):
            out.append(finding("swarm-resources-exceeded", f"one task of {name} reserves {cpu:g} CPU / "
                               f"{mem / 2**20:.0f} MiB: no node it may run on has that much", service=name,
                               line=stack.line_of(name), fix="lower deploy.resources.reservations or add a node"))
    free_cpu, free_mem = total_cpu - reserved_cpu, total_mem - reserved_mem
    if (need_cpu and need_cpu > free_cpu) or (need_mem and need_mem > free_mem):
        out.append(finding(
            "swarm-resources-exceeded", f"the stack reserves {need_cpu:g} CPU / {need_mem / 2**20:.0f} MiB in all; "
            f"the {len(nodes)} ready node(s) have {total_cpu:g} CPU / {total_mem / 2**20:.0f} MiB, of which other "
            f"services reserve {reserved_cpu:g} CPU / {reserved_mem / 2**20:.0f} MiB",
            fix="lower replicas or reservations, or add nodes"))
    return out


async def swarm_findings(stack: LoadedStack, engine: Any | None) -> list[Finding]:
    """Every swarm rule for ``stack``; the host rules only with ``engine`` (check_host)."""
    ipvs: bool | None = None  # without the engine (check_host off): unknown, no IPVS rule either way
    if engine is not None:
        try:
            ipvs = ipvs_available(engine.endpoint().host)
        except Exception:
            ipvs = None
    out = file_findings(stack, ipvs)
    if engine is not None:
        out.extend(await host_findings(stack, StackCLI.for_engine(engine)))
    return out
