"""Moved tags: a tag re-pushed in its registry is pulled by the next deploy with unchanged files.

Real engine and the local registry from provision: a unique repository per test, the tag pushed,
deployed, then re-pushed with other content while the host keeps the old image under the tag
(what a host sees when upstream moves ``:stable``). Plus the registry read alone and the plan's
rules at our own seam (a registry that fails is a note, never a failed plan).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from server.deploy.tags import TagCheck, check_tags, compared_refs, repo_digests
from server.endpoint import Endpoint
from server.errors import EngineError
from server.registry import RegistryView, TagDigest, read_digest
from server.runtime import Runtime
from tests.deploy_helpers import WEB_10, WEB_11, container_of, deploy, docker, free_port, get, phase, web_stack, write

pytestmark = pytest.mark.anyio


@pytest.fixture
def upstream(registry: str, project_name: str) -> Iterator[str]:
    """A tag in the local registry, in a repository of this test's own; its manifests and the
    host's tag are removed afterwards (the images behind it are the provisioned test images)."""
    ref = f"{registry}/{project_name}/web:stable"
    yield ref
    docker("rmi", ref, check=False)
    for line in docker("image", "inspect", WEB_10, WEB_11, "--format", "{{json .RepoDigests}}").splitlines():
        for entry in json.loads(line) or []:
            if entry.startswith(f"{registry}/{project_name}/web@"):
                with contextlib.suppress(requests.RequestException):  # best effort: it may refuse deletes
                    requests.delete(f"http://{registry}/v2/{project_name}/web/manifests/{entry.split('@')[1]}",
                                    timeout=5)


