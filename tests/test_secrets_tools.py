"""No credential in what inspect_stack and validate_compose return, through the real MCP server;
structure and fixes are never masked; tool errors are scrubbed.

Compose's ``config`` needs no engine: these run with check_host=false.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_stack

pytestmark = pytest.mark.anyio

# Keys the two old patterns disagreed on, and values the key alone makes credentials.
DOTENV_SECRETS = {
    "MEILI_MASTER_KEY": "meili-master-7Qw9",
    "N8N_ENCRYPTION_KEY": "n8n-enc-K2p8Zr",
    "VAULT_ENC_KEY": "vault-enc-L5m3Xq",
    "REDIS_PASSWORD": "90210417",  # numeric: still a credential
    "AUTH_SALT": "salt-Yy61Pq",
    "SESSION_IV": "iv-Ee34Rt",
}
APP = """\
services:
  app:
    image: dsm-test/web:1.0
    environment:
      MEILI_MASTER_KEY: ${MEILI_MASTER_KEY}
      N8N_ENCRYPTION_KEY: ${N8N_ENCRYPTION_KEY}
      VAULT_ENC_KEY: ${VAULT_ENC_KEY}
      REDIS_PASSWORD: ${REDIS_PASSWORD}
      AUTH_SALT: ${AUTH_SALT}
      SESSION_IV: ${SESSION_IV}
      REDIS_URL: redis://:${REDIS_PASSWORD}@cache:6379/0
      START_ARGS: --salt ${AUTH_SALT} --mode fast
      NEXT_PUBLIC_ANON_KEY: public-anon-value
    labels:
      backup.url: "s3://backup:${VAULT_ENC_KEY}@minio/bucket"
    command: ["serve", "--master-key", "${MEILI_MASTER_KEY}"]
    healthcheck:
      test: ["CMD", "check", "--key=${N8N_ENCRYPTION_KEY}"]
"""


async def call(client: Any, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        return True, result.content[0].text
    return False, result.structured_content


@pytest.mark.parametrize("tool", ["inspect_stack", "validate_compose"])
async def test_no_credential_from_dotenv_in_tool_output(mcp_client: Any, stacks_root: Path, tool: str) -> None:
    env = "".join(f"{k}={v}\n" for k, v in DOTENV_SECRETS.items())
    write_stack(stacks_root, "app", APP, env=env)
    args: dict[str, Any] = {"path": "app"} | ({"check_host": False} if tool == "validate_compose" else {})
    err, out = await call(mcp_client, tool, args)
    assert not err, out
    dumped = json.dumps(out)
    for key, value in DOTENV_SECRETS.items():
        assert value not in dumped, key
    if tool == "inspect_stack":
        (app,) = out["services"]
        masked = {k for k, v in app["environment"].items() if v == "***"}
        assert masked == set(DOTENV_SECRETS)
        assert app["environment"]["REDIS_URL"] == "redis://:***@cache:6379/0"
        assert app["environment"]["START_ARGS"] == "--salt *** --mode fast"
        assert app["environment"]["NEXT_PUBLIC_ANON_KEY"] == "public-anon-value"  # PUBLIC: not a credential


POSTGRES = """\
services:
  db:
    image: postgres:16
    environment:
      POSTGRES_USER: postgres
      POSTGRES_PASSWORD: postgres
      POSTGRES_DB: shop
    volumes: ["pgdata:/var/lib/postgresql/data"]
volumes:
  pgdata: {}
"""


async def test_structure_is_not_masked_when_a_password_equals_it(mcp_client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "pg", POSTGRES)
    err, out = await call(mcp_client, "inspect_stack", {"path": "pg"})
    assert not err, out
    (db,) = out["services"]
    assert db["image"] == "postgres:16" and out["volumes"] == ["pgdata"]
    assert db["environment"] == {"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "***", "POSTGRES_DB": "shop"}
    err, report = await call(mcp_client, "validate_compose", {"path": "pg", "check_host": False,
                                                              "detail": "full", "min_severity": "info"})
    assert not err, report
    texts = [f["message"] + (f["fix"] or "") for f in report["findings"]]
    assert all("***:16" not in t and "-U ***" not in t for t in texts), texts
    assert any("postgres:16" in t for t in texts)  # the image is named, unmasked
    plaintext = [f for f in report["findings"] if f["rule"] == "plaintext-secret"]
    assert [f["service"] for f in plaintext] == ["db"]
    assert "default-credential" in {f["rule"] for f in report["findings"]}


async def test_tool_error_text_is_scrubbed(mcp_client: Any, stacks_root: Path) -> None:
    # The path echoes back in the error: a URL password and a token in it must not.
    err, text = await call(mcp_client, "inspect_stack", {"path": "postgres://u:Pw-in-path-77@x/ghp_" + "a" * 36})
    assert err
    assert "Pw-in-path-77" not in text and "ghp_" + "a" * 36 not in text and "***" in text


async def test_tool_error_is_scrubbed_of_values_a_stack_load_has_seen(mcp_client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "seen", "services:\n  a:\n    image: dsm-test/web:1.0\n",
                env="API_TOKEN=seen-token-Zx81Lk\n")
    err, _ = await call(mcp_client, "inspect_stack", {"path": "seen", "env": {"API_TOKEN": "given-tok-Rt55"}})
    assert not err
    err, text = await call(mcp_client, "inspect_stack", {"path": "missing-given-tok-Rt55-seen-token-Zx81Lk"})
    assert err and "given-tok-Rt55" not in text and "seen-token-Zx81Lk" not in text
