"""The files a rollback puts back: each successful deployment's files (snapshots.py), the failed
deployment's files kept aside, and compose.dsm.yaml, the override that pins the previous images
(override.py), with COMPOSE_FILE in .env kept in step so a plain ``docker compose up`` agrees."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from server.deploy import override, snapshots
from server.settings import Settings

COMPOSE = "services:\n  web:\n    image: img/web:1\n"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def stack(stacks_root: Path) -> Path:
    d = stacks_root / "app"
    d.mkdir()
    (d / "compose.yaml").write_text(COMPOSE)
    return d


# -- snapshots ---------------------------------------------------------------------------------------
def test_save_keeps_the_deployments_files_privately(settings: Settings, stack: Path) -> None:
    (stack / "compose.override.yaml").write_text("services: {web: {restart: always}}\n")
    (stack / ".env").write_text("PASSWORD=s3cret\n")
    (stack / "notes.txt").write_text("not a stack file\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    saved = snapshots.save(settings, "app", "op-1", stack)
    where = settings.state_dir / "deployments" / "app" / "op-1"
    assert saved == ["compose.yaml", "compose.override.yaml", ".env", "compose.dsm.yaml"]
    assert (where / "FILES").read_text() == "compose.yaml\ncompose.override.yaml\n.env\ncompose.dsm.yaml\n"
    assert sorted(p.name for p in where.iterdir()) == sorted([*saved, "FILES"])
    assert (where / ".env").read_text() == (stack / ".env").read_text()
    assert _mode(where) == 0o700
    assert snapshots.exists(settings, "app", "op-1") and not snapshots.exists(settings, "app", "op-2")
    assert not snapshots.exists(settings, "other", "op-1")


def test_save_tightens_an_existing_directory_and_overwrites(settings: Settings, stack: Path) -> None:
    where = settings.state_dir / "deployments" / "app" / "op-1"
    where.mkdir(parents=True, mode=0o755)
    where.chmod(0o755)
    assert not snapshots.exists(settings, "app", "op-1")  # a directory without FILES is not a snapshot
    assert snapshots.save(settings, "app", "op-1", stack) == ["compose.yaml"]
    assert _mode(where) == 0o700 and (where / "FILES").read_text() == "compose.yaml\n"


def test_save_follows_compose_file_in_dotenv(settings: Settings, stack: Path) -> None:
    (stack / "compose.yaml").unlink()
    (stack / "base.yaml").write_text(COMPOSE)
    (stack / "prod.yaml").write_text("services: {web: {restart: always}}\n")
    (stack / ".env").write_text("COMPOSE_FILE=base.yaml:prod.yaml\n")
    assert snapshots.save(settings, "app", "op-1", stack) == ["base.yaml", "prod.yaml", ".env"]


def test_restore_puts_the_files_back_and_drops_what_the_deployment_did_not_have(settings: Settings,
                                                                                stack: Path) -> None:
    snapshots.save(settings, "app", "op-1", stack)  # compose.yaml only
    (stack / "compose.yaml").write_text("services: {web: {image: img/web:2}}\n")
    (stack / ".env").write_text("NEW=1\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:9"})
    (stack / "notes.txt").write_text("keep me\n")
    assert snapshots.restore(settings, "app", "op-1", stack) == ["compose.yaml"]
    assert (stack / "compose.yaml").read_text() == COMPOSE
    assert not (stack / ".env").exists() and not (stack / "compose.dsm.yaml").exists()
    assert (stack / "notes.txt").read_text() == "keep me\n"  # not ours to remove
    assert sorted(p.name for p in stack.iterdir()) == ["compose.yaml", "notes.txt"]  # no temporary left


def test_restore_brings_back_env_and_pins_it_had(settings: Settings, stack: Path) -> None:
    (stack / ".env").write_text("TAG=1\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    env_before = (stack / ".env").read_text()
    snapshots.save(settings, "app", "op-1", stack)
    (stack / ".env").unlink()
    (stack / "compose.dsm.yaml").unlink()
    (stack / "compose.yaml").write_text("services: {}\n")
    assert snapshots.restore(settings, "app", "op-1", stack) == ["compose.yaml", ".env", "compose.dsm.yaml"]
    assert (stack / ".env").read_text() == env_before and (stack / "compose.yaml").read_text() == COMPOSE
    assert override.pinned_images(stack) == {"web": "dsm-pin/app-web:1"}


def test_keep_failed_copies_the_failed_files_next_to_the_backup(settings: Settings, stack: Path) -> None:
    (stack / ".env").write_text("X=1\n")
    (stack / "notes.txt").write_text("x\n")
    where = snapshots.keep_failed(settings, "app", "b-1", stack)
    assert where == settings.state_dir / "backups" / "app" / "b-1" / "failed-files"
    assert sorted(p.name for p in where.iterdir()) == [".env", "compose.yaml"]
    assert (where / "compose.yaml").read_text() == COMPOSE and _mode(where) == 0o700
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    snapshots.keep_failed(settings, "app", "b-1", stack)  # again: overwritten, not refused
    assert (where / "compose.dsm.yaml").is_file()


# -- override ----------------------------------------------------------------------------------------
def test_no_override_file_reads_as_nothing(stack: Path) -> None:
    assert override.read_override(stack) == {} and override.pinned_images(stack) == {}
    (stack / "compose.dsm.yaml").write_text("- not a mapping\n")
    assert override.read_override(stack) == {} and override.pinned_images(stack) == {}
    assert not override.clear_pins(stack)


def test_pinned_images_reads_only_image_pins(stack: Path) -> None:
    (stack / "compose.dsm.yaml").write_text(
        "services:\n  web: {image: dsm-pin/app-web:1, mem_limit: 64m}\n  db: {mem_limit: 1g}\n  x: null\n"
        "  y: [1]\n  z: {image: ''}\n")
    assert override.pinned_images(stack) == {"web": "dsm-pin/app-web:1"}


def test_write_pins_replaces_pins_and_keeps_our_other_settings(stack: Path) -> None:
    (stack / "compose.dsm.yaml").write_text(
        "x-note: kept\nservices:\n  web: {image: old:1, mem_limit: 64m}\n  db: {image: old:2}\n  cache: null\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:2", "api": "dsm-pin/app-api:2"})
    data = override.read_override(stack)
    assert data == {"x-note": "kept", "services": {
        "web": {"mem_limit": "64m", "image": "dsm-pin/app-web:2"}, "api": {"image": "dsm-pin/app-api:2"}}}
    text = (stack / "compose.dsm.yaml").read_text()
    assert text.startswith("# Written by docker-stack-mcp")
    assert (stack / ".env").read_text() == "# added by docker-stack-mcp\nCOMPOSE_FILE=compose.yaml:compose.dsm.yaml\n"
    assert _mode(stack / "compose.dsm.yaml") == 0o644


def test_write_pins_adds_compose_file_after_the_users_env(stack: Path) -> None:
    (stack / ".env").write_text("TZ=UTC")  # no final newline
    (stack / ".env").chmod(0o600)
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    assert (stack / ".env").read_text() == (
        "TZ=UTC\n# added by docker-stack-mcp\nCOMPOSE_FILE=compose.yaml:compose.dsm.yaml\n")
    assert _mode(stack / ".env") == 0o600  # .env may hold secrets: its mode is kept
    override.write_pins(stack, {"web": "dsm-pin/app-web:2"})  # again: one line, not two
    assert (stack / ".env").read_text().count("COMPOSE_FILE=") == 1
    assert override.clear_pins(stack)
    assert (stack / ".env").read_text() == "TZ=UTC\n" and _mode(stack / ".env") == 0o600
    assert sorted(p.name for p in stack.iterdir()) == [".env", "compose.yaml"]


@pytest.mark.parametrize("line", ["COMPOSE_FILE=base.yaml:prod.yaml", "export COMPOSE_FILE=base.yaml:prod.yaml",
                                  "  COMPOSE_FILE = base.yaml:prod.yaml"])
def test_users_compose_file_line_is_extended_and_given_back(stack: Path, line: str) -> None:
    (stack / "compose.yaml").unlink()
    (stack / "base.yaml").write_text(COMPOSE)
    (stack / "prod.yaml").write_text("services: {web: {restart: always}}\n")
    (stack / ".env").write_text(f"A=1\n{line}\nB=2\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    assert (stack / ".env").read_text() == "A=1\nCOMPOSE_FILE=base.yaml:prod.yaml:compose.dsm.yaml\nB=2\n"
    assert override.clear_pins(stack)
    assert (stack / ".env").read_text() == "A=1\nCOMPOSE_FILE=base.yaml:prod.yaml\nB=2\n"


def test_clear_pins_keeps_the_file_while_other_settings_remain(stack: Path) -> None:
    (stack / "compose.dsm.yaml").write_text("services:\n  web: {image: p:1, mem_limit: 64m}\n  db: {image: p:2}\n")
    assert override.clear_pins(stack)
    assert override.read_override(stack) == {"services": {"web": {"mem_limit": "64m"}}}
    assert "COMPOSE_FILE=compose.yaml:compose.dsm.yaml" in (stack / ".env").read_text()
    assert not override.clear_pins(stack)  # nothing pinned any more: unchanged
    (stack / "compose.dsm.yaml").write_text("x-note: kept\nservices:\n  web: {image: p:1}\n")
    assert override.clear_pins(stack)
    assert override.read_override(stack) == {"x-note": "kept", "services": {}}


def test_clear_pins_without_a_compose_file_line_writes_no_env(stack: Path) -> None:
    (stack / "compose.dsm.yaml").write_text("services:\n  web: {image: p:1}\n")
    assert override.clear_pins(stack)
    assert not (stack / "compose.dsm.yaml").exists() and not (stack / ".env").exists()


def test_restore_into_a_directory_without_env_or_override(settings: Settings, stack: Path) -> None:
    snapshots.save(settings, "app", "op-1", stack)  # it had neither
    (stack / "compose.yaml").write_text("services: {}\n")
    assert snapshots.restore(settings, "app", "op-1", stack) == ["compose.yaml"]
    assert (stack / "compose.yaml").read_text() == COMPOSE


def test_a_new_override_file_is_world_readable_not_executable(stack: Path) -> None:
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    assert _mode(stack / "compose.dsm.yaml") == 0o644
    assert not list(stack.glob(".*dsm-tmp"))


def test_writing_no_pins_where_there_are_none_changes_nothing(stack: Path) -> None:
    override.write_pins(stack, {})
    assert sorted(p.name for p in stack.iterdir()) == ["compose.yaml"]


def test_taking_our_line_out_keeps_every_other_line(stack: Path) -> None:
    (stack / ".env").write_text("A=1\nB=2\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    assert override.clear_pins(stack)
    assert (stack / ".env").read_text() == "A=1\nB=2\n"


def test_compose_file_with_an_absolute_path_is_kept_absolute(stack: Path, stacks_root: Path) -> None:
    shared = stacks_root / "shared.yaml"
    shared.write_text(COMPOSE)
    (stack / ".env").write_text(f"COMPOSE_FILE={shared}:compose.yaml\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    assert (stack / ".env").read_text() == f"COMPOSE_FILE={shared}:compose.yaml:compose.dsm.yaml\n"


def test_compose_path_separator_is_honoured(stack: Path) -> None:
    (stack / "prod.yaml").write_text("services: {web: {restart: always}}\n")
    (stack / ".env").write_text("COMPOSE_PATH_SEPARATOR=;\nCOMPOSE_FILE=compose.yaml;prod.yaml\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    assert "COMPOSE_FILE=compose.yaml;prod.yaml;compose.dsm.yaml\n" in (stack / ".env").read_text()
    from server.deploy.project import user_files
    from server.stacks import compose_files, read_dotenv

    assert compose_files(stack, None, read_dotenv(stack))[-1] == stack / "compose.dsm.yaml"
    assert user_files(stack) == [stack / "compose.yaml", stack / "prod.yaml"]


def test_every_compose_file_line_lists_the_override(stack: Path) -> None:
    # Compose takes the last definition in .env: ours must be in the one that counts.
    (stack / ".env").write_text("COMPOSE_FILE=compose.yaml\nX=1\nCOMPOSE_FILE=compose.yaml\n")
    override.write_pins(stack, {"web": "dsm-pin/app-web:1"})
    from server.stacks import compose_files, read_dotenv

    assert compose_files(stack, None, read_dotenv(stack)) == [stack / "compose.yaml", stack / "compose.dsm.yaml"]
    assert override.clear_pins(stack)
    assert compose_files(stack, None, read_dotenv(stack)) == [stack / "compose.yaml"]


def test_an_override_over_the_size_limit_is_refused(stack: Path) -> None:
    from server.yamlsafe import UnsafeYaml

    body = "services: {}\n"
    (stack / "compose.dsm.yaml").write_text(body + "#" * (1_048_576 - len(body) - 1) + "\n")
    assert override.read_override(stack) == {"services": {}}  # exactly 1 MiB: read
    (stack / "compose.dsm.yaml").write_text(body + "#" * (1_048_576 - len(body)) + "\n")
    with pytest.raises(UnsafeYaml, match=r"compose\.dsm\.yaml is 1048577 bytes"):
        override.read_override(stack)


def test_a_broken_override_is_named_in_the_error(stack: Path) -> None:
    from server.errors import DsmError

    (stack / "compose.dsm.yaml").write_text("services: [unclosed\n")
    with pytest.raises(DsmError, match=r"compose\.dsm\.yaml"):
        override.read_override(stack)
