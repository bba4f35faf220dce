"""Swarm for real: a two-node swarm of inner engines (tests/inner_engine.py), shared by the module.

This kernel has no IPVS, so the stacks use ``endpoint_mode: dnsrr`` and host-mode ports (the
pre-flight says so for a stack that does not). The server's Runtime talks to the manager only
(DOCKER_HOST = the manager's API), as it will through a per-engine target.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.monitor.diagnose import diagnose_stack
from server.monitor.status import stack_status
from server.runtime import Runtime
from server.settings import Settings
from tests.deploy_helpers import WEB_10, WEB_11, WEB_BROKEN, deploy, free_port, phase, runtime_for, write
from tests.inner_engine import InnerEngine, inner_engines

pytestmark = [pytest.mark.docker, pytest.mark.anyio]


@dataclass
class Swarm:
    manager: InnerEngine
    worker: InnerEngine
    root: Path
    runtime: Runtime
    nodes: set[str]


@pytest.fixture(scope="module")
def swarm(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    with inner_engines(2, images=[WEB_10, WEB_11, WEB_BROKEN]) as (manager, worker):
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.decode().strip()
        worker.docker("swarm", "join", "--token", token, f"{manager.ip}:2377")
        base = tmp_path_factory.mktemp("swarm")
        (base / "stacks").mkdir()
        rt = runtime_for(Settings(stacks_root=base / "stacks", state_dir=base / "state", docker_host=manager.host))
        nodes = {e.docker("info", "--format", "{{.Name}}").stdout.decode().strip() for e in (manager, worker)}
        yield Swarm(manager, worker, base / "stacks", rt, nodes)
        rt.close()


def stack_yaml(name: str, port: int, api_image: str = WEB_10, web_image: str = WEB_10, extra: str = "") -> str:
    return f"""name: {name}
