"""Proposed limits for services that have none: from observed usage, else by image family.

Upstream stacks (Supabase's among them) ship without limits, so a bare "add limits" finding
leaves the operator guessing. A proposal is a YAML patch to merge into the compose file (or an
override file). Observed usage wins: the limit is twice what the service uses now, the
reservation what it uses now. Without usage, conservative defaults by image family apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.policy.shape import parse_image

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class Proposal:
    memory_bytes: int
    reservation_bytes: int
    cpus: float
    basis: str


# (substring of the repository path, memory limit, cpus). First match wins, so specific first.
_FAMILIES: list[tuple[str, int, float]] = [
    ("postgres-meta", 256 * MIB, 0.5),
    ("postgrest", 256 * MIB, 0.5),
    ("supavisor", 512 * MIB, 1.0),
    ("logflare", 1 * GIB, 1.0),
    ("edge-runtime", 512 * MIB, 1.0),
    ("storage-api", 512 * MIB, 1.0),
    ("gotrue", 256 * MIB, 0.5),
    ("realtime", 512 * MIB, 1.0),
    ("studio", 512 * MIB, 1.0),
    ("imgproxy", 512 * MIB, 1.0),
    ("postgres", 1 * GIB, 2.0),
    ("postgis", 1 * GIB, 2.0),
    ("timescale", 1 * GIB, 2.0),
    ("mysql", 1 * GIB, 2.0),
    ("mariadb", 1 * GIB, 2.0),
    ("mongo", 1 * GIB, 1.0),
    ("elasticsearch", 2 * GIB, 2.0),
    ("opensearch", 2 * GIB, 2.0),
    ("clickhouse", 2 * GIB, 2.0),
    ("meilisearch", 1 * GIB, 1.0),
    ("qdrant", 1 * GIB, 1.0),
    ("redis", 256 * MIB, 0.5),
    ("valkey", 256 * MIB, 0.5),
    ("keydb", 256 * MIB, 0.5),
    ("memcached", 256 * MIB, 0.5),
    ("kong", 512 * MIB, 1.0),
    ("nginx", 256 * MIB, 1.0),
    ("traefik", 256 * MIB, 1.0),
    ("caddy", 256 * MIB, 1.0),
    ("haproxy", 256 * MIB, 1.0),
    ("envoy", 256 * MIB, 1.0),
    ("vector", 256 * MIB, 0.5),
    ("n8n", 1 * GIB, 1.0),
    ("librechat", 1 * GIB, 1.0),
    ("linkwarden", 1 * GIB, 1.0),
    ("postiz", 1 * GIB, 1.0),
    ("vaultwarden", 256 * MIB, 0.5),
    ("portainer", 256 * MIB, 0.5),
    ("netdata", 512 * MIB, 1.0),
    ("busybox", 64 * MIB, 0.25),
    ("alpine", 64 * MIB, 0.25),
]
_DEFAULT = (512 * MIB, 1.0)


def propose(image: str | None, observed_bytes: int | None, replicas: int = 1) -> Proposal:
    """Limits for one container of a service (``observed_bytes`` is the sum over its replicas)."""
    family_mem, family_cpus = _DEFAULT
    family = "unknown image family"
    repo = parse_image(image).repository.lower() if image else ""
    for key, mem, cpus in _FAMILIES:
        if key in repo:
            family_mem, family_cpus, family = mem, cpus, f"image family '{key}'"
            break
    if observed_bytes:
        per_container = observed_bytes / max(replicas, 1)
        limit = _nice(max(per_container * 2, 64 * MIB))
        reservation = _nice(max(per_container, 32 * MIB), step=32 * MIB)
        basis = f"twice the {_human(int(per_container))} in use now"
        return Proposal(limit, min(reservation, limit), family_cpus, basis)
    return Proposal(family_mem, family_mem // 2, family_cpus, f"conservative default for {family}")


def _nice(value: float, step: int = 64 * MIB) -> int:
    if value > GIB:
        step = 256 * MIB
    return int(math.ceil(value / step) * step)


def _human(n: int) -> str:
    if n >= GIB and n % (GIB // 4) == 0:
        return f"{n / GIB:g}g"
    if n >= GIB:
        return f"{n / GIB:.1f}g"
    return f"{max(n // MIB, 1)}m"


def compose_size(n: int) -> str:
    """A Compose memory value: '512m', '1g', '1536m'."""
    if n % GIB == 0:
        return f"{n // GIB}g"
    return f"{max(n // MIB, 1)}m"


def limits_patch(service: str, *, memory: int | None, reservation: int | None, cpus: float | None) -> str:
    """A YAML patch for ``services.<service>.deploy.resources`` (written out by hand: it is hot)."""
    lines = ["services:", f"  {service}:", "    deploy:", "      resources:"]
    if cpus is not None or memory is not None:
        lines.append("        limits:")
        if cpus is not None:
            lines.append(f'          cpus: "{cpus:g}"')
        if memory is not None:
            lines.append(f"          memory: {compose_size(memory)}")
    if reservation is not None:
        lines += ["        reservations:", f"          memory: {compose_size(reservation)}"]
    return "\n".join(lines) + "\n"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.0f} MiB"
