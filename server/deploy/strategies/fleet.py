"""The container operations a strategy needs, on the Compose executor's engine: list a service's
containers, scale it beside the old ones (``up --no-deps --no-recreate --scale``, as
docker-rollout does), gate NEW containers by id, take an old one out of traffic, retire it.

Strategies reach these through ``ctx.executor.fleet`` only, so their unit tests use a fake fleet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from server.compose import services_argv
from server.deploy.executor import Change
from server.deploy.health import Watched, assess, log_tail
from server.deploy.project import compose_project
from server.deploy.steps import brief, on_start
from server.engine import (
    ContainerSummary,
    exec_in,
    inspect_container,
    remove_container,
    start_container,
    stop_container,
)
from server.errors import DsmError
from server.redact import Scrubber
from server.stackmodel import LoadedStack

log = logging.getLogger("docker_stack_mcp.deploy")
POLL_S = 0.25


@dataclass
class Failure:
    """A new container that did not pass its gate."""

    container: str
    """name (id)"""
    why: str
    evidence: list[str] = field(default_factory=list)


class ComposeFleet:
    def __init__(self, executor: Any) -> None:
        self.x = executor

    async def containers(self, stack: LoadedStack, svc: str, *, running: bool = False) -> list[str]:
        """Ids of ``svc``'s containers (not one-offs), oldest first."""
        found: list[ContainerSummary] = [
            c for c in await self.x.engine.compose_containers(stack.name)
            if c.service == svc and c.labels.get("com.docker.compose.oneoff") != "True" and (c.running or not running)]
        return [c.id for c in sorted(found, key=lambda c: (c.created or 0, c.name))]

    async def scale(self, change: Change, svc: str, count: int) -> None:
        """``count`` containers of ``svc``: the existing ones untouched (old config included), new ones
        CREATED (not started) from the files as they are now: :meth:`hide` them, then :meth:`start`."""
        stack = change.stack
        argv = ["up", "-d", "--no-deps", "--no-recreate", "--no-start", "--scale", f"{svc}={count}",
                *services_argv([svc])]
        await self.x.compose.run_project(compose_project(stack), argv, scrub=Scrubber(stack.secret_values),
                                         what=f"docker compose up --scale {svc}={count}",
                                         timeout_s=change.wait_s + 120, **on_start(self.x.compose, change.op))

    async def judge(self, svc: str, ids: list[str], *, timeout_s: float, monitor_s: float,
                    tell: Callable[[str], Awaitable[None]]) -> Failure | None:
        """Gate the containers ``ids`` (and only them): ready (healthy) within ``timeout_s``, then
        still ready for ``monitor_s``. The first failing one is returned with its evidence."""
        engine = self.x.engine
        started = time.monotonic()
        baseline: dict[str, int] = {}
        ready_since: float | None = None
        last_told = 0.0
        while True:
            pending: list[tuple[str, str]] = []
            for cid in ids:
                info = await inspect_container(engine, cid)
                if info is None:
                    return Failure(f"({cid[:12]})", "disappeared while being gated", [f"{cid[:12]}: gone"])
                baseline.setdefault(cid, int(info.get("RestartCount") or 0))
                a = assess(info, Watched(svc), baseline_restarts=baseline[cid], now=time.time())
                label = f"{a.container} ({cid[:12]})"
                if a.verdict == "failed":
                    return Failure(label, a.why, [*a.evidence, *await log_tail(engine, cid)])
                if a.verdict != "ready":
                    pending.append((label, a.why))
            now = time.monotonic()
            if not pending:
                ready_since = ready_since or now
                if now - ready_since >= monitor_s:
                    return None
            else:
                ready_since = None
                if now - started >= timeout_s:
                    return Failure(pending[0][0], f"not ready within {timeout_s:.0f}s ({pending[0][1]})",
                                   [f"{label}: {why}" for label, why in pending[:3]])
            if now - last_told >= 2.0:
                last_told = now
                await tell(f"rolling {svc}: gating new container(s): " + (", ".join(f"{lb} {w}" for lb, w in pending) or
                                                                          f"ready, monitored {monitor_s:.0f}s"))
            await anyio.sleep(POLL_S)

    async def hide(self, cid: str, svc: str) -> None:
        """Before it starts, a new container answers on its networks under its own name only, not the
        service's: a client resolving ``svc`` through Docker's DNS must not reach it while it boots
        (connection refused) or before its gate passed. :meth:`reveal` adds the service name."""
        await self._attach(cid, lambda aliases: [a for a in aliases if a != svc])

    async def reveal(self, cid: str, svc: str) -> None:
        await self._attach(cid, lambda aliases: [*[a for a in aliases if a != svc], svc])

    async def start(self, cid: str) -> None:
        await start_container(self.x.engine, cid)

    async def _attach(self, cid: str, aliases_for: Callable[[list[str]], list[str]]) -> None:
        engine = self.x.engine
        info = await inspect_container(engine, cid) or {}
        for net, endpoint in sorted(((info.get("NetworkSettings") or {}).get("Networks") or {}).items()):
            aliases = [str(a) for a in (endpoint or {}).get("Aliases") or [] if not cid.startswith(str(a))]
            wanted = aliases_for(aliases)
            await engine.call(lambda c, n=net: c.api.disconnect_container_from_network(cid, n),
                              f"disconnect {cid[:12]} from {net}")
            await engine.call(lambda c, n=net, a=wanted: c.api.connect_container_to_network(cid, n, aliases=a),
                              f"connect {cid[:12]} to {net}")

    async def out_of_traffic(self, stack: LoadedStack, cid: str, hook: list[str] | None) -> str:
        """Take an old container out of traffic before it stops, keeping it reachable while it drains.

        The x-dsm ``drain`` hook when the service has one (it fails the proxy's health check).
        Else the container re-joins each of its networks under its own name only: Docker's DNS stops
        answering the service's name (and its shared aliases) with it, so a proxy resolving through
        127.0.0.11 drops it at its next re-resolution, while its address stays on the network (the
        engine gives a re-joining endpoint the address it just freed) and it goes on answering the
        requests the proxy still sends there meanwhile. Leaving the networks outright (what
        :meth:`retire` does after the drain) makes that address vanish at once: a proxy that has not
        re-resolved yet sends connections into a black hole, each waiting out its ``timeout connect``
        (bench/rolling_update.py measured p99 60x the steady state that way)."""
        engine = self.x.engine
        if hook:
            code, out = await exec_in(engine, cid, hook, timeout_s=60)
            return f"{cid[:12]} drain hook exit {code}" + (f": {out.strip()[-120:]}" if code else "")
        info = await inspect_container(engine, cid) or {}
        own = str(info.get("Name") or "").lstrip("/")
        moved: list[str] = []
        for net, ep in sorted(((info.get("NetworkSettings") or {}).get("Networks") or {}).items()):
            ep = ep or {}
            before = str(ep.get("IPAddress") or "")
            fixed = ep.get("IPAMConfig") or {}  # a static address (compose ipv4_address) is asked back
            kw = {"aliases": [own] if own else None, "ipv4_address": fixed.get("IPv4Address") or None,
                  "ipv6_address": fixed.get("IPv6Address") or None}
            try:  # off the network between these two calls: a SYN sent then is retransmitted 1 s later
                await engine.call(lambda c, n=net: c.api.disconnect_container_from_network(cid, n),
                                  f"disconnect {cid[:12]} from {net}")
                off = time.monotonic()
                await engine.call(lambda c, n=net, kw=kw: c.api.connect_container_to_network(cid, n, **kw),
                                  f"connect {cid[:12]} to {net} as {own}")
                off = time.monotonic() - off
            except DsmError as exc:  # gone from it already: out of traffic all the same
                moved.append(f"{net}: {brief(exc)}")
                continue
            now = await inspect_container(engine, cid) or {}
            after = str((((now.get("NetworkSettings") or {}).get("Networks") or {}).get(net) or {}).get("IPAddress")
                        or "")
            moved.append(f"{net} (off {off * 1000:.0f} ms)" if after == before else
                         f"{net} (address {before} -> {after}: a proxy still holding the old one waits for "
                         "its connect timeout)")
        return f"{cid[:12]} out of the service's DNS name on {', '.join(moved) or 'no network'}"

    async def retire(self, cid: str, stop_s: float) -> None:
        """Off every network, then stopped and removed. After the drain a proxy resolving through
        Docker's DNS sends nothing here any more; one reading Docker's events (Traefik) drops it on
        the disconnect, before SIGTERM reaches a process that may stop answering at once."""
        engine = self.x.engine
        info = await inspect_container(engine, cid) or {}
        for net in sorted((info.get("NetworkSettings") or {}).get("Networks") or {}):
            await _quiet_disconnect(engine, cid, net)
        try:
            await stop_container(engine, cid, timeout_s=int(stop_s))
        finally:
            await remove_container(engine, cid)

    async def discard(self, ids: list[str]) -> None:
        """Remove new containers that failed (their volumes kept): the old ones were never touched."""
        for cid in ids:
            try:
                await remove_container(self.x.engine, cid)
            except Exception as exc:  # gone already
                log.debug("new container %s not removed: %s", cid[:12], exc)


async def _quiet_disconnect(engine: Any, cid: str, net: str) -> None:
    try:
        await engine.call(lambda c: c.api.disconnect_container_from_network(cid, net),
                          f"disconnect {cid[:12]} from {net}")
    except DsmError as exc:  # gone from it already
        log.debug("%s not disconnected from %s: %s", cid[:12], net, brief(exc))
