"""Connectivity between services, tested from inside the stack's own networks.

For each dependency of a service (Compose's ``com.docker.compose.depends_on`` label), a
short-lived container is created on each network the service is attached to, from an image
that is already local (the service's own image first; never pulled), and resolves the
dependency's name and opens a TCP connection to each of its ports. Failures name the network,
the address and what the probe said (``bad address``: name resolution; ``refused``/timeout: TCP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.engine import run_probe
from server.errors import DsmError
from server.monitor.status import Observed
from server.runtime import Runtime

log = logging.getLogger("docker_stack_mcp.monitor")

# Busybox nc has no -z: connect with stdin at EOF; exit 0 means the TCP connect worked.
_SCRIPT = (
    'for t in "$@"; do h=${t%:*}; p=${t##*:}; '
    'if out=$(nc -w 3 "$h" "$p" </dev/null 2>&1); then echo "ok $t"; '
    'else echo "fail $t ${out:-connection failed}"; fi; done'
)
PROBE_LABELS = {"dsm.probe": "1"}


@dataclass(frozen=True)
class ProbeResult:
    service: str
    dependency: str
    network: str
    target: str
    ok: bool
    detail: str


def dependencies(o: Observed) -> list[str]:
    """Services this container's service depends on, from Compose's label."""
    raw = o.labels.get("com.docker.compose.depends_on", "")
    return [part.split(":", 1)[0] for part in raw.split(",") if part.strip()]


def tcp_ports(o: Observed) -> list[int]:
    exposed = (o.inspect.get("Config") or {}).get("ExposedPorts") or {}
    return sorted(int(k.split("/")[0]) for k in exposed if k.endswith("/tcp"))


def networks(o: Observed) -> list[str]:
    return sorted(((o.inspect.get("NetworkSettings") or {}).get("Networks") or {}).keys())


async def check(runtime: Runtime, observed: list[Observed], only: str | None = None) -> list[ProbeResult]:
    """Probe every (service, network) pair in parallel (a probe container takes about a second)."""
    from server.preflight.parallel import run_for_each

    by_service = {o.service: o for o in observed}
    jobs: list[tuple[Observed, str, list[tuple[str, str]], list[Observed]]] = []
    for o in observed:
        if (only and o.service != only) or o.state.get("Status") != "running":
            continue
        deps = [d for d in dependencies(o) if d in by_service]
        targets = [(d, f"{d}:{p}") for d in deps for p in tcp_ports(by_service[d])]
        if targets:
            jobs.extend((o, net, targets, [by_service[d] for d in deps])
                        for net in networks(o) if net not in ("host", "none"))
    found: dict[int, list[ProbeResult]] = {}

    async def one(job: tuple[int, tuple[Observed, str, list[tuple[str, str]], list[Observed]]]) -> None:
        index, (o, net, targets, deps) = job
        found[index] = await _probe(runtime, o, net, targets, deps)

    await run_for_each(one, list(enumerate(jobs)))
    return [r for index in sorted(found) for r in found[index]]


async def _probe(runtime: Runtime, o: Observed, network: str, targets: list[tuple[str, str]],
                 deps: list[Observed]) -> list[ProbeResult]:
    images = [str(o.inspect.get("Image") or "")] + [str(d.inspect.get("Image") or "") for d in deps]
    argv = ["sh", "-c", _SCRIPT, "probe", *[t for _, t in targets]]
    output = ""
    for image in dict.fromkeys(i for i in images if i):
        try:
            code, output = await run_probe(runtime.engine(), image, argv, network, PROBE_LABELS)
        except DsmError as exc:  # image without sh, network gone: try the next image
            log.debug("probe with %s failed: %s", image[:19], exc)
            continue
        if code is not None and code not in (126, 127) and ("ok " in output or "fail " in output):
            break
    else:
        return []
    lines = {line.split()[1]: line for line in output.splitlines() if line.startswith(("ok ", "fail "))}
    out = []
    for dep, target in targets:
        line = lines.get(target, f"fail {target} no answer from the probe")
        out.append(ProbeResult(service=o.service, dependency=dep, network=network, target=target,
                               ok=line.startswith("ok "), detail=line.split(" ", 2)[2] if line.count(" ") >= 2 else ""))
    return out
