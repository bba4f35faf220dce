"""blue_green's rules and the green project's definition (no engine: ``docker compose config`` only).
The switch itself runs on the real engine in tests/test_bluegreen_engine.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.deploy.strategies.bluegreen import BlueGreen, Green, memory_of
from server.deploy.strategies.select import choose

pytestmark = pytest.mark.anyio

WEB = ("  web:\n    image: dsm-test/web:1.0\n    mem_limit: 64m\n    depends_on: [api]\n"
       "    healthcheck: {test: ['CMD', 'true']}\n    ports: ['127.0.0.1::80']\n")
API = "  api:\n    image: dsm-test/web:1.0\n"
PROXY = "  proxy:\n    image: haproxy:2.6\n    ports: ['8080:80']\n"


async def stack(settings: Any, stacks_root: Path, text: str) -> Any:
    from server.compose import ComposeRunner
    from server.stackload import load_stack

    d = stacks_root / "app"
    d.mkdir(exist_ok=True)
    (d / "compose.yaml").write_text("name: app\nservices:\n" + text)
    return await load_stack(settings, ComposeRunner(settings), path="app", dsm_override=False)


async def test_refused_without_a_proxy_for_the_proxy_and_where_two_copies_cannot_run(settings: Any,
                                                                                      stacks_root: Path) -> None:
    bg = BlueGreen()
    alone = await stack(settings, stacks_root, WEB + API)
    assert "no proxy in the stack" in bg.refuse("web", alone).message  # type: ignore[union-attr]
    proxied = await stack(settings, stacks_root, WEB + API + PROXY)
    assert bg.refuse("web", proxied) is None
    assert "the proxy itself" in bg.refuse("proxy", proxied).message  # type: ignore[union-attr]
    named = await stack(settings, stacks_root, WEB + "    container_name: fixed\n" + API + PROXY)
    assert "container_name" in bg.refuse("web", named).message  # type: ignore[union-attr]
    # The plan's choice says the same before anything runs.
    assert choose({}, asked="blue_green", configured="auto", database=False, critical=False, healthcheck=True,
                  proxied=False).refused


async def test_green_is_its_own_project_on_the_proxys_networks_under_its_own_name(settings: Any,
                                                                                   stacks_root: Path) -> None:
    loaded = await stack(settings, stacks_root, WEB + API + PROXY)

    class X:
        def __init__(self) -> None:
            self.settings = settings

    green = Green(X(), loaded, "web", None)
    spec = green.definition(loaded.services["web"], 2, ["app_default"])
    assert spec["name"] == "app-green" and list(spec["services"]) == ["web-green"]
    body = spec["services"]["web-green"]
    # Not "web": Compose would give it the service's alias, and the proxy would send it traffic ungated.
    assert body["networks"] == {"n0": {}} and spec["networks"]["n0"] == {"name": "app_default", "external": True}
    assert not {"depends_on", "ports", "container_name"} & set(body)
    assert body["deploy"]["replicas"] == 2 and body["labels"]["dsm.bluegreen.of"] == "app/web"
    assert green.directory == Path(settings.state_dir) / "bluegreen" / "app-green"
    assert memory_of(loaded.services["web"]) == 64 * 1024 * 1024
    assert memory_of({"deploy": {"resources": {"reservations": {"memory": "1048576"}}}}) == 1048576
    assert memory_of({}) is None


async def test_no_second_copy_without_the_memory_for_it(settings: Any, stacks_root: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from server.deploy.steps import Blocked
    from server.preflight import facts

    loaded = await stack(settings, stacks_root, WEB + API + PROXY)
    available = {"bytes": 100 * 2**20}

    async def gather(*_: Any, **__: Any) -> Any:
        return SimpleNamespace(facts=SimpleNamespace(memory_available_bytes=available["bytes"], own_usage={}))

    monkeypatch.setattr(facts, "gather_facts", gather)
    x = SimpleNamespace(engine=None)
    with pytest.raises(Blocked) as refused:  # 2 x 64 MiB > 90% of 100 MiB
        await BlueGreen()._check_memory(x, loaded, "web", loaded.services["web"], 2, 2)
    assert refused.value.findings[0].rule == "insufficient-resources" and "128 MiB" in refused.value.why
    available["bytes"] = 1024 * 2**20
    await BlueGreen()._check_memory(x, loaded, "web", loaded.services["web"], 2, 2)


async def test_auto_blue_green_without_the_memory_rolls_instead_but_an_asked_one_refuses(
    settings: Any, stacks_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from server.deploy.steps import Blocked
    from server.deploy.strategies import bluegreen
    from server.deploy.strategies.select import AUTO_BLUE_GREEN
    from server.preflight import facts

    loaded = await stack(settings, stacks_root, WEB + API + PROXY)

    async def gather(*_: Any, **__: Any) -> Any:  # 10 MiB free: no room for a second 64 MiB copy
        return SimpleNamespace(facts=SimpleNamespace(memory_available_bytes=10 * 2**20, own_usage={}))

    rolled: list[str] = []

    async def roll(_self: Any, svc: str, _ctx: Any) -> None:
        rolled.append(svc)

    async def containers(*_: Any, **__: Any) -> list[str]:
        return ["blue1"]

    told: list[str] = []

    async def tell(message: str, _final: bool) -> None:
        told.append(message)

    monkeypatch.setattr(facts, "gather_facts", gather)
    monkeypatch.setattr(bluegreen.Rolling, "roll", roll)

    def ctx(reason: str) -> Any:
        plan = SimpleNamespace(services=[SimpleNamespace(service="web", strategy="blue_green", strategy_reason=reason)])
        return SimpleNamespace(change=SimpleNamespace(stack=loaded, plan=plan, wait_s=30),
                               steps=SimpleNamespace(tell=tell),
                               executor=SimpleNamespace(engine=None, fleet=SimpleNamespace(containers=containers)))

    await BlueGreen().roll("web", ctx(AUTO_BLUE_GREEN))
    assert rolled == ["web"] and "rolling instead" in told[-1] and "64 MiB" in told[-1], told
    rolled.clear()
    with pytest.raises(Blocked):  # asked for by name: refused, nothing rolled
        await BlueGreen().roll("web", ctx("asked: a second copy (<stack>-green) gated"))
    assert rolled == []
