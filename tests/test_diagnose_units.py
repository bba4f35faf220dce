"""Seams of the honest diagnosis, without an engine: probe image order, one-shot dependencies,
network drift in the plan, restore noise and engine times."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from server.deploy.plan import missing_networks
from server.engine import ContainerSummary
from server.monitor import netcheck
from server.monitor.since import changes_of, is_restore_noise, parse_time
from server.monitor.status import Observed


def _observed(service: str, image: str, ref: str, depends: str = "", status: str = "running") -> Observed:
    summary = ContainerSummary(id=service, name=f"p-{service}-1", project="p", service=service, state=status,
                               status="", health=None, image=ref)
    labels = {"com.docker.compose.depends_on": depends} if depends else {}
    return Observed(summary, {"Image": image, "Config": {"Image": ref, "Labels": labels},
                              "State": {"Status": status}})


def test_probe_images_in_the_stated_order() -> None:
    app = _observed("app", "sha256:aaa", "acme/app:1", "db:service_started:false")
    db = _observed("db", "sha256:bbb", "postgres:16")
    order = netcheck.candidate_images(app, [db], ["alpine:3", "busybox:1"])
    assert list(order) == ["sha256:aaa", "sha256:bbb", "alpine:3", "busybox:1"]
    assert order["sha256:aaa"] == "acme/app:1"


def test_completed_and_stopped_dependencies_are_not_probed() -> None:
    web = _observed("web", "sha256:a", "web:1", "migrate:service_completed_successfully:false,db:service_healthy:false,"
                    "cache:service_started:false")
    by = {"migrate": _observed("migrate", "sha256:m", "web:1", status="exited"),
          "db": _observed("db", "sha256:d", "pg:1"),
          "cache": _observed("cache", "sha256:c", "redis:7", status="exited")}
    assert netcheck.completion_dependencies(web) == {"migrate"}
    assert [d.service for d in netcheck.probed_dependencies(web, by, set())] == ["db"]


def _stack(networks: Any, top: dict[str, Any]) -> Any:
    body: dict[str, Any] = {"image": "web:1"}
    if networks is not None:
        body["networks"] = networks
    return SimpleNamespace(name="p", services={"app": body}, rendered={"services": {"app": body}, "networks": top})


def _container(*nets: str) -> ContainerSummary:
    return ContainerSummary(id="c1", name="p-app-1", project="p", service="app", state="running", status="",
                            health=None, image="web:1", networks=tuple(nets))


def test_plan_sees_a_container_detached_from_its_networks() -> None:
    stack = _stack({"back": None}, {"back": {"name": "p_back"}})
    assert missing_networks(stack, "app", [_container("p_back")]) == []
    assert missing_networks(stack, "app", [_container()]) == ["p_back"]
    default = _stack(None, {"default": {"name": "p_default"}})
    assert missing_networks(default, "app", [_container("other")]) == ["p_default"]
    unknown = ContainerSummary(id="c2", name="p-app-1", project="p", service="app", state="running", status="",
                               health=None, image="web:1")
    assert missing_networks(stack, "app", [unknown]) == []  # the engine did not say: no change invented
    host = SimpleNamespace(name="p", services={"app": {"network_mode": "host"}}, rendered={})
    assert missing_networks(host, "app", [_container()]) == []


def test_restore_noise_and_engine_times() -> None:
    assert is_restore_noise('ERROR:  role "postgres" already exists')
    assert is_restore_noise("ERROR:  current user cannot be dropped")
    assert not is_restore_noise("ERROR: relation \"users\" does not exist")
    assert parse_time("2026-12-07T19:30:00.123456789Z") == parse_time("2026-12-07T19:30:00.123456Z")
    assert parse_time("0001-01-01T00:00:00Z") is None
    plan = {"plan": {"services": [{"service": "web", "action": "recreate", "image_to": "web:2"},
                                  {"service": "db", "action": "unchanged"}]}}
    assert changes_of(plan) == ["web recreate -> web:2"]
