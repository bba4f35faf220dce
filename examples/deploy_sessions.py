"""The operator's two worked deploy examples, as MCP sessions over real stdio.

1. Deploy a new monitoring stack (three services with healthchecks): validate, check resources,
   then one deploy_stack call that backs up, deploys and verifies; then look at the result.
   Four calls (the operator's budget is six).
2. Emergency rollback of a chat app whose update breaks its database schema: the update's
   migration renames a column the API reads, the API's healthcheck fails, deploy_stack rolls
   back on its own with the database restored from the dump taken before, records the incident,
   and search_past_incidents finds it afterwards.
3. Troubleshoot a stack whose services cannot reach each other: a worker was put on another
   network than the web service it depends on. diagnose_stack names the cause and the fix (a
   common network in the compose file, then deploy_stack); the fix is applied and the stack is
   diagnosed again. Three calls.

Every call's cost to the calling model is counted as the characters of its text content (what a
model reads); the tests assert calls and characters per session.

Used by examples/demo.py (`make demo`) and by tests/test_deploy_sessions.py, which asserts on
what these functions return. Stack names are given by the caller (tests use dsmtest* names).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Say = Callable[[str], None]
EXE = Path(sys.executable).parent / "docker-stack-mcp"
WEB = "dsm-test/web:1.0"
POSTGRES = "dsm-test/postgres:15"


def server_params(root: Path, state: Path) -> Any:
    from mcp.client.stdio import StdioServerParameters

    # PYTHONPATH: the server runs this checkout's code (the venv's editable install may point at another).
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DSM_STACKS_ROOT": str(root),
           "DSM_STATE_DIR": str(state), "DSM_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    model = os.environ.get("DSM_EMBEDDING_MODEL_PATH") or str(
        Path(__file__).resolve().parent.parent / ".cache" / "embedding-model")
    if Path(model).is_dir():
        env["DSM_EMBEDDING_MODEL_PATH"] = model
    return StdioServerParameters(command=str(EXE), args=[], env=env)


def caller(client: Any, say: Say, log: list[str], read: list[int] | None = None) -> Call:
    """A tool caller that logs each call's name in ``log`` and, when given, the characters of its
    text content (what the calling model reads) in ``read``."""
    async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        log.append(tool)
        say(f"> {tool}({json.dumps(args)})")
        result = await client.call_tool(tool, args)
        if read is not None:
            read.append(sum(len(getattr(c, "text", "") or "") for c in result.content))
        if result.is_error:
            raise RuntimeError(f"{tool} failed: {result.content[0].text}")
        return dict(result.structured_content or {})

    return call


def monitoring_compose(name: str) -> str:
    def svc(n: str, port_env: str = "") -> str:
        return (f"  {n}:\n    image: {WEB}\n    init: true\n    restart: unless-stopped\n"
                f"    labels: {{dsm.test: '1'}}\n    mem_limit: 64m\n    cpus: 0.25\n{port_env}")

    return (f"name: {name}\nx-dsm: {{verify_s: 5}}\nservices:\n" + svc("prometheus") + svc("grafana")
            + svc("node-exporter") + "    x-dsm:\n      smoke:\n        - {http: 'http://grafana/', "
            "expect_status: 200}\n")


async def monitoring(call: Call, say: Say, root: Path, name: str) -> dict[str, Any]:
    """Deploy a new 3-service monitoring stack in four calls; returns the deploy report."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(monitoring_compose(name))
    validation = await call("validate_compose", {"path": name})
    say(f"  {validation['summary']}")
    if not validation["go"]:
        return {"status": "blocked", "validation": validation}
    resources = await call("check_resources", {"path": name})
    say(f"  {resources['summary']}")
    report = await call("deploy_stack", {"path": name})
    for p in report["phases"]:
        say(f"  {p['name']:<9} {p['status']:<7} {p['duration_s']:5.1f}s  {p['detail'][:90]}")
    say(f"  => {report['status']}, backup {report['backup_id']}")
    stack = await call("inspect_stack", {"path": name})
    say(f"  services: {', '.join(s['name'] for s in stack['services'])}")
    return report