x-dsm: {{mode: swarm, verify_s: 0}}
services:
  web:
    image: {web_image}
    ports: [{{target: 80, published: {port}, mode: host}}]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement: {{max_replicas_per_node: 1}}
      resources: {{limits: {{memory: 64M, pids: 100}}}}
  api:
    image: {api_image}
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      resources: {{limits: {{memory: 64M, pids: 100}}}}
{extra}"""


def images(m: InnerEngine, name: str) -> dict[str, str]:
    ids = m.docker("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={name}").stdout.split()
    out = json.loads(m.docker("service", "inspect", *[i.decode() for i in ids]).stdout)
    return {s["Spec"]["Name"].removeprefix(name + "_"): s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            for s in out}


@pytest.fixture(scope="module")
def deployed(swarm: Swarm) -> str:
    """One stack name (and one host port: a changed port would update web every time) that the
    scenarios below share; each deploys it as it needs it first (a no-op for Swarm when it runs so)."""
    return f"dsmtest{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def port(swarm: Swarm) -> int:
    return free_port()


async def test_a_stack_runs_across_both_nodes_and_stack_status_names_each_tasks_node(swarm: Swarm,
                                                                                     deployed: str, port: int) -> None:
    write(swarm.root, deployed, stack_yaml(deployed, port))
    report = await deploy(swarm.runtime, deployed, wait_timeout_s=120)
    assert report.status == "deployed", [(p.name, p.detail) for p in report.phases]
    assert "--resolve-image never" in phase(report, "pull").detail
    # strategies written as Swarm's update_config; a host-mode port cannot be bound twice on a node
    order = swarm.manager.docker("service", "inspect", f"{deployed}_web", "--format",
                                 "{{.Spec.UpdateConfig.Order}} {{.Spec.UpdateConfig.FailureAction}}").stdout
    assert order.decode().split() == ["stop-first", "pause"]
    status = (await stack_status(swarm.runtime, deployed)).stacks[0]
    assert status.state == "running"
    web = [s for s in status.services if s.service == "web" and s.state == "running"]
    assert {s.node for s in web} == swarm.nodes  # one per node (max_replicas_per_node: 1)
    assert all(s.node in swarm.nodes for s in status.services)
    for engine in (swarm.manager, swarm.worker):  # the host-mode port answers on each node
        out = engine.docker("run", "--rm", "--network", "host", WEB_10, "wget", "-qO-",
                            f"http://127.0.0.1:{port}/").stdout.decode()
        assert out.strip()


async def test_a_broken_update_rolls_back_the_whole_stack(swarm: Swarm, deployed: str, port: int) -> None:
    write(swarm.root, deployed, stack_yaml(deployed, port))
    assert (await deploy(swarm.runtime, deployed, wait_timeout_s=120)).status in ("deployed", "unchanged")
    # web moves to a good new version, api to one that fails: the stack goes back as one
    write(swarm.root, deployed, stack_yaml(deployed, port, api_image=WEB_BROKEN, web_image=WEB_11))
    report = await deploy(swarm.runtime, deployed, wait_timeout_s=120)
    assert report.status == "rolled_back", [(p.name, p.status, p.detail) for p in report.phases[5:]]
    failed = next(f for f in report.findings if f.rule == "deploy-failed")
    assert failed.service == "api"
    assert any(n in failed.message for n in swarm.nodes) and "non-zero exit" in failed.message
    rollback = phase(report, "rollback").detail
    assert "stack-level rollback" in rollback and "docker service rollback" in rollback and "web" in rollback
    assert images(swarm.manager, deployed) == {"web": WEB_10, "api": WEB_10}
    status = (await stack_status(swarm.runtime, deployed)).stacks[0]
    assert status.state == "running"
    assert any(s.service == "api" and s.state == "failed" and s.node in swarm.nodes and s.error
               for s in status.services)
    diagnosis = await diagnose_stack(swarm.runtime, deployed)
    assert any(f.rule == "task-failed" and f.service == "api" for f in diagnosis.findings)


async def test_a_placement_no_node_meets_is_blocked_at_preflight(swarm: Swarm, deployed: str, port: int) -> None:
    write(swarm.root, deployed, stack_yaml(deployed, port))
    assert (await deploy(swarm.runtime, deployed, wait_timeout_s=120)).status in ("deployed", "unchanged")
    before = swarm.manager.docker("service", "ls", "--format", "{{.Name}} {{.Image}}",
                                  "--filter", f"label=com.docker.stack.namespace={deployed}").stdout
    bad = stack_yaml(deployed, port).replace("      replicas: 2\n      endpoint_mode: dnsrr\n      resources",
                                             "      replicas: 2\n      endpoint_mode: dnsrr\n      placement: "
                                             "{constraints: [node.labels.gpu == yes]}\n      resources")
    write(swarm.root, deployed, bad.replace(WEB_10, WEB_11))
    report = await deploy(swarm.runtime, deployed, wait_timeout_s=60)
    assert report.status == "blocked"
    found = next(f for f in report.findings if f.rule == "swarm-placement-unsatisfiable")
    assert found.service == "api" and "node.labels.gpu == yes" in found.message
    assert swarm.manager.docker("service", "ls", "--format", "{{.Name}} {{.Image}}", "--filter",
                                f"label=com.docker.stack.namespace={deployed}").stdout == before


async def test_a_worker_is_not_a_target(swarm: Swarm, tmp_path: Path) -> None:
    from server.preflight.validation import validate

    name = f"dsmtest{uuid.uuid4().hex[:8]}"
    write(swarm.root, name, stack_yaml(name, free_port()))
    rt = runtime_for(Settings(stacks_root=swarm.root, state_dir=tmp_path / "state", docker_host=swarm.worker.host))
    try:
        report = await validate(rt.settings, rt.compose(), rt.engine, path=name)
    finally:
        rt.close()
    (found,) = [f for f in report.findings if f.rule == "swarm-not-manager"]
    assert "not a swarm manager" in found.message and found.severity == "error"


async def test_rollback_to_an_earlier_deployment_redeploys_its_files(swarm: Swarm, deployed: str, port: int) -> None:
    from server.deploy.pipeline import Deployer

    write(swarm.root, deployed, stack_yaml(deployed, port))
    assert (await deploy(swarm.runtime, deployed, wait_timeout_s=120)).status == "deployed"
    write(swarm.root, deployed, stack_yaml(deployed, port, api_image=WEB_11))
    assert (await deploy(swarm.runtime, deployed, wait_timeout_s=120)).status == "deployed"
    assert images(swarm.manager, deployed)["api"] == WEB_11
    report = await Deployer(swarm.runtime).rollback(deployed, wait_timeout_s=120)
    assert report.status == "rolled_back", [(p.name, p.status, p.detail) for p in report.phases]
    assert images(swarm.manager, deployed) == {"web": WEB_10, "api": WEB_10}
    assert "docker stack deploy --prune" in phase(report, "rollback").detail
