"""The watcher's alerts, incidents and journal use the stack's scrubber, not shapes only: a
password from the stack's .env printed in a log line reached the alert receiver and the memory
(issue 15)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from server.monitor.alerts import Alerter
from server.monitor.watcher import Watcher
from server.runtime import Runtime
from server.settings import Settings
from tests.conftest import write_stack
from tests.helpers_monitor import alert_receiver

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.slow]

PASSWORD = "pw-Zk81-qq93"
LEAKER = """\
name: NAME
services:
  crash:
    image: dsm-test/busybox:1
    init: true
    restart: "no"
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
    command: ["sh", "-c", "echo connecting with $$DB_PASSWORD; echo FATAL: connection refused; exit 1"]
    labels: {dsm.test: "1"}
    x-dsm:
      recovery: {max_restarts: 1, window_s: 600, backoff_s: 1}
"""


def watcher_state(settings: Settings, stack: str) -> dict[str, object]:
    path = settings.state_dir / "watcher" / "state.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return dict((data.get("services") or {}).get(f"{stack}/crash") or {})


async def test_a_dotenv_password_in_a_log_line_reaches_no_alert_incident_or_journal(
    docker_engine: None, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    directory = write_stack(stacks_root, "leaker", LEAKER.replace("NAME", project_name),
                            env=f"DB_PASSWORD={PASSWORD}\n")
    subprocess.run(["docker", "compose", "up", "-d"], cwd=directory, check=True, capture_output=True, timeout=120)
    with alert_receiver() as (url, received):
        model = os.environ.get("DSM_EMBEDDING_MODEL_PATH")  # no download attempt when the model is provisioned
        s = dataclasses.replace(settings, alert_urls=(url,), embedding_model_path=Path(model) if model else None)
        runtime = Runtime(s)
        watcher = Watcher(runtime, interval_s=1.0, alerter=Alerter(s))
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run, stop)
            deadline = time.monotonic() + 90
            while not (watcher_state(s, project_name).get("exhausted") and received):
                assert time.monotonic() < deadline, "the watcher never gave up"
                await anyio.sleep(0.5)
            await anyio.sleep(2)  # the incident is written in the background
            stop.set()
        gave_up = [r for r in received if "stopped trying" in r.get("title", "")]
        assert gave_up and "connecting with ***" in gave_up[0]["message"], received
        assert PASSWORD not in json.dumps(received)
        memory = runtime.memory()
        hits = memory.search_incidents("crash automatic recovery gave up", stack=project_name).results
        assert hits
        incidents = [memory.get_incident(h.incident_id).model_dump_json() for h in hits]
        assert any("***" in i for i in incidents) and not any(PASSWORD in i for i in incidents)
        history = runtime.operations().history(project_name, kinds=("recovery",), limit=10)
        assert history and PASSWORD not in json.dumps([dataclasses.asdict(r) for r in history], default=str)
        runtime.close()
