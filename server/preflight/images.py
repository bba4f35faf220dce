"""Image facts: whether each image of a stack is local (and its healthcheck and user), else in its registry."""

from __future__ import annotations

import anyio

from server.engine import Engine, RegistryState
from server.errors import EngineError
from server.policy import ImageFact
from server.policy.engine_refusals import valid_image_reference
from server.preflight.parallel import run_for_each
from server.stackmodel import LoadedStack

REGISTRY_TIMEOUT_S = 4.0
"""How long one registry may take to say whether it has an image before we say 'could not verify'."""


async def fill_images(engine: Engine, stack: LoadedStack, out: dict[str, ImageFact]) -> None:
    refs: dict[str, bool] = {}
    for svc in stack.services.values():
        image = (svc or {}).get("image")
        if image:
            refs[str(image)] = refs.get(str(image), False) or "build" in (svc or {})

    async def one(ref: str) -> None:
        out[ref] = await image_fact(engine, ref, check_registry=not refs[ref])

    await run_for_each(one, refs)


async def image_fact(engine: Engine, ref: str, *, check_registry: bool = True,
                     timeout_s: float = REGISTRY_TIMEOUT_S) -> ImageFact:
    """What the engine knows of one image. A reference the engine refuses gives a fact for that
    image (``absent``), never an error for the whole host check; an unreachable engine still raises."""
    if not valid_image_reference(ref):
        return ImageFact(ref=ref, local=False, registry="absent",
                         detail="not a valid image reference: the engine refuses it (see engine-refuses)")
    try:
        attrs = await engine.image_attrs(ref)
    except EngineError as exc:
        return ImageFact(ref=ref, local=False, registry="absent", detail=f"the engine refused it: {exc.what}")
    if attrs is not None:
        config = attrs.get("Config") or {}
        test = (config.get("Healthcheck") or {}).get("Test") or []
        return ImageFact(
            ref=ref, local=True, healthcheck=bool(test) and test[0] != "NONE", user=str(config.get("User") or "")
        )
    if not check_registry:
        return ImageFact(ref=ref, local=False, detail="built by Compose from the stack's build context")
    state: RegistryState = "unreachable"
    detail = f"could not verify: the registry did not answer within {timeout_s:g}s"
    with anyio.move_on_after(timeout_s + 1):
        try:
            state, detail = await engine.registry_state(ref, timeout_s)
        except EngineError as exc:
            state, detail = "unreachable", f"could not verify: {exc.what}"
    return ImageFact(ref=ref, local=False, registry=state, detail=detail)