def push(image: str, ref: str) -> str:
    """``image`` pushed as ``ref``; returns the digest the registry now serves for the tag."""
    docker("tag", image, ref)
    docker("push", ref)
    registry, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    head = requests.head(f"http://{registry}/v2/{repo}/manifests/{tag}", timeout=5, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"})
    head.raise_for_status()
    return str(head.headers["Docker-Content-Digest"])


def image_id(ref: str) -> str:
    return docker("image", "inspect", ref, "--format", "{{.Id}}")


@pytest.mark.docker
async def test_a_tag_re_pushed_upstream_is_pulled_and_runs(runtime: Runtime, stacks_root: Path, project_name: str,
                                                           upstream: str) -> None:
    first_digest = push(WEB_10, upstream)
    port = free_port()
    write(stacks_root, project_name, web_stack(project_name, upstream, port))
    assert (await deploy(runtime, project_name)).status == "deployed"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"

    # Upstream moves the tag to other content; this host still has the old image under the tag.
    moved_digest = push(WEB_11, upstream)
    docker("tag", WEB_10, upstream)
    assert moved_digest != first_digest and image_id(upstream) == image_id(WEB_10)

    planned = await deploy(runtime, project_name, dry_run=True)
    assert planned.status == "planned" and planned.plan is not None
    web = planned.plan.services[0]
    assert (web.action, web.pull, web.image_to) == ("recreate", True, upstream), web
    assert (web.digest_from, web.digest_to) == (first_digest, moved_digest), web
    assert web.image_from == image_id(WEB_10) and "moved in its registry" in web.reason

    report = await deploy(runtime, project_name, plan_id=planned.plan.plan_id)
    assert report.status == "deployed", report
    assert phase(report, "pull").status == "ok"
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"
    assert docker("inspect", container_of(project_name, "web"), "--format", "{{.Image}}") == image_id(WEB_11)

    # Now the host has what the registry has: nothing to pull, nothing to do.
    again = await deploy(runtime, project_name)
    assert again.status == "unchanged" and again.plan is not None
    assert not again.plan.services[0].pull and again.plan.services[0].digest_to is None


@pytest.mark.docker
def test_read_digest_is_the_tag_s_digest_without_pulling(upstream: str, registry: str) -> None:
    digest = push(WEB_10, upstream)
    docker("rmi", upstream)
    assert read_digest(upstream, RegistryView()) == TagDigest(
        "present", f"registry {registry} has it at {digest}", digest)
    assert docker("images", "-q", upstream) == ""  # nothing was pulled
    gone = read_digest(upstream.replace(":stable", ":no-such-tag"), RegistryView())
    assert gone.state == "absent" and gone.digest is None
    closed = read_digest(f"127.0.0.1:{free_port()}/x/web:1", RegistryView(), timeout_s=2)
    assert closed.state == "unreachable" and closed.digest is None


# -- the rules, at our own seam -------------------------------------------------------------------

class _Stack:
    def __init__(self, services: dict[str, dict[str, Any]]) -> None:
        self.services = services


class _Engine:
    """What check_tags asks of the engine: its info, its endpoint, a registry digest."""

    def __init__(self, answers: dict[str, TagDigest | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, bool]] = []

    async def info(self) -> dict[str, Any]:
        return {"Architecture": "x86_64", "OSType": "linux"}

    def endpoint(self) -> Endpoint:
        return Endpoint("nas", "tcp://nas:2376", "DOCKER_CONTEXT")

    async def registry_digest(self, ref: str, view: RegistryView, timeout_s: float, *, direct: bool) -> TagDigest:
        self.asked.append((ref, direct))
        answer = self.answers[ref]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_only_tags_that_came_from_their_registry_are_compared() -> None:
    stack = _Stack({
        "api": {"image": "ghcr.io/acme/api:stable"},
        "db": {"image": "postgres:16"},
        "built": {"image": "acme/site:dev", "build": {"context": "."}},
        "pinned": {"image": "redis@sha256:" + "a" * 64},
        "ours": {"image": "dsm-pin/app-web:op1"},
        "never": {"image": "nginx:1", "pull_policy": "never"},
        "loaded": {"image": "acme/loaded:1"},
    })
    images = {
        "ghcr.io/acme/api:stable": {"RepoDigests": ["ghcr.io/acme/api@sha256:" + "1" * 64,
                                                    "ghcr.io/acme/other@sha256:" + "2" * 64]},
        "postgres:16": {"RepoDigests": ["postgres@sha256:" + "3" * 64]},
        "acme/site:dev": {"RepoDigests": ["acme/site@sha256:" + "4" * 64]},
        "nginx:1": {"RepoDigests": ["nginx@sha256:" + "5" * 64]},
        "acme/loaded:1": {"RepoDigests": []},  # built or loaded here: never replaced by a pull
    }
    refs = compared_refs(stack, list(stack.services), images)  # type: ignore[arg-type]
    assert refs == {"ghcr.io/acme/api:stable": ("sha256:" + "1" * 64,), "postgres:16": ("sha256:" + "3" * 64,)}
    assert repo_digests("docker.io/library/postgres:16", images["postgres:16"]) == ("sha256:" + "3" * 64,)
    assert repo_digests("postgres:16", None) == ()


async def test_a_registry_that_fails_is_a_note_for_that_image_only() -> None:
    old, new = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    engine = _Engine({
        "ghcr.io/acme/api:stable": TagDigest("present", "has it", new),
        "postgres:16": TagDigest("unreachable", "could not verify: the registry did not answer within 4s"),
        "127.0.0.1:5000/x/web:1": TagDigest("present", "has it", old),
        "quay.io/x/y:1": EngineError("the Docker engine refused to check the registry for quay.io/x/y:1"),
    })
    checks = await check_tags(engine, {  # type: ignore[arg-type]
        "ghcr.io/acme/api:stable": (old,), "postgres:16": (old,), "127.0.0.1:5000/x/web:1": (old,),
        "quay.io/x/y:1": (old,)})
    assert checks["ghcr.io/acme/api:stable"] == TagCheck("ghcr.io/acme/api:stable", (old,), new)
    assert checks["ghcr.io/acme/api:stable"].moved
    assert not checks["127.0.0.1:5000/x/web:1"].moved
    assert not checks["postgres:16"].moved and "did not answer" in (checks["postgres:16"].note or "")
    assert not checks["quay.io/x/y:1"].moved and "refused" in (checks["quay.io/x/y:1"].note or "")
    # A remote engine's loopback registry is asked through the engine, the others directly.
    assert dict(engine.asked)["127.0.0.1:5000/x/web:1"] is False and dict(engine.asked)["postgres:16"] is True
