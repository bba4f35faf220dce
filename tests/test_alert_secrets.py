"""Every sink uses the stack's scrubber: alerts, the incidents the recorder stores, log records of
apprise and urllib3 (which print the alert URLs' tokens at DEBUG), deploy progress (issue 15)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from server.monitor.alerts import Alert, Alerter, announce_outcome
from server.settings import Settings
from server.stacksecrets import known, remember, stack_scrubber
from tests.helpers_monitor import alert_receiver

pytestmark = pytest.mark.anyio

SECRET = "known-Vb42-secret-value"


async def test_an_alert_about_a_stack_masks_its_known_secrets(settings: Settings) -> None:
    remember(settings, "shop", [SECRET])
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        assert await Alerter(s).send(Alert(key="k", level="critical", title=f"shop: {SECRET}", stack="shop",
                                           what_broke=f"db said: connecting with {SECRET}"))
        assert await announce_outcome(s, stack="shop", kind="deploy", status="failed", operation_id="op1",
                                      detail=f"smoke failed: login with {SECRET} refused")
    assert len(received) == 2 and SECRET not in json.dumps(received) and "***" in received[0]["message"]


async def test_apprise_and_urllib3_never_log_the_alert_urls_tokens(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with alert_receiver() as (url, received):
        tokened = url.replace("json://", "json://hookuser:hook-Pw9931@") + "/hook-Tk77ab12"
        caplog.set_level(logging.DEBUG)
        assert await Alerter(dataclasses.replace(settings, alert_urls=(tokened,))).send(
            Alert(key="k", level="info", title="t", what_broke="x"))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert received and "apprise" in {r.name for r in caplog.records}  # apprise did log at DEBUG
    assert "hook-Tk77ab12" not in logged and "hook-Pw9931" not in logged


def test_known_secrets_are_kept_private_bounded_and_only_credentials_from_dotenv(
    settings: Settings, tmp_path: Path
) -> None:
    remember(settings, "shop", ["abc", "postgres", SECRET])  # too short and a default account: not kept
    remember(settings, "shop", [SECRET, "second-Kq11-secret"])
    assert sorted(known(settings, "shop")) == [SECRET, "second-Kq11-secret"]
    path = settings.state_dir / "secrets" / "shop.json"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    remember(settings, "../../etc/x", [SECRET])  # a hostile name stays inside the directory
    assert all(p.parent == path.parent for p in path.parent.rglob("*"))
    stack = tmp_path / "st"
    stack.mkdir()
    (stack / ".env").write_text("APP_VERSION=v0.7.6\nPORT=8080\nDEBUG=true\nDB_PASSWORD=pw-Zk81-qq93\n")
    scrub = stack_scrubber(settings, "other", stack, [["API_TOKEN=env-Tk55-value", "HOSTNAME=web"]])
    assert scrub("v0.7.6 on 8080 debug true web pw-Zk81-qq93 env-Tk55-value") == "v0.7.6 on 8080 debug true web *** ***"


async def test_the_recorder_scrubs_incidents_by_the_stacks_known_secrets(settings: Settings) -> None:
    from server.memory.recorder import MemoryRecorder

    stored: dict[str, Any] = {}

    class FakeMemory:
        def record_incident(self, **fields: Any) -> Any:
            stored.update(fields)
            return type("R", (), {"incident_id": "i1"})()

    remember(settings, "shop", [SECRET])
    recorder = MemoryRecorder(lambda: FakeMemory(), settings)  # type: ignore[arg-type,return-value]
    assert await recorder.record_incident(
        title=f"db down {SECRET}", symptoms=f"connecting with {SECRET}", stack="shop", resolution=SECRET,
        log_lines=["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "-----END PRIVATE KEY-----",
                   f"with {SECRET}"]) == "i1"
    assert SECRET not in json.dumps(stored) and "MIIEvQ" not in json.dumps(stored)
    assert stored["log_lines"] == ["***", "***", "***", "with ***"]


async def test_deploy_progress_and_answer_are_scrubbed_like_the_journal(settings: Settings) -> None:
    from types import SimpleNamespace

    from server.deploy.pipeline import Deployer
    from server.deploy.report import Phase, RollbackInfo
    from server.runtime import Runtime

    told: list[str] = []

    async def progress(step: float, total: float, message: str) -> None:
        told.append(message)

    deployer = Deployer(Runtime(settings), progress=progress)
    await deployer.tell("smoke exec said api_token=tok-Zz19-abcdef ok")
    assert told == ["smoke exec said api_token=*** ok"]
    said = "smoke exec printed api_token=tok-Zz19-abcdef"
    run = SimpleNamespace(stack=SimpleNamespace(secret_values=frozenset(), name="shop"), op=None, backup=None,
                          findings=[], phases=[Phase(name="smoke", status="failed", duration_s=1, detail=said)])
    report = deployer._report(run, "rolled_back", next_steps=[f"read the evidence: {said}"],  # type: ignore[arg-type]
                              rollback=RollbackInfo(why=said, result="restored"))
    assert "tok-Zz19" not in report.model_dump_json() and "api_token=***" in report.phases[0].detail
