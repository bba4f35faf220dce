"""check_updates and update_stack on the real engine and the local registry from provisioning.

Every test pushes to a repository of its own (``<registry>/<project>/web``); the tags it leaves on
the host and the images it builds are removed afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from server.runtime import Runtime
from server.updates.apply import update_stack
from server.updates.check import check_stacks
from tests.deploy_helpers import (
    WEB_10,
    WEB_11,
    WEB_BROKEN,
    container_of,
    deploy,
    docker,
    free_port,
    get,
    phase,
    web_service,
)
from tests.test_deploy_tags import image_id, push

pytestmark = pytest.mark.anyio
_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def repo(registry: str, project_name: str) -> Iterator[str]:
    name = f"{registry}/{project_name}/web"
    yield name
    tags = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={name}", check=False)
    if tags.split():
        docker("rmi", "-f", *tags.split(), check=False)


def stack_text(project: str, image: str, port: int, extra: str = "") -> str:
    return f"# {project}: updated by the tests\nname: {project}\nx-dsm: {{verify_s: 0}}\nservices:\n" + web_service(
        "web", image, port, extra)


def build_junk(ref: str) -> int:
    """A small image of its own (its bytes are freed when it goes); returns its size."""
    docker("build", "-q", "-t", ref, "-", stdin="FROM dsm-test/busybox:1\nLABEL dsm.test=1\n"
           f"RUN head -c 300000 /dev/urandom > /junk-{ref.rsplit(':', 1)[-1]}\n")
    return int(docker("image", "inspect", ref, "--format", "{{.Size}}"))


@pytest.mark.docker
async def test_check_updates_same_shape_tags_and_a_moved_digest(runtime: Runtime, stacks_root: Path,
                                                                project_name: str, repo: str) -> None:
    push(WEB_10, f"{repo}:1.0.0")
    for tag in ("1.0.1", "1.1.0", "2.0.0", "1.1.0-rc1", "1.0.2-alpine"):
        push(WEB_11, f"{repo}:{tag}")
    (stacks_root / project_name).mkdir()
    (stacks_root / project_name / "compose.yaml").write_text(stack_text(project_name, f"{repo}:1.0.0", free_port()))
    (stacks_root / f"{project_name}-bad").mkdir()
    (stacks_root / f"{project_name}-bad" / "compose.yaml").write_text("services: [not, a, mapping]\n")
    every = await check_stacks(runtime, None)  # every stack: one that does not render is a problem, not an error
    (img,) = every.images
    assert img.services == [f"{project_name}/web"] and every.problems and every.problems[0].startswith(
        f"{project_name}-bad: not rendered"), every
    assert img.status == "current" and img.note is None, img
    assert [(n.tag, n.level) for n in img.newer] == [("1.0.1", "patch"), ("1.1.0", "minor"), ("2.0.0", "major")]

    moved = push(WEB_11, f"{repo}:1.0.0")  # upstream moves the tag; the host keeps the old content
    docker("tag", WEB_10, f"{repo}:1.0.0")
    (img,) = (await check_stacks(runtime, project_name, min_age_days=100000)).images
    assert (img.status, img.registry_digest) == ("digest_moved", moved), img
    assert img.newer == [] and img.note and "under min_age_days" in img.note  # all too young

    # A registry that does not answer is this image's note, never a failed call.
    gone = f"127.0.0.1:{free_port()}/x/web:1.0"
    (stacks_root / project_name / "compose.yaml").write_text(stack_text(project_name, gone, free_port()))
    (img,) = (await check_stacks(runtime, project_name)).images
    assert img.status == "unknown" and img.note and "digest not compared" in img.note
    # An image built or loaded here, under a registry that cannot be reached: said as such.
    local = f"nowhere.invalid/{project_name}/web:1.0"
    docker("tag", WEB_10, local)
    try:
        (stacks_root / project_name / "compose.yaml").write_text(stack_text(project_name, local, free_port()))
        (img,) = (await check_stacks(runtime, project_name)).images
        assert img.status == "unknown" and img.note and img.note.startswith("a local image, never pulled"), img
    finally:
        docker("rmi", local, check=False)


@pytest.mark.docker
async def test_a_multi_arch_index_is_current_once_pulled(runtime: Runtime, stacks_root: Path, project_name: str,
                                                         repo: str, registry: str) -> None:
    path = repo.split("/", 1)[1]
    entries = []
    for image, arch in ((WEB_10, "amd64"), (WEB_11, "arm64")):
        push(image, f"{repo}:{arch}")
        raw = requests.get(f"http://{registry}/v2/{path}/manifests/{arch}", headers={"Accept": _V2}, timeout=5)
        entries.append({"mediaType": _V2, "digest": raw.headers["Docker-Content-Digest"], "size": len(raw.content),
                        "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                        "manifests": entries})
    put = requests.put(f"http://{registry}/v2/{path}/manifests/multi", data=index, timeout=5, headers={
        "Content-Type": "application/vnd.docker.distribution.manifest.list.v2+json"})
    put.raise_for_status()
    index_digest = put.headers["Docker-Content-Digest"]
    docker("pull", f"{repo}:multi")
    (stacks_root / project_name).mkdir()
    (stacks_root / project_name / "compose.yaml").write_text(stack_text(project_name, f"{repo}:multi", free_port()))
    (img,) = (await check_stacks(runtime, project_name)).images
    assert (img.status, img.registry_digest) == ("current", index_digest), img
    assert img.local_digest == index_digest


async def _call(client: Any, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    return dict(result.structured_content)


@pytest.mark.docker
async def test_update_to_minor_through_mcp_writes_env_runs_it_and_prunes(
        runtime: Runtime, stacks_root: Path, project_name: str, repo: str) -> None:
    from mcp import Client

    from server.app import build_server

    push(WEB_10, f"{repo}:1.0.0")
    push(WEB_11, f"{repo}:1.1.0")
    push(WEB_11, f"{repo}:2.0.0")
    port = free_port()
    directory = stacks_root / project_name
    directory.mkdir()
    (directory / "compose.yaml").write_text(stack_text(project_name, repo + ":${WEB_TAG}", port))
    env = "# which web runs\nWEB_TAG=1.0.0  # bumped by update_stack\n"
    (directory / ".env").write_text(env)
    assert (await deploy(runtime, project_name)).status == "deployed"
    build_junk(f"{repo}:0.9")  # another version of the repository that nothing runs: not the update's to remove

    async with Client(build_server(runtime.settings, runtime)) as client:
        found = await _call(client, "check_updates", stack=project_name)
        assert [n["tag"] for n in found["images"][0]["newer"]] == ["1.1.0", "2.0.0"]
        planned = await _call(client, "update_stack", stack=project_name, to="minor", dry_run=True)
        assert planned["status"] == "planned" and (directory / ".env").read_text() == env  # nothing written
        (web,) = planned["plan"]["services"]
        assert web["image_to"].startswith(f"{repo}:1.1.0@sha256:") and web["image_from"].startswith(
            f"{repo}:1.0.0@sha256:") and ".env WEB_TAG=1.1.0" in web["reason"]
        push(WEB_11, f"{repo}:1.2.0")  # a newer minor since the dry run: its plan_id no longer applies
        stale = await _call(client, "update_stack", stack=project_name, to="minor", plan_id=planned["plan"]["plan_id"])
        assert stale["status"] == "blocked" and "plan-changed" in {f["rule"] for f in stale["findings"]}, stale
        assert (directory / ".env").read_text() == env
        planned = await _call(client, "update_stack", stack=project_name, to="minor", dry_run=True)
        assert planned["plan"]["services"][0]["image_to"].startswith(f"{repo}:1.2.0@sha256:")
        done = await _call(client, "update_stack", stack=project_name, to="minor", plan_id=planned["plan"]["plan_id"])
    assert done["status"] == "deployed", done
    assert (directory / ".env").read_text() == env.replace("1.0.0", "1.2.0")
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"
    pruned = next(p for p in done["phases"] if p["name"] == "prune")
    # 1.0.0 is the provisioned dsm-test/web:1.0 too (another repository's tag): never ours to remove.
    assert pruned["detail"].startswith("removed 0 replaced image(s)"), pruned
    assert docker("images", "-q", f"{repo}:0.9") != "" and docker("images", "-q", f"{repo}:1.0.0") != ""
    assert docker("images", "-q", WEB_10) != ""


def build_web(base: str, ref: str, project: str) -> str:
    """``base`` (a test web image) as an image of its own (its own id and 300 kB), pushed as ``ref``."""
    docker("build", "-q", "-t", ref, "-", stdin=f"FROM {base}\nLABEL dsm.test=1 dsm.test.build={project}-{ref}\n"
           "RUN head -c 300000 /dev/urandom > /junk-build\n")
    push(ref, ref)
    return image_id(ref)


@pytest.mark.docker
async def test_update_cleanup_removes_only_the_image_it_replaced(
        runtime: Runtime, stacks_root: Path, project_name: str, repo: str) -> None:
    import dataclasses

    from server.deploy.pipeline import Deployer

    # One backup kept: the pin of the version an update replaced lasts until the next update.
    runtime.settings = dataclasses.replace(runtime.settings, backup_keep=1)
    v1 = build_web(WEB_10, f"{repo}:1.0.0", project_name)
    size1 = int(docker("image", "inspect", v1, "--format", "{{.Size}}"))
    build_web(WEB_11, f"{repo}:1.1.0", project_name)
    build_web(WEB_10, f"{repo}:1.2.0", project_name)
    junk = build_junk(f"{repo}:0.9")  # a version of the repository that this stack never ran
    port = free_port()
    directory = stacks_root / project_name
    directory.mkdir()
    (directory / "compose.yaml").write_text(stack_text(project_name, f"{repo}:1.0.0", port))
    assert (await deploy(runtime, project_name)).status == "deployed"

    first = await update_stack(runtime, Deployer(runtime).deploy, project_name, images={"web": f"{repo}:1.1.0"})
    assert first.status == "deployed", first
    detail = phase(first, "prune").detail
    assert detail.startswith("removed 0 replaced image(s)") and (
        f"kept {repo}:1.0.0 (pinned by a backup within retention)" in detail), detail
    assert docker("images", "-q", f"{repo}:0.9") != ""

    # The next update's backup replaces the one that pinned 1.0.0: now nothing needs it, and it goes.
    second = await update_stack(runtime, Deployer(runtime).deploy, project_name, images={"web": f"{repo}:1.2.0"})
    assert second.status == "deployed", second
    detail = phase(second, "prune").detail
    assert detail.startswith(f"removed 1 replaced image(s), up to {_mb(size1)} MB freed: {repo}:1.0.0"), detail
    assert f"kept {repo}:1.1.0 (pinned by a backup within retention)" in detail, detail
    assert docker("images", "-q", f"{repo}:1.0.0") == "" and v1 not in docker("images", "-q", "--no-trunc")
    assert docker("images", "-q", f"{repo}:0.9") != "", "another version nothing ran survives"
    assert docker("image", "inspect", "--format", "{{.Size}}", f"{repo}:0.9") == str(junk)
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


@pytest.mark.docker
async def test_literal_image_patch_failed_before_refused_then_a_moved_tag_pulled(
        runtime: Runtime, stacks_root: Path, project_name: str, repo: str) -> None:
    from server.deploy.pipeline import Deployer

    push(WEB_10, f"{repo}:1.0.0")
    patch_digest = push(WEB_11, f"{repo}:1.0.1")
    port = free_port()
    directory = stacks_root / project_name
    directory.mkdir()
    # Only the broken test image reads WEB_CRASH_AFTER (it exits at once instead of after 2 s).
    compose = stack_text(project_name, f"{repo}:1.0.0", port, "    environment: {WEB_CRASH_AFTER: '0'}\n").replace(
        f"image: {repo}:1.0.0", f"image: {repo}:1.0.0  # the web, bumped by update_stack")
    (directory / "compose.yaml").write_text(compose)
    assert (await deploy(runtime, project_name)).status == "deployed"
    runtime.memory().record_incident(
        title="deploy failed at health: web exited 1", symptoms="web exited with code 1 after the update",
        stack=project_name, service="web", image_digests={"web": f"{repo}@{patch_digest}"}, outcome="rolled_back",
        source="deploy")

    refused = await update_stack(runtime, Deployer(runtime).deploy, project_name, to="patch")
    assert refused.status == "blocked" and refused.findings[0].rule == "failed-before", refused
    assert (directory / "compose.yaml").read_text() == compose
    done = await update_stack(runtime, Deployer(runtime).deploy, project_name, to="patch", confirm=True)
    assert done.status == "deployed", done
    assert (directory / "compose.yaml").read_text() == compose.replace(":1.0.0  #", ":1.0.1  #")
    assert get(f"http://127.0.0.1:{port}/") == "web 1.1"

    # Upstream moves 1.0.1; the host still has the old content under it: to=digest pulls it.
    push(WEB_10, f"{repo}:1.0.1")
    docker("tag", WEB_11, f"{repo}:1.0.1")
    moved = await update_stack(runtime, Deployer(runtime).deploy, project_name)
    assert moved.status == "deployed" and phase(moved, "pull").status == "ok", moved
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert docker("inspect", container_of(project_name, "web"), "--format", "{{.Image}}") == image_id(WEB_10)

    # A release that fails its gate: rolled back, and the compose file is put back as it was.
    push(WEB_BROKEN, f"{repo}:3.0.0")
    before = (directory / "compose.yaml").read_text()
    broken = await update_stack(runtime, Deployer(runtime).deploy, project_name, images={"web": f"{repo}:3.0.0"})
    assert broken.status == "rolled_back", broken
    assert (directory / "compose.yaml").read_text() == before
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"


@pytest.mark.docker
async def test_nothing_is_written_into_a_stack_whose_project_runs_from_elsewhere(
        runtime: Runtime, stacks_root: Path, project_name: str, repo: str) -> None:
    from server.deploy.pipeline import Deployer
    from server.errors import StackConflict

    push(WEB_10, f"{repo}:1.0.0")
    push(WEB_11, f"{repo}:1.0.1")
    directory = stacks_root / project_name
    directory.mkdir()
    compose = stack_text(project_name, f"{repo}:1.0.0", free_port())
    (directory / "compose.yaml").write_text(compose)
    docker("run", "-d", "--name", f"{project_name}-foreign", "--label", "dsm.test=1", "--label",
           f"com.docker.compose.project={project_name}", "--label", "com.docker.compose.service=web", "--label",
           "com.docker.compose.project.working_dir=/somewhere/else", "dsm-test/busybox:1", "sleep", "60")
    with pytest.raises(StackConflict, match="runs from /somewhere/else"):
        await update_stack(runtime, Deployer(runtime).deploy, project_name, to="patch")
    assert (directory / "compose.yaml").read_text() == compose


@pytest.mark.docker
async def test_no_drift_after_our_own_update_rollback_and_scale(
        runtime: Runtime, stacks_root: Path, project_name: str, repo: str) -> None:
    """The files update_stack and scale_service write, and the files a rollback puts back, are our
    own acts: stack_status shows no drift after any of them."""
    from server.deploy.pipeline import Deployer
    from server.scale import scale_service
    from server.scale_models import Ask
    from tests.test_drift_engine import drift_of

    push(WEB_10, f"{repo}:1.0.0")
    push(WEB_BROKEN, f"{repo}:3.0.0")
    push(WEB_11, f"{repo}:1.1.0")
    push(WEB_11, f"{repo}:2.0.0")
    directory = stacks_root / project_name
    directory.mkdir()
    port = free_port()
    (directory / "compose.yaml").write_text(stack_text(project_name, repo + ":${WEB_TAG}", port,
                                                       "    environment: {WEB_CRASH_AFTER: '0'}\n"))
    (directory / ".env").write_text("WEB_TAG=1.0.0\n")
    first = await deploy(runtime, project_name)
    assert first.status == "deployed" and (await drift_of(runtime, project_name))[1] == []

    broken = await update_stack(runtime, Deployer(runtime).deploy, project_name, images={"web": f"{repo}:3.0.0"})
    assert broken.status == "rolled_back", broken
    assert get(f"http://127.0.0.1:{port}/") == "web 1.0"
    assert "WEB_TAG=1.0.0" in (directory / ".env").read_text()
    assert (await drift_of(runtime, project_name))[1] == [], "the rollback's own files are no drift"

    # check_updates after the rollback: the release that failed is flagged, the next one is offered.
    assert runtime.memory_outbox().flush(30.0)
    (img,) = (await check_stacks(runtime, project_name)).images
    assert [(n.tag, n.level, bool(n.failed_before)) for n in img.newer] == [
        ("1.1.0", "minor", False), ("3.0.0", "major", True), ("2.0.0", "major", False)], img.newer
    assert broken.incident_id and broken.incident_id in (img.newer[1].failed_before or ""), img.newer[1]

    done = await update_stack(runtime, Deployer(runtime).deploy, project_name, images={"web": f"{repo}:1.1.0"})
    assert done.status == "deployed", done
    assert done.plan is not None and done.plan.drift == [], "the .env update_stack wrote is no hand edit"
    assert (await drift_of(runtime, project_name))[1] == []

    scaled = await scale_service(runtime, project_name, "web", Ask(memory="96m"))
    assert scaled.deploy is not None and scaled.deploy["status"] == "deployed", scaled
    assert scaled.deploy["plan"]["drift"] == [], "the files scale_service wrote are no hand edit"
    assert (await drift_of(runtime, project_name))[1] == []

    # A hand edit before the update is still drift in its plan (only our own edit is left out).
    (directory / ".env").write_text((directory / ".env").read_text() + "# by hand\n")
    again = await update_stack(runtime, Deployer(runtime).deploy, project_name, images={"web": f"{repo}:1.0.0"})
    assert again.plan is not None and any(".env edited" in d for d in again.plan.drift), again.plan


@pytest.mark.docker
async def test_maintenance_message_reaches_the_alert_urls_and_the_report(
        runtime: Runtime, stacks_root: Path, project_name: str, repo: str) -> None:
    import dataclasses

    from server.deploy.pipeline import Deployer
    from tests.helpers_monitor import alert_receiver

    push(WEB_10, f"{repo}:1.0.0")
    push(WEB_11, f"{repo}:1.0.1")
    directory = stacks_root / project_name
    directory.mkdir()
    (directory / "compose.yaml").write_text(stack_text(project_name, f"{repo}:1.0.0", free_port()))
    assert (await deploy(runtime, project_name)).status == "deployed"
    message = "shop updates web at 02:00 UTC, about a minute"
    with alert_receiver() as (url, received):
        runtime.settings = dataclasses.replace(runtime.settings, alert_urls=(url,))
        planned = await update_stack(runtime, Deployer(runtime).deploy, project_name, to="patch", dry_run=True,
                                     maintenance_message=message)
        assert planned.status == "planned" and received == [], "a dry run announces nothing"
        done = await update_stack(runtime, Deployer(runtime).deploy, project_name, to="patch",
                                  maintenance_message=message)
        assert done.status == "deployed", done
        assert done.phases[0].name == "announce" and phase(done, "announce").status == "ok", done.phases
        (sent,) = received
        assert sent["title"] == f"{project_name}: maintenance" and message in sent["message"], sent
        # The next update's announcement is its own, not a duplicate of this one.
        again = await update_stack(runtime, Deployer(runtime).deploy, project_name, images={"web": f"{repo}:1.0.0"},
                                   maintenance_message=message)
        assert again.status == "deployed" and len(received) == 2, received
    # Without alert URLs the report says it was not announced.
    runtime.settings = dataclasses.replace(runtime.settings, alert_urls=())
    quiet = await update_stack(runtime, Deployer(runtime).deploy, project_name, to="patch",
                               maintenance_message=message)
    assert phase(quiet, "announce").status == "skipped" and "no alert URLs" in phase(quiet, "announce").detail
