"""The checked project is the deployed project (issue 7, sections 1-3 and located Compose errors).

Every test renders with the real `docker compose` (config needs no engine) and checks our view
against what Compose itself does with the same directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from server.compose import ComposeRunner, client_env
from server.dotenv import parse_dotenv
from server.interpolation import MissingRequired, references, substitute, tokens
from server.preflight.validation import validate
from server.project import ComposeProject
from server.settings import Settings
from server.stackload import StackRenderFailed, load_stack
from server.stacks import discover, locate_stack
from server.yamlsafe import load_yaml
from tests.conftest import write_stack
from tests.test_yamlsafe import ALIAS_BOMB

pytestmark = pytest.mark.anyio


def _no_engine() -> Any:
    raise AssertionError("check_host=False must not touch the engine")


async def _validate(settings: Settings, path: str, **kw: Any) -> Any:
    return await validate(settings, ComposeRunner(settings), _no_engine, path=path, check_host=False, **kw)


def _compose_json(directory: Path, *args: str) -> dict[str, Any]:
    """What `docker compose ... config` prints when an operator runs it in the stack directory."""
    out = subprocess.run(
        ["docker", "compose", *args, "config", "--format", "json"],
        cwd=directory,
        env=client_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# -- 1. the checked project is the deployed project ------------------------------------------------

PROD = "services:\n  web:\n    privileged: true\n"
BASE = "services:\n  web:\n    image: busybox:1\n    restart: unless-stopped\n"


async def test_compose_file_from_dotenv_is_what_is_checked(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "prod", BASE, env="COMPOSE_FILE=compose.yaml:compose.prod.yaml\n")
    (directory / "compose.prod.yaml").write_text(PROD)
    report = await _validate(settings, "prod")
    assert not report.go, report.summary
    hit = [f for f in report.findings if f.rule == "privileged"]
    assert hit and hit[0].file == "compose.prod.yaml" and hit[0].line == 3
    # and without the .env line the prod file is not part of the project: GO on this rule
    (directory / ".env").write_text("")
    report = await _validate(settings, "prod")
    assert not [f for f in report.findings if f.rule == "privileged"]


async def test_compose_file_given_in_env_wins_over_dotenv(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "given", BASE, env="COMPOSE_FILE=compose.yaml\n")
    (directory / "compose.prod.yaml").write_text(PROD)
    report = await _validate(settings, "given", env={"COMPOSE_FILE": "compose.yaml:compose.prod.yaml"})
    assert any(f.rule == "privileged" for f in report.findings)


PROFILED = """\
services:
  web:
    image: busybox:1
    ports: ["18080:80"]
    deploy: {resources: {limits: {memory: 64m}}}
  tool-a:
    image: busybox:1
    profiles: [a]
    ports: ["18181:80"]
    privileged: true
    deploy: {resources: {limits: {memory: 900m}}}
  tool-b:
    image: busybox:1
    profiles: [b]
    ports: ["18181:80"]
    deploy: {resources: {limits: {memory: 900m}}}
