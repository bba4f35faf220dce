"""Smoke checks from ``x-dsm``: HTTP from the host or from inside the stack's network, and exec.

An ``http`` URL whose host is a service of the stack is fetched from inside the stack's network,
by a short-lived container created on that network from an image already local (the service's
own image; it needs ``wget``), so nothing is pulled. Any other host (``127.0.0.1``, the host's
name) is fetched from this host. ``exec`` runs the argv in the service's container (no shell).

Only ``http``/``https`` URLs are fetched (x-dsm refuses others when it is parsed; checked again
here): urllib would open ``file://`` and ``ftp://`` too, and a FIFO behind ``file://`` hung a
deploy with its lock held. Every check ends within its ``timeout_s`` (plus a short grace for the
engine), whatever the other side sends: the body of an HTTP answer is never read, and an exec
keeps at most the first 64 KiB of its output.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio

from server.engine import Engine, run_probe
from server.stackmodel import LoadedStack
from server.xdsm import SmokeCheck, smoke_url_allowed

_GRACE_S = 10.0
"""Beyond a check's own timeout: creating and removing a probe container, starting an exec."""

_STATUS = re.compile(r"HTTP/\d(?:\.\d)? (\d{3})")


@dataclass(frozen=True)
class SmokeResult:
    service: str
    check: str
    ok: bool
    detail: str


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only, redirects included (the default opener follows a redirect to ftp:// and opens file://)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if not smoke_url_allowed(newurl):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-http URL refused: {newurl[:80]}",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _http_from_host(url: str, timeout_s: float) -> tuple[int | None, str]:
    if not smoke_url_allowed(url):
        return None, "refused: a smoke check fetches http:// or https:// URLs only"
    request = urllib.request.Request(url, headers={"User-Agent": "docker-stack-mcp smoke"})  # noqa: S310
    try:
        with _opener().open(request, timeout=timeout_s) as response:  # the body is never read
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
    from_host = bool(check.http) and not (network and (urlsplit(check.http or "").hostname or "") in stack.services)
    try:
        with anyio.fail_after(check.timeout_s + (1.0 if from_host else _GRACE_S)):
            return await _bounded(engine, stack, service, check, containers, network)
    except TimeoutError:
        what = f"http {check.http}" if check.http else f"exec {(check.exec or ['?'])[0]}"
        return SmokeResult(service, what, False, f"did not finish within {check.timeout_s:g}s")


async def _bounded(engine: Engine, stack: LoadedStack, service: str, check: SmokeCheck, containers: dict[str, str],
                   network: str | None) -> SmokeResult:
    if check.http:
        url = check.http
        if not smoke_url_allowed(url):
            return SmokeResult(service, f"http {url[:80]}", False,
                               "refused: a smoke check fetches http:// or https:// URLs only")
        host = urlsplit(url).hostname or ""
        if host in stack.services and network:
            image = str(stack.services[host].get("image") or stack.services[service].get("image") or "")
            code, out = await run_probe(engine, image, ["wget", "-q", "-S", "-O", "/dev/null", url], network,
                                        {"dsm.smoke": stack.name}, timeout_s=check.timeout_s)
            match = _STATUS.findall(out)
            status = int(match[-1]) if match else (200 if code == 0 else None)
            where = f"from inside network {network}"
        else:
            status, out = await anyio.to_thread.run_sync(_http_from_host, url, check.timeout_s,
                                                         abandon_on_cancel=True)
            where = "from the host"
        ok = status == check.expect_status
        detail = f"GET {url} {where}: " + (f"HTTP {status}" if status else f"no answer ({out.strip()[:160]})")
        return SmokeResult(service, f"http {url}", ok, detail + ("" if ok else f", expected {check.expect_status}"))
    argv = list(check.exec or [])
    container = containers.get(service)
    if not container:
        return SmokeResult(service, f"exec {argv[0]}", False, f"no running container of {service} to exec in")
    # exec_stream keeps the first 64 KiB of stdout and cuts the stream at the timeout.
    result = await engine.exec_stream(container, argv, timeout_s=check.timeout_s)
    if result.timed_out:
        return SmokeResult(service, f"exec {argv[0]}", False, f"did not finish within {check.timeout_s:g}s")
    code, out = result.exit_code, (result.stdout + result.stderr)[-4000:]
    ok = code == check.expect_exit
    tail = last_lines(out)
    detail = f"exit {code}" + ("" if ok else f", expected {check.expect_exit}") + (f": {tail}" if tail else "")
    return SmokeResult(service, f"exec {' '.join(argv)[:80]}", ok, detail)


def last_lines(out: str, keep: int = 3, width: int = 160) -> str:
    """The last few meaningful lines of a check's output, each stripped and bounded: the one line
    that matters is rarely the last (psql ends an error with a caret line under ``LINE 1: ...``)."""
    lines = [line.strip()[:width] for line in out.splitlines() if any(ch.isalnum() for ch in line)]
    return " | ".join(lines[-keep:])


def _network(stack: LoadedStack) -> str | None:
    networks = stack.rendered.get("networks") or {}
    if "default" in networks:
        return str((networks["default"] or {}).get("name") or f"{stack.name}_default")
    for key, body in networks.items():
        return str((body or {}).get("name") or f"{stack.name}_{key}")
    return None
