"""The loader's path confinement: every file a compose document makes Compose read (env_file,
include, extends, secrets and configs files) must resolve inside the stacks root, or the stack is
refused with a path-outside-root finding at the right line *before* Compose runs.

Compose is replaced by a sentinel at our own seam: reaching it means the confinement let the
stack through (the rendering itself is tested against real Compose in test_inspect_stack.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio


class ReachedCompose(Exception):
    """The stack passed every path check and would now be rendered."""


class Sentinel:
    def __getattr__(self, name: str) -> Any:
        raise ReachedCompose(name)


def refs(kind: str, raw: str) -> str:
    """A compose file that references ``raw`` as ``kind``; the reference sits on line 4."""
    ref = "'" + raw + "'"
    return {
        "env_file": f"services:\n  web:\n    image: busybox:1\n    env_file: {ref}\n",
        "env_file list": f"services:\n  web:\n    image: busybox:1\n    env_file: [ok.env, {ref}]\n",
        "env_file long": (
            f"services:\n  web:\n    image: busybox:1\n    env_file: [{{path: {ref}, required: false}}]\n"),
        "extends": f"services:\n  web:\n    image: busybox:1\n    extends: {{file: {ref}, service: base}}\n",
        "include": f"name: x\nservices:\n  web: {{image: busybox:1}}\ninclude: [{ref}]\n",
        "include long": f"name: x\nservices:\n  web: {{image: busybox:1}}\ninclude: [{{path: {ref}}}]\n",
        "include env_file": (
            f"name: x\nservices:\n  web: {{image: busybox:1}}\ninclude: [{{path: ok.yaml, env_file: {ref}}}]\n"),
        "include project_directory": (
            f"name: x\nservices:\n  web: {{image: busybox:1}}\n"
            f"include: [{{path: ok.yaml, project_directory: {ref}}}]\n"),
        "secret": f"services:\n  web: {{image: busybox:1}}\nsecrets:\n  db: {{file: {ref}}}\n",
        "config": f"services:\n  web: {{image: busybox:1}}\nconfigs:\n  app: {{file: {ref}}}\n",
    }[kind]


KINDS = ["config", "env_file", "env_file list", "env_file long", "extends", "include", "include env_file",
         "include long", "include project_directory", "secret"]
ESCAPES = {
    "absolute": "/etc/passwd",
    "dotdot": "../../outside/secret.env",
    "prefix sibling": "../../stacks-other/app/.env",
    "symlink": "link.env",
}


@pytest.fixture
def stack(stacks_root: Path, tmp_path: Path) -> Path:
    d = stacks_root / "app"
    d.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.env").write_text("TOKEN=outside-secret\n")
    write_stack(Path(str(stacks_root) + "-other"), "app", "services: {}\n", env="TOKEN=sibling-secret\n")
    os.symlink(tmp_path / "outside" / "secret.env", d / "link.env")
    (d / "ok.env").write_text("A=1\n")
    (d / "ok.yaml").write_text("services: {}\n")
    return d


@pytest.mark.parametrize("escape", sorted(ESCAPES))
@pytest.mark.parametrize("kind", KINDS)
async def test_every_reference_out_of_the_root_is_refused_before_compose(
    settings: Settings, stack: Path, kind: str, escape: str
) -> None:
    (stack / "compose.yaml").write_text(refs(kind, ESCAPES[escape]))
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, Sentinel(), path="app")  # type: ignore[arg-type]
    [f] = info.value.findings
    assert f.rule == "path-outside-root" and f.severity == "error" and f.category == "security"
    assert "resolves outside the stacks root" in f.message and "Compose was not run" in f.message
    assert f.line == 4
    assert f.service == ("web" if kind.startswith(("env_file", "extends")) else None)
    assert "outside-secret" not in str(info.value) and "sibling-secret" not in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
async def test_references_inside_the_root_reach_compose(settings: Settings, stack: Path, kind: str) -> None:
    for ref in ("ok.env", "./ok.env", str(stack / "ok.env"), "../app/ok.env", "${DIR:-.}/x.env"):
        (stack / "compose.yaml").write_text(refs(kind, ref))
        with pytest.raises(ReachedCompose):
            await load_stack(settings, Sentinel(), path="app")  # type: ignore[arg-type]


async def test_a_flag_like_reference_is_refused(settings: Settings, stack: Path) -> None:
    (stack / "compose.yaml").write_text(refs("env_file", "--help"))
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, Sentinel(), path="app")  # type: ignore[arg-type]
    assert info.value.findings[0].rule == "path-outside-root" and "flag" in info.value.findings[0].message


async def test_every_escape_is_reported_not_just_the_first(settings: Settings, stack: Path) -> None:
    (stack / "compose.yaml").write_text(
        "services:\n  web:\n    image: busybox:1\n    env_file: /etc/passwd\n"
        "  db:\n    image: busybox:1\n    env_file: ../../outside/secret.env\n")
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, Sentinel(), path="app")  # type: ignore[arg-type]
    assert [(f.service, f.line) for f in info.value.findings] == [("web", 4), ("db", 7)]


async def test_an_override_file_is_checked_too(settings: Settings, stack: Path) -> None:
    (stack / "compose.yaml").write_text("services:\n  web:\n    image: busybox:1\n")
    (stack / "compose.override.yaml").write_text(refs("env_file", "/etc/shadow"))
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, Sentinel(), path="app")  # type: ignore[arg-type]
    assert info.value.findings[0].line == 4


async def test_a_dotenv_symlinked_out_is_refused_before_compose(settings: Settings, stack: Path,
                                                                tmp_path: Path) -> None:
    (stack / "compose.yaml").write_text("services:\n  web:\n    image: busybox:1\n")
    os.symlink(tmp_path / "outside" / "secret.env", stack / ".env")
    with pytest.raises(StackRenderFailed, match="symlink out of the stack directory"):
        await load_stack(settings, Sentinel(), path="app")  # type: ignore[arg-type]


async def _refused(settings: Settings, **where: str) -> StackRenderFailed:
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, Sentinel(), **where)  # type: ignore[arg-type]
    return info.value


async def test_the_finding_reads_whole(settings: Settings, stack: Path) -> None:
    (stack / "compose.yaml").write_text(refs("env_file", "/etc/passwd"))
    err = await _refused(settings, path="app")
    root = settings.stacks_root.resolve()
    [f] = err.findings
    assert f.message == (f"'/etc/passwd' resolves outside the stacks root {root}; Compose was not run, "
                         "so the file was not read")
    assert f.fix == "keep every file a stack uses inside its own directory under the stacks root"
    assert str(err).startswith("stack 'app' could not be rendered: '/etc/passwd' resolves outside")
    (stack / "compose.yaml").write_text(refs("env_file", "-x.env"))
    [flag] = (await _refused(settings, path="app")).findings
    assert flag.message.startswith("the referenced path '-x.env' starts with '-' and would be read as a command-line "
                                   "flag; Compose was not run")


async def test_every_reference_is_checked_after_a_skipped_or_refused_one(settings: Settings, stack: Path) -> None:
    (stack / "compose.yaml").write_text(
        "services:\n  web:\n    image: busybox:1\n    env_file: ['-flag.env', '${X}.env', /etc/passwd]\n")
    [first, second] = (await _refused(settings, path="app")).findings
    assert "starts with '-'" in first.message and "'/etc/passwd' resolves outside" in second.message


async def test_interpolated_references_are_resolved_before_compose(settings: Settings, stack: Path) -> None:
    # Interpolated as Compose would ($PWD is the stack directory): this climbs out of the root.
    (stack / "compose.yaml").write_text(refs("env_file", "$PWD/../../../../../x.env"))
    err = await _refused(settings, path="app")
    assert err.findings[0].rule == "path-outside-root"


async def test_a_stacks_root_reached_through_a_symlink(stack: Path, stacks_root: Path, tmp_path: Path) -> None:
    os.symlink(stacks_root, tmp_path / "root-link")
    linked = Settings(stacks_root=tmp_path / "root-link", state_dir=tmp_path / "state")
    (stack / "compose.yaml").write_text(refs("env_file", "ok.env"))
    with pytest.raises(ReachedCompose):
        await load_stack(linked, Sentinel(), path="app")  # type: ignore[arg-type]


async def test_inline_content_may_reference_only_its_own_directory(settings: Settings) -> None:
    with pytest.raises(ReachedCompose):
        await load_stack(settings, Sentinel(), content=refs("env_file", "./app.env"))  # type: ignore[arg-type]
    for escape in ("/etc/passwd", "../x.env"):
        err = await _refused(settings, content=refs("env_file", escape))
        assert err.findings[0].rule == "path-outside-root"


@pytest.mark.parametrize("odd", [
    "services: [web]\n",
    "services:\n  web: {image: busybox:1}\nsecrets: [db]\n",
    "services:\n  web: {image: busybox:1}\nsecrets:\n  db: profile\n",
    "services:\n  web: {image: busybox:1}\nconfigs:\n  app: [file]\n",
])
async def test_odd_shapes_are_left_to_compose_not_crashed_on(settings: Settings, stack: Path, odd: str) -> None:
    (stack / "compose.yaml").write_text(odd)
    with pytest.raises(ReachedCompose):
        await load_stack(settings, Sentinel(), path="app")  # type: ignore[arg-type]
