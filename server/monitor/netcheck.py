"""Connectivity between services, tested from inside the stack's own networks.

For each dependency of a running service (Compose's ``com.docker.compose.depends_on`` label), a
short-lived container is created on each network the service is attached to; it resolves the
dependency's name and opens a TCP connection to each of its ports. Failures name the network,
the address and what the probe said (``bad address``: name resolution; ``refused``/timeout: TCP).

A probe that cannot run says nothing about the thing probed. The probe needs a shell and ``nc``
(or ``bash``'s ``/dev/tcp``), which many images lack, so the image is chosen in this stated order,
never pulled: (1) the service's own image, (2) its dependencies' images, (3) a local busybox or
alpine image (the stack's tools need not be in its images). When none can run the probe, the
result says "could not probe" and why, which diagnosis reports as info, never as an error.

Not probed, by design: dependencies that are not running (their own state is the finding, and a
probe would only blame the network), and dependencies satisfied by
``service_completed_successfully`` (one-shot jobs: nothing listens once they finished).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.engine import run_probe
from server.errors import DsmError
from server.monitor.status import Observed
from server.runtime import Runtime

log = logging.getLogger("docker_stack_mcp.monitor")

# Busybox nc has no -z: connect with stdin at EOF; exit 0 means the TCP connect worked. Without nc,
# bash's /dev/tcp does the same. Without either the script says so ("noprobe"): not a failure.
_SCRIPT = (
    'if command -v nc >/dev/null 2>&1; then tool=nc; elif command -v bash >/dev/null 2>&1; then tool=bash; '
    'else echo "noprobe neither nc nor bash in the image"; exit 0; fi; '
    'tmo=""; command -v timeout >/dev/null 2>&1 && tmo="timeout 3"; '
    'for t in "$@"; do h=${t%:*}; p=${t##*:}; '
    'if [ "$tool" = nc ]; then out=$(nc -w 3 "$h" "$p" </dev/null 2>&1); rc=$?; '
    "else out=$($tmo bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$h\" \"$p\" 2>&1); rc=$?; fi; "
    'if [ "$rc" = 0 ]; then echo "ok $t"; else echo "fail $t ${out:-connection failed}"; fi; done'
)
PROBE_LABELS = {"dsm.probe": "1"}
HELPER_REPOSITORIES = ("busybox", "alpine")
"""Local images tried last, by repository name: small, and they carry sh and nc."""
COMPLETED = "service_completed_successfully"


@dataclass(frozen=True)
class ProbeResult:
    service: str
    dependency: str
    network: str
    target: str
    ok: bool
    detail: str
    probed: bool = True
    """False: no probe could run (``detail`` says why); says nothing about the dependency."""


def dependencies(o: Observed) -> list[str]:
    """Services this container's service depends on, from Compose's label."""
    raw = o.labels.get("com.docker.compose.depends_on", "")
    return [part.split(":", 1)[0] for part in raw.split(",") if part.strip()]


def completion_dependencies(o: Observed) -> set[str]:
    """Dependencies this service waits for to COMPLETE (``service_completed_successfully``)."""
    raw = o.labels.get("com.docker.compose.depends_on", "")
    return {part.split(":", 2)[0] for part in raw.split(",") if part.split(":")[1:2] == [COMPLETED]}


def tcp_ports(o: Observed) -> list[int]:
    exposed = (o.inspect.get("Config") or {}).get("ExposedPorts") or {}
    return sorted(int(k.split("/")[0]) for k in exposed if k.endswith("/tcp"))


def networks(o: Observed) -> list[str]:
    return sorted(((o.inspect.get("NetworkSettings") or {}).get("Networks") or {}).keys())


def _running(o: Observed) -> bool:
    return o.state.get("Status") == "running"


def probed_dependencies(o: Observed, by_service: dict[str, Observed], one_shots: set[str]) -> list[Observed]:
    """The dependencies worth probing: running, long-lived, not awaited to complete."""
    skip = completion_dependencies(o) | one_shots
    return [by_service[d] for d in dependencies(o)
            if d in by_service and d not in skip and _running(by_service[d])]


async def check(runtime: Runtime, observed: list[Observed], only: str | None = None,
                one_shots: set[str] | None = None) -> list[ProbeResult]:
    """Probe every (service, network) pair in parallel (a probe container takes about a second)."""
    from server.preflight.parallel import run_for_each

    by_service = {o.service: o for o in observed}
    jobs: list[tuple[Observed, str, list[tuple[str, str]], list[Observed]]] = []
    for o in observed:
        if (only and o.service != only) or not _running(o) or o.service in (one_shots or set()):
            continue
        deps = probed_dependencies(o, by_service, one_shots or set())
        targets = [(d.service, f"{d.service}:{p}") for d in deps for p in tcp_ports(d)]
        if targets:
            jobs.extend((o, net, targets, deps) for net in networks(o) if net not in ("host", "none"))
    if not jobs:
        return []
    helpers = await _helper_images(runtime)
    unusable: dict[str, str] = {}  # image -> why it cannot run the probe (shared by the jobs)
    found: dict[int, list[ProbeResult]] = {}

    async def one(job: tuple[int, tuple[Observed, str, list[tuple[str, str]], list[Observed]]]) -> None:
        index, (o, net, targets, deps) = job
        found[index] = await _probe(runtime, o, net, targets, deps, helpers, unusable)

    await run_for_each(one, list(enumerate(jobs)))
    return [r for index in sorted(found) for r in found[index]]


async def _helper_images(runtime: Runtime) -> list[str]:
    from server.roles import repository_name

    try:
        tags = await runtime.engine().images_with_prefix("")
    except DsmError as exc:
        log.debug("local images unknown: %s", exc)
        return []
    return sorted((t for t in tags if repository_name(t) in HELPER_REPOSITORIES),
                  key=lambda t: (HELPER_REPOSITORIES.index(repository_name(t)), t))


def candidate_images(o: Observed, deps: list[Observed], helpers: list[str]) -> dict[str, str]:
    """The stated order: the service's image, its dependencies' images, then local helper images
    (image id or tag -> the reference shown in findings)."""
    out: dict[str, str] = {}
    for c in (o, *deps):
        image = str(c.inspect.get("Image") or "")
        if image and image not in out:
            out[image] = str((c.inspect.get("Config") or {}).get("Image") or image[7:19])
    for tag in helpers:
        out.setdefault(tag, tag)
    return out


async def _probe(runtime: Runtime, o: Observed, network: str, targets: list[tuple[str, str]],
                 deps: list[Observed], helpers: list[str], unusable: dict[str, str]) -> list[ProbeResult]:
    argv = ["sh", "-c", _SCRIPT, "probe", *[t for _, t in targets]]
    tried: list[str] = []
    for image, shown in candidate_images(o, deps, helpers).items():
        if image in unusable:
            tried.append(f"{shown}: {unusable[image]}")
            continue
        try:
            code, output = await run_probe(runtime.engine(), image, argv, network, PROBE_LABELS)
        except DsmError as exc:  # image without sh, network gone: try the next image
            unusable[image] = f"cannot start a shell ({exc.what[:120]})"
            tried.append(f"{shown}: {unusable[image]}")
            continue
        lines = {line.split()[1]: line for line in output.splitlines()
                 if line.startswith(("ok ", "fail ")) and len(line.split()) >= 2}
        if "noprobe" in output or code in (126, 127) or (not lines and code != 0):
            why = "has neither nc nor bash" if "noprobe" in output else f"cannot run the probe (exit {code})"
            unusable[image] = why
            tried.append(f"{shown}: {why}")
            continue
        if code is None and not lines:
            tried.append(f"{shown}: the probe timed out before answering")
            continue
        out = []
        for dep, target in targets:
            line = lines.get(target)
            if line is None:  # the probe stopped before this target: nothing is known about it
                out.append(ProbeResult(o.service, dep, network, target, ok=True, probed=False,
                                       detail=f"the probe in {shown} gave no answer for {target}"))
                continue
            out.append(ProbeResult(service=o.service, dependency=dep, network=network, target=target,
                                   ok=line.startswith("ok "), detail=line.split(" ", 2)[2] if line.count(" ") >= 2
                                   else ""))
        return out
    why = "; ".join(tried) or "no local image to run it from"
    return [ProbeResult(o.service, dep, network, target, ok=True, probed=False, detail=why) for dep, target in targets]

