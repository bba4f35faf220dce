"""The healthcheck gate again after a pull: the images are local now, so 'unverified' becomes known.

validate_compose may only say ``healthcheck-unverified`` (a warning) for an image it could not
read. A deployment pulls before it starts anything; at that point each image's own config is on
the host, and :func:`recheck_after_pull` turns every unknown into a certain answer: the image
has a HEALTHCHECK (nothing to say) or it has none (``missing-healthcheck``, an error, and
``dependency-without-healthcheck`` where a dependent waits for it to be healthy).
"""

from __future__ import annotations

import dataclasses

from server.engine import Engine
from server.models import Finding
from server.policy import HostFacts, ImageFact, LintContext, apply_policy, run_rules
from server.policy.reliability import dependency_without_healthcheck, missing_healthcheck
from server.preflight.images import image_fact
from server.preflight.parallel import run_for_each
from server.stackmodel import LoadedStack


async def recheck_after_pull(engine: Engine, stack: LoadedStack, facts: HostFacts | None = None) -> list[Finding]:
    """The healthcheck findings for ``stack`` with every image's config read from the host.

    ``facts`` (from the pre-flight) is reused for everything else; images still missing locally
    (a failed pull) stay unknown and keep their ``healthcheck-unverified`` warning. No registry
    is asked: the pull already did. Raises DockerUnavailable when the engine cannot be reached.
    """
    refs = sorted({str(svc.get("image")) for svc in stack.services.values() if (svc or {}).get("image")})
    images: dict[str, ImageFact] = {}

    async def one(ref: str) -> None:
        fact = await image_fact(engine, ref, check_registry=False)
        images[ref] = fact if fact.local else dataclasses.replace(fact, detail="not on the host after the pull")

    await run_for_each(one, refs)
    base = facts or HostFacts(engine_local=True)
    ctx = LintContext(stack=stack, facts=dataclasses.replace(base, images={**base.images, **images}))
    return apply_policy(stack, run_rules(ctx, [missing_healthcheck, dependency_without_healthcheck]))
