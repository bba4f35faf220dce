"""Rolling updates on the real engine, under load through Docker's DNS (issue 16).

One stack, one client container looping ``wget http://web/`` on the stack's network (the service
name resolved by Docker's embedded DNS, as a proxy with a resolver does): 1.0 -> 1.1 rolls with
zero failed requests; then a broken release (2.0-broken crashes 2 s after it starts) fails its gate
by container id, the old containers keep serving (same ids), still zero failed requests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.runtime import Runtime
from tests.deploy_helpers import WEB_10, WEB_11, WEB_BROKEN, deploy, docker, phase, write

pytestmark = [pytest.mark.docker, pytest.mark.anyio]
# Every request asks Docker's DNS for ``web`` (nslookup), then speaks HTTP with nc: the static
# busybox's wget crashes (SIGSEGV) in a container without /etc/passwd and on name lookups.
CLIENT = "dsm-test/busybox:1"
LOOP = ("while true; do ip=$(nslookup web 127.0.0.11 2>/dev/null | awk '/^Name:/{n=1} n&&/^Address/{print $2; exit}'); "
        "v=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"$ip\" 80 2>&1 | tail -n 1); "
        "case \"$v\" in 'web '*) echo \"OK $v\";; *) echo \"FAIL $ip $v\";; esac; sleep 0.05; done")


def rolling_stack(name: str, image: str) -> str:
    return f"""name: {name}
x-dsm: {{verify_s: 0}}
services:
  web:
    image: {image}
    init: true
    restart: unless-stopped
    labels: {{dsm.test: '1'}}
    mem_limit: 64m
    deploy:
      replicas: 2
      update_config: {{parallelism: 1, monitor: 3s, order: start-first, failure_action: rollback}}
    x-dsm: {{drain_s: 1}}
"""


def web_ids(project: str) -> set[str]:
    out = docker("ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", "label=com.docker.compose.service=web")
    return set(out.split())


def requests(client: str) -> tuple[int, list[str], set[str]]:
    lines = [ln for ln in docker("logs", client).splitlines() if ln.strip()]
    return len(lines), [ln for ln in lines if not ln.startswith("OK")], {ln[3:] for ln in lines if ln.startswith("OK")}


async def test_rolling_update_and_broken_release_under_load(runtime: Runtime, stacks_root: Path,
                                                            project_name: str) -> None:
    directory = write(stacks_root, project_name, rolling_stack(project_name, WEB_10))
    first = await deploy(runtime, project_name, wait_timeout_s=60)
    assert first.status == "deployed", first
    client = f"{project_name}-client"
    docker("run", "-d", "--name", client, "--label", "dsm.test=1", "--network", f"{project_name}_default",
           CLIENT, "sh", "-c", LOOP)
    try:
        time.sleep(1)
        before = web_ids(project_name)
        assert len(before) == 2

        (directory / "compose.yaml").write_text(rolling_stack(project_name, WEB_11))
        planned = await deploy(runtime, project_name, dry_run=True)
        assert planned.plan is not None
        [web] = [s for s in planned.plan.services if s.service == "web"]
        assert web.strategy == "rolling" and "healthcheck" in (web.strategy_reason or ""), web
        rolled = await deploy(runtime, project_name, wait_timeout_s=60, plan_id=planned.plan.plan_id)
        assert rolled.status == "deployed", rolled
        assert phase(rolled, "rolling").status == "ok", rolled.phases
        after = web_ids(project_name)
        assert len(after) == 2 and not after & before  # both replaced, one at a time
        time.sleep(0.5)
        total, failed, seen = requests(client)
        assert failed == [] and total > 20, (total, failed[:5], docker("logs", client).splitlines()[:3])
        assert {"web 1.0", "web 1.1"} <= seen, seen
        again = await deploy(runtime, project_name, dry_run=True)  # the converging up left them converged
        assert again.plan is not None and [s.action for s in again.plan.services] == ["unchanged"], again.plan

        (directory / "compose.yaml").write_text(rolling_stack(project_name, WEB_BROKEN))
        broken = await deploy(runtime, project_name, wait_timeout_s=30)
        assert broken.status == "rolled_back", broken
        assert phase(broken, "rolling").status == "failed", broken.phases
        assert broken.rollback is not None and f"{project_name}-web-" in broken.rollback.why, broken.rollback
        assert web_ids(project_name) == after  # the old containers were never touched
        time.sleep(0.5)
        total2, failed, seen = requests(client)
        assert failed == [] and total2 > total, (total2, failed[:5])
        assert "web 1.1" in seen
    finally:
        docker("rm", "-f", client, check=False)
