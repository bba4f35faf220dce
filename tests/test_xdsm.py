"""The x-dsm contract: schema, label equivalents, and how it reaches inspect_stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.xdsm import XdsmInvalid, parse_service_settings, parse_stack_settings
from tests.conftest import write_stack


def test_defaults_and_full_block() -> None:
    assert parse_stack_settings(None).environment == "production"
    s = parse_service_settings("db", {
        "role": "database", "critical": True, "one-shot": False,
        "waive": [{"rule": "no-resource-limits", "reason": "sized by host"}],
        "update": {"strategy": "planned-downtime"},
        "backup": {"dump": ["pg_dumpall", "-U", "postgres"], "restore": ["psql", "-U", "postgres"]},
        "smoke": [{"exec": ["pg_isready"], "expect_exit": 0}], "recovery": {"max_restarts": 5, "window_s": 300},
    })
    assert s.role == "database" and s.critical and s.update.strategy == "planned_downtime"
    assert s.backup.dump == ["pg_dumpall", "-U", "postgres"] and s.recovery.max_restarts == 5


def test_labels_and_x_dsm_wins() -> None:
    s = parse_service_settings("job", {"critical": False},
                               {"dsm.one-shot": "true", "dsm.critical": "true", "dsm.waive": "a, b"})
    assert s.is_one_shot and not s.critical and [w.rule for w in s.waive] == ["a", "b"]


@pytest.mark.parametrize("raw", [
    {"role": "wizard"}, {"unknown_key": 1}, {"waive": [{"rule": "x"}]}, {"smoke": [{"exec": []}]}, "text",
])
def test_invalid_blocks_are_refused(raw: Any) -> None:
    with pytest.raises(XdsmInvalid):
        parse_service_settings("svc", raw)


def test_invalid_top_level() -> None:
    with pytest.raises(XdsmInvalid, match="policy"):
        parse_stack_settings({"policy": {"severity": {"image-unpinned": "fatal"}}})


@pytest.mark.anyio
async def test_invalid_x_dsm_is_a_finding(mcp_client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "app", "services:\n  web:\n    image: busybox:1\n    x-dsm:\n      role: wizard\n")
    out = (await mcp_client.call_tool("inspect_stack", {"path": "app"})).structured_content
    assert out["rendered"] is False and out["findings"][0]["rule"] == "xdsm-invalid"
    assert "wizard" in out["findings"][0]["message"] or "role" in out["findings"][0]["message"]
