"""stack_logs on a real engine: a page is scrubbed as one text by the stack's credential policy,
bounded in lines and bytes, and a catastrophic grep never freezes the server (issues 15, 17).

Before: each line was scrubbed alone (a PEM key's body and the later lines of a multi-line .env
value came back in clear), every .env value was masked (``LibreChat v0.7.6`` read ``LibreChat
***``), a secret given to deploy_stack as env showed in later logs, ``grep`` was a regex run on
the event loop, and 20 kB lines blocked the server.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.monitor.logs import MAX_LINE_CHARS, MAX_PAGE_CHARS
from server.settings import Settings
from tests.conftest import write_stack

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

BODY1 = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
BODY2 = "MZR4GvGd9vSyk5w1Zt5cxYc1Zp2vO0CjLsPuT0v1dLp8yN4pE7xsz"
PRINTS = """\
name: NAME
services:
  app:
    image: dsm-test/busybox:1
    init: true
    environment:
      APP_VERSION: ${APP_VERSION}
      PORT: ${PORT}
      DB_PASSWORD: ${DB_PASSWORD}
      TLS_SECRET: ${TLS_SECRET}
    command:
      - sh
      - -c
      - |
        echo "LibreChat $$APP_VERSION listening on port $$PORT debug=true host=db.internal"
        echo "connecting with $$DB_PASSWORD"
        echo "$$TLS_SECRET"
        printf '%s\\n' '-----BEGIN PRIVATE KEY-----' 'BODY1' 'BODY2' '-----END PRIVATE KEY-----'
        echo done
        sleep 900
    labels: {dsm.test: "1"}
""".replace("BODY1", BODY1).replace("BODY2", BODY2)
TLS_LINES = ["first-line-of-tls-xx1", "second-line-of-tls-xx2", "third-line-of-tls-xx3"]
DOTENV = 'APP_VERSION=v0.7.6\nPORT=8080\nDB_PASSWORD=pw-Zk81-qq93\nTLS_SECRET="' + "\n".join(TLS_LINES) + '"\n'


def up(directory: Path) -> None:
    subprocess.run(["docker", "compose", "up", "-d"], cwd=directory, check=True, capture_output=True, timeout=120)


async def page(client: Any, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("stack_logs", args)
    assert not result.is_error, result.content
    return dict(result.structured_content)


async def wait_for(client: Any, stack: str, last: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        texts = [ln["text"] for ln in (await page(client, stack=stack))["lines"]]
        if (texts and texts[-1] == last) or time.monotonic() > deadline:
            return texts
        await anyio.sleep(0.3)


async def test_a_page_masks_credentials_keys_and_multi_line_values_and_keeps_versions_and_ports(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    up(write_stack(stacks_root, "prints", PRINTS.replace("NAME", project_name), env=DOTENV))
    texts = await wait_for(mcp_client, "prints", "done")
    assert texts == ["LibreChat v0.7.6 listening on port 8080 debug=true host=db.internal", "connecting with ***",
                     "***", "***", "***", "***", "***", "***", "***", "done"]
    # A page that starts inside the key, and the page before it that ends inside it.
    newest = await page(mcp_client, stack="prints", limit=3)
    assert [ln["text"] for ln in newest["lines"]] == ["***", "***", "done"] and newest["next_until"]
    before = await page(mcp_client, stack="prints", limit=2, until=newest["next_until"])
    assert [ln["text"] for ln in before["lines"]] == ["***", "***"]
    # grep sees the scrubbed text only; versions and ports are found.
    assert (await page(mcp_client, stack="prints", grep="second-line"))["lines"] == []
    assert (await page(mcp_client, stack="prints", grep=BODY2[:20]))["lines"] == []
    assert [ln["text"] for ln in (await page(mcp_client, stack="prints", grep="V0.7.6"))["lines"]] == [texts[0]]
    everything = json.dumps(await page(mcp_client, stack="prints"))
    diagnosis = await mcp_client.call_tool("diagnose_stack", {"stack": "prints"})
    for shown in (everything, json.dumps(diagnosis.structured_content)):
        for secret in ("pw-Zk81-qq93", *TLS_LINES, BODY1[:40], BODY2[:40]):
            assert secret not in shown


LONG = """\
name: NAME
services:
  long:
    image: dsm-test/busybox:1
    init: true
    command:
      - sh
      - -c
      - |
        head -c 20000 /dev/zero | tr '\\0' a > /tmp/l
        i=0; while [ $$i -lt 300 ]; do cat /tmp/l; echo; i=$$((i+1)); done
        echo end; sleep 900
    labels: {dsm.test: "1"}
