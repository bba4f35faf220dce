"""``blue_green``: a second full copy of a critical stateless service, switched in through the
proxy in front of it by moving the network alias the proxy resolves.

1. Refused (the plan says why) without a proxy in the stack (x-dsm/label role ``proxy`` or a known
   proxy image), for a service that cannot run twice (the rolling rules: container_name, fixed
   host port, read-write named volume, database, no healthcheck), and, when the roll starts,
   when the host has not the memory for a second copy (measured, not assumed).
2. Green: the new version as Compose project ``<stack>-green`` (service ``<svc>-green``) on the
   networks the proxy reaches the service on, under its own name only: the proxy cannot see it.
   Its containers are gated by id and smoke-tested (x-dsm ``smoke`` exec checks in each one).
3. Switch: green joins those networks under the service's aliases and is watched for x-dsm
   ``drain_s`` while blue still serves beside it; green failing then moves the traffic back (green
   leaves the aliases and is removed; blue never left). Then blue leaves the traffic (its x-dsm
   ``drain`` hook, else it re-joins under its own name only, keeping its address: fleet.py), is
   drained for ``drain_s`` and retired (off the networks, stopped, removed).
4. Then the service comes home into the stack's own project (new containers with
   the new config, gated by id, in traffic beside green), and green is drained and removed, so
   the stack stays one Compose project and the executor's converging ``up`` finds it converged.

A failure before the switch leaves blue untouched (green removed): the rollback leaves it be.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import anyio

from server.compose import project_flags
from server.deploy.executor import RollContext, StrategyName
from server.deploy.steps import Blocked, on_start
from server.deploy.strategies.fleet import Failure
from server.deploy.strategies.rolling import Rolling, RolloutFailed
from server.deploy.strategies.select import AUTO_BLUE_GREEN, replicas_of, rolling_refusal
from server.deploy.strategies.update_config import seconds
from server.engine import exec_in, inspect_container
from server.errors import DsmError
from server.models import Finding
from server.redact import Scrubber
from server.roles import role_of_service
from server.stackmodel import LoadedStack

log = logging.getLogger("docker_stack_mcp.deploy")

GREEN_SUFFIX = "-green"
HEADROOM = 0.9
"""A second copy may take at most this share of the memory available now."""


def green_project(stack: str) -> str:
    return f"{stack}{GREEN_SUFFIX}"


def proxies_of(stack: LoadedStack, svc: str) -> list[str]:
    """Services of the stack that are proxies (role ``proxy``), other than ``svc``."""
    return sorted(n for n in stack.services if n != svc and role_of_service(stack, n).role == "proxy")


def memory_of(body: dict[str, Any]) -> int | None:
    """The memory one container of the service may use (limit, else reservation), in bytes."""
    limits = ((body.get("deploy") or {}).get("resources") or {})
    for value in (body.get("mem_limit"), (limits.get("limits") or {}).get("memory"),
                  body.get("mem_reservation"), (limits.get("reservations") or {}).get("memory")):
        try:
            if value is not None and int(value) > 0:
                return int(value)
        except (TypeError, ValueError):
            continue
    return None


@dataclass
class Attached:
    """Where a container is reachable by the proxy: network -> the aliases it answers to there."""

    cid: str
    networks: dict[str, list[str]] = field(default_factory=dict)


class BlueGreen:
    name: ClassVar[StrategyName] = "blue_green"

    def refuse(self, svc: str, stack: LoadedStack) -> Finding | None:
        why = None
        if role_of_service(stack, svc).role == "proxy":
            why = "it is the proxy itself: nothing in front of it to move the traffic"
        elif not proxies_of(stack, svc):
            why = "no proxy in the stack (x-dsm role proxy or a known proxy image) to move the traffic"
        else:
            why = rolling_refusal(stack.services.get(svc, {}), database=role_of_service(stack, svc).is_database,
                                  healthcheck=True)
        return None if why is None else Finding(rule="strategy-refused", severity="error", category="deploy",
                                                service=svc, message=f"blue_green cannot run for {svc}: {why}")

    async def roll(self, svc: str, ctx: RollContext) -> None:
        stack, change, x = ctx.change.stack, ctx.change, ctx.executor
        fleet = x.fleet
        blue = await fleet.containers(stack, svc, running=True)
        if not blue:
            return  # nothing runs: the converging up creates it
        settings = stack.service_settings_for(svc)
        body: dict[str, Any] = stack.services.get(svc, {})
        replicas = max(replicas_of(body), 1)

        async def tell(message: str) -> None:
            await ctx.steps.tell(message, False)

        try:
            await self._check_memory(x, stack, svc, body, replicas, len(blue))
        except Blocked as blocked:
            reason = next((s.strategy_reason for s in change.plan.services if s.service == svc), None)
            if reason != AUTO_BLUE_GREEN:
                raise  # asked for by name: refusing is the honest answer, nothing has changed
            # Chosen by auto: the operator asked for zero downtime, not for this mechanism.
            await tell(f"blue_green {svc}: {blocked.why}; rolling instead (start-first, gated by id)")
            await Rolling().roll(svc, ctx)
            return
        async with ctx.steps.phase("blue_green", f"blue_green {svc}: green copy as {green_project(stack.name)}, "
                                                 f"{replicas} container(s)") as step:
            attached = [await self._attachment(x, cid, svc) for cid in blue]
            networks = sorted({n for a in attached for n in a.networks})
            if not networks:
                raise RolloutFailed(f"{svc}: its containers are on no network a proxy could reach; nothing changed",
                                    svc, [a.cid[:12] for a in attached], untouched=blue)
            green = Green(x, stack, svc, change)
            notes: list[str] = []
            try:
                ids = await green.up(body, replicas, networks)
                failure = await fleet.judge(svc, ids, timeout_s=change.wait_s, monitor_s=0, tell=tell)
                failure = failure or await self._smoke(x, stack, svc, ids)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await green.down()
                if isinstance(exc, DsmError):  # compose or the engine refused green: blue never moved
                    raise RolloutFailed(f"{svc}: the green copy could not be started: {exc}; removed, the old "
                                        "containers keep serving", svc, [], untouched=blue) from None
                raise
            if failure is not None:
                with anyio.CancelScope(shield=True):
                    await green.down()
                raise RolloutFailed(f"{svc}: green container {failure.container} {failure.why}; removed, the old "
                                    "containers were never out of traffic and keep serving", svc,
                                    [failure.container, *failure.evidence][:20], untouched=blue)

            # Switch: green takes the service's aliases and is watched for drain_s beside blue (a
            # failure moves the traffic back by taking green out: blue never left); then blue leaves.
            aliases = sorted({al for a in attached for names in a.networks.values() for al in names})
            try:
                for cid in ids:
                    await self._join(x, cid, networks, aliases, replace=True)
                await tell(f"blue_green {svc}: green ({len(ids)}) in traffic under {', '.join(aliases)}, "
                           f"watched {settings.drain_s:.0f}s before blue leaves")
                failure = await fleet.judge(svc, ids, timeout_s=change.wait_s, monitor_s=settings.drain_s,
                                            tell=tell)
            except BaseException as exc:  # engine error or shutdown mid-switch: back to blue, which never left
                failure = Failure("", "")
                if isinstance(exc, DsmError):
                    raise RolloutFailed(f"{svc}: switching to green failed: {exc}; traffic moved back to the old "
                                        "containers, green removed", svc, [], untouched=blue) from None
                raise
            finally:
                if failure is not None:
                    with anyio.CancelScope(shield=True):
                        for cid in ids:  # move back: green off the aliases, then removed
                            await self._leave(x, cid, {n: [] for n in networks})
                        await green.down()
            if failure is not None:
                raise RolloutFailed(f"{svc}: green container {failure.container} {failure.why} after the switch; "
                                    "traffic moved back to the old containers, green removed", svc,
                                    [failure.container, *failure.evidence][:20], untouched=blue)
            notes.append(f"switched to green {', '.join(c[:12] for c in ids)}")
            for a in attached:  # blue out of traffic: its drain hook, else off the networks
                await self._out(x, stack, a.cid, settings.drain)
            await tell(f"blue_green {svc}: blue out of traffic, draining {settings.drain_s:.0f}s")
            await anyio.sleep(settings.drain_s)
            stop_s = seconds(body.get("stop_grace_period"), 10.0)
            for a in attached:
                await fleet.retire(a.cid, stop_s)
            notes.append(f"blue {', '.join(a.cid[:12] for a in attached)} retired")

            # Home: the service back in the stack's own project, beside green, then green drained.
            home: list[str] = []
            try:
                await fleet.scale(change, svc, replicas)  # created, not started
                home = [c for c in await fleet.containers(stack, svc) if c not in blue]
                for cid in home:  # off the service's name until gated, as rolling does
                    await fleet.hide(cid, svc)
                    await fleet.start(cid)
                failure = (Failure(svc, "docker compose created no container", []) if not home else
                           await fleet.judge(svc, home, timeout_s=change.wait_s, monitor_s=0, tell=tell))
                if failure is not None:
                    await fleet.discard(home)
                    raise RolloutFailed(f"{svc}: container {failure.container} (new version, in the stack's project) "
                                        f"{failure.why}; green was serving the new version", svc,
                                        [failure.container, *failure.evidence][:20])
                for cid in home:
                    await fleet.reveal(cid, svc)
                for cid in ids:  # green out of traffic: its drain hook, else off the networks
                    await self._out(x, stack, cid, settings.drain)
                await tell(f"blue_green {svc}: back in {stack.name} ({len(home)}), green out of traffic, "
                           f"draining {settings.drain_s:.0f}s")
                await anyio.sleep(settings.drain_s)
            finally:
                with anyio.CancelScope(shield=True):
                    await green.down()
            notes.append(f"home in {stack.name}: {', '.join(c[:12] for c in home)}; green removed")
            step.detail = f"{svc}: " + "; ".join(notes)

    # -- pieces ---------------------------------------------------------------------------------
    async def _check_memory(self, x: Any, stack: LoadedStack, svc: str, body: dict[str, Any], replicas: int,
                            running: int) -> None:
        from server.preflight.facts import gather_facts

        snap = await gather_facts(x.engine, stack, sample_cpu=False, check_images=False)
        available = snap.facts.memory_available_bytes
        per = memory_of(body)
        source = "its memory limit"
        if per is None:  # no limit: what its containers use now (summed over them)
            used = snap.facts.own_usage.get(svc)
            per = (used.memory_bytes // max(running, 1)) if used is not None and used.memory_bytes else None
            source = "what its containers use now"
        if available is None or per is None:
            return  # unknown either way: the gate and the engine's own limits decide
        need = per * replicas
        if need > available * HEADROOM:
            raise Blocked("blue_green", f"{svc}: a second copy needs {need >> 20} MiB ({replicas} x {per >> 20} MiB, "
                          f"{source}), the host has {available >> 20} MiB available", [Finding(
                              rule="insufficient-resources", severity="error", category="deploy", service=svc,
                              message=f"blue_green cannot run for {svc}: not enough memory for a second copy "
                                      f"({need >> 20} MiB needed, {available >> 20} MiB available)",
                              evidence=[f"{running} container(s) running now"])])

    async def _attachment(self, x: Any, cid: str, svc: str) -> Attached:
        info = await inspect_container(x.engine, cid) or {}
        short = cid[:12]
        out = Attached(cid)
        for net, ep in ((info.get("NetworkSettings") or {}).get("Networks") or {}).items():
            names = [a for a in (ep or {}).get("Aliases") or [] if a and a != short and not cid.startswith(a)]
            if names:  # reached by a name (the service's, its aliases): where a proxy finds it
                out.networks[net] = names
        return out

    async def _join(self, x: Any, cid: str, nets: list[str], aliases: list[str], *, replace: bool = False) -> None:
        """Attach ``cid`` to ``nets`` answering to ``aliases``; ``replace``: it is on them already under
        its own name, so it leaves and comes back with the aliases (Docker cannot add an alias)."""
        for net in nets:
            if replace:
                await _quiet(x, lambda c, n=net: c.api.disconnect_container_from_network(cid, n),
                             f"disconnect {cid[:12]} from {net}")
            await x.engine.call(lambda c, n=net: c.api.connect_container_to_network(cid, n, aliases=aliases),
                                f"connect {cid[:12]} to {net} as {', '.join(aliases)}")

    async def _out(self, x: Any, stack: LoadedStack, cid: str, hook: list[str] | None) -> None:
        """Out of traffic before it stops: the x-dsm drain hook (the proxy's health check fails, requests
        in flight finish), else out of the service's DNS name with its address kept while it drains
        (server/deploy/strategies/fleet.py's out_of_traffic, as rolling does)."""
        if hook:
            code, out = await exec_in(x.engine, cid, list(hook), timeout_s=60)
            if code == 0:
                return
            log.warning("drain hook in %s exited %s: %s; leaving the DNS name instead", cid[:12], code, out[-200:])
        await x.fleet.out_of_traffic(stack, cid, None)

    async def _leave(self, x: Any, cid: str, networks: dict[str, list[str]]) -> None:
        for net in networks:
            await _quiet(x, lambda c, n=net: c.api.disconnect_container_from_network(cid, n),
                         f"disconnect {cid[:12]} from {net}")

    async def _smoke(self, x: Any, stack: LoadedStack, svc: str, ids: list[str]) -> Failure | None:
        """The service's x-dsm smoke ``exec`` checks, run in every green container (its ``http`` checks
        name host addresses that reach blue, so they run after the switch, in the transaction)."""
        for check in stack.service_settings_for(svc).smoke:
            if not check.exec:
                continue
            argv, want = list(check.exec), check.expect_exit
            for cid in ids:
                code, out = await exec_in(x.engine, cid, argv, timeout_s=check.timeout_s)
                if code != want:
                    return Failure(cid[:12], f"smoke check {' '.join(argv)} exited {code} (wanted {want})",
                                   [out.strip()[-300:]])
        return None


class Green:
    """The green copy: one service of a Compose project of its own, defined from the stack's render."""

    def __init__(self, x: Any, stack: LoadedStack, svc: str, change: Any) -> None:
        self.x, self.stack, self.svc, self.change = x, stack, svc, change
        self.project = green_project(stack.name)
        self.directory = Path(x.settings.state_dir) / "bluegreen" / self.project
        self.file = self.directory / "compose.json"
        self.up_done = False

    def definition(self, body: dict[str, Any], replicas: int, networks: list[str]) -> dict[str, Any]:
        green = {k: v for k, v in body.items() if k not in ("depends_on", "links", "container_name", "networks",
                                                             "ports", "extends")}
        green["networks"] = {f"n{i}": {} for i in range(len(networks))}
        green.setdefault("deploy", {})["replicas"] = replicas
        labels = dict(green.get("labels") or {})
        labels["dsm.bluegreen.of"] = f"{self.stack.name}/{self.svc}"
        green["labels"] = labels
        return {"name": self.project, "services": {f"{self.svc}{GREEN_SUFFIX}": green},
                "networks": {f"n{i}": {"name": net, "external": True} for i, net in enumerate(networks)}}

    def _flags(self) -> list[str]:
        return project_flags(self.directory, [self.file], self.project)

    async def up(self, body: dict[str, Any], replicas: int, networks: list[str]) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.file.write_text(json.dumps(self.definition(body, replicas, networks), indent=1))
        self.up_done = True
        await self.x.compose.run(self._flags(), ["up", "-d", "--no-deps", "--remove-orphans"], cwd=self.directory,
                                 scrub=Scrubber(self.stack.secret_values), what=f"docker compose up ({self.project})",
                                 timeout_s=self.change.wait_s + 120, **on_start(self.x.compose, self.change.op))
        found = [c for c in await self.x.engine.compose_containers(self.project)
                 if c.labels.get("com.docker.compose.oneoff") != "True"]
        return [c.id for c in sorted(found, key=lambda c: c.name)]

    async def down(self) -> None:
        if not self.up_done or not self.file.is_file():
            return
        try:
            await self.x.compose.run(self._flags(), ["down", "--remove-orphans", "-t", "10"], cwd=self.directory,
                                     scrub=Scrubber(self.stack.secret_values),
                                     what=f"docker compose down ({self.project})", timeout_s=120)
        except DsmError as exc:
            log.warning("green project %s not removed: %s", self.project, exc)
            return
        self.file.unlink(missing_ok=True)


async def _quiet(x: Any, fn: Any, what: str) -> None:
    try:
        await x.engine.call(fn, what)
    except DsmError as exc:  # not on that network (any more): the state we wanted
        log.debug("%s: %s", what, exc)