def chat_compose(name: str, api_image: str, column: str, migration: list[str]) -> str:
    statements = ", ".join(f'"-c", "{q}"' for q in migration)
    return f"""name: {name}
x-dsm: {{verify_s: 10}}
services:
  db:
    image: {POSTGRES}
    init: true
    restart: unless-stopped
    environment: {{POSTGRES_HOST_AUTH_METHOD: trust}}
    volumes: [chatdata:/var/lib/postgresql/data]
    mem_limit: 256m
    cpus: 1
    labels: {{dsm.test: '1'}}
    x-dsm: {{role: database}}
  migrate:
    image: {POSTGRES}
    entrypoint: ["psql", "-v", "ON_ERROR_STOP=1", "-h", "db", "-U", "postgres", {statements}]
    depends_on: {{db: {{condition: service_healthy}}}}
    restart: "no"
    mem_limit: 64m
    cpus: 0.5
    labels: {{dsm.test: '1'}}
    x-dsm: {{one-shot: true}}
  api:
    image: {api_image}
    init: true
    entrypoint: ["sleep", "infinity"]
    restart: unless-stopped
    depends_on: {{migrate: {{condition: service_completed_successfully}}}}
    healthcheck:
      test: ["CMD", "psql", "-h", "db", "-U", "postgres", "-tAc", "SELECT {column} FROM messages LIMIT 1"]
      interval: 1s
      timeout: 3s
      retries: 3
    mem_limit: 64m
    cpus: 0.5
    labels: {{dsm.test: '1'}}
    x-dsm: {{role: web}}
volumes:
  chatdata:
    labels: {{dsm.test: '1'}}
"""


V1 = ["CREATE TABLE IF NOT EXISTS messages(id serial primary key, body text)"]
# The update renames the column the (unchanged) API still reads: the schema breaks the API.
V2 = ["ALTER TABLE messages RENAME COLUMN body TO content", "ALTER TABLE messages ADD COLUMN room int"]


# A second bad update, on top of the first rollback (its images now run under our pins): the
# migration deletes half the messages before the schema change breaks the API again.
V3 = ["DELETE FROM messages WHERE id % 2 = 0", "ALTER TABLE messages RENAME COLUMN body TO text"]


