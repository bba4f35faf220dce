"""Smoke checks from ``x-dsm``: HTTP from the host or from inside the stack's network, and exec.

An ``http`` URL whose host is a service of the stack is fetched from inside the stack's network,
by a short-lived container created on that network from an image already local (the service's
own image; it needs ``wget``), so nothing is pulled. Any other host (``127.0.0.1``, the host's
name) is fetched from this host. ``exec`` runs the argv in the service's container (no shell).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from server.engine import Engine, exec_in, run_probe
from server.stackmodel import LoadedStack
from server.xdsm import SmokeCheck

_STATUS = re.compile(r"HTTP/\d(?:\.\d)? (\d{3})")


@dataclass(frozen=True)
class SmokeResult:
    service: str
    check: str
    ok: bool
    detail: str


def _http_from_host(url: str, timeout_s: float) -> tuple[int | None, str]:
    request = urllib.request.Request(url, headers={"User-Agent": "docker-stack-mcp smoke"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (operator-given URL)
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))[:200]


async def run_smoke(engine: Engine, stack: LoadedStack, services: list[str], containers: dict[str, str]
                    ) -> list[SmokeResult]:
    """Run every smoke check of ``services``; ``containers`` maps service -> a running container id."""
    results: list[SmokeResult] = []
    network = _network(stack)
    for name in services:
        for check in stack.service_settings_for(name).smoke:
            results.append(await _one(engine, stack, name, check, containers, network))
    return results


async def _one(engine: Engine, stack: LoadedStack, service: str, check: SmokeCheck, containers: dict[str, str],
               network: str | None) -> SmokeResult:
    if check.http:
        url = check.http
        host = urlsplit(url).hostname or ""
        if host in stack.services and network:
            image = str(stack.services[host].get("image") or stack.services[service].get("image") or "")
            code, out = await run_probe(engine, image, ["wget", "-q", "-S", "-O", "/dev/null", url], network,
                                        {"dsm.smoke": stack.name}, timeout_s=check.timeout_s)
            match = _STATUS.findall(out)
            status = int(match[-1]) if match else (200 if code == 0 else None)
            where = f"from inside network {network}"
        else:
            status, out = await anyio.to_thread.run_sync(_http_from_host, url, check.timeout_s)
            where = "from the host"
        ok = status == check.expect_status
        detail = f"GET {url} {where}: " + (f"HTTP {status}" if status else f"no answer ({out.strip()[:160]})")
        return SmokeResult(service, f"http {url}", ok, detail + ("" if ok else f", expected {check.expect_status}"))
    argv = list(check.exec or [])
    container = containers.get(service)
    if not container:
        return SmokeResult(service, f"exec {argv[0]}", False, f"no running container of {service} to exec in")
    try:
        code, out = await exec_in(engine, container, argv, timeout_s=check.timeout_s)
    except TimeoutError:
        return SmokeResult(service, f"exec {argv[0]}", False, f"did not finish within {check.timeout_s:g}s")
    ok = code == check.expect_exit
    tail = out.strip().splitlines()[-1][:200] if out.strip() else ""
    detail = f"exit {code}" + ("" if ok else f", expected {check.expect_exit}") + (f": {tail}" if tail else "")
    return SmokeResult(service, f"exec {' '.join(argv)[:80]}", ok, detail)


def _network(stack: LoadedStack) -> str | None:
    networks = stack.rendered.get("networks") or {}
    if "default" in networks:
        return str((networks["default"] or {}).get("name") or f"{stack.name}_default")
    for key, body in networks.items():
        return str((body or {}).get("name") or f"{stack.name}_{key}")
    return None
