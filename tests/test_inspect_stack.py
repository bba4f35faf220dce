"""inspect_stack through the MCP client: the rendered model, redaction, and hostile input.

Compose's ``config`` needs no engine, so these run anywhere the compose binary is installed.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_stack
from tests.test_yamlsafe import ALIAS_BOMB

pytestmark = pytest.mark.anyio

APP = """\
name: shop
x-dsm:
  critical: true
services:
  web:
    image: dsm-test/web:${WEB_TAG:-1.0}
    ports: ["8080:80"]
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
      DATABASE_URL: postgres://shop:${DB_PASSWORD}@db:5432/shop
      MODE: production
    depends_on:
      db: {condition: service_healthy}
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1/"]
    deploy:
      resources:
        limits: {memory: 128m, cpus: "0.5"}
    x-dsm:
      role: web
      smoke:
        - {http: "http://127.0.0.1:8080/", expect_status: 200}
  db:
    image: dsm-test/postgres:15
    environment:
      POSTGRES_PASSWORD_FILE: /run/secrets/pg
    secrets: [pg]
    volumes: ["dbdata:/var/lib/postgresql/data"]
    labels: {dsm.role: database}
volumes:
  dbdata: {}
secrets:
  pg:
    file: ./pg.secret
"""
DOTENV = "DB_PASSWORD=Sup3rS3cretValue\n"


async def call(client: Any, tool: str, args: dict[str, Any]) -> tuple[bool, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        return True, result.content[0].text
    return False, result.structured_content


async def test_renders_model_with_secrets_redacted(mcp_client: Any, stacks_root: Path) -> None:
    d = write_stack(stacks_root, "shop", APP, env=DOTENV)
    (d / "pg.secret").write_text("pgpass-on-disk")
    err, out = await call(mcp_client, "inspect_stack", {"path": "shop", "env": {"WEB_TAG": "1.1"}})
    assert not err, out
    assert out["rendered"] and out["stack"] == "shop" and out["settings"] == {"critical": True}
    web = next(s for s in out["services"] if s["name"] == "web")
    db = next(s for s in out["services"] if s["name"] == "db")
    assert web["image"] == "dsm-test/web:1.1"  # the given env beats .env defaults
    assert web["depends_on"] == {"db": "service_healthy"} and web["healthcheck"]
    assert web["memory_limit_bytes"] == 128 * 1024 * 1024 and web["cpu_limit"] == 0.5
    assert web["ports"][0]["published"] == "8080" and web["ports"][0]["target"] == 80
    assert web["dsm"]["role"] == "web"  # service-level x-dsm survives although Compose drops it
    assert db["dsm"] == {"role": "database"} and not db["healthcheck"]
    assert out["secrets"] == ["pg"] and out["volumes"] == ["dbdata"]
    dumped = json.dumps(out)
    assert "Sup3rS3cretValue" not in dumped and "pgpass-on-disk" not in dumped
    assert web["environment"]["DB_PASSWORD"] == "***" and web["environment"]["MODE"] == "production"


async def test_given_env_secret_never_echoed(mcp_client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "shop", APP)
    err, out = await call(mcp_client, "inspect_stack", {"path": "shop", "env": {"DB_PASSWORD": "GivenSecret99"}})
    assert not err and "GivenSecret99" not in json.dumps(out)


async def test_missing_variable_is_a_finding_with_line(mcp_client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "app", "services:\n  web:\n    image: busybox:${TAG:?set TAG}\n")
    err, out = await call(mcp_client, "inspect_stack", {"path": "app"})
    assert not err and out["rendered"] is False
    (finding,) = out["findings"]
    assert finding["rule"] == "missing-variable" and "TAG" in finding["message"]
    assert finding["line"] == 3 and finding["service"] == "web"


HOSTILE_FILES = {
    "bomb": (ALIAS_BOMB, "unsafe-yaml"),
    "deep": ("services:\n  x: " + "[" * 3000 + "]" * 3000 + "\n", "unsafe-yaml"),
    "k8s": ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: []\n", "compose-invalid"),
    "syntax": ("services:\n  web:\n    image: x\n    ports: ['80:80'\n  db: {}\n", "compose-syntax"),
    "scalar": ("just a string\n", "compose-invalid"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
async def test_hostile_files_get_findings_fast(mcp_client: Any, stacks_root: Path, kind: str) -> None:
    text, rule = HOSTILE_FILES[kind]
    write_stack(stacks_root, kind, text)
    start = time.perf_counter()
    err, out = await call(mcp_client, "inspect_stack", {"path": kind})
    assert time.perf_counter() - start < 1.0
    assert not err and out["rendered"] is False
    assert out["findings"][0]["rule"] == rule, out["findings"]
    await _still_serving(mcp_client, stacks_root)


async def test_binary_garbage_and_huge_file(mcp_client: Any, stacks_root: Path) -> None:
    garbage = stacks_root / "garbage"
    garbage.mkdir()
    (garbage / "compose.yaml").write_bytes(os.urandom(4096))
    huge = stacks_root / "huge"
    huge.mkdir()
    with (huge / "compose.yaml").open("wb") as fh:  # written in chunks: the test's own peak stays low
        fh.write(b"services:\n  web:\n    image: busybox:1\n")
        for _ in range(50):
            fh.write(b"#" * (1024 * 1024))
    for path, needle in (("garbage", "binary"), ("huge", "limit")):
        # (No wall-clock bound: it failed under load. The tracemalloc peak below proves the file is never read.)
        err, out = await call(mcp_client, "inspect_stack", {"path": path})
        assert not err and out["rendered"] is False and needle in out["findings"][0]["message"]
    # The in-memory client runs the server in this process: tracemalloc sees what the tool reads.
    tracemalloc.start()
    try:
        err, out = await call(mcp_client, "inspect_stack", {"path": "huge"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not err and "limit" in out["findings"][0]["message"]
    assert peak < 8 * 1024 * 1024, peak  # the 50 MB file was never read into memory
    await _still_serving(mcp_client, stacks_root)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "--help", "-f", "evil"])
async def test_hostile_paths_are_tool_errors(mcp_client: Any, stacks_root: Path, tmp_path: Path, path: str) -> None:
    outside = tmp_path / "outside" / "evil"
    outside.mkdir(parents=True)
    (outside / "compose.yaml").write_text("services:\n  web:\n    image: busybox:1\n")
    os.symlink(outside, stacks_root / "evil")
    start = time.perf_counter()
    err, text = await call(mcp_client, "inspect_stack", {"path": path})
    assert time.perf_counter() - start < 1.0
    assert err and ("outside the stacks root" in text or "flag" in text)
    assert "Next:" in text
    await _still_serving(mcp_client, stacks_root)


async def test_references_outside_root_are_refused_before_compose_reads_them(
    mcp_client: Any, stacks_root: Path
) -> None:
    write_stack(stacks_root, "leak", "services:\n  web:\n    image: busybox:1\n    env_file: /etc/passwd\n")
    err, out = await call(mcp_client, "inspect_stack", {"path": "leak"})
    assert not err and out["rendered"] is False
    assert out["findings"][0]["rule"] == "path-outside-root" and out["findings"][0]["line"] == 4
    assert "root:x:0" not in json.dumps(out)


async def _still_serving(client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "healthy-one", "services:\n  web:\n    image: busybox:1\n")
    err, out = await call(client, "inspect_stack", {"path": "healthy-one"})
    assert not err and out["rendered"], out
