"""The redacted, typed view of a rendered stack that inspect_stack returns."""

from __future__ import annotations

from typing import Any

from server.models import PortBinding, ServiceView, VolumeMount
from server.redact import MASK, Scrubber, is_secret_key, redact_mapping
from server.stackmodel import LoadedStack

_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def parse_bytes(value: Any) -> int | None:
    """Compose memory values: ints (bytes, as rendered) or strings like '512m', '1g'."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip().lower()
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return int(float(text[: -len(suffix)]) * _UNITS[suffix])
            except ValueError:
                return None
    try:
        return int(float(text))
    except ValueError:
        return None


def memory_limit(service: dict[str, Any]) -> int | None:
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    return parse_bytes(limits.get("memory")) or parse_bytes(service.get("mem_limit"))


def cpu_limit(service: dict[str, Any]) -> float | None:
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    raw = limits.get("cpus") or service.get("cpus")
    try:
        return float(raw) if raw not in (None, "", 0, "0") else None
    except (TypeError, ValueError):
        return None


def has_healthcheck(service: dict[str, Any]) -> bool:
    hc = service.get("healthcheck")
    if not isinstance(hc, dict) or hc.get("disable"):
        return False
    test = hc.get("test")
    return bool(test) and test != ["NONE"]


def service_view(stack: LoadedStack, name: str, service: dict[str, Any]) -> ServiceView:
    # stack.secret_values holds only the values that are no structure (server.redact.positional_secrets).
    scrub = Scrubber(stack.secret_values)
    env: dict[str, str] = {}
    for key, value in (service.get("environment") or {}).items():
        if value is None:
            env[key] = ""
        elif is_secret_key(key):
            env[key] = MASK
        else:
            env[key] = scrub(str(value))
    depends = service.get("depends_on") or {}
    return ServiceView(
        name=name,
        # Masks only secrets interpolated into it: a password that is also written structure
        # ("postgres") is not in stack.secret_values, so "postgres:16" stays as it is.
        image=scrub(service["image"]) if service.get("image") else None,
        build="build" in service,
        ports=[
            PortBinding(
                host_ip=p.get("host_ip"),
                published=str(p["published"]) if p.get("published") not in (None, "") else None,
                target=int(p.get("target") or 0),
                protocol=p.get("protocol") or "tcp",
            )
            for p in service.get("ports") or []
        ],
        volumes=[
            VolumeMount(
                type=v.get("type") or "volume",
                source=scrub(str(v["source"])) if v.get("source") else None,
                target=str(v.get("target") or ""),
                read_only=bool(v.get("read_only")),
            )
            for v in service.get("volumes") or []
        ],
        networks=sorted((service.get("networks") or {}).keys()),
        depends_on={dep: (cfg or {}).get("condition", "service_started") for dep, cfg in depends.items()},
        healthcheck=has_healthcheck(service),
        environment=env,
        memory_limit_bytes=memory_limit(service),
        cpu_limit=cpu_limit(service),
        restart=service.get("restart"),
        profiles=list(service.get("profiles") or []),
        dsm=redact_mapping(stack.service_settings_for(name).model_dump(exclude_defaults=True, by_alias=True), scrub),
    )