"""


async def test_inactive_profiles_are_linted_apart_as_warnings(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "prof", PROFILED)
    report = await _validate(settings, "prof")
    assert report.services == ["web"]  # what `up` starts
    assert not [f for f in report.findings if f.severity == "error" and f.service in ("tool-a", "tool-b")]
    assert not [f for f in report.findings if f.rule == "port-conflict" and f.severity == "error"]
    flagged = [f for f in report.findings if f.rule == "privileged"]
    assert flagged and flagged[0].severity == "warning" and "profile 'a'" in flagged[0].message
    assert any("tool-a (profile a)" in n for n in report.notes)


async def test_active_profile_from_dotenv_counts(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "prof", PROFILED, env="COMPOSE_PROFILES=a\n")
    report = await _validate(settings, "prof")
    assert report.services == ["tool-a", "web"]
    assert any(f.rule == "privileged" and f.severity == "error" for f in report.findings)
    stack = await load_stack(settings, ComposeRunner(settings), path="prof")
    assert stack.project is not None and stack.project.profiles == ("a",)
    assert sorted(stack.services) == sorted(_compose_json(stacks_root / "prof")["services"])


async def test_dependency_on_a_service_no_active_profile_enables(settings: Settings, stacks_root: Path) -> None:
    write_stack(
        stacks_root,
        "dep",
        "services:\n  web:\n    image: busybox:1\n    depends_on: [dbg]\n"
        "  dbg:\n    image: busybox:1\n    profiles: [debug]\n",
    )
    report = await _validate(settings, "dep")
    assert not report.go and not report.valid
    [f] = [f for f in report.findings if f.severity == "error"]
    assert f.service == "web" and "'debug'" in f.message and f.file == "compose.yaml" and f.line == 4


async def test_check_resources_counts_active_services_only(settings: Settings, stacks_root: Path) -> None:
    from server.preflight.resources import check_resources
    from server.runtime import Runtime

    write_stack(stacks_root, "prof", PROFILED)
    runtime = Runtime(settings)
    [entry] = discover(settings)[0]
    assert entry.active_services == ["web"] and entry.declared_services == ["web", "tool-a", "tool-b"]
    try:
        report = await check_resources(settings, runtime.compose(), runtime.engine(), path="prof")
    except Exception as exc:  # no engine here: the part under test is the request, not the host
        pytest.skip(f"engine unavailable: {exc}") if os.environ.get("CI") != "true" else None
        raise
    assert report.requested is not None
    assert [s.service for s in report.requested.services] == ["web"]
    assert report.requested.memory_bytes == 64 * 1024**2


async def test_project_name_from_compose_agrees_everywhere(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "dir-name", BASE, env='COMPOSE_PROJECT_NAME="shop_prod" # the lock name\n')
    stack = await load_stack(settings, ComposeRunner(settings), path="dir-name")
    compose_name = _compose_json(stacks_root / "dir-name")["name"]
    assert stack.name == compose_name == "shop_prod"
    [listed] = discover(settings)[0]
    assert listed.name == compose_name
    assert stack.project is not None and stack.project.args()[-2:] == ["-p", "shop_prod"]


async def test_project_name_from_last_file_and_interpolated(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "n", "name: base\n" + BASE, env="ENVN=blue\n")
    (directory / "compose.override.yaml").write_text("name: app-${ENVN}\n")
    stack = await load_stack(settings, ComposeRunner(settings), path="n")
    assert stack.name == _compose_json(directory)["name"] == "app-blue" == discover(settings)[0][0].name


def test_project_spec_args_name_files_only_when_the_user_did(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "spec", BASE, env="COMPOSE_FILE=compose.yaml\n")
    spec = locate_stack(settings, "spec", {"TAG": "1"}).project()
    assert spec.args() == ["--project-directory", str(directory.resolve())]
    assert dict(spec.env) == {"TAG": "1"}
    named = locate_stack(settings, "spec/compose.yaml").project().named("spec")
    assert named.args() == [
        "--project-directory",
        str(directory.resolve()),
        "-f",
        str(directory.resolve() / "compose.yaml"),
        "-p",
        "spec",
    ]
    with pytest.raises(TypeError):
        spec.env["X"] = "y"  # type: ignore[index]
    assert isinstance(spec, ComposeProject)


# -- 2. our parsers agree with Compose's -----------------------------------------------------------

DOTENV = """\
# a comment
PASSWORD="abc def" # rotated
export EXPORTED=1
MULTI="line1
line2"
SINGLE='lit $EXPORTED'
UNQUOTED=plain # trailing comment
HASH=a#b
SPACEHASH=a #b
ESC="a\\"b\\\\c\\$d"
INTERP=${EXPORTED}x
DEFAULTED=${NOPE:-dflt}
YAMLSTYLE: yaml
SQMULTI='multi
line'
EMPTY=
DOLLARS=x$$y
   INDENTED = spaced
