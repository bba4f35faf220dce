"""Image rules: pinning, and (with host facts) whether each image can be had at all."""

from __future__ import annotations

from collections.abc import Iterator

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.policy.shape import parse_image


def _pulled_images(ctx: LintContext) -> dict[str, list[str]]:
    """Image ref -> services that pull it (services built here are skipped: their tag is local)."""
    images: dict[str, list[str]] = {}
    for name, svc in sorted(ctx.services.items()):
        image = svc.get("image")
        if image and "build" not in svc:
            images.setdefault(str(image), []).append(name)
    return images


def image_unpinned(ctx: LintContext) -> Iterator[Finding]:
    for image, services in _pulled_images(ctx).items():
        ref = parse_image(image)
        if ref.digest:
            continue
        for name in services:
            if ref.tag in (None, "latest"):
                yield finding(
                    "image-unpinned",
                    f"image {image!r} is {'`latest`' if ref.tag else 'untagged (= latest)'}: every pull may "
                    "bring a different version, and a rollback has nothing to return to",
                    service=name,
                    line=ctx.stack.line_of(name, "image"),
                    fix=f"pin a version tag: image: {ref.repository}:<version> (better with @sha256:<digest>)",
                )
            else:
                yield finding(
                    "image-no-digest",
                    f"image {image!r} is pinned by tag only; a tag can be re-pushed",
                    service=name,
                    line=ctx.stack.line_of(name, "image"),
                    fix=f"append the digest: image: {image}@sha256:<digest> (docker buildx imagetools inspect)",
                )


def image_availability(ctx: LintContext) -> Iterator[Finding]:
    if ctx.facts is None:
        return
    for image, services in _pulled_images(ctx).items():
        fact = ctx.facts.images.get(image)
        if fact is None or fact.local or fact.registry == "present":
            continue
        for name in services:
            if fact.registry == "absent":
                yield finding(
                    "image-unavailable",
                    f"image {image!r} is not on this host and its registry does not have it: the deployment "
                    "would fail at pull",
                    service=name,
                    line=ctx.stack.line_of(name, "image"),
                    evidence=[fact.detail] if fact.detail else [],
                    fix="check the name and tag (a typo?), push the image, or `docker login` to a private registry",
                )
            else:
                yield finding(
                    "image-unverified",
                    f"could not verify image {image!r}: it is not on this host and its registry could not be "
                    "reached; the pull may fail",
                    service=name,
                    line=ctx.stack.line_of(name, "image"),
                    evidence=[fact.detail] if fact.detail else [],
                    fix="check the registry is reachable from the Docker host, or pull the image beforehand",
                )


RULES = [image_unpinned, image_availability]
