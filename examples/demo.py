"""A scripted MCP session over real stdio, printed for a person to read.

It copies the example stacks to .cache/demo/stacks (the demo's stacks root), starts the
`homepage` stack on the real engine, spawns `docker-stack-mcp` as an MCP client would, and calls
the tools one by one, showing what the calling agent would see. Run it with `make demo`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_projects  # examples/ is not a package: found through the path set above

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / ".cache" / "demo"
ROOT = DEMO / "stacks"
EXE = Path(sys.executable).parent / "docker-stack-mcp"


def say(text: str = "") -> None:
    print(text, flush=True)


def banner(text: str) -> None:
    say()
    say("=" * 78)
    say(text)
    say("=" * 78)


def prepare() -> None:
    demo_projects.claim(DEMO, ROOT)  # refuses before anything is touched if a name is someone else's
    if DEMO.exists():
        demo_projects.teardown(DEMO, ROOT)
        demo_projects.forget_pins(DEMO / "state")
        shutil.rmtree(DEMO)
    demo_projects.record(DEMO)
    shutil.copytree(REPO / "examples" / "stacks", ROOT)
    (ROOT / "homepage" / "db_password.txt").write_text(secrets.token_urlsafe(18) + "\n")
    say("(setup) starting the example stack `homepage` with docker compose up --wait ...")
    up = subprocess.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "120"],
                        cwd=ROOT / "homepage", capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        say(up.stderr[-2000:])
        raise SystemExit("the example stack did not start; is the engine provisioned? (make provision)")


def show_list(out: dict[str, Any]) -> None:
    say(f"stacks root: {out['stacks_root']}")
    for s in out["stacks"]:
        say(f"  {s['name']:<12} {s['state']:<13} {s['running']}/{s['containers']} running, "
            f"{s['healthy']} healthy   services: {', '.join(s['services'])}")
    for p in out["other_projects"]:
        say(f"  (observed) {p['name']:<12} {p['running']}/{p['containers']} running  in {p['working_dir']}")
    for problem in out["problems"]:
        say(f"  problem: {problem}")


def show_inspect(out: dict[str, Any]) -> None:
    if not out["rendered"]:
        show_findings(out)
        return
    say(f"stack {out['stack']} ({', '.join(out['files'])}), x-dsm: {out['settings'] or '{}'}")
    for s in out["services"]:
        ports = ", ".join(f"{p['host_ip'] or '*'}:{p['published']}->{p['target']}" for p in s["ports"]) or "-"
        mem = f"{s['memory_limit_bytes'] // 2**20} MiB" if s["memory_limit_bytes"] else "no limit"
        say(f"  {s['name']:<5} {s['image']:<24} ports {ports:<24} mem {mem:<9} "
            f"healthcheck {'yes' if s['healthcheck'] else 'NO'}  role {s['dsm'].get('role', '-')}")
        if s["environment"]:
            say(f"        environment: {s['environment']}")


def show_findings(out: dict[str, Any]) -> None:
    for f in out["findings"]:
        where = f" line {f['line']}" if f.get("line") else ""
        svc = f" [{f['service']}]" if f.get("service") else ""
        say(f"  {f['severity'].upper():<7} {f['rule']}{svc}{where}: {f['message']}")
        if f.get("fix"):
            say(textwrap.indent(f"fix: {f['fix']}", "          "))


def show_validation(out: dict[str, Any]) -> None:
    say(out["summary"])
    for note in out["notes"]:
        say(f"  note: {note}")
    show_findings(out)


def show_resources(out: dict[str, Any]) -> None:
    say(out["summary"])
    for figure, how in out["host"]["source"].items():
        say(f"  {figure:<24} {how}")
    for c in out["top_memory"]:
        limit = f"{c['memory_limit_bytes'] // 2**20} MiB" if c["memory_limit_bytes"] else "no limit"
        say(f"  {c['name']:<28} {(c['memory_bytes'] or 0) / 2**20:7.1f} MiB (limit {limit}), cpu {c['cpu_percent']}%")
    if out["requested"] is not None:
        say(f"  requested {out['requested']['memory_bytes'] // 2**20} MiB, sufficient: {out['sufficient']}")
    show_findings(out)


def show_recorded(out: dict[str, Any]) -> None:
    what = "new incident" if out["created"] else "known incident, updated"
    say(f"  {what}: {out['incident_id']}  (seen {out['occurrences']}x, stored {out['mode']}, "
        f"signatures {', '.join(out['signatures']) or '-'})")


def show_search(out: dict[str, Any]) -> None:
    say(f"  mode: {out['mode']}" + (f"  ({out['note']})" if out.get("note") else ""))
    for hit in out["results"]:
        say(f"  {hit['score']:.3f}  {hit['title']}  [{hit['stack'] or '-'}/{hit['service'] or '-'}]")
        say(f"         cause: {hit['root_cause'] or '?'}")
        say(f"         fix:   {hit['resolution'] or '?'}")


def show_pattern(out: dict[str, Any]) -> None:
    say(f"  pattern {out['pattern_id']} ({'new' if out['created'] else 'updated'})")


def show_patterns(out: dict[str, Any]) -> None:
    for hit in out["results"]:
        say(f"  {hit['title']}  ({hit['successes']} ok / {hit['failures']} failed)")
        for n, step in enumerate(hit["steps"], 1):
            say(f"     {n}. {step}")


Step = tuple[str, str, dict[str, Any], Callable[[dict[str, Any]], None]]
STEPS: list[Step] = [
    ("What runs here? The agent always starts by looking.", "list_stacks", {}, show_list),
    ("Read one stack as Compose renders it (secrets are never shown).", "inspect_stack",
     {"path": "homepage"}, show_inspect),
    ("Pre-flight the running stack: the go/no-go gate, on the live host.", "validate_compose",
     {"path": "homepage"}, show_validation),
    ("Pre-flight a broken stack: every finding with its line and a fix.", "validate_compose",
     {"path": "broken"}, show_validation),
    ("Is there room? Host capacity, the biggest containers, and what homepage reserves.", "check_resources",
     {"path": "homepage"}, show_resources),
    ("Remember an incident: symptoms, the error line, root cause and fix.", "record_incident",
     {"title": "homepage web returns 502 after db restart", "stack": "homepage", "service": "web",
      "severity": "high",
      "symptoms": "web answered 502 for two minutes after the database container was recreated",
      "log_lines": ["2026-11-20T03:12:44Z upstream error: dial tcp 172.18.0.3:5432: connect: connection refused "
                    "(postgres://app:s3cr3tpw@db:5432/app)"],
      "root_cause": "web started before PostgreSQL accepted connections; depends_on lacked service_healthy",
      "resolution": "depends_on db with condition: service_healthy, and a pg_isready healthcheck on db"},
     show_recorded),
    ("Another session, another wording: the agent searches before acting.", "search_past_incidents",
     {"query": "frontend gives bad gateway when postgres comes back up"}, show_search),
    ("A pasted log line with other timestamps and addresses finds it by its signature.", "search_past_incidents",
     {"query": "2026-11-27T08:01:02Z upstream error: dial tcp 10.0.9.7:5432: connect: connection refused"},
     show_search),
    ("Keep a procedure that worked.", "record_deployment_pattern",
     {"title": "update homepage safely", "stack": "homepage", "operation": "update",
      "steps": ["validate_compose with check_host", "dump the database with pg_dumpall",
                "update db first (planned downtime), wait healthy", "update web, smoke test the front page"]},
     show_pattern),
    ("Before the next update, the agent looks for a known procedure.", "search_deployment_patterns",
     {"query": "how do I upgrade homepage", "stack": "homepage"}, show_patterns),
]
ERROR_STEPS = [
    ("Hostile input: a path that leaves the stacks root is refused.", "inspect_stack",
     {"path": "../../etc/passwd"}),
    ("Hostile input: an argument that looks like a flag is refused.", "inspect_stack", {"path": "--help"}),
]


async def session() -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DSM_STACKS_ROOT": str(ROOT),
           "DSM_STATE_DIR": str(DEMO / "state"), "DSM_LOG_LEVEL": "WARNING"}
    if os.environ.get("DSM_EMBEDDING_MODEL_PATH"):
        env["DSM_EMBEDDING_MODEL_PATH"] = os.environ["DSM_EMBEDDING_MODEL_PATH"]
    banner(f"spawning {EXE.name} over stdio, as Claude Code would")
    async with Client(StdioServerParameters(command=str(EXE), args=[], env=env)) as client:
        tools = (await client.list_tools()).tools
        say(f"tools: {', '.join(t.name for t in tools)}")
        prompts = (await client.list_prompts()).prompts
        say(f"prompts: {', '.join(p.name for p in prompts)}")
        for title, tool, args, show in STEPS:
            banner(f"{title}\n> {tool}({json.dumps(args)})")
            result = await client.call_tool(tool, args)
            if result.is_error:
                say(f"  tool error: {result.content[0].text}")
            else:
                show(result.structured_content or {})
        for title, tool, args in ERROR_STEPS:
            banner(f"{title}\n> {tool}({json.dumps(args)})")
            result = await client.call_tool(tool, args)
            say(textwrap.fill(f"tool error: {result.content[0].text}", 100, subsequent_indent="  "))
        await monitor_session(client, env)


SHOP = """\
# Created by the demo: a web service whose health can be broken from outside, and a worker that
# depends on it but was put on another network by mistake.
name: shop
services:
  web:
    image: dsm-test/web:1.0
    init: true
    tmpfs: [/tmp]
    networks: [back]
    healthcheck:
      test: ["CMD-SHELL", "test ! -f /tmp/sick && wget -qO- http://127.0.0.1/ >/dev/null || exit 1"]
      interval: 1s
      timeout: 2s
      retries: 2
  worker:
    image: dsm-test/web:1.0
    init: true
    networks: [front]
    depends_on: [web]
