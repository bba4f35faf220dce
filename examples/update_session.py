"""The operator's third worked example as an MCP session over real stdio: update a Supabase-shaped stack.

Twelve services (a database, a gateway on a fixed host port, a storage service writing a volume and
nine stateless API services) run from images in the local test registry. Upstream then publishes
patch releases of four of them: the database, the auth and REST APIs and storage. The agent asks
check_updates what is newer, reads update_stack's dry run (a strategy and a reason per service),
then runs the update with the plan's id. The database is dumped before it goes down; the stateless
APIs roll (the new container serves before the old one stops); the others take a planned downtime.

While the update runs, a prober inside the gateway's container fetches the rolling services
through Docker's DNS every 0.2 s, so the session can say whether the services the plan called
zero-downtime ever failed a request.

Used by examples/demo.py (`make demo`) and tests/test_update_session.py. Image repositories live
under ``<registry>/<stack name>/`` so parallel runs never share a tag.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from deploy_sessions import POSTGRES, WEB, Call, Say

NEW_WEB = "dsm-test/web:1.1"
API_SERVICES = ["auth", "rest", "realtime", "imgproxy", "meta", "functions", "analytics", "studio", "vector"]
UPDATED = ["db", "auth", "rest", "storage"]
PROBED = ["auth", "rest"]


def docker(*args: str, stdin: str | None = None, timeout: float = 180) -> str:
    out = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {out.stderr.strip()[-400:]}")
    return out.stdout


def push(source: str, ref: str) -> None:
    docker("tag", source, ref)
    docker("push", "--quiet", ref)


def publish(registry: str, name: str, release: str) -> None:
    """What upstream publishes: every service at 1.0.0 (``release`` 'first'), or the patch releases
    1.0.1 of the four updated services ('patch'). The database's patch is the same PostgreSQL with
    a new label, so its digest differs."""
    repo = f"{registry}/{name}"
    if release == "first":
        for svc in ["kong", "storage", *API_SERVICES]:
            push(WEB, f"{repo}/{svc}:1.0.0")
        push(POSTGRES, f"{repo}/postgres:15.1.0")
        return
    for svc in ["auth", "rest", "storage"]:
        push(NEW_WEB, f"{repo}/{svc}:1.0.1")
    docker("build", "--quiet", "-t", f"{repo}/postgres:15.1.1", "-",
           stdin=f"FROM {POSTGRES}\nLABEL org.opencontainers.image.version=15.1.1\n")
    docker("push", "--quiet", f"{repo}/postgres:15.1.1")


def supabase_compose(name: str, registry: str, port: int) -> str:
    """The stack's compose file: the database and auth images come from .env (as Supabase's own
    docker/ layout does for its versions), the rest are literal references."""
    repo = f"{registry}/{name}"
    common = ("    init: true\n    restart: unless-stopped\n    mem_limit: 48m\n    cpus: 0.25\n"
              "    labels: {dsm.test: '1'}\n")
    apis = "".join(
        f"  {svc}:\n    image: {'${AUTH_IMAGE}' if svc == 'auth' else f'{repo}/{svc}:1.0.0'}\n{common}"
        f"    depends_on: {{db: {{condition: service_healthy}}}}\n"
        for svc in API_SERVICES)
    return f"""# A Supabase-shaped stack, twelve services, written by examples/update_session.py.
name: {name}
x-dsm: {{verify_s: 5}}
services:
  db:
    image: ${{DB_IMAGE}}   # the database's version lives in .env
    init: true
    restart: unless-stopped
    environment: {{POSTGRES_HOST_AUTH_METHOD: trust}}
    volumes: [dbdata:/var/lib/postgresql/data]
    mem_limit: 256m
    cpus: 1
    labels: {{dsm.test: '1'}}
    x-dsm: {{role: database}}
  kong:
    image: {repo}/kong:1.0.0
{common}    ports: ["127.0.0.1:{port}:80"]
  storage:
    image: {repo}/storage:1.0.0
{common}    volumes: [storagedata:/data]
{apis}volumes:
  dbdata: {{labels: {{dsm.test: '1'}}}}
  storagedata: {{labels: {{dsm.test: '1'}}}}
