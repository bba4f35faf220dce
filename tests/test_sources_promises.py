"""The walk over every file a stack makes Compose read (server/sources.py), without Compose.

Promises: each file is found (include at every depth, its env_file and project_directory,
extends, env_file/label_file in every shape, secrets/configs files), refused when it resolves
outside the stacks root or is remote, screened (YAML limits, env size cap) before Compose runs,
read once (cycles end), and nested at most MAX_INCLUDE_DEPTH deep. A refusal is a finding at the
referencing file and line, never an exception, and the walk goes on to the next reference.
test_stackload_paths.py covers the same confinement through load_stack.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.settings import Settings
from server.sources import MAX_ENV_FILE_BYTES, MAX_INCLUDE_DEPTH, StackSources, collect_sources
from server.stacks import read_compose_file


def walk(settings: Settings, directory: Path, *files: str, variables: dict[str, str] | None = None,
         inline: bool = False) -> StackSources:
    top = [(directory / f, read_compose_file(directory / f, settings, directory)) for f in files or ("compose.yaml",)]
    return collect_sources(settings, directory, top, variables or {}, inline=inline)


@pytest.fixture
def app(stacks_root: Path) -> Path:
    d = stacks_root / "app"
    d.mkdir()
    return d


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rules(found: StackSources) -> list[tuple[str, str, int | None, str | None]]:
    return [(f.rule, f.file or "", f.line, f.service) for f in found.findings]


# -- every kind of reference is found, in order, once ---------------------------------------------

def test_every_reference_kind_is_listed_in_the_order_met(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", (
        "include:\n"
        "  - inc/a.yaml\n"
        "  - path: [inc/b.yaml]\n"
        "    env_file: [inc/b.env]\n"
        "services:\n"
        "  web:\n"
        "    image: busybox:1\n"
        "    env_file: [one.env, {path: two.env, required: false}]\n"
        "    label_file: labels.env\n"
        "    extends: {file: base.yaml, service: base}\n"
        "secrets:\n"
        "  s: {file: secret.txt}\n"
    ))
    for name in ("inc/b.env", "one.env", "two.env", "labels.env", "secret.txt"):
        write(app / name, "A=1\n")
    write(app / "inc/a.yaml", "services: {a: {image: busybox:1}}\n")
    write(app / "inc/b.yaml", "services: {b: {image: busybox:1}}\n")
    write(app / "base.yaml", "services: {base: {image: busybox:1}}\n")
    found = walk(settings, app)
    assert found.findings == []
    # secrets/configs files are path-checked, never read (Compose mounts them): not listed
    assert found.files == ["compose.yaml", "inc/a.yaml", "inc/b.yaml", "inc/b.env", "one.env", "two.env",
                           "labels.env", "base.yaml"]
    assert [d.lines.file for d in found.included] == ["inc/a.yaml", "inc/b.yaml"]
    assert [d.lines.file for d in found.extended] == ["base.yaml"]


def test_a_file_named_twice_is_read_once_and_a_cycle_ends(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml",
          "include: [a.yaml, a.yaml]\nservices:\n  web: {image: busybox:1, env_file: [x.env, x.env]}\n")
    write(app / "a.yaml", "include: [b.yaml]\nservices: {a: {image: busybox:1}}\n")
    write(app / "b.yaml", "include: [a.yaml, compose.yaml]\nservices: {b: {image: busybox:1}}\n")
    write(app / "x.env", "A=1\n")
    found = walk(settings, app)
    assert found.findings == []
    assert found.files == ["compose.yaml", "a.yaml", "b.yaml", "x.env"]
    # deepest first: an included file loads before the file that includes it
    assert [d.lines.file for d in found.included] == ["b.yaml", "a.yaml"]


def test_missing_files_are_left_to_compose(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", (
        "include: [gone.yaml]\nservices:\n  web: {image: busybox:1, env_file: gone.env,"
        " extends: {file: gone-base.yaml, service: b}}\n"))
    found = walk(settings, app)
    assert found.findings == [] and found.files == ["compose.yaml"] and found.included == []


def test_a_directory_named_as_a_file_is_not_read(settings: Settings, app: Path) -> None:
    (app / "adir").mkdir()
    write(app / "compose.yaml", "include: [adir]\nservices:\n  web: {image: busybox:1, env_file: adir}\n")
    found = walk(settings, app)
    assert found.findings == [] and found.files == ["compose.yaml"]


# -- include depth and includes' own .env ---------------------------------------------------------

@pytest.mark.parametrize("depth", [MAX_INCLUDE_DEPTH, MAX_INCLUDE_DEPTH + 1])
def test_includes_nest_at_most_the_cap(settings: Settings, app: Path, depth: int) -> None:
    write(app / "compose.yaml", "include: [l1.yaml]\nservices: {}\n")
    for level in range(1, depth + 1):
        nxt = f"include: [l{level + 1}.yaml]\n" if level < depth else ""
        write(app / f"l{level}.yaml", nxt + f"services: {{s{level}: {{image: busybox:1}}}}\n")
    found = walk(settings, app)
    if depth == MAX_INCLUDE_DEPTH:
        assert found.findings == [] and len(found.included) == MAX_INCLUDE_DEPTH
    else:
        [f] = found.findings
        assert (f.rule, f.severity, f.category) == ("unsafe-yaml", "error", "security")
        assert f"deeper than {MAX_INCLUDE_DEPTH}" in f.message and f"l{depth}.yaml" in f.message
        assert (f.file, f.line) == (f"l{depth - 1}.yaml", 1)
        assert len(found.included) == MAX_INCLUDE_DEPTH
        assert f"l{depth}.yaml" not in [d.lines.file for d in found.included]  # named, never parsed


def test_an_included_project_reads_its_own_dotenv_inside_the_root(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "include: [sub/compose.yaml]\nservices: {}\n")
    write(app / "sub/compose.yaml", "services: {s: {image: busybox:1}}\n")
    write(app / "sub/.env", "A=1\n")
    found = walk(settings, app)
    assert found.findings == [] and found.files == ["compose.yaml", "sub/compose.yaml", "sub/.env"]


def test_an_includes_own_env_file_replaces_its_dotenv(settings: Settings, app: Path, tmp_path: Path) -> None:
    write(tmp_path / "outside.env", "TOKEN=outside\n")
    write(app / "compose.yaml", "include: [{path: sub/compose.yaml, env_file: sub/own.env}]\nservices: {}\n")
    write(app / "sub/compose.yaml", "services: {s: {image: busybox:1}}\n")
    write(app / "sub/own.env", "A=1\n")
    os.symlink(tmp_path / "outside.env", app / "sub/.env")  # never read: env_file replaces it
    found = walk(settings, app)
    assert found.findings == [] and found.files == ["compose.yaml", "sub/compose.yaml", "sub/own.env"]


def test_an_included_dotenv_symlinked_out_is_refused(settings: Settings, app: Path, tmp_path: Path) -> None:
    write(tmp_path / "outside.env", "TOKEN=outside-secret\n")
    write(app / "compose.yaml", "services: {}\ninclude:\n  - sub/compose.yaml\n")
    write(app / "sub/compose.yaml", "services: {s: {image: busybox:1}}\n")
    os.symlink(tmp_path / "outside.env", app / "sub/.env")
    found = walk(settings, app)
    [f] = found.findings
    assert (f.rule, f.file, f.line, f.service) == ("path-outside-root", "compose.yaml", 3, None)
    assert "sub/.env resolves outside the stacks root" in f.message
    assert "outside-secret" not in f.model_dump_json()
    assert "sub/.env" not in found.files


def test_an_included_dotenv_is_read_once(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "include: [sub/a.yaml, sub/b.yaml]\nservices: {}\n")
    write(app / "sub/a.yaml", "services: {a: {image: busybox:1}}\n")
    write(app / "sub/b.yaml", "services: {b: {image: busybox:1}}\n")
    write(app / "sub/.env", "A=1\n")
    assert walk(settings, app).files == ["compose.yaml", "sub/a.yaml", "sub/.env", "sub/b.yaml"]


def test_an_included_dotenv_over_the_cap_is_refused(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "include: [sub/compose.yaml]\nservices: {}\n")
    write(app / "sub/compose.yaml", "services: {s: {image: busybox:1}}\n")
    write(app / "sub/.env", "A=" + "x" * MAX_ENV_FILE_BYTES + "\n")
    [f] = walk(settings, app).findings
    assert (f.rule, f.severity, f.file, f.line) == ("unsafe-yaml", "error", "compose.yaml", 1)


def test_project_directory_sets_where_an_includes_paths_resolve(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "include: [{path: sub/compose.yaml, project_directory: proj}]\nservices: {}\n")
    (app / "proj").mkdir()
    write(app / "sub/compose.yaml", "services: {s: {image: busybox:1, env_file: p.env}}\n")
    write(app / "proj/p.env", "A=1\n")
    write(app / "proj/.env", "B=1\n")
    write(app / "sub/p.env", "C=1\n")  # the file's own folder: not where Compose looks
    found = walk(settings, app)
    assert found.findings == []
    assert found.files == ["compose.yaml", "sub/compose.yaml", "proj/.env", "proj/p.env"]


def test_project_directory_is_interpolated(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "include: [{path: sub/compose.yaml, project_directory: '${P}'}]\nservices: {}\n")
    write(app / "sub/compose.yaml", "services: {s: {image: busybox:1, env_file: p.env}}\n")
    write(app / "proj/p.env", "A=1\n")
    found = walk(settings, app, variables={"P": "proj"})
    assert found.files == ["compose.yaml", "sub/compose.yaml", "proj/p.env"]
    # an unset required variable: Compose refuses it; the walk falls back to the file's folder
    write(app / "compose.yaml", "include: [{path: sub/compose.yaml, project_directory: '${P:?}'}]\nservices: {}\n")
    write(app / "sub/p.env", "A=1\n")
    assert walk(settings, app).files == ["compose.yaml", "sub/compose.yaml", "sub/p.env"]


def test_an_extended_file_resolves_its_paths_from_its_own_folder(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "services:\n  web: {image: busybox:1, extends: {file: base/b.yaml, service: b}}\n")
    write(app / "base/b.yaml", "services: {b: {image: busybox:1, env_file: b.env}}\n")
    write(app / "base/b.env", "A=1\n")
    write(app / "b.env", "A=1\n")
    assert walk(settings, app).files == ["compose.yaml", "base/b.yaml", "base/b.env"]


# -- refusals: outside, remote, flag-like, hostile; each a finding at its line, the walk goes on --

@pytest.mark.parametrize("ref", ["oci://registry/app:1", "https://example.invalid/c.yaml",
                                 "git@example.invalid:org/repo.git", "git+ssh://host/repo"])
def test_remote_includes_are_refused(settings: Settings, app: Path, ref: str) -> None:
    write(app / "compose.yaml", f"services: {{}}\ninclude:\n  - '{ref}'\n")
    [f] = walk(settings, app).findings
    assert (f.rule, f.severity, f.category, f.file, f.line) == (
        "path-outside-root", "error", "security", "compose.yaml", 3)
    assert "remote resource" in f.message and "Compose was not run" in f.message


@pytest.mark.parametrize("ref", ["./oci-like.yaml", "a://b"])
def test_only_scheme_shapes_count_as_remote(settings: Settings, app: Path, ref: str) -> None:
    write(app / "compose.yaml", f"services: {{}}\ninclude: ['{ref}']\n")
    findings = walk(settings, app).findings
    assert [("remote resource" in f.message) for f in findings] == ([True] if "://" in ref else [])


def test_a_refusal_in_an_included_file_names_that_file_and_line(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "include: [sub/c.yaml]\nservices: {}\n")
    write(app / "sub/c.yaml", "services:\n  s:\n    image: busybox:1\n    env_file: /etc/hostname\n")
    [f] = walk(settings, app).findings
    assert (f.rule, f.file, f.line, f.service) == ("path-outside-root", "sub/c.yaml", 4, "s")
    assert "'/etc/hostname' resolves outside the stacks root" in f.message


def test_a_flag_like_reference_is_refused_and_the_walk_goes_on(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml",
          "services:\n  web:\n    image: busybox:1\n    env_file: ['--volumes', /etc/passwd, ok.env]\n")
    write(app / "ok.env", "A=1\n")
    found = walk(settings, app)
    assert [(f.rule, f.line, f.service) for f in found.findings] == [("path-outside-root", 4, "web")] * 2
    assert "flag" in found.findings[0].message
    assert found.files == ["compose.yaml", "ok.env"]


def test_hostile_included_yaml_is_refused_at_its_own_line(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "services: {}\ninclude:\n  - bomb.yaml\n  - ok.yaml\n")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    write(app / "bomb.yaml", bomb)
    write(app / "ok.yaml", "services: {ok: {image: busybox:1}}\n")
    found = walk(settings, app)
    [f] = found.findings
    assert (f.rule, f.severity, f.category, f.file) == ("unsafe-yaml", "error", "security", "bomb.yaml")
    assert f.line is not None and f.line > 1  # the line inside the included file, not the include's
    assert "Compose was not run" in f.message
    assert [d.lines.file for d in found.included] == ["ok.yaml"]


def test_a_syntax_error_in_an_included_file_is_a_syntax_finding(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "include: [bad.yaml]\nservices: {}\n")
    write(app / "bad.yaml", "services:\n  s: [unclosed\n")
    [f] = walk(settings, app).findings
    assert (f.rule, f.category, f.file) == ("compose-syntax", "syntax", "bad.yaml")
    assert f.evidence and f.evidence[0].startswith("column ")


def test_an_env_file_over_the_cap_is_refused_where_it_is_named(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "services:\n  web:\n    image: busybox:1\n    env_file: big.env\n")
    write(app / "big.env", "A=" + "x" * MAX_ENV_FILE_BYTES + "\n")
    [f] = walk(settings, app).findings
    assert (f.rule, f.file, f.line, f.service) == ("unsafe-yaml", "compose.yaml", 4, "web")
    assert walk(settings, app).files == ["compose.yaml", "big.env"]


def test_an_env_file_at_the_cap_is_accepted(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "services:\n  web: {image: busybox:1, env_file: e.env}\n")
    write(app / "e.env", "A=" + "x" * (MAX_ENV_FILE_BYTES - 3) + "\n")
    assert walk(settings, app).findings == []


def test_an_unset_required_variable_in_a_reference_is_left_to_compose(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "services:\n  web: {image: busybox:1, env_file: '${E:?set E}'}\n")
    found = walk(settings, app)
    assert found.findings == [] and found.files == ["compose.yaml"]


def test_an_interpolated_reference_is_checked_as_compose_would_read_it(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", "services:\n  web: {image: busybox:1, env_file: '${E}'}\n")
    [f] = walk(settings, app, variables={"E": "/etc/passwd"}).findings
    assert "'/etc/passwd' resolves outside" in f.message


def test_secrets_and_configs_outside_are_refused_at_their_key(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", (
        "services: {}\nsecrets:\n  s:\n    file: /etc/shadow\nconfigs:\n  c:\n    file: ../../c.txt\n"
        "  d:\n    external: true\n"))
    found = walk(settings, app)
    assert [(f.rule, f.line, f.service) for f in found.findings] == [
        ("path-outside-root", 4, None), ("path-outside-root", 7, None)]


def test_inline_content_may_use_its_own_directory_only_when_inline(settings: Settings, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    write(scratch / "compose.yaml", "services:\n  web: {image: busybox:1, env_file: e.env}\n")
    write(scratch / "e.env", "A=1\n")
    assert walk(settings, scratch, inline=True).findings == []
    [f] = walk(settings, scratch).findings
    assert f.rule == "path-outside-root"


def test_a_missing_stacks_root_refuses_everything(tmp_path: Path) -> None:
    settings = Settings(stacks_root=tmp_path / "absent", state_dir=tmp_path / "state")
    d = tmp_path / "elsewhere"
    write(d / "compose.yaml", "services:\n  web: {image: busybox:1, env_file: e.env}\n")
    write(d / "e.env", "A=1\n")
    [f] = walk(settings, d).findings
    assert f.rule == "path-outside-root" and str(tmp_path / "absent") in f.message


def test_odd_shapes_are_skipped_not_crashed_on(settings: Settings, app: Path) -> None:
    write(app / "compose.yaml", (
        "include: {not: a list}\n"
        "services:\n"
        "  a: null\n"
        "  b: {image: busybox:1, env_file: 3, extends: base}\n"
        "  c: {image: busybox:1, env_file: [{required: true}, 7], extends: {file: 9}}\n"
        "secrets: [x]\n"
        "configs:\n  c: {file: 5}\n  d: text\n"))
    found = walk(settings, app)
    assert found.findings == [] and found.files == ["compose.yaml"]
    write(app / "compose.yaml", "- just\n- a list\n")
    assert walk(settings, app).findings == []
    write(app / "compose.yaml", "include: [{path: 5}, {env_file: 6}, 7, {project_directory: 8}]\nservices: {}\n")
    assert walk(settings, app).findings == []


# -- COMPOSE_FILE (from .env or the given env) is checked by the loader before Compose runs ------

class _ReachedCompose(Exception):
    pass


class _Sentinel:
    def __getattr__(self, name: str) -> object:
        raise _ReachedCompose(name)


@pytest.mark.anyio
@pytest.mark.parametrize("origin", [".env", "env", "both"])
async def test_compose_file_outside_the_root_is_refused_naming_where_it_was_set(
    settings: Settings, app: Path, tmp_path: Path, origin: str
) -> None:
    from server.stackload import StackRenderFailed, load_stack

    outside = write(tmp_path / "elsewhere" / "compose.yaml", "services: {x: {image: busybox:1}}\n")
    write(app / "compose.yaml", "services: {web: {image: busybox:1}}\n")
    value = f"compose.yaml:{outside}"
    if origin != "env":
        write(app / ".env", f"COMPOSE_FILE={value}\n")
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, _Sentinel(), path="app",  # type: ignore[arg-type]
                         env={"COMPOSE_FILE": value} if origin != ".env" else None)
    assert info.value.name == "app"
    [f] = info.value.findings
    assert (f.rule, f.severity, f.category) == ("path-outside-root", "error", "security")
    assert f.file == (".env" if origin == ".env" else None)
    assert f.message == (f"COMPOSE_FILE names {str(outside)!r}, outside the stacks root "
                         f"{settings.stacks_root.resolve()}; Compose was not run")
    assert f.fix == "keep every file a stack uses inside its own directory under the stacks root"


@pytest.mark.anyio
async def test_compose_file_inside_the_root_reaches_compose(settings: Settings, app: Path) -> None:
    from server.stackload import load_stack

    write(app / "compose.yaml", "services: {web: {image: busybox:1}}\n")
    write(app / "extra.yaml", "services: {x: {image: busybox:1}}\n")
    write(app / ".env", "COMPOSE_FILE=compose.yaml:extra.yaml\n")
    with pytest.raises(_ReachedCompose):
        await load_stack(settings, _Sentinel(), path="app")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_hostile_compose_file_named_by_compose_file_is_refused_at_its_line(
    settings: Settings, app: Path
) -> None:
    from server.stackload import StackRenderFailed, load_stack

    write(app / "compose.yaml", "services: {web: {image: busybox:1}}\n")
    write(app / "sub" / "deep.yaml", "services:\n  x: " + "[" * 200 + "]" * 200 + "\n")
    write(app / ".env", "COMPOSE_FILE=compose.yaml:sub/deep.yaml\n")
    with pytest.raises(StackRenderFailed) as info:
        await load_stack(settings, _Sentinel(), path="app")  # type: ignore[arg-type]
    assert info.value.name == "app"
    [f] = info.value.findings
    assert (f.rule, f.severity, f.file) == ("unsafe-yaml", "error", "sub/deep.yaml")
    assert f.line == 2
