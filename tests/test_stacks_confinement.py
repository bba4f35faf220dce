"""The stacks-root boundary as a promise: one case per way out, and the ways that stay inside.

Ways out: ``..`` (existing target or not), an absolute path elsewhere, a prefix sibling of the
root (``/srv/stacks-other`` next to ``/srv/stacks``), a symlinked stack directory, a symlinked
compose file, a symlinked ``.env``, a symlink loop. Each is refused with PathRejected, before
anything outside is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.errors import PathRejected, StackConflict, StackNotFound
from server.settings import Settings
from server.stacks import (
    check_argument,
    discover,
    find_by_name,
    locate_stack,
    normalize_project_name,
    project_name,
    read_dotenv,
    resolve_in_root,
)
from server.yamlsafe import load_yaml
from tests.conftest import write_stack

WEB = "services:\n  web:\n    image: busybox:1\n"
SECRET = "API_TOKEN=outside-secret-value\nCOMPOSE_PROJECT_NAME=stolen\n"


@pytest.fixture
def outside(tmp_path: Path, stacks_root: Path) -> Path:
    """A directory next to the root, holding a valid stack and a secret .env."""
    out = tmp_path / "outside"
    write_stack(out, "evil", WEB, env=SECRET)
    # The prefix sibling: same leading characters as the root, a different directory.
    write_stack(Path(str(stacks_root) + "-other"), "app", WEB)
    write_stack(stacks_root, "app", WEB)
    return out


ESCAPES = {
    "dotdot to an existing stack": lambda root, out: "../outside/evil",
    "dotdot through a stack": lambda root, out: "app/../../outside/evil",
    "dotdot to a missing path": lambda root, out: "../outside/nothing-here",
    "dotdot to the root's parent": lambda root, out: "app/../..",
    "absolute elsewhere": lambda root, out: str(out / "evil"),
    "absolute missing elsewhere": lambda root, out: str(out / "nothing-here"),
    "prefix sibling": lambda root, out: str(root) + "-other/app",
    "prefix sibling, missing": lambda root, out: str(root) + "-other/nothing-here",
    "prefix sibling via dotdot": lambda root, out: f"../{root.name}-other/app",
    "filesystem root": lambda root, out: "/",
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_every_way_out_of_the_root_is_refused(settings: Settings, stacks_root: Path, outside: Path,
                                              case: str) -> None:
    raw = ESCAPES[case](stacks_root, outside)
    with pytest.raises(PathRejected, match="outside the stacks root") as info:
        locate_stack(settings, raw)
    assert "nothing was read" in str(info.value) and "list_stacks" in str(info.value)


def test_symlinked_stack_directory_out_of_the_root(settings: Settings, stacks_root: Path, outside: Path) -> None:
    os.symlink(outside / "evil", stacks_root / "evil")
    with pytest.raises(PathRejected, match="outside the stacks root"):
        locate_stack(settings, "evil")
    with pytest.raises(PathRejected, match="outside the stacks root"):
        locate_stack(settings, "evil/compose.yaml")
    stacks, problems = discover(settings)
    assert [s.name for s in stacks] == ["app"]
    assert problems == ["evil: symlink out of the stacks root, ignored"]


def test_symlinked_compose_file_out_of_the_root(settings: Settings, stacks_root: Path, outside: Path) -> None:
    d = stacks_root / "linked"
    d.mkdir()
    os.symlink(outside / "evil" / "compose.yaml", d / "compose.yaml")
    for raw in ("linked", "linked/compose.yaml"):
        _never_read(settings, raw)
    stacks, problems = discover(settings)
    assert [s.name for s in stacks] == ["app"]
    assert problems == ["linked: compose file is a symlink out of the stacks root, ignored"]


def test_symlinked_override_file_out_of_the_root(settings: Settings, stacks_root: Path, outside: Path) -> None:
    os.symlink(outside / "evil" / "compose.yaml", stacks_root / "app" / "compose.override.yaml")
    _never_read(settings, "app")


def _never_read(settings: Settings, raw: str) -> None:
    """Located, the out-of-root file is never read (no document); loading it is refused with a finding."""
    import anyio

    from server.stackload import StackRenderFailed, load_stack

    try:
        location = locate_stack(settings, raw)
    except PathRejected as exc:  # a named file that resolves out is refused up front
        assert "outside the stacks root" in exc.what
        return
    root = settings.stacks_root.resolve()
    for file, doc in zip(location.files, location.documents, strict=True):
        if not file.resolve().is_relative_to(root):
            assert doc is None, file

    async def load() -> None:
        await load_stack(settings, None, path=raw)  # type: ignore[arg-type]  # refused before Compose

    with pytest.raises(StackRenderFailed) as info:
        anyio.run(load)
    assert info.value.findings[0].rule == "path-outside-root"


def test_symlinked_dotenv_out_of_the_stack(settings: Settings, stacks_root: Path, outside: Path) -> None:
    os.symlink(outside / "evil" / ".env", stacks_root / "app" / ".env")
    with pytest.raises(PathRejected, match=r"app/.env is a symlink out of the stack directory"):
        read_dotenv(stacks_root / "app")
    assert locate_stack(settings, "app").dotenv_error == "app/.env is a symlink out of the stack directory"
    # One stack's bad .env neither leaks its values nor hides the other stacks.
    write_stack(stacks_root, "good", WEB)
    stacks, problems = discover(settings)
    assert [s.name for s in stacks] == ["good"]
    assert problems == ["app: app/.env is a symlink out of the stack directory, ignored"]


def test_dotenv_symlinked_to_a_sibling_stack_is_refused(stacks_root: Path, outside: Path) -> None:
    # Inside the root, but another stack's secrets: the boundary for .env is the stack directory.
    write_stack(stacks_root, "other", WEB, env="TOKEN=other-stack-secret\n")
    os.symlink(stacks_root / "other" / ".env", stacks_root / "app" / ".env")
    with pytest.raises(PathRejected, match="symlink out of the stack directory"):
        read_dotenv(stacks_root / "app")


def test_dotenv_symlinked_inside_its_own_directory_is_read(stacks_root: Path, outside: Path) -> None:
    (stacks_root / "app" / "env.real").write_text("A=1\n")
    os.symlink("env.real", stacks_root / "app" / ".env")
    assert read_dotenv(stacks_root / "app") == {"A": "1"}


def test_oversized_or_binary_dotenv_is_refused(stacks_root: Path, outside: Path) -> None:
    (stacks_root / "app" / ".env").write_text("A=" + "x" * (256 * 1024))
    with pytest.raises(PathRejected, match=r"app/.env cannot be read: .*limit"):
        read_dotenv(stacks_root / "app")
    (stacks_root / "app" / ".env").write_text("A=" + "x" * (256 * 1024 - 2))
    assert len(read_dotenv(stacks_root / "app")["A"]) == 256 * 1024 - 2
    (stacks_root / "app" / ".env").write_bytes(b"A=\x00\n")
    with pytest.raises(PathRejected, match="binary"):
        read_dotenv(stacks_root / "app")


def test_symlink_loop_is_refused(settings: Settings, stacks_root: Path) -> None:
    os.symlink(stacks_root / "loop", stacks_root / "loop")
    with pytest.raises(PathRejected, match="cannot be resolved"):
        locate_stack(settings, "loop")


WAYS_IN = {
    "relative": "app",
    "trailing slash": "app/",
    "dot segments": "./app/.",
    "dotdot that stays inside": "other/../app",
    "absolute inside": "{root}/app",
    "the compose file": "app/compose.yaml",
    "a symlinked stack inside the root": "alias",
}


@pytest.mark.parametrize("case", sorted(WAYS_IN))
def test_paths_that_stay_inside_are_accepted(settings: Settings, stacks_root: Path, case: str) -> None:
    write_stack(stacks_root, "app", WEB)
    write_stack(stacks_root, "other", WEB)
    os.symlink(stacks_root / "app", stacks_root / "alias")
    location = locate_stack(settings, WAYS_IN[case].format(root=stacks_root))
    assert location.directory == (stacks_root / "app").resolve()
    assert location.main_file == (stacks_root / "app" / "compose.yaml").resolve()


def test_the_root_itself_and_a_missing_root(settings: Settings, stacks_root: Path, tmp_path: Path) -> None:
    write_stack(stacks_root, "app", WEB)
    for raw in (".", str(stacks_root), "app/.."):
        with pytest.raises(PathRejected, match="names the stacks root itself"):
            locate_stack(settings, raw)
    missing = Settings(stacks_root=tmp_path / "nope", state_dir=tmp_path / "state")
    with pytest.raises(StackNotFound, match="does not exist"):
        resolve_in_root(missing, "app")
    assert discover(missing) == ([], [f"stacks root {tmp_path / 'nope'} does not exist"])


def test_missing_stack_inside_the_root_is_not_found(settings: Settings, stacks_root: Path) -> None:
    with pytest.raises(StackNotFound, match="'ghost' does not exist under the stacks root"):
        locate_stack(settings, "ghost")
    with pytest.raises(StackNotFound, match="does not exist"):
        locate_stack(settings, "a/b/../../ghost")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("-f", "starts with '-'"),
        ("  --project-directory=/", "starts with '-'"),
        ("app\x00", "control characters"),
        ("app\n", "control characters"),
        ("app\x1f", "control characters"),
    ],
)
def test_flag_like_empty_and_control_arguments(value: str, match: str) -> None:
    with pytest.raises(PathRejected, match=match):
        check_argument(value)


def test_ordinary_arguments_pass_unchanged() -> None:
    for value in ("app", "a-b", "app/compose.yaml", "x -y", " app", "\u00e9t\u00e9 ", "app~"):
        assert check_argument(value) == value


@pytest.mark.parametrize(
    ("raw", "name"),
    [("My.App", "myapp"), ("-_Weird Name!", "weirdname"), ("__x", "x"), ("a_b-c9", "a_b-c9"), ("ÄPP", "pp"),
     ("9lives", "9lives")],
)
def test_project_names_normalise_like_compose(raw: str, name: str) -> None:
    assert normalize_project_name(raw) == name


def test_project_name_precedence(tmp_path: Path) -> None:
    d = tmp_path / "Dir.Name"
    d.mkdir()
    named = load_yaml("name: Declared\n" + WEB)
    assert project_name(d, None) == "dirname"
    assert project_name(d, named) == "declared"
    assert project_name(d, load_yaml("name: ${NAME}\n" + WEB)) == "dirname"  # interpolated: unknown here
    assert project_name(d, load_yaml("name: '  '\n" + WEB)) == "dirname"
    assert project_name(d, load_yaml("name: 12\n" + WEB)) == "dirname"
    assert project_name(d, load_yaml("- a\n")) == "dirname"
    (d / ".env").write_text("COMPOSE_PROJECT_NAME=From_Env\n")
    assert project_name(d, named) == "from_env"
    (d / ".env").write_text("COMPOSE_PROJECT_NAME=\n")
    assert project_name(d, named) == "declared"


def test_compose_file_choice_and_override(settings: Settings, stacks_root: Path) -> None:
    d = write_stack(stacks_root, "legacy", WEB, file="docker-compose.yml")
    (d / "docker-compose.override.yml").write_text("services:\n  web:\n    restart: always\n")
    (d / "compose.override.yaml").write_text("services: {}\n")  # belongs to compose.yaml, not used
    assert [f.name for f in locate_stack(settings, "legacy").files] == [
        "docker-compose.yml", "docker-compose.override.yml"]
    (d / "compose.yml").write_text(WEB)  # compose.yml outranks docker-compose.yml
    (d / "compose.override.yml").write_text("services: {}\n")
    assert [f.name for f in locate_stack(settings, "legacy").files] == ["compose.yml", "compose.override.yml"]
    (d / "compose.yaml").write_text(WEB)
    assert [f.name for f in locate_stack(settings, "legacy").files] == ["compose.yaml", "compose.override.yaml"]
    explicit = locate_stack(settings, "legacy/docker-compose.yml")
    assert [f.name for f in explicit.files] == ["docker-compose.yml"] and explicit.name == "legacy"


def test_declared_services_keep_order_and_skip_unreadable_files(settings: Settings, stacks_root: Path) -> None:
    d = write_stack(stacks_root, "app", "services:\n  web: {image: a}\n  db: {image: b}\n")
    (d / "compose.override.yaml").write_text("services:\n  cache: {image: c}\n  web: {restart: always}\n")
    assert locate_stack(settings, "app").declared_services == ["web", "db", "cache"]
    (d / "compose.override.yaml").write_text("services: [" * 100 + "]" * 100)
    located = locate_stack(settings, "app")
    assert located.documents[1] is None and located.declared_services == ["web", "db"]
    (d / "compose.yaml").write_text("services: [not, a, mapping]\n")
    assert locate_stack(settings, "app").declared_services == []


def test_discovery_skips_hidden_entries_and_plain_files(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, ".hidden", WEB)
    write_stack(stacks_root, "empty-dir", "")
    (stacks_root / "empty-dir" / "compose.yaml").unlink()
    (stacks_root / "compose.yaml").write_text(WEB)
    write_stack(stacks_root, "b", WEB)
    write_stack(stacks_root, "a", WEB)
    stacks, problems = discover(settings)
    assert [s.name for s in stacks] == ["a", "b"] and problems == []


def test_find_by_name(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "one", "name: shared\n" + WEB)
    write_stack(stacks_root, "two", WEB)
    assert find_by_name(settings, "two").directory.name == "two"
    assert find_by_name(settings, "shared").directory.name == "one"
    with pytest.raises(StackNotFound, match="no stack named 'three'"):
        find_by_name(settings, "three")
    with pytest.raises(PathRejected, match="stack name"):
        find_by_name(settings, "--all")
    write_stack(stacks_root, "again", "name: shared\n" + WEB)
    with pytest.raises(StackConflict, match="claimed by again, one"):
        find_by_name(settings, "shared")
    assert discover(settings)[1] == [
        "project name 'shared' is claimed by again, one: Compose would treat them as one project; "
        "rename one (top-level name:)"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A=1", {"A": "1"}),
        ("  A = spaced  ", {"A": "spaced"}),
        ("export B='two words'", {"B": "two words"}),
        ('C="q"', {"C": "q"}),
        ('H="a # not a comment"', {"H": "a # not a comment"}),
        ("D=x # comment", {"D": "x"}),
        ("E=x#not-a-comment", {"E": "x#not-a-comment"}),
        ("G=", {"G": ""}),
        ("# A=commented", {}),
        ("   # A=indented comment", {}),
    ],
)
def test_dotenv_lines(tmp_path: Path, line: str, expected: dict[str, str]) -> None:
    (tmp_path / ".env").write_text(line + "\n")
    assert read_dotenv(tmp_path) == expected


def test_dotenv_absent_or_a_directory(tmp_path: Path) -> None:
    assert read_dotenv(tmp_path) == {}
    (tmp_path / ".env").mkdir()
    assert read_dotenv(tmp_path) == {}


# ---------------------------------------------------------------- what the calling model reads


def test_refusals_read_whole(settings: Settings, stacks_root: Path, outside: Path) -> None:
    root = stacks_root.resolve()
    d = stacks_root / "linked"
    d.mkdir()
    os.symlink(outside / "evil" / "compose.yaml", d / "compose.yaml")
    os.symlink(stacks_root / "loop", stacks_root / "loop")
    (stacks_root / "empty").mkdir()
    os.symlink(outside / "evil" / ".env", stacks_root / "app" / ".env")
    outside_hint = "call list_stacks to see them"
    cases: list[tuple[str, str, str, str]] = [
        ("../x", f"'../x' is outside the stacks root {root} (or a symlink that leads out of it)", "nothing was read",
         "pass a stack directory relative to the stacks root; " + outside_hint),
        ("/etc", f"'/etc' is outside the stacks root {root} (or a symlink that leads out of it)", "nothing was read",
         "pass a stack directory relative to the stacks root; " + outside_hint),
        ("", "the path is empty", "", "call list_stacks to see the stacks"),
        ("a\x01", "the path contains control characters", "nothing was read", ""),
        ("-x", "the path '-x' starts with '-' and would be read as a command-line flag", "nothing was read",
         "pass a stack directory relative to the stacks root, e.g. 'myapp'"),
        (".", "the path names the stacks root itself, not a stack in it", "",
         "pass one stack directory, e.g. 'myapp'; call list_stacks to see them"),
        ("empty", "empty/ holds no compose file (compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml)",
         "", "add a compose.yaml or pass the compose file itself"),
    ]
    for raw, what, state, next_step in cases:
        with pytest.raises((PathRejected, StackNotFound)) as info:
            locate_stack(settings, raw)
        err = info.value
        assert (err.what, err.state, err.next_step) == (what, state, next_step), raw
    with pytest.raises(PathRejected) as loop:
        locate_stack(settings, "loop")
    assert loop.value.what.startswith("'loop' cannot be resolved: ") and loop.value.state == "nothing was read"
    with pytest.raises(PathRejected) as flag:
        find_by_name(settings, "-x")
    assert flag.value.what == "the stack name '-x' starts with '-' and would be read as a command-line flag"


def test_discovery_goes_on_past_every_kind_of_bad_entry(settings: Settings, stacks_root: Path, outside: Path) -> None:
    # Bad entries sort first: each must be skipped, not end the scan.
    os.symlink(outside / "evil", stacks_root / "0-link-out")
    (stacks_root / "1-empty").mkdir()
    (stacks_root / "2-linked-compose").mkdir()
    os.symlink(outside / "evil" / "compose.yaml", stacks_root / "2-linked-compose" / "compose.yaml")
    write_stack(stacks_root, "3-bad-env", WEB)
    os.symlink(outside / "evil" / ".env", stacks_root / "3-bad-env" / ".env")
    (stacks_root / ".0-hidden").mkdir()
    stacks, problems = discover(settings)
    assert [s.directory.name for s in stacks] == ["app"]
    assert problems == [
        "0-link-out: symlink out of the stacks root, ignored",
        "2-linked-compose: compose file is a symlink out of the stacks root, ignored",
        "3-bad-env: 3-bad-env/.env is a symlink out of the stack directory, ignored",
    ]


def test_a_missing_path_is_judged_lexically(settings: Settings, stacks_root: Path) -> None:
    root = stacks_root.resolve()
    # Up one level from the root's first component and back down: inside, just missing.
    raw = f"/{root.parts[1]}/../{str(root)[1:]}/ghost"
    with pytest.raises(StackNotFound, match="does not exist under the stacks root"):
        locate_stack(settings, raw)
    with pytest.raises(PathRejected, match="outside"):
        locate_stack(settings, f"/{root.parts[1]}/../ghost")


def test_compose_files_are_screened_under_the_configured_limit(tmp_path: Path, stacks_root: Path) -> None:
    from server.errors import UnsafeYaml
    from server.stacks import read_compose_file

    big = write_stack(stacks_root, "big", WEB + "#" * (1536 * 1024) + "\n") / "compose.yaml"
    roomy = Settings(stacks_root=stacks_root, state_dir=tmp_path / "state", yaml_max_bytes=2 * 1024 * 1024)
    assert read_compose_file(big, roomy).data["services"]["web"]["image"] == "busybox:1"
    tight = Settings(stacks_root=stacks_root, state_dir=tmp_path / "state", yaml_max_bytes=1024 * 1024)
    with pytest.raises(UnsafeYaml, match="over the 1048576-byte limit"):
        read_compose_file(big, tight)
    bad = write_stack(stacks_root, "bad", "services: [\n") / "compose.yaml"
    with pytest.raises(UnsafeYaml, match=r"^compose\.yaml: YAML syntax error"):
        read_compose_file(bad, roomy)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A=''", {"A": ""}),
        ('B=""', {"B": ""}),
        ("C=XvalueX", {"C": "XvalueX"}),
        ("D=x  # two spaces", {"D": "x"}),
        ("E=two words # comment", {"E": "two words"}),
        ("F=a # b # c", {"F": "a"}),
    ],
)
def test_dotenv_quotes_and_comments(tmp_path: Path, line: str, expected: dict[str, str]) -> None:
    (tmp_path / ".env").write_text(line + "\n")
    assert read_dotenv(tmp_path) == expected
