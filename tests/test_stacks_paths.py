"""Path resolution, stack names and the stacks-root boundary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.errors import PathRejected, StackConflict, StackNotFound
from server.settings import Settings
from server.stacks import discover, find_by_name, locate_stack, normalize_project_name, read_dotenv
from tests.conftest import write_stack

WEB = "services:\n  web:\n    image: busybox:1\n"


def test_locate_by_dir_and_file(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "app", WEB)
    assert locate_stack(settings, "app").files == [stacks_root.resolve() / "app" / "compose.yaml"]
    assert locate_stack(settings, "app/compose.yaml").name == "app"
    assert locate_stack(settings, str(stacks_root / "app")).name == "app"


def test_override_file_is_merged(settings: Settings, stacks_root: Path) -> None:
    d = write_stack(stacks_root, "app", WEB)
    (d / "compose.override.yaml").write_text("services:\n  web:\n    restart: always\n")
    assert [f.name for f in locate_stack(settings, "app").files] == ["compose.yaml", "compose.override.yaml"]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "app/../../..", "/"])
def test_paths_outside_root_are_refused(settings: Settings, stacks_root: Path, bad: str) -> None:
    write_stack(stacks_root, "app", WEB)
    with pytest.raises(PathRejected, match="outside the stacks root"):
        locate_stack(settings, bad)


@pytest.mark.parametrize("bad", ["--help", "-f", " --project-directory=/", "app\x00x", ""])
def test_flag_like_and_control_arguments_are_refused(settings: Settings, bad: str) -> None:
    with pytest.raises(PathRejected):
        locate_stack(settings, bad)


def test_symlink_out_of_root_is_refused(settings: Settings, stacks_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_stack(outside, "evil", WEB)
    os.symlink(outside / "evil", stacks_root / "evil")
    with pytest.raises(PathRejected, match="outside"):
        locate_stack(settings, "evil")
    stacks, problems = discover(settings)
    assert stacks == [] and any("symlink" in p for p in problems)


def test_nested_dirs_are_not_stacks(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root / "group", "inner", WEB)
    with pytest.raises(PathRejected, match="directly under"):
        locate_stack(settings, "group/inner")


def test_missing_stack(settings: Settings, stacks_root: Path) -> None:
    with pytest.raises(StackNotFound):
        locate_stack(settings, "nothere")
    (stacks_root / "empty").mkdir()
    with pytest.raises(StackNotFound, match="no compose file"):
        locate_stack(settings, "empty")


def test_names_follow_compose(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "My.App", WEB)
    write_stack(stacks_root, "named", "name: custom\n" + WEB)
    write_stack(stacks_root, "envnamed", WEB, env="COMPOSE_PROJECT_NAME=fromenv\n")
    names = {s.directory.name: s.name for s in discover(settings)[0]}
    assert names == {"My.App": "myapp", "named": "custom", "envnamed": "fromenv"}
    assert normalize_project_name("-_Weird Name!") == "weirdname"


def test_two_directories_claiming_one_name(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "a", "name: same\n" + WEB)
    write_stack(stacks_root, "b", "name: same\n" + WEB)
    _, problems = discover(settings)
    assert any("same" in p and "a, b" in p for p in problems)
    with pytest.raises(StackConflict):
        find_by_name(settings, "same")


def test_dotenv_parsing(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# c\nA=1\nexport B='two words'\nC=\"q\"\nD=x # comment\n")
    assert read_dotenv(tmp_path) == {"A": "1", "B": "two words", "C": "q", "D": "x"}
    # Compose refuses a line that is no assignment ("key cannot contain a space"); so do we.
    (tmp_path / ".env").write_text("A=1\nbad line\n")
    with pytest.raises(PathRejected, match="not a valid env file"):
        read_dotenv(tmp_path)
