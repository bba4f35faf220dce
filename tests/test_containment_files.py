"""Issue 14's known gaps: COMPOSE_FILE naming another stack's file is refused like a path outside
the stack; snapshots keep (and a rollback restores) COMPOSE_FILE entries in subdirectories."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.deploy import snapshots
from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from tests.conftest import write_stack

COMPOSE = "services:\n  web:\n    image: img/web:1\n"


class _NoCompose:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"Compose was reached ({name})")


@pytest.mark.anyio
@pytest.mark.parametrize("origin", [".env", "env"])
async def test_compose_file_in_another_stacks_directory_is_refused(
        settings: Settings, stacks_root: Path, origin: str) -> None:
    write_stack(stacks_root, "other", "services: {db: {image: busybox:1}}\n")
    value = "compose.yaml:../other/compose.yaml"
    write_stack(stacks_root, "app", COMPOSE, env=f"COMPOSE_FILE={value}\n" if origin == ".env" else None)
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, _NoCompose(), path="app",  # type: ignore[arg-type]
                         env={"COMPOSE_FILE": value} if origin == "env" else None)
    [f] = info.value.findings
    assert (f.rule, f.severity, f.file) == ("path-outside-root", "error", ".env" if origin == ".env" else None)
    assert "outside the stack directory app/ (in other/)" in f.message and "Compose was not run" in f.message


@pytest.mark.anyio
async def test_compose_file_in_a_subdirectory_of_the_stack_is_fine(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "app", COMPOSE, env="COMPOSE_FILE=compose.yaml:deploy/prod.yaml\n")
    (directory / "deploy").mkdir()
    (directory / "deploy" / "prod.yaml").write_text("services: {web: {restart: always}}\n")
    with pytest.raises(AssertionError, match="Compose was reached"):
        await load_stack(settings, _NoCompose(), path="app")  # type: ignore[arg-type]


def test_snapshots_keep_and_restore_compose_files_in_subdirectories(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "app", COMPOSE, env="COMPOSE_FILE=compose.yaml:deploy/prod.yaml\n")
    (directory / "deploy").mkdir()
    (directory / "deploy" / "prod.yaml").write_text("services: {web: {restart: always}}\n")
    saved = snapshots.save(settings, "app", "op-1", directory)
    assert saved == ["compose.yaml", "deploy/prod.yaml", ".env"]
    (directory / "deploy" / "prod.yaml").write_text("services: {web: {image: broken:9}}\n")
    assert snapshots.restore(settings, "app", "op-1", directory) == saved
    assert (directory / "deploy" / "prod.yaml").read_text() == "services: {web: {restart: always}}\n"
    assert sorted(p.name for p in (directory / "deploy").iterdir()) == ["prod.yaml"]  # no temporary left
    failed = snapshots.keep_failed(settings, "app", "b-1", directory)
    assert (failed / "deploy" / "prod.yaml").is_file()


def test_a_subdirectory_deleted_since_is_recreated(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "app", COMPOSE, env="COMPOSE_FILE=compose.yaml:deploy/prod.yaml\n")
    (directory / "deploy").mkdir()
    (directory / "deploy" / "prod.yaml").write_text("services: {web: {restart: always}}\n")
    snapshots.save(settings, "app", "op-1", directory)
    (directory / "deploy" / "prod.yaml").unlink()
    (directory / "deploy").rmdir()
    snapshots.restore(settings, "app", "op-1", directory)
    assert (directory / "deploy" / "prod.yaml").is_file()


def test_a_tampered_file_list_never_writes_outside_the_stack(
        settings: Settings, stacks_root: Path, tmp_path: Path) -> None:
    directory = write_stack(stacks_root, "app", COMPOSE)
    snapshots.save(settings, "app", "op-1", directory)
    where = settings.state_dir / "deployments" / "app" / "op-1"
    (where / "FILES").write_text("compose.yaml\n../../escape.yaml\n/tmp/abs.yaml\n")
    snapshots.restore(settings, "app", "op-1", directory)
    assert not (stacks_root.parent / "escape.yaml").exists() and not (stacks_root / "escape.yaml").exists()