"""


async def test_dotenv_agrees_with_compose(stacks_root: Path) -> None:
    ours = parse_dotenv(DOTENV)
    environment = "".join(f"      {k}: ${{{k}}}\n" for k in ours)
    directory = write_stack(
        stacks_root, "env", f"services:\n  x:\n    image: busybox:1\n    environment:\n{environment}", env=DOTENV
    )
    theirs = _compose_json(directory)["services"]["x"]["environment"]
    # config --format json escapes a literal $ as $$ in its output
    assert ours == {k: v.replace("$$", "$") for k, v in theirs.items()}
    assert ours["PASSWORD"] == "abc def" and ours["MULTI"] == "line1\nline2" and ours["HASH"] == "a#b"


async def test_quoted_secret_with_comment_never_leaks(settings: Settings, stacks_root: Path) -> None:
    from server.inventory import inspect_stack
    from server.runtime import Runtime

    write_stack(
        stacks_root,
        "leak",
        "services:\n  db:\n    image: postgres:15\n    environment:\n      POSTGRES_PASSWORD: ${PASSWORD}\n"
        "      NOTE: pw is ${PASSWORD}\n",
        env='PASSWORD="s3cr3t-Value-9" # rotated 2026\n',
    )
    out = (await inspect_stack(Runtime(settings), "leak", None)).model_dump_json()
    assert "s3cr3t-Value-9" not in out and "rendered" in out


async def test_reset_and_override_tags_render(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(
        stacks_root,
        "tags",
        "services:\n  web:\n    image: busybox:1\n    ports: ['18282:80']\n    environment: {A: '1', B: '2'}\n",
    )
    (directory / "compose.override.yaml").write_text(
        "services:\n  web:\n    ports: !reset []\n    environment: !override {C: '3'}\n"
    )
    stack = await load_stack(settings, ComposeRunner(settings), path="tags")
    web = stack.services["web"]
    assert not web.get("ports") and web["environment"] == {"C": "3"}
    assert load_yaml("a: !reset null\nb: !override [1]\n").data == {"a": None, "b": [1]}


def test_interpolation_tokenizer_forms() -> None:
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "$$SET": "$SET",
        "${SET}": "v",
        "$SET/x": "v/x",
        "${UNSET:-d}": "d",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${UNSET-d}": "d",
        "${SET:+alt}": "alt",
        "${EMPTY:+alt}": "",
        "${EMPTY+alt}": "alt",
        "${UNSET:-${SET}}": "v",
        "${UNSET:-${ALSO:-deep}}": "deep",
        "a$$b${SET}": "a$bv",
        "${SET?e}": "v",
        "$": "$",
        "${": "${",
        "cost: 5$": "cost: 5$",
    }
    for text, want in cases.items():
        assert substitute(text, env) == want, text
    for bad in ("${UNSET:?must}", "${UNSET?must}", "${EMPTY:?must}"):
        with pytest.raises(MissingRequired):
            substitute(bad, env)
    assert [r.name for r in references("${A:-${B}} $C $$D ${E:?x}")] == ["A", "B", "C", "E"]
    assert [r.name for r in references("${A:-${B}}", {"A": "1"})] == ["A"]  # B is never reached
    assert [t for t in tokens("x$$y") if isinstance(t, str)] == ["x$y"]


async def test_tokenizer_agrees_with_compose(stacks_root: Path) -> None:
    forms = ["${SET}", "${UNSET:-d}", "${EMPTY-d}", "${SET:+alt}", "${EMPTY+alt}", "${UNSET:-${SET}x}", "a$$b"]
    env = {"SET": "v", "EMPTY": ""}
    body = "".join(f'      V{i}: "{f}"\n' for i, f in enumerate(forms))
    directory = write_stack(
        stacks_root, "tok", f"services:\n  x:\n    image: busybox:1\n    environment:\n{body}", env="SET=v\nEMPTY=\n"
    )
    theirs = _compose_json(directory)["services"]["x"]["environment"]
    for i, form in enumerate(forms):
        assert substitute(form, env) == theirs[f"V{i}"].replace("$$", "$"), form


# -- 3. every file counts ----------------------------------------------------------------------------


async def test_env_file_outside_root_in_an_included_file_is_refused(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(
        stacks_root, "inc", "include:\n  - sub/more.yaml\nservices:\n  web:\n    image: busybox:1\n"
    )
    (directory / "sub").mkdir()
    (directory / "sub" / "more.yaml").write_text("include:\n  - deeper.yaml\n")
    (directory / "sub" / "deeper.yaml").write_text(
        "services:\n  side:\n    image: busybox:1\n    env_file: ../../../../../etc/passwd\n"
    )
    with pytest.raises(StackRenderFailed) as caught:
        await load_stack(settings, ComposeRunner(settings), path="inc")
    [f] = caught.value.findings
    assert f.rule == "path-outside-root" and f.file == "sub/deeper.yaml" and f.line == 4 and f.service == "side"
    assert "root:x:0" not in caught.value.findings[0].model_dump_json()


async def test_alias_bomb_in_an_included_file_is_refused_fast(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "bomb", "include:\n  - path: [ok.yaml, bomb.yaml]\n")
    (directory / "ok.yaml").write_text("services:\n  web:\n    image: busybox:1\n")
    (directory / "bomb.yaml").write_text(ALIAS_BOMB)
    start = time.perf_counter()
    with pytest.raises(StackRenderFailed) as caught:
        await load_stack(settings, ComposeRunner(settings), path="bomb")
    assert time.perf_counter() - start < 2.0
    assert caught.value.findings[0].rule == "unsafe-yaml" and caught.value.findings[0].file == "bomb.yaml"


async def test_include_cycle_terminates(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "cyc", "include:\n  - a.yaml\nservices:\n  web:\n    image: busybox:1\n")
    (directory / "a.yaml").write_text("include:\n  - b.yaml\nservices:\n  a:\n    image: busybox:1\n")
    (directory / "b.yaml").write_text("include:\n  - a.yaml\nservices:\n  b:\n    image: busybox:1\n")
    report = await asyncio_wait(_validate(settings, "cyc"), 40)
    assert report.findings  # Compose's own cycle error or a render; never a hang


async def asyncio_wait(coro: Any, seconds: float) -> Any:
    import anyio

    with anyio.fail_after(seconds):
        return await coro


async def test_extends_and_secret_files_are_path_checked(settings: Settings, stacks_root: Path) -> None:
    write_stack(
        stacks_root,
        "ext",
        "services:\n  web:\n    extends: {file: /etc/compose.yaml, service: x}\n"
        "secrets:\n  key:\n    file: ../../outside.pem\n",
    )
    with pytest.raises(StackRenderFailed) as caught:
        await load_stack(settings, ComposeRunner(settings), path="ext")
    assert {(f.rule, f.line) for f in caught.value.findings} == {("path-outside-root", 3), ("path-outside-root", 6)}


async def test_source_rules_read_every_file(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(
        stacks_root,
        "all",
        "include:\n  - extra.yaml\nservices:\n  web:\n    image: busybox:1\n    environment:\n      A: ${MAIN_UNSET}\n",
    )
    (directory / "extra.yaml").write_text(
        "services:\n  side:\n    image: busybox:1\n    environment:\n      B: ${INCLUDED_UNSET}\n"
    )
    (directory / "compose.override.yaml").write_text(
        "services:\n  web:\n    environment:\n      DB_PASSWORD: hunter2hunter2\n      C: ${OVERRIDE_UNSET}\n"
    )
    report = await _validate(settings, "all")
    unset = {f.evidence[0]: (f.file, f.line) for f in report.findings if f.rule == "unset-variable"}
    assert unset == {
        "variable MAIN_UNSET": ("compose.yaml", 7),
        "variable INCLUDED_UNSET": ("extra.yaml", 5),
        "variable OVERRIDE_UNSET": ("compose.override.yaml", 5),
    }
    [secret] = [f for f in report.findings if f.rule == "plaintext-secret"]
    assert (secret.file, secret.line, secret.service) == ("compose.override.yaml", 4, "web")
    assert "hunter2hunter2" not in report.model_dump_json()


async def test_lines_follow_merge_keys_and_overrides(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(
        stacks_root,
        "merge",
        "x-base: &base\n  image: busybox:1\n  privileged: true\n  restart: always\n"
        "services:\n  web:\n    <<: *base\n    restart: unless-stopped\n",
    )
    report = await _validate(settings, "merge")
    [priv] = [f for f in report.findings if f.rule == "privileged"]
    assert (priv.file, priv.line) == ("compose.yaml", 3)  # the anchor's line set the value
    (directory / "compose.override.yaml").write_text("services:\n  web:\n    privileged: true\n")
    report = await _validate(settings, "merge")
    [priv] = [f for f in report.findings if f.rule == "privileged"]
    assert (priv.file, priv.line) == ("compose.override.yaml", 3)  # the last file that set it wins


# -- 4. Compose errors that name no location -----------------------------------------------------------


async def test_compose_error_without_location_points_at_the_only_place(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "loc", "services:\n  web:\n    image: busybox:1\n")
    (directory / "compose.override.yaml").write_text(
        "services:\n  web:\n    restart: always\n  db:\n    image: busybox:1\n    ports: ['a:b:c:d']\n"
    )
    report = await _validate(settings, "loc")
    assert not report.valid
    [f] = report.findings
    assert "a:b" in f.message and (f.service, f.file, f.line) == ("db", "compose.override.yaml", 6)
    (directory / "compose.override.yaml").write_text("volumes:\n  data:\n    driver_opt: {a: '1'}\n")
    report = await _validate(settings, "loc")
    [f] = report.findings
    assert (f.service, f.file, f.line) == (None, "compose.override.yaml", 3)


async def test_compose_file_outside_root_is_never_read(settings: Settings, stacks_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("services:\n  x:\n    image: busybox:1\n    privileged: true\n")
    write_stack(stacks_root, "out", BASE, env=f"COMPOSE_FILE=compose.yaml:{outside}\n")
    assert locate_stack(settings, "out").documents[1] is None
    report = await _validate(settings, "out")
    assert not report.valid and report.findings[0].rule == "path-outside-root" and report.findings[0].file == ".env"
    write_stack(stacks_root, "missing", BASE, env="COMPOSE_FILE=compose.yaml:nothere.yaml\n")
    report = await _validate(settings, "missing")
    assert not report.valid and "nothere.yaml" in report.findings[0].message


async def test_lines_follow_extends(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(
        stacks_root,
        "ext-lines",
        "services:\n  web:\n    extends: {file: common.yaml, service: base}\n    restart: always\n",
    )
    (directory / "common.yaml").write_text(
        "services:\n  base:\n    image: busybox:1\n    environment:\n      API_TOKEN: ${TOKEN_UNSET}\n"
        "    privileged: true\n"
    )
    report = await _validate(settings, "ext-lines")
    [priv] = [f for f in report.findings if f.rule == "privileged"]
    assert (priv.service, priv.file, priv.line) == ("web", "common.yaml", 6)
    [unset] = [f for f in report.findings if f.rule == "unset-variable"]
    assert (unset.file, unset.line) == ("common.yaml", 5)


async def test_inactive_profile_that_cannot_render_is_a_warning(settings: Settings, stacks_root: Path) -> None:
    write_stack(
        stacks_root,
        "half",
        "services:\n  web:\n    image: busybox:1\n  extra:\n    image: busybox:1\n    profiles: [x]\n"
        "    depends_on: [ghost]\n",
    )
    report = await _validate(settings, "half")
    assert report.valid and report.services == ["web"]
    assert any(f.severity == "warning" and "inactive profiles" in f.message for f in report.findings)
    assert not any(f.severity == "error" for f in report.findings if f.rule.startswith("compose"))


async def test_waiver_for_a_profiled_service_is_no_unknown_reference(settings: Settings, stacks_root: Path) -> None:
    write_stack(
        stacks_root,
        "waive",
        "x-dsm:\n  policy:\n    waive: [{rule: privileged, services: [tool], reason: needs it}]\n"
        "services:\n  web:\n    image: busybox:1\n  tool:\n    image: busybox:1\n    profiles: [ops]\n"
        "    privileged: true\n",
    )
    report = await _validate(settings, "waive")
    assert not [f for f in report.findings if f.rule == "policy-unknown-reference"]
    assert all(f.severity == "info" for f in report.findings if f.rule == "privileged")


async def test_run_project_runs_compose_on_the_checked_project(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "run", BASE, env="COMPOSE_FILE=compose.yaml:compose.extra.yaml\n")
    (directory / "compose.extra.yaml").write_text("services:\n  extra:\n    image: busybox:1\n")
    runner = ComposeRunner(settings)
    stack = await load_stack(settings, runner, path="run")
    assert stack.project is not None
    result = await runner.run_project(stack.project, ["config", "--services"])
    assert sorted(result.stdout.split()) == sorted(stack.services) == ["extra", "web"]
    assert stack.read_files == ("compose.yaml", "compose.extra.yaml")


async def test_list_stacks_and_inspect_agree(settings: Settings, stacks_root: Path, docker_engine: None) -> None:
    from server.inventory import inspect_stack, list_stacks
    from server.runtime import Runtime

    directory = write_stack(stacks_root, "agree", BASE, env="COMPOSE_FILE=compose.yaml:more.yaml\n")
    (directory / "more.yaml").write_text("name: agreed\nservices:\n  more:\n    image: busybox:1\n")
    runtime = Runtime(settings)
    [entry] = (await list_stacks(runtime)).stacks
    inspection = await inspect_stack(runtime, "agree", None)
    assert entry.name == inspection.stack == _compose_json(directory)["name"] == "agreed"
    assert entry.compose_files == ["compose.yaml", "more.yaml"] == inspection.files
    assert sorted(entry.services) == sorted(s.name for s in inspection.services)


async def test_an_included_projects_own_dotenv_is_checked(
    settings: Settings, stacks_root: Path, tmp_path: Path
) -> None:
    directory = write_stack(stacks_root, "incenv", "include:\n  - sub/compose.yaml\n")
    (directory / "sub").mkdir()
    (directory / "sub" / "compose.yaml").write_text("services:\n  side:\n    image: busybox:${X:-1}\n")
    secret = tmp_path / "host.env"
    secret.write_text("X=host-secret\n")
    os.symlink(secret, directory / "sub" / ".env")
    with pytest.raises(StackRenderFailed) as caught:
        await load_stack(settings, ComposeRunner(settings), path="incenv")
    [f] = caught.value.findings
    assert f.rule == "path-outside-root" and "sub/.env" in f.message and (f.file, f.line) == ("compose.yaml", 2)
    os.unlink(directory / "sub" / ".env")
    (directory / "sub" / ".env").write_text("X=1\n")
    stack = await load_stack(settings, ComposeRunner(settings), path="incenv")
    assert stack.read_files == ("compose.yaml", "sub/compose.yaml", "sub/.env")


async def test_compose_env_files_and_disable_env_file(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(
        stacks_root, "envfiles", "services:\n  web:\n    image: busybox:${TAG:-1}\n", env="TAG=from-dotenv\n"
    )
    (directory / "prod.env").write_text("TAG=from-prod\n")
    runner = ComposeRunner(settings)
    for env, tag in (
        ({}, "from-dotenv"),
        ({"COMPOSE_ENV_FILES": "prod.env"}, "from-prod"),
        ({"COMPOSE_DISABLE_ENV_FILE": "true"}, "1"),
    ):
        location = locate_stack(settings, "envfiles", env)
        assert location.variables.get("TAG", "1") == tag
        stack = await load_stack(settings, runner, path="envfiles", env=env)
        assert stack.services["web"]["image"] == f"busybox:{tag}"


async def test_remote_include_is_refused(settings: Settings, stacks_root: Path) -> None:
    write_stack(stacks_root, "remote", "include:\n  - oci://registry.example/compose:1\n  - git@host:org/repo.git\n")
    with pytest.raises(StackRenderFailed) as caught:
        await load_stack(settings, ComposeRunner(settings), path="remote")
    assert [f.rule for f in caught.value.findings] == ["path-outside-root", "path-outside-root"]
    assert "remote resource" in caught.value.findings[0].message


async def test_required_variable_error_points_at_the_file_that_asks(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "req", BASE)
    (directory / "compose.override.yaml").write_text(
        "services:\n  web:\n    environment:\n      A: ${NEEDED:?set NEEDED}\n"
    )
    report = await _validate(settings, "req")
    [f] = report.findings
    assert f.rule == "missing-variable" and (f.service, f.file, f.line) == ("web", "compose.override.yaml", 4)
    assert load_yaml("include:\n  - a.yaml\n  - path: b.yaml\n").lines.get("include", "1") == 3


async def test_our_override_is_part_of_the_checked_project(settings: Settings, stacks_root: Path) -> None:
    directory = write_stack(stacks_root, "ovr", BASE, env="COMPOSE_FILE=compose.yaml:compose.prod.yaml\n")
    (directory / "compose.prod.yaml").write_text("services:\n  web:\n    environment: {MODE: prod}\n")
    (directory / "compose.dsm.yaml").write_text(PROD)
    runner = ComposeRunner(settings)
    stack = await load_stack(settings, runner, path="ovr")
    assert stack.project is not None
    d = directory.resolve()
    assert stack.project.args() == [
        "--project-directory", str(d), "-f", str(d / "compose.yaml"), "-f", str(d / "compose.prod.yaml"),
        "-f", str(d / "compose.dsm.yaml"), "-p", "ovr",
    ]  # fmt: skip
    assert stack.services["web"]["privileged"] is True and stack.services["web"]["environment"] == {"MODE": "prod"}
    report = await _validate(settings, "ovr")
    assert [f.file for f in report.findings if f.rule == "privileged"] == ["compose.dsm.yaml"]