"""


async def test_a_page_of_20kb_lines_is_bounded_and_says_what_was_cut(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    up(write_stack(stacks_root, "long", LONG.replace("NAME", project_name)))
    await wait_for(mcp_client, "long", "end")
    started = time.monotonic()
    out = await page(mcp_client, stack="long", limit=2000)
    took = time.monotonic() - started
    lines = out["lines"]
    assert lines[-1]["text"] == "end" and took < 10
    assert all(len(ln["text"]) <= MAX_LINE_CHARS + 60 for ln in lines)
    assert sum(len(ln["text"]) for ln in lines) <= MAX_PAGE_CHARS + 60 * len(lines)
    assert re.search(r" …\[cut: the line has 200\d\d characters\]$", lines[-2]["text"])  # engine splits at 16 kB
    assert out["truncated"] and out["next_until"] and "cut" in out["cut"] and "left out" in out["cut"]
    older = await page(mcp_client, stack="long", limit=2000, until=out["next_until"])
    assert older["lines"] and older["lines"][-1]["time"] < lines[0]["time"]


AAA = """\
name: NAME
services:
  aaa:
    image: dsm-test/busybox:1
    init: true
    command:
      - sh
      - -c
      - |
        i=0; while [ $$i -lt 200 ]; do echo LINE; i=$$((i+1)); done
        echo end; sleep 900
    labels: {dsm.test: "1"}
""".replace("LINE", "a" * 70 + "b")


async def test_a_catastrophic_grep_is_answered_within_2s_while_another_call_is_served(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    up(write_stack(stacks_root, "aaa", AAA.replace("NAME", project_name)))
    await wait_for(mcp_client, "aaa", "end")
    started = time.monotonic()
    quick = await mcp_client.call_tool("stack_logs", {"stack": "aaa", "grep": "(a+)+$", "regex": True})
    assert time.monotonic() - started < 2  # answered: no line matches, or refused as too slow on a busy machine
    assert quick.is_error or quick.structured_content["lines"] == []
    assert (await page(mcp_client, stack="aaa", grep="a+b$", regex=True))["lines"][-1]["text"].endswith("ab")

    done: dict[str, float] = {}
    answers: dict[str, Any] = {}

    async def slow() -> None:
        answers["grep"] = await mcp_client.call_tool("stack_logs", {"stack": "aaa", "grep": "(a|aa)+$",
                                                                    "regex": True, "limit": 2000})
        done["grep"] = time.monotonic() - started

    async def other() -> None:
        await anyio.sleep(0.2)
        answers["other"] = await mcp_client.call_tool("list_stacks", {})
        done["other"] = time.monotonic() - started

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        tg.start_soon(other)
    assert done["grep"] < 2.0, done
    assert done["other"] < done["grep"], done  # served while the pattern ran
    assert not answers["other"].is_error
    refused = answers["grep"]
    assert refused.is_error and "took more than" in refused.content[0].text and "regex=false" in refused.content[0].text


DEPLOYED = """\
name: NAME
x-dsm: {verify_s: 0}
services:
  app:
    image: dsm-test/busybox:1
    init: true
    command:
      - sh
      - -c
      - "echo using key ${SERVICE_API_KEY}; echo ERROR: auth failed for ${SERVICE_API_KEY}; sleep 900"
    healthcheck: {test: ["CMD", "true"], interval: 1s}
    deploy: {resources: {limits: {memory: 16m, cpus: "0.1", pids: 16}}}
    labels: {dsm.test: "1"}
"""


async def test_a_secret_given_to_deploy_stays_masked_in_later_logs_and_diagnosis(
    docker_engine: None, mcp_client: Any, settings: Settings, stacks_root: Path, project_name: str
) -> None:
    secret = "dep-Qx73-secret-value"
    write_stack(stacks_root, "given", DEPLOYED.replace("NAME", project_name))
    deployed = await mcp_client.call_tool("deploy_stack", {"path": "given", "env": {"SERVICE_API_KEY": secret}})
    assert not deployed.is_error and deployed.structured_content["status"] == "deployed", deployed.content
    texts = await wait_for(mcp_client, "given", "ERROR: auth failed for ***")
    assert texts == ["using key ***", "ERROR: auth failed for ***"]
    diagnosis = await mcp_client.call_tool("diagnose_stack", {"stack": "given"})
    assert secret not in json.dumps(diagnosis.structured_content)
    kept = settings.state_dir / "secrets" / f"{project_name}.json"
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600 and stat.S_IMODE(os.stat(kept.parent).st_mode) == 0o700
