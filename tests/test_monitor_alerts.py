"""Alerts through apprise to a real loopback HTTP receiver: delivered, de-duplicated, rate-limited."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from server.monitor.alerts import Alert, Alerter
from server.settings import Settings
from tests.helpers_monitor import alert_receiver

pytestmark = pytest.mark.anyio


async def test_critical_alert_delivered_with_what_broke_tried_and_todo(settings: Settings) -> None:
    with alert_receiver() as (url, received):
        alerter = Alerter(dataclasses.replace(settings, alert_urls=(url,)))
        ok = await alerter.send(Alert(key="budget:app/db", level="critical", title="app/db: gave up restarting",
                                      what_broke="db exited with code 1 (password=hunter2secret)",
                                      what_was_tried="3 restarts in 600 s",
                                      what_to_do="run diagnose_stack app"))
        assert ok
        assert len(received) == 1
        body = received[0]
        assert body["title"] == "app/db: gave up restarting"
        assert body["type"] == "failure"
        assert "db exited with code 1" in body["message"]
        assert "Tried: 3 restarts in 600 s" in body["message"]
        assert "Do: run diagnose_stack app" in body["message"]
        assert "hunter2secret" not in body["message"]


async def test_duplicates_suppressed_across_restarts_and_forget_rearms(settings: Settings) -> None:
    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        alert = Alert(key="k1", level="warning", title="t", what_broke="x")
        assert await Alerter(s).send(alert)
        assert not await Alerter(s).send(alert)  # a new process (restarted watcher) remembers
        assert len(received) == 1
        again = Alerter(s)
        again.forget("k1")
        assert await again.send(alert)
        assert len(received) == 2


async def test_rate_limit_holds_back_and_counts(settings: Settings) -> None:
    with alert_receiver() as (url, received):
        alerter = Alerter(dataclasses.replace(settings, alert_urls=(url,), alert_rate_per_min=2))
        results = [await alerter.send(Alert(key=f"k{i}", level="info", title=f"t{i}", what_broke="x"))
                   for i in range(4)]
        assert results == [True, True, False, False]
        assert len(received) == 2
        alerter._recent.clear()  # a minute later
        assert await alerter.send(Alert(key="k9", level="info", title="t9", what_broke="x"))
        assert "2 other alerts were held back" in received[-1]["message"]


async def test_unreachable_receiver_fails_softly(settings: Settings, tmp_path: Path) -> None:
    alerter = Alerter(dataclasses.replace(settings, alert_urls=("json://127.0.0.1:9/none",)))
    assert not await alerter.send(Alert(key="k", level="critical", title="t", what_broke="x"))
    assert alerter.failed == 1


def test_settings_read_alert_urls() -> None:
    s = Settings.from_env({"DSM_ALERT_URLS": "json://a.example/x, ntfy://topic", "DSM_ALERT_RATE_PER_MIN": "5"})
    assert s.alert_urls == ("json://a.example/x", "ntfy://topic")
    assert s.alert_rate_per_min == 5


async def test_deploy_outcome_announced(settings: Settings) -> None:
    from server.monitor.alerts import announce_outcome

    with alert_receiver() as (url, received):
        s = dataclasses.replace(settings, alert_urls=(url,))
        assert await announce_outcome(s, stack="app", kind="deploy", status="rolled_back", operation_id="op1",
                                      detail="web unhealthy after update to 1.1", what_to_do="check the release")
        assert await announce_outcome(s, stack="app", kind="deploy", status="deployed", operation_id="op2")
        assert [r["type"] for r in received] == ["warning", "success"]
        assert received[0]["title"] == "app: deploy rolled_back" and "Do: check the release" in received[0]["message"]