"""


def write_stack(root: Path, name: str, registry: str, port: int) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(supabase_compose(name, registry, port))
    (directory / ".env").write_text(
        "# Versions of the stack's images (update_stack writes new tags here).\n"
        f"DB_IMAGE={registry}/{name}/postgres:15.1.0\n"
        f"AUTH_IMAGE={registry}/{name}/auth:1.0.0\n")
    return directory


class Prober:
    """Fetches each of ``services`` through Docker's DNS from inside the gateway's container,
    every 0.2 s, until stopped; counts the failed requests per service."""

    def __init__(self, name: str, services: list[str]) -> None:
        loop = " ".join(services)
        self.argv = ["docker", "compose", "-p", name, "exec", "-T", "kong", "sh", "-c",
                     f"rm -f /tmp/stop; while [ ! -f /tmp/stop ]; do for s in {loop}; do "
                     "if wget -qO- http://$s/ >/dev/null 2>&1; then echo \"$s ok\"; else echo \"$s fail\"; fi; "
                     "done; sleep 0.2; done"]
        self.name = name
        self.lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                      start_new_session=True)
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        self._reader = threading.Thread(target=lambda: self.lines.extend(line.strip() for line in stdout),
                                        daemon=True)
        self._reader.start()

    def stop(self) -> dict[str, dict[str, int]]:
        subprocess.run(["docker", "compose", "-p", self.name, "exec", "-T", "kong", "touch", "/tmp/stop"],
                       capture_output=True, timeout=60)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._reader is not None:
            self._reader.join(timeout=10)
        counts: dict[str, dict[str, int]] = {}
        for line in self.lines:
            svc, _, verdict = line.partition(" ")
            if verdict in ("ok", "fail"):
                counts.setdefault(svc, {"ok": 0, "fail": 0})[verdict] += 1
        return counts


def psql(name: str, sql: str) -> str:
    return docker("compose", "-p", name, "exec", "-T", "db", "psql", "-U", "postgres", "-tAc", sql).strip()


async def prepare(call: Call, say: Say, root: Path, name: str, registry: str, port: int) -> dict[str, Any]:
    """The stack as it runs before the session: deployed by deploy_stack, with rows in its database;
    then upstream publishes the patch releases."""
    publish(registry, name, "first")
    write_stack(root, name, registry, port)
    first = await call("deploy_stack", {"path": name, "wait_timeout_s": 180})
    say(f"  (setup) {name}: {first['status']}, {len(first['services'])} services")
    psql(name, "CREATE TABLE IF NOT EXISTS users(id serial primary key, email text)")
    psql(name, "INSERT INTO users(email) SELECT 'user' || g || '@example.org' FROM generate_series(1, 300) g")
    publish(registry, name, "patch")
    say("  (upstream) patch releases published: postgres 15.1.1, auth/rest/storage 1.0.1")
    return first


async def update(call: Call, say: Say, root: Path, name: str) -> dict[str, Any]:
    """check_updates, a dry run, the update itself (under the prober), then a status check."""
    updates = await call("check_updates", {"stack": name})
    for img in updates.get("images", []):
        newer = ", ".join(f"{n['tag']} ({n['level']})" for n in img.get("newer") or []) or img["status"]
        say(f"  {', '.join(s.split('/')[-1] for s in img['services'])}: {img['image'].rsplit('/', 1)[-1]} -> {newer}")
    plan = await call("update_stack", {"stack": name, "to": "patch", "dry_run": True})
    planned = {s["service"]: s for s in plan["plan"]["services"] if s["action"] != "unchanged"}
    for svc, s in sorted(planned.items()):
        say(f"  plan {svc:<8} {s['strategy']:<17} {s.get('image_from') or '-'} -> {s.get('image_to') or '-'}"
            f"  ({s['reason'][:70]})")
    rows_before = psql(name, "SELECT count(*) FROM users")
    prober = Prober(name, [s for s in PROBED if s in planned])
    prober.start()
    try:
        report = await call("update_stack", {"stack": name, "to": "patch", "plan_id": plan["plan"]["plan_id"]})
    finally:
        probed = prober.stop()
    for p in report["phases"]:
        say(f"  {p['name']:<12} {p['status']:<7} {p['duration_s']:5.1f}s  {p['detail'][:80]}")
    say(f"  => {report['status']}, backup {report.get('backup_id')}")
    for svc, c in sorted(probed.items()):
        say(f"  probe {svc}: {c['fail']} failed of {c['ok'] + c['fail']} requests during the update")
    status = await call("stack_status", {"stack": name})
    rows_after = psql(name, "SELECT count(*) FROM users")
    state = (status.get("stacks") or [{}])[0].get("state")
    say(f"  users: {rows_before} before, {rows_after} after; the stack is {state}")
    env = (root / name / ".env").read_text()
    return {"updates": updates, "plan": plan, "report": report, "probed": probed, "status": status,
            "rows_before": rows_before, "rows_after": rows_after, "env": env}
