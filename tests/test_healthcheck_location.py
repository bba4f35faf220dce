"""A healthcheck `test` that the real `docker compose config` rejects is a finding naming the one
service, file and line that hold it (issue 17), for each shape Compose rejects: those whose message
names the service (`services.web.healthcheck.test must be a string`) and the one whose message names
no location (`healthcheck.test must start either by "CMD", "CMD-SHELL" or "NONE"`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.compose import ComposeRunner
from server.preflight.validation import validate
from server.settings import Settings
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio

MAIN = ("services:\n  api:\n    image: busybox:1\n    healthcheck:\n      test: [CMD, 'true']\n"
        "  web:\n    image: busybox:1\n")
# web's healthcheck in the override file: line 5 holds `test:`.
OVERRIDE = "services:\n  web:\n    restart: always\n    healthcheck:\n      test: {test}\n      interval: 5s\n"


def _no_engine() -> Any:
    raise AssertionError("check_host=False must not touch the engine")


@pytest.mark.parametrize("test", ["42", "{}", "true", '["BOGUS"]', "[BOGUS, x]", "[42]", "[CMD, 1]",
                                  "['cmd-shell', 'exit 0']"])
async def test_rejected_healthcheck_test_names_service_file_and_line(
    settings: Settings, stacks_root: Path, test: str
) -> None:
    directory = write_stack(stacks_root, "hc", MAIN)
    (directory / "compose.override.yaml").write_text(OVERRIDE.format(test=test))
    report = await validate(settings, ComposeRunner(settings), _no_engine, path="hc", check_host=False)
    assert not report.valid
    [f] = [f for f in report.findings if f.severity == "error"]
    assert "healthcheck.test" in f.message, f
    assert (f.service, f.file, f.line) == ("web", "compose.override.yaml", 5), f


async def test_rejected_test_in_the_main_file_among_valid_ones(settings: Settings, stacks_root: Path) -> None:
    """Other services' healthchecks (valid ones) do not make the place ambiguous."""
    write_stack(stacks_root, "hc2", MAIN + "    healthcheck:\n      test: [BOGUS]\n  db:\n    image: busybox:1\n"
                "    healthcheck: {test: [NONE]}\n")
    report = await validate(settings, ComposeRunner(settings), _no_engine, path="hc2", check_host=False)
    [f] = [f for f in report.findings if f.severity == "error"]
    assert (f.service, f.file, f.line) == ("web", "compose.yaml", 9), f


async def test_rejected_test_inherited_through_extends(settings: Settings, stacks_root: Path) -> None:
    """The list sits in an `extends` template file: the finding names the service that inherits it,
    and the template's file and line."""
    directory = write_stack(stacks_root, "hc3", "services:\n  web:\n    extends: {file: common.yaml, service: base}\n")
    (directory / "common.yaml").write_text("services:\n  base:\n    image: busybox:1\n    healthcheck:\n"
                                           "      test: [BOGUS]\n")
    report = await validate(settings, ComposeRunner(settings), _no_engine, path="hc3", check_host=False)
    [f] = [f for f in report.findings if f.severity == "error"]
    assert (f.service, f.file, f.line) == ("web", "common.yaml", 5), f
