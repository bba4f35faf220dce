"""backup_stack through a real MCP client: confirmation (elicitation or confirm=true), critical
stacks, stack by name or directory, and no secret in any output."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp import types as mt

from server.app import build_server
from server.settings import Settings
from tests.conftest import write_stack
from tests.test_backups import POSTGRES, compose_up, container_of, leftovers, sh

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

SECRET = "Tr0ub4dor-" + uuid.uuid4().hex
STACK = """\
name: {name}
x-dsm: {{critical: {critical}}}
services:
  db:
    image: {image}
    environment:
      POSTGRES_PASSWORD: ${{DB_PASSWORD}}
      POSTGRES_DB: app
    volumes: [pgdata:/var/lib/postgresql/data]
volumes:
  pgdata: {{}}
"""


@pytest.fixture(autouse=True)
def remove_pins(project_name: str) -> Iterator[None]:
    yield
    refs = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
              f"reference=dsm-pin/{project_name}-*").split()
    if refs:
        sh("docker", "rmi", *refs, check=False)


def text_of(result: Any) -> str:
    parts = [c.text for c in result.content if getattr(c, "text", None)]
    return "\n".join(parts) + json.dumps(result.structured_content or {})


async def call(client: Client, args: dict[str, Any], *, ok: bool = True) -> Any:
    result = await client.call_tool("backup_stack", args)
    assert result.is_error is (not ok), text_of(result)
    assert SECRET not in text_of(result)
    return result


async def test_backup_tool_end_to_end(settings: Settings, stacks_root: Path, project_name: str) -> None:
    directory_name = f"dir-{project_name}"
    directory = write_stack(stacks_root, directory_name,
                            STACK.format(name=project_name, image=POSTGRES, critical="true"),
                            env=f"DB_PASSWORD={SECRET}\n")
    compose_up(directory)
    db = container_of(project_name, "db")
    sh("docker", "exec", db, "psql", "-U", "postgres", "-d", "app", "-c",
       f"CREATE TABLE t (v text); INSERT INTO t VALUES ('{SECRET}'), ('two')")

    async with Client(build_server(settings)) as client:
        assert (await call(client, {"stack": project_name})).structured_content["backups"] == []
        created = (await call(client, {"stack": directory_name, "action": "create"})).structured_content
        assert created["stack"] == project_name
        backup_id = created["backups"][0]["backup_id"]
        # In human terms (issue 17): the reference the service runs, the dump's size and rows.
        [dump] = created["backups"][0]["dumps"]
        assert dump.startswith("db: postgres, ") and "B, 2 rows in 1 table" in dump, dump
        [image] = created["backups"][0]["images"]
        assert image.startswith(f"db: {POSTGRES} (id sha256:") or image.startswith(f"db: {POSTGRES}@sha256:"), image
        assert "dsm-pin" not in json.dumps(created["backups"][0])
        listed = (await call(client, {"stack": project_name, "action": "list"})).structured_content
        assert [b["backup_id"] for b in listed["backups"]] == [backup_id]
        assert listed["backups"][0]["dumps"] == [dump] and listed["backups"][0]["images"] == [image]
        verified = (await call(client, {"stack": project_name, "action": "verify"})).structured_content
        assert verified["verification"]["ok"] is True

        sh("docker", "exec", db, "psql", "-U", "postgres", "-d", "app", "-c", "DELETE FROM t")
        refused = await call(client, {"stack": project_name, "action": "restore"}, ok=False)
        message = text_of(refused)
        assert "confirmation required" in message and "CRITICAL" in message and "confirm=true" in message
        assert sh("docker", "exec", db, "psql", "-At", "-U", "postgres", "-d", "app", "-c",
                  "SELECT count(*) FROM t").strip() == "0"
        missing = await call(client, {"stack": project_name, "action": "verify",
                                      "backup_id": "20200101T000000Z-000000"}, ok=False)
        assert "no backup" in text_of(missing)
        restored = (await call(client, {"stack": project_name, "action": "restore", "backup_id": backup_id,
                                        "confirm": True})).structured_content
        assert restored["restored"] == ["dump db"]
    db = container_of(project_name, "db")
    assert sh("docker", "exec", db, "psql", "-At", "-U", "postgres", "-d", "app", "-c",
              "SELECT count(*) FROM t").strip() == "2"
    # The secret is in the backup (0600 files), never in what the tools said.
    backup = settings.state_dir / "backups" / project_name / backup_id
    assert SECRET in (backup / "rendered.json").read_text()
    assert (backup / "rendered.json").stat().st_mode & 0o077 == 0
    assert leftovers(project_name) == []


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_restore_asks_through_elicitation(
    settings: Settings, stacks_root: Path, project_name: str, mode: str
) -> None:
    """Handshake protocols ask mid-call; 2026-07-28 asks through an InputRequiredResult: the same
    user-facing question either way."""
    write_stack(stacks_root, project_name, STACK.format(name=project_name, image=POSTGRES, critical="false"),
                env=f"DB_PASSWORD={SECRET}\n")
    questions: list[str] = []
    answer = {"action": "decline"}

    async def elicit(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        questions.append(params.message)
        if answer["action"] == "accept":
            return mt.ElicitResult(action="accept", content={"confirm": True})
        return mt.ElicitResult(action="decline")

    async with Client(build_server(settings), elicitation_callback=elicit, mode=mode) as client:  # type: ignore[arg-type]
        await call(client, {"stack": project_name, "action": "create"})  # config only: nothing runs
        # confirm=true from the model does not bypass a client that can ask the user.
        declined = await call(client, {"stack": project_name, "action": "restore", "confirm": True}, ok=False)
        assert "did not confirm" in text_of(declined)
        assert questions and "Overwrite the current data" in questions[0] and "CRITICAL" not in questions[0]
        answer["action"] = "accept"
        accepted = (await call(client, {"stack": project_name, "action": "restore"})).structured_content
        assert accepted["restored"] == [] and len(questions) == 2


async def test_stack_argument_is_checked(settings: Settings) -> None:
    async with Client(build_server(settings)) as client:
        for bad in ("../etc", "-rf", "nosuchstack"):
            result = await call(client, {"stack": bad}, ok=False)
            assert "Next:" in text_of(result)


async def test_create_and_restore_are_journaled_and_locked(
    settings: Settings, stacks_root: Path, project_name: str
) -> None:
    from server.operations import Operations

    write_stack(stacks_root, project_name, STACK.format(name=project_name, image=POSTGRES, critical="false"),
                env=f"DB_PASSWORD={SECRET}\n")
    operations = Operations(settings)
    async with Client(build_server(settings)) as client:
        held = operations.begin(project_name, "deploy")
        try:
            busy = await call(client, {"stack": project_name, "action": "create"}, ok=False)
            assert "busy" in text_of(busy) and held.id in text_of(busy)
        finally:
            held.end("failed")
        created = (await call(client, {"stack": project_name, "action": "create"})).structured_content
        await call(client, {"stack": project_name, "action": "restore", "confirm": True})
    history = operations.history(project_name, kinds=("backup", "restore"))
    assert [(r.kind, r.status) for r in history] == [("restore", "done"), ("backup", "done")]
    assert history[1].result == {"backup_id": created["backups"][0]["backup_id"],
                                 "bytes": created["backups"][0]["bytes"]}
    assert SECRET not in json.dumps([r.params for r in history] + [r.result for r in history])
