"""The audit trail: a line for every call of a scripted session (refused, failed and rejected
calls included), no secret in the file, its permissions and rotation, and the `audit` command
(in-process and after a real stdio session)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from server.app import build_server
from server.safety import audit
from server.settings import Settings
from tests.conftest import write_stack

REPO = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent / "docker-stack-mcp")
DOTENV_SECRET = "dotenv-" + uuid.uuid4().hex
GIVEN_SECRET = "given-" + uuid.uuid4().hex
UNSEEN_SECRET = "unseen-" + uuid.uuid4().hex
SHOP = """\
name: shop
services:
  db:
    image: postgres:16.4
    environment:
      POSTGRES_PASSWORD: ${SHOP_DB_PASSWORD}
      API_URL: ${API_URL:-http://x}
"""


def entries(state_dir: Path) -> list[dict[str, Any]]:
    return list(audit.read(state_dir))


@pytest.mark.anyio
async def test_every_call_of_a_session_is_audited_without_secrets(
        settings: Settings, stacks_root: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack(stacks_root, "shop", SHOP, env=f"SHOP_DB_PASSWORD={DOTENV_SECRET}\n")
    policy = settings.state_dir.parent / "policy.yaml"
    policy.write_text("protected: {shop: never}\n")
    settings = replace(settings, policy_path=policy)
    script: list[tuple[str, dict[str, Any], str]] = [
        ("list_stacks", {}, "ok"),
        ("inspect_stack", {"path": "shop", "env": {"API_TOKEN": GIVEN_SECRET}}, "ok"),
        ("validate_compose", {"path": "shop", "check_host": False, "env": {"API_URL": f"https://u:{GIVEN_SECRET}@h"}},
         "ok"),
        ("stack_control", {"stack": "shop", "action": "maintenance_on", "until": "1h", "confirm": True,
                           "reason": f"password={GIVEN_SECRET}"}, "refused"),
        # Refused before anything loads the stack: its env values were never seen as secrets.
        ("deploy_stack", {"path": "shop", "env": {"GREETING": UNSEEN_SECRET}, "confirm": True}, "refused"),
        ("inspect_stack", {"path": "../../etc"}, "error"),
        ("stack_control", {"stack": "shop"}, "error"),  # bad arguments: never reaches the tool
        ("backup_stack", {"stack": "shop", "action": "list"}, "ok"),
    ]
    async with Client(build_server(settings)) as client:
        for tool, args, _ in script:
            await client.call_tool(tool, args)
    lines = entries(settings.state_dir)
    assert [(e["tool"], e["outcome"]) for e in lines] == [(t, o) for t, _, o in script]
    refused = lines[3]
    assert refused["stack"] == "shop" and "never" in refused["detail"] and refused["duration_ms"] >= 0
    assert all(e["client"] for e in lines), lines  # the client's name from the initialize handshake
    assert lines[1]["arguments"]["env"] == {"API_TOKEN": "***"}
    # No secret anywhere in the files, whatever argument or error carried it.
    directory = audit.audit_dir(settings.state_dir)
    raw = b"".join(p.read_bytes() for p in directory.iterdir())
    assert DOTENV_SECRET.encode() not in raw and GIVEN_SECRET.encode() not in raw
    assert UNSEEN_SECRET.encode() not in raw
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "audit.jsonl").stat().st_mode) == 0o600

    # The command a person runs: one line per call, filtered by stack and time.
    from server.cli import main

    monkeypatch.setenv("DSM_STACKS_ROOT", str(stacks_root))
    monkeypatch.setenv("DSM_STATE_DIR", str(settings.state_dir))
    monkeypatch.delenv("DSM_POLICY", raising=False)
    capsys.readouterr()
    assert main(["audit", "--stack", "shop", "--since", "1h"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 6 and "refused" in printed[2] and "stack_control" in printed[2]
    assert main(["audit", "--since", "2999-01-01T00:00"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["audit", "--since", "yesterday-ish"]) == 2


def test_the_file_rotates_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "MAX_BYTES", 2000)
    for n in range(200):
        audit.append(tmp_path, {"n": n, "pad": "x" * 40})
    names = sorted(p.name for p in audit.audit_dir(tmp_path).iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    kept = [e["n"] for e in audit.read(tmp_path)]
    assert kept == sorted(kept) and kept[-1] == 199 and len(kept) < 200
    assert all(p.stat().st_size <= 2000 for p in audit.audit_dir(tmp_path).iterdir())


def test_a_refused_call_over_real_stdio_is_audited(tmp_path: Path, stacks_root: Path) -> None:
    write_stack(stacks_root, "app", "name: app\nservices:\n  web:\n    image: busybox:1.36\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("protected: {app: never}\nfallback: deny\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "DSM_STACKS_ROOT": str(stacks_root), "DSM_STATE_DIR": str(tmp_path / "state"), "DSM_POLICY": str(policy)}

    async def session() -> str:
        from mcp.client.stdio import StdioServerParameters

        async with Client(StdioServerParameters(command=EXE, args=[], env=env)) as client:
            result = await client.call_tool("stack_control", {"stack": "app", "action": "restart", "confirm": True})
            assert result.is_error
            return "\n".join(getattr(c, "text", "") for c in result.content)

    import anyio

    text = anyio.run(session)
    assert "protected ('app': never" in text and "State: nothing was changed" in text
    printed = subprocess.run([EXE, "audit", "--stack", "app"], env=env, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    [line] = printed.stdout.strip().splitlines()
    assert "refused" in line and "stack_control" in line and " app " in line
    raw = subprocess.run([EXE, "audit", "--json"], env=env, capture_output=True, text=True, timeout=60)
    [entry] = [json.loads(x) for x in raw.stdout.splitlines()]
    assert entry["outcome"] == "refused" and entry["arguments"]["action"] == "restart"
