"""A build reads host files too: its context, Dockerfile, additional contexts and ssh keys are
confined to the stacks root like every other file Compose reads (on main, deploy built an image
from any host directory: ``build: ../../etc`` validated GO).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.settings import Settings
from server.sources import collect_sources
from server.stacks import read_compose_file
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio


def findings(settings: Settings, directory: Path) -> list[tuple[str, str | None, str]]:
    file = directory / "compose.yaml"
    found = collect_sources(settings, directory, [(file, read_compose_file(file, settings, directory))], {})
    return [(f.rule, f.service, f.message) for f in found.findings]


def stack(root: Path, build: str) -> Path:
    return write_stack(root, "app", f"services:\n  web:\n    image: app:1\n    build: {build}\n")


@pytest.mark.parametrize("build", [
    "../../etc",
    "/etc",
    "{context: ../.., dockerfile: Dockerfile}",
    "{context: /usr/share}",
    "{context: ., dockerfile: ../../../etc/passwd}",
    "{context: ., dockerfile: /etc/passwd}",
    "{context: ., additional_contexts: {etc: /etc}}",
    "{context: ., additional_contexts: ['etc=../../etc']}",
    "{context: ., additional_contexts: {o: 'oci-layout:///var/lib'}}",
    "{context: ., ssh: ['key=/root/.ssh/id_rsa']}",
])
def test_a_build_path_outside_the_root_is_refused(settings: Settings, stacks_root: Path, build: str) -> None:
    found = findings(settings, stack(stacks_root, build))
    assert found and {r for r, _, _ in found} == {"path-outside-root"}, found
    assert all(svc == "web" and "outside the stacks root" in msg for _, svc, msg in found)


@pytest.mark.parametrize("build", [
    "https://github.com/docker/compose.git#main",
    "git@github.com:docker/compose.git",
    "github.com/docker/compose",
    "{context: 'https://example.com/ctx.tar.gz'}",
])
def test_a_remote_build_context_is_refused_like_a_remote_include(
        settings: Settings, stacks_root: Path, build: str) -> None:
    found = findings(settings, stack(stacks_root, build))
    assert [(r, "remote resource" in m) for r, _, m in found] == [("path-outside-root", True)], found


def test_a_context_symlink_out_of_the_root_is_refused(settings: Settings, stacks_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    directory = stack(stacks_root, "./ctx")
    (directory / "ctx").symlink_to(outside)
    found = findings(settings, directory)
    assert [r for r, _, _ in found] == ["path-outside-root"], found


def test_builds_inside_the_stack_are_fine(settings: Settings, stacks_root: Path) -> None:
    directory = stack(stacks_root, "{context: ./src, dockerfile: docker/Dockerfile, "
                                   "additional_contexts: {base: 'docker-image://alpine:3', sib: 'service:web', "
                                   "lib: ./lib}, ssh: [default]}")
    (directory / "src" / "docker").mkdir(parents=True)
    assert findings(settings, directory) == []
    assert findings(settings, stack(stacks_root, ".")) == []


async def test_validate_compose_says_no_go_naming_the_context(mcp_client: Any, stacks_root: Path) -> None:
    stack(stacks_root, "../../etc")
    result = await mcp_client.call_tool("validate_compose", {"path": "app", "check_host": False})
    report = result.structured_content
    assert report["go"] is False and report["valid"] is False, report
    assert [(f["rule"], f["service"]) for f in report["findings"]] == [("path-outside-root", "web")]
    assert "'../../etc'" in report["findings"][0]["message"]
