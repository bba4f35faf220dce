"""Swarm pre-flight rules (server/preflight/swarm.py), one test per rule; the StackCLI is faked at
its own seam for the host rules (the real check runs in tests/test_swarm_engine.py)."""

from __future__ import annotations

from typing import Any

import pytest

from server.deploy.swarm import is_swarm
from server.deploy.swarm.cli import StackCLI, SwarmInfo, SwarmUnavailable
from server.preflight.swarm import file_findings, host_findings, parse_nodes, satisfies
from tests.test_policy_units import make_stack

SWARM = {"mode": "swarm"}


def rules(services: dict[str, dict[str, Any]], ipvs: bool | None = True) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in file_findings(make_stack(services, x_dsm=SWARM), ipvs):
        out.setdefault(f.rule, []).append(f"{f.service}: {f.message}")
    return out


DNSRR = {"endpoint_mode": "dnsrr"}


def test_mode_swarm_is_read_from_x_dsm() -> None:
    assert is_swarm(make_stack({"a": {"image": "x"}}, x_dsm=SWARM))
    assert not is_swarm(make_stack({"a": {"image": "x"}}))


def test_options_stack_deploy_ignores_are_warned() -> None:
    found = rules({"a": {"image": "x", "container_name": "a1", "restart": "always", "depends_on": {"b": {}},
                         "build": {"context": "."}, "deploy": DNSRR},
                   "b": {"image": "x", "restart": "always",
                         "deploy": {**DNSRR, "restart_policy": {"condition": "any"}}}})
    (msg,) = found["swarm-ignored-option"]
    assert msg.startswith("a:") and all(k in msg for k in ("container_name", "restart", "depends_on", "build"))


def test_build_without_image_is_an_error() -> None:
    assert "swarm-build-only" in rules({"a": {"build": {"context": "."}, "deploy": DNSRR}})


def test_host_port_with_replicas_that_may_share_a_node() -> None:
    port = [{"target": 80, "published": "8080", "mode": "host"}]
    two = {**DNSRR, "replicas": 2}
    assert "swarm-host-port-collision" in rules({"a": {"image": "x", "ports": port, "deploy": two}})
    spread = {**DNSRR, "replicas": 2, "placement": {"max_replicas_per_node": 1}}
    assert "swarm-host-port-collision" not in rules({"a": {"image": "x", "ports": port, "deploy": spread}})
    assert "swarm-host-port-collision" not in rules({"a": {"image": "x", "ports": port, "deploy": DNSRR}})


def test_ingress_ports_and_vips_need_ipvs() -> None:
    ingress = [{"target": 80, "published": "8080"}]
    assert "ingress-published" in rules({"a": {"image": "x", "ports": ingress, "deploy": DNSRR}}, ipvs=False)[
        "swarm-needs-ipvs"][0]
    assert "VIP" in rules({"a": {"image": "x"}}, ipvs=False)["swarm-needs-ipvs"][0]
    assert "swarm-needs-ipvs" not in rules({"a": {"image": "x", "ports": ingress}}, ipvs=True)
    host = [{"target": 80, "published": "8080", "mode": "host"}]
    assert rules({"a": {"image": "x", "ports": host, "deploy": DNSRR}}, ipvs=False) == {}


def test_vip_updated_start_first_suggests_dnsrr() -> None:
    (msg,) = rules({"a": {"image": "x"}}, ipvs=True)["swarm-vip-start-first"]  # rolling: start-first
    assert "old task" in msg
    stop_first = {"update_config": {"order": "stop-first"}}
    assert "swarm-vip-start-first" not in rules({"a": {"image": "x", "deploy": stop_first}}, ipvs=True)
    assert "swarm-vip-start-first" not in rules({"a": {"image": "x", "deploy": DNSRR}}, ipvs=True)


NODES = [
    {"ID": "n1", "Description": {"Hostname": "alpha", "Resources": {"NanoCPUs": 2_000_000_000,
                                                                   "MemoryBytes": 2 * 2**30}},
     "Spec": {"Role": "manager", "Labels": {"tier": "db"}, "Availability": "active"}, "Status": {"State": "ready"}},
    {"ID": "n2", "Description": {"Hostname": "beta", "Resources": {"NanoCPUs": 2_000_000_000,
                                                                  "MemoryBytes": 2 * 2**30}},
     "Spec": {"Role": "worker", "Labels": {}, "Availability": "active"}, "Status": {"State": "ready"}},
]


def test_constraints_read_against_a_node() -> None:
    alpha, beta = parse_nodes(NODES)
    assert satisfies(alpha, "node.hostname == alpha") and not satisfies(beta, "node.hostname==alpha")
    assert satisfies(alpha, "node.labels.tier == db") and satisfies(beta, "node.labels.tier != db")
    assert satisfies(beta, "node.role == worker")
    assert satisfies(alpha, "node.custom.thing == 1") is None  # left to Swarm


class FakeCLI(StackCLI):
    def __init__(self, manager: bool = True, others: list[dict[str, Any]] | None = None) -> None:
        super().__init__(lambda: {})
        self.manager, self.others = manager, others or []

    async def require_manager(self) -> SwarmInfo:
        if not self.manager:
            raise SwarmUnavailable("this engine is not a swarm manager", next_step="point DOCKER_HOST at one")
        return SwarmInfo("active", True, "n1", 2)

    async def nodes(self) -> list[dict[str, Any]]:
        return NODES

    async def all_services(self) -> list[dict[str, Any]]:
        return self.others


async def host(services: dict[str, dict[str, Any]], cli: FakeCLI | None = None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in await host_findings(make_stack(services, x_dsm=SWARM), cli or FakeCLI()):
        out.setdefault(f.rule, []).append(f.message)
    return out


@pytest.mark.anyio
async def test_not_a_manager_is_a_clear_error() -> None:
    found = await host({"a": {"image": "x"}}, FakeCLI(manager=False))
    assert list(found) == ["swarm-not-manager"]


@pytest.mark.anyio
async def test_placement_naming_no_node_or_label_is_blocked() -> None:
    ok = {"placement": {"constraints": ["node.labels.tier == db"]}}
    assert await host({"a": {"image": "x", "deploy": ok}}) == {}
    for bad in ("node.hostname == gamma", "node.labels.tier == web"):
        found = await host({"a": {"image": "x", "deploy": {"placement": {"constraints": [bad]}}}})
        assert bad in found["swarm-placement-unsatisfiable"][0]


@pytest.mark.anyio
async def test_reservations_beyond_the_nodes_are_blocked() -> None:
    def res(mem: str, replicas: int = 1) -> dict[str, Any]:
        return {"image": "x", "deploy": {"replicas": replicas, "resources": {"reservations": {"memory": mem}}}}

    assert await host({"a": res(str(2**30), 3)}) == {}  # 3 GiB over two 2 GiB nodes
    assert "no node it may run on" in (await host({"a": res(str(3 * 2**30))}))["swarm-resources-exceeded"][0]
    assert "in all" in (await host({"a": res(str(2**30), 5)}))["swarm-resources-exceeded"][0]
    other = {"Spec": {"Labels": {}, "Mode": {"Replicated": {"Replicas": 3}},
                      "TaskTemplate": {"Resources": {"Reservations": {"MemoryBytes": 2**30}}}}}
    found = await host({"a": res(str(2**30), 2)}, FakeCLI(others=[other]))
    assert "other services reserve" in found["swarm-resources-exceeded"][0]