def psql(name: str, sql: str) -> str:
    out = subprocess.run(["docker", "compose", "-p", name, "exec", "-T", "db", "psql", "-U", "postgres", "-tAc", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout.strip()


async def chat_rollback(call: Call, say: Say, root: Path, name: str) -> dict[str, Any]:
    """The chat app's bad update, rolled back with its database; returns what the tests check."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(chat_compose(name, POSTGRES, "body", V1))
    first = await call("deploy_stack", {"path": name, "wait_timeout_s": 120})
    say(f"  => {first['status']}")
    psql(name, "INSERT INTO messages(body) SELECT 'message ' || g FROM generate_series(1, 500) g")
    say(f"  (users write) messages now: {psql(name, 'SELECT count(*) FROM messages')}")

    (directory / "compose.yaml").write_text(chat_compose(name, POSTGRES, "body", V2))
    report = await call("deploy_stack", {"path": name, "wait_timeout_s": 60})
    for p in report["phases"]:
        say(f"  {p['name']:<9} {p['status']:<7} {p['duration_s']:5.1f}s  {p['detail'][:90]}")
    rb = report.get("rollback") or {}
    say(f"  => {report['status']}: {rb.get('why', '')[:100]} -> {rb.get('result')}")
    for step in report["next_steps"]:
        say(f"  next: {step}")
    rows = psql(name, "SELECT count(*) FROM messages")
    columns = psql(name, "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns "
                         "WHERE table_name = 'messages'")
    say(f"  after the rollback: {rows} messages, columns {columns}")
    found = await call("search_past_incidents", {"query": "chat api unhealthy after a schema migration",
                                                 "stack": name})
    for hit in found.get("results", [])[:2]:
        say(f"  found: {hit['title'][:100]}")
    return {"first": first, "report": report, "rows": rows, "columns": columns, "search": found}


async def chat_second_failure(call: Call, say: Say, root: Path, name: str) -> dict[str, Any]:
    """After chat_rollback: the next bad update deletes rows and fails too; its automatic rollback must
    bring every row back although the database now runs under a pinned image."""
    directory = root / name
    before = psql(name, "SELECT count(*) FROM messages")
    (directory / "compose.yaml").write_text(chat_compose(name, POSTGRES, "body", V3))
    report = await call("deploy_stack", {"path": name, "wait_timeout_s": 60})
    rb = report.get("rollback") or {}
    say(f"  => {report['status']}: {rb.get('why', '')[:100]} -> {rb.get('result')}")
    rows = psql(name, "SELECT count(*) FROM messages")
    columns = psql(name, "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns "
                         "WHERE table_name = 'messages'")
    say(f"  before the update {before} messages; after its rollback {rows} messages, columns {columns}")
    return {"report": report, "before": before, "rows": rows, "columns": columns}


def network_compose(name: str, worker_networks: str) -> str:
    """A web service on `back` and a worker that depends on it, on ``worker_networks``."""
    return f"""name: {name}
x-dsm: {{verify_s: 3}}
services:
  web:
    image: {WEB}
    init: true
    restart: unless-stopped
    networks: [back]
    mem_limit: 64m
    cpus: 0.25
    labels: {{dsm.test: '1'}}
  worker:
    image: {WEB}
    init: true
    restart: unless-stopped
    networks: [{worker_networks}]
    depends_on: [web]
    mem_limit: 64m
    cpus: 0.25
    labels: {{dsm.test: '1'}}
networks:
  front: {{labels: {{dsm.test: '1'}}}}
  back: {{labels: {{dsm.test: '1'}}}}
"""


def reaches(name: str, service: str, url: str) -> bool:
    """Whether ``service``'s container fetches ``url`` (checked outside the session, with docker)."""
    # No wget -T: the test image's busybox wget crashes with it; the name fails fast when unresolved.
    out = subprocess.run(["docker", "compose", "-p", name, "exec", "-T", service, "wget", "-qO-", url],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0


async def troubleshoot_network(call: Call, say: Say, root: Path, name: str) -> dict[str, Any]:
    """A stack started by hand whose worker cannot reach web (another network): diagnose, apply the
    fix the diagnosis names, redeploy, diagnose again. Returns what the tests check."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    compose = directory / "compose.yaml"
    compose.write_text(network_compose(name, "front"))
    subprocess.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "60"], cwd=directory,
                   check=True, capture_output=True, timeout=120)
    before = reaches(name, "worker", "http://web/")
    say(f"  (setup) stack {name} started by hand; worker reaches web: {before}")
    diagnosis = await call("diagnose_stack", {"stack": name})
    found = [f for f in diagnosis["findings"] if f["rule"] == "dependency-unreachable"]
    for f in found:
        say(f"  {f['severity'].upper()} {f['rule']} [{f['service']}] {f['message']}")
        say(f"    likely cause: {f['likely_cause']}")
        say(f"    fix: {f['fix']}")
    if not found:
        return {"diagnosis": diagnosis, "found": found, "before": before}
    # The fix named: put worker on a network web is on (the compose file), then deploy_stack.
    compose.write_text(network_compose(name, "back"))
    say("  (agent edits compose.yaml: worker networks [front] -> [back])")
    report = await call("deploy_stack", {"path": name, "wait_timeout_s": 60})
    say(f"  => {report['status']}, backup {report['backup_id']}")
    after = await call("diagnose_stack", {"stack": name})
    say(f"  healthy: {after['healthy']}; worker reaches web: {reaches(name, 'worker', 'http://web/')}")
    return {"diagnosis": diagnosis, "found": found, "before": before, "report": report, "after": after,
            "reaches": reaches(name, "worker", "http://web/")}
