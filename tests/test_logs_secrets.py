"""stack_logs never tells a secret, not even one character at a time.

``grep`` ran on the raw lines, so a caller could learn a masked value by probing
(``grep: "token s3cr"`` matched, ``"token s3cx"`` did not); a credential written literally in
the compose file (``DB_PASSWORD: x``, in no .env) was not masked at all; and an absurd
``since`` was an internal OverflowError.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from server.monitor.logs import BadArgument, parse_time
from tests.conftest import write_stack

pytestmark = [pytest.mark.anyio]

LEAKY = """\
name: {name}
services:
  talk:
    image: dsm-test/busybox:1
    init: true
    environment:
      API_TOKEN: "${{API_TOKEN}}"
      DB_PASSWORD: lit-pass-4471
    command: ["sh", "-c", "echo token $$API_TOKEN; echo literal $$DB_PASSWORD; sleep 900"]
    labels: {{dsm.test: "1"}}
"""


def test_an_absurd_since_is_a_bad_argument() -> None:
    for value in ("99999999d", "999999999999999999999s"):
        with pytest.raises(BadArgument, match="since"):
            parse_time(value, "since")


@pytest.mark.docker
async def test_grep_cannot_probe_a_secret_and_literal_credentials_are_masked(
    docker_engine: None, mcp_client: Any, stacks_root: Path, project_name: str
) -> None:
    secret = "s3cr3t-token-value-42"
    directory = write_stack(stacks_root, "leaky", LEAKY.format(name=project_name), env=f"API_TOKEN={secret}\n")
    subprocess.run(["docker", "compose", "up", "-d"], cwd=directory, check=True, capture_output=True, timeout=120)
    await anyio.sleep(1.5)

    async def lines(**args: Any) -> list[str]:
        result = await mcp_client.call_tool("stack_logs", {"stack": "leaky", **args})
        assert not result.is_error, result.content
        assert secret not in json.dumps(result.structured_content)
        assert "lit-pass-4471" not in json.dumps(result.structured_content)
        return [ln["text"] for ln in result.structured_content["lines"]]

    assert await lines() == ["token ***", "literal ***"]
    assert await lines(grep="token s3cr") == []  # the raw value is not searchable
    assert await lines(grep="lit-pass") == []
    assert await lines(grep="token ***") == ["token ***"]  # what is shown is what grep sees
    assert await lines(grep=r"token \*{3}$", regex=True) == ["token ***"]
    assert await lines(grep="token s3cr.*", regex=True) == []
    bad = await mcp_client.call_tool("stack_logs", {"stack": "leaky", "since": "99999999d"})
    assert bad.is_error and "since" in bad.content[0].text and "internal" not in bad.content[0].text
