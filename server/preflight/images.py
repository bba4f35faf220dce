"""Image facts: whether each image of a stack is local, else in its registry, and its own config.

An image's own HEALTHCHECK and USER come from ``docker image inspect`` when it is local, else
from its registry's manifest and config blob without pulling (:mod:`server.registry`). When
neither could be read, the healthcheck stays unknown (``None``): the rules then say
"unverified", never "none".
"""

from __future__ import annotations

from typing import Any

import anyio

from server.engine import Engine, RegistryState
from server.errors import EngineError
from server.policy import ImageFact
from server.policy.engine_refusals import valid_image_reference
from server.preflight.parallel import run_for_each
from server.registry import ImageConfig, RegistryView, is_loopback
from server.stackmodel import LoadedStack

REGISTRY_TIMEOUT_S = 4.0
"""How long one registry may take to say whether it has an image before we say 'could not verify'."""


async def fill_images(
    engine: Engine, stack: LoadedStack, out: dict[str, ImageFact], *, view: RegistryView | None = None,
    engine_local: bool = True,
) -> None:
    refs: dict[str, bool] = {}
    for svc in stack.services.values():
        image = (svc or {}).get("image")
        if image:
            refs[str(image)] = refs.get(str(image), False) or "build" in (svc or {})

    async def one(ref: str) -> None:
        out[ref] = await image_fact(engine, ref, check_registry=not refs[ref], view=view, engine_local=engine_local)

    await run_for_each(one, refs)


def _from_config(config: dict[str, Any]) -> tuple[bool, str]:
    test = (config.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE", str(config.get("User") or "")


async def image_fact(
    engine: Engine, ref: str, *, check_registry: bool = True, timeout_s: float = REGISTRY_TIMEOUT_S,
    view: RegistryView | None = None, engine_local: bool = True,
) -> ImageFact:
    """What is known of ``ref``: local (image inspect), else its registry's answer and config.

    The registry is read directly (config included) and, at the same time, asked through the
    engine's distribution API (which sees the engine's proxies and network); the first conclusive
    answer wins. Bounded by ``timeout_s`` (+1 s of grace); never a hang. A reference the engine
    refuses gives a fact for that image (``absent``), never an error for the whole host check; an
    unreachable engine still raises.
    """
    if not valid_image_reference(ref):
        return ImageFact(ref=ref, local=False, registry="absent",
                         detail="not a valid image reference: the engine refuses it (see engine-refuses)")
    try:
        attrs = await engine.image_attrs(ref)
    except EngineError as exc:
        return ImageFact(ref=ref, local=False, registry="absent", detail=f"the engine refused it: {exc.what}")
    if attrs is not None:
        healthcheck, user = _from_config(attrs.get("Config") or {})
        return ImageFact(ref=ref, local=True, healthcheck=healthcheck, user=user, config_source="local")
    if not check_registry:
        return ImageFact(ref=ref, local=False, detail="built by Compose from the stack's build context")
    view = view or RegistryView()
    # A loopback registry of a remote engine is on the engine's machine, not ours: only the engine can ask it.
    direct_ok = engine_local or not is_loopback(ref)
    direct: list[ImageConfig] = []
    via_engine: list[tuple[RegistryState, str]] = []
    with anyio.move_on_after(timeout_s + 1):
        async with anyio.create_task_group() as tg:

            async def read_direct() -> None:
                result = await engine.registry_image_config(ref, view, timeout_s)
                direct.append(result)
                if result.config is not None or (result.state == "absent" and "404" in result.detail):
                    tg.cancel_scope.cancel()  # conclusive: the engine's answer is not needed

            async def ask_engine() -> None:
                try:
                    via_engine.append(await engine.registry_state(ref, timeout_s))
                except EngineError as exc:
                    via_engine.append(("unreachable", f"could not verify: {exc.what}"))

            if direct_ok:
                tg.start_soon(read_direct)
            tg.start_soon(ask_engine)
    if direct and direct[0].config is not None:
        healthcheck, user = _from_config(direct[0].config)
        return ImageFact(ref=ref, local=False, registry="present", healthcheck=healthcheck, user=user,
                         config_source="registry", detail=direct[0].detail)
    if via_engine:
        state, detail = via_engine[0]
        if direct and direct[0].state != "present":
            detail += f"; its config could not be read directly ({direct[0].detail})"
        return ImageFact(ref=ref, local=False, registry=state, detail=detail)
    if direct:
        return ImageFact(ref=ref, local=False, registry=direct[0].state, detail=direct[0].detail)
    return ImageFact(ref=ref, local=False, registry="unreachable",
                     detail=f"could not verify: the registry did not answer within {timeout_s:g}s")