networks:
  front: {}
  back: {}
"""


def shop_web() -> dict[str, Any]:
    out = subprocess.run(["docker", "compose", "ps", "--format", "json", "web"], cwd=ROOT / "shop",
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out.splitlines()[0]) if out.strip() else {}


def show_status(out: dict[str, Any]) -> None:
    for stack in out["stacks"]:
        say(f"stack {stack['stack']}: {stack['state']}{' (maintenance)' if stack['maintenance'] else ''}")
        for s in stack["services"]:
            w = s.get("watcher") or {}
            seen = f"   watcher: {w['action']} -> {w['outcome']}" if w.get("action") else ""
            say(f"  {s['service']:<7} {s['state']:<8} health {s['health'] or '-':<10} restarts {s['restarts']}"
                f"  started {(s['started_at'] or '')[11:19]}{seen}")


def show_diagnosis(out: dict[str, Any]) -> None:
    say(f"healthy: {out['healthy']}")
    for f in out["findings"]:
        say(f"  {f['severity'].upper():<7} {f['rule']} [{f['service'] or '-'}] {f['message']}")
        say(f"          likely cause: {f['likely_cause']}")
        for e in f["evidence"][:2]:
            say(f"          evidence: {e[:110]}")
        if f["fix"]:
            say(f"          fix: {f['fix']}")
    for step in out["next_steps"]:
        say(f"  next: {step}")


async def monitor_session(client: Any, env: dict[str, str]) -> None:
    """Diagnosis and recovery: a service turns unhealthy; the agent diagnoses; the watcher heals it."""
    (ROOT / "shop").mkdir(exist_ok=True)
    (ROOT / "shop" / "compose.yaml").write_text(SHOP)
    subprocess.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", "60"], cwd=ROOT / "shop",
                   check=True, capture_output=True, timeout=120)
    banner("(setup) stack `shop` started by hand with docker compose up; now its web service breaks:\n"
           "> docker compose exec web touch /tmp/sick")
    subprocess.run(["docker", "compose", "exec", "web", "touch", "/tmp/sick"], cwd=ROOT / "shop", check=True,
                   capture_output=True, timeout=60)
    for _ in range(60):
        if "unhealthy" in shop_web().get("Status", ""):
            break
        await anyio.sleep(0.5)
    for title, tool, args, show in [
        ("What is wrong? Live status of every service.", "stack_status", {"stack": "shop"}, show_status),
        ("The troubleshooting pass: evidence, likely cause, fix.", "diagnose_stack", {"stack": "shop"},
         show_diagnosis),
    ]:
        banner(f"{title}\n> {tool}({json.dumps(args)})")
        result = await client.call_tool(tool, args)
        show(result.structured_content or {}) if not result.is_error else say(f"  tool error: {result.content[0].text}")
    banner("Recovery: the watcher (docker-stack-mcp watch --stack shop) restarts the unhealthy service")
    watcher = subprocess.Popen([str(EXE), "watch", "--stack", "shop", "--interval", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out: dict[str, Any] = {}
        for _ in range(60):
            await anyio.sleep(1)
            result = await client.call_tool("stack_status", {"stack": "shop"})
            out = result.structured_content or {}
            web = next((s for s in (out.get("stacks") or [{}])[0].get("services", []) if s["service"] == "web"), {})
            if web.get("health") == "healthy" and (web.get("watcher") or {}).get("outcome") == "recovered":
                break
        say("> stack_status({\"stack\": \"shop\"})")
        show_status(out)
    finally:
        watcher.terminate()
        watcher.wait(30)
        subprocess.run(["docker", "compose", "down", "--timeout", "2"], cwd=ROOT / "shop", capture_output=True,
                       timeout=120)

        import deploy_sessions

        call = deploy_sessions.caller(client, say, [])
        banner("Worked example 1: deploy a new monitoring stack (validate, resources, deploy with backup and\n"
               "verification, look): four calls")
        await deploy_sessions.monitoring(call, say, ROOT, "monitoring")
        banner("Worked example 2: a chat app update breaks its database schema; the API fails its healthcheck.\n"
               "deploy_stack rolls back on its own, restores the database, records the incident.")
        await deploy_sessions.chat_rollback(call, say, ROOT, "chat")
        banner("The second failure: the next update deletes half the messages, then breaks the API again.\n"
               "The database now runs under the image pinned by the first rollback; every row must come back.")
        await deploy_sessions.chat_second_failure(call, say, ROOT, "chat")
        banner("Worked example 3: services that cannot reach each other (a worker on another network than\n"
               "the web service it depends on): diagnose, apply the fix named, redeploy, diagnose again")
        await deploy_sessions.troubleshoot_network(call, say, ROOT, "netfix")
        await supabase_update(client, say)


async def supabase_update(client: Any, say: Callable[[str], None]) -> None:
    """The seed's update example on a 12-service Supabase-shaped stack (examples/update_session.py)."""
    import socket

    import deploy_sessions
    import update_session

    registry = next((line.split("=", 1)[1] for line in (REPO / ".cache" / "provision.env").read_text().splitlines()
                     if line.startswith("DSM_TEST_REGISTRY=")), None)
    if not registry:
        raise SystemExit("no local registry recorded in .cache/provision.env: run make provision")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    banner("Worked example 4: update a 12-service Supabase-shaped stack to its patch releases: check_updates,\n"
           "a dry run with a strategy per service, the update (database dumped first; the stateless APIs\n"
           "roll while a prober fetches them every 0.2 s), the status after")
    await update_session.prepare(deploy_sessions.caller(client, say, []), say, ROOT, "supabase", registry, port)
    await update_session.update(deploy_sessions.caller(client, say, []), say, ROOT, "supabase")


def main() -> None:
    banner("docker-stack-mcp demo")
    prepare()
    try:
        anyio.run(session)
    finally:
        say()
        say("(teardown) stopping the demo's stacks")
        demo_projects.teardown(DEMO, ROOT)
    say("demo finished")


if __name__ == "__main__":
    main()
