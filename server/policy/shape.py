"""Small readers over a rendered service: replicas, reservations, ports, mounts, image refs.

Limits and healthchecks come from :mod:`server.stackview`; these are the rest the rules share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.stackview import parse_bytes

WILDCARD_IPS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (compared, never bound)


def replicas(service: dict[str, Any]) -> int:
    deploy = service.get("deploy") or {}
    raw = deploy.get("replicas")
    if raw is None:
        raw = service.get("scale")
    try:
        return max(int(raw), 0) if raw is not None else 1
    except (TypeError, ValueError):
        return 1


def memory_reservation(service: dict[str, Any]) -> int | None:
    res = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    return parse_bytes(res.get("memory")) or parse_bytes(service.get("mem_reservation"))


@dataclass(frozen=True)
class Published:
    service: str
    host_ip: str
    port: int
    protocol: str
    target: int


def published_ports(name: str, service: dict[str, Any]) -> list[Published]:
    """Host ports a service publishes (Compose expands ranges when rendering)."""
    out: list[Published] = []
    for p in service.get("ports") or []:
        raw = str(p.get("published") or "")
        if not raw:
            continue
        low, _, high = raw.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            continue
        for port in range(first, min(last, first + 1024) + 1):
            out.append(
                Published(
                    service=name,
                    host_ip=str(p.get("host_ip") or ""),
                    port=port,
                    protocol=str(p.get("protocol") or "tcp"),
                    target=int(p.get("target") or 0),
                )
            )
    return out


def ips_overlap(a: str, b: str) -> bool:
    return a in WILDCARD_IPS or b in WILDCARD_IPS or a == b


def bind_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in service.get("volumes") or [] if isinstance(v, dict) and v.get("type") == "bind"]


@dataclass(frozen=True)
class ImageRef:
    raw: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def family(self) -> str:
        """Last path component of the repository, lower-case: 'postgres', 'gotrue', 'web'."""
        return self.repository.rsplit("/", 1)[-1].lower()


def parse_image(ref: str) -> ImageRef:
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        repository, tag = name[:colon], name[colon + 1 :]
    else:
        repository, tag = name, None
    return ImageRef(raw=ref, repository=repository, tag=tag or None, digest=digest or None)


def first_target_port(service: dict[str, Any]) -> int | None:
    for p in service.get("ports") or []:
        if p.get("target"):
            return int(p["target"])
    expose = service.get("expose") or []
    for e in expose:
        try:
            return int(str(e).split("/")[0].split("-")[0])
        except ValueError:
            continue
    return None
