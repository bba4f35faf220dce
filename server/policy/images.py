"""Image rules: pinning, and (with host facts) whether each image can be had at all."""

from __future__ import annotations

import re
from collections.abc import Iterator

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.policy.engine_refusals import valid_image_reference
from server.policy.shape import parse_image

# Tags that move like `latest`: a channel, not a version.
_FLOATING = frozenset({"latest", "stable", "release", "edge", "nightly", "alpine", "main", "master", "dev",
                       "develop", "beta", "rc", "next", "current", "lts", "mainline", "testing", "unstable",
                       "canary", "slim", "bookworm", "bullseye", "jammy", "noble"})
_PRERELEASE = re.compile(r"(?:^|[-._])(rc|beta|alpha|pre|preview|dev|nightly|snapshot)[-._]?\d*(?:$|[-._])", re.I)


def tag_problem(tag: str | None) -> str | None:
    """Why a tag does not pin a version (None: it does)."""
    if tag is None:
        return "untagged (= latest)"
    lowered = tag.lower()
    if lowered in _FLOATING or lowered.removesuffix("-alpine") in _FLOATING:
        return f"`{tag}`, a floating tag that moves like latest"
    if _PRERELEASE.search(lowered):
        return f"`{tag}`, a pre-release"
    return None


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
        problem = tag_problem(ref.tag)
        for name in services:
            if problem:
                yield finding(
                    "image-unpinned",
                    f"image {image!r} is {problem}: every pull may bring a different version, and a rollback "
                    "has nothing to return to",
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
        if fact is None or fact.local or fact.registry == "present" or not valid_image_reference(image):
            continue  # an invalid reference is engine-refuses' finding
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


def build_and_image(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        if "build" in svc and svc.get("image") and not svc.get("pull_policy"):
            yield finding(
                "build-and-image",
                f"service {name!r} has both build and image {svc['image']!r} without pull_policy: `up` and `pull` "
                "fetch the image from its registry when one answers, so what runs may not be what this stack builds",
                service=name,
                line=ctx.stack.line_of(name, "build"),
                fix="pull_policy: build (always build here) or pull_policy: missing; or drop build and publish the "
                "image",
            )


RULES = [image_unpinned, image_availability, build_and_image]
