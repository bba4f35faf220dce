"""Pure logic of the deploy package: the critical-line pattern set, the log-rate and pressure
triggers, the per-container health judgement, the override file, and strategies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.deploy import override
from server.deploy.health import Watched, assess
from server.deploy.project import user_files
from server.deploy.verify import burst, critical_kind, sustained, usage_percent

CRITICAL = [
    ("panic: runtime error: invalid memory address or nil pointer dereference", "panic"),
    ("goroutine 1 [running]:", "panic"),
    ("thread 'main' panicked at src/main.rs:4:5", "panic"),
    ("2024/05/01 FATAL: could not open file", "fatal"),
    ("fatal error: all goroutines are asleep - deadlock!", "fatal"),
    ("Traceback (most recent call last):", "traceback"),
    ("Exception in thread \"main\" java.lang.IllegalStateException", "traceback"),
    ("UnhandledPromiseRejection: boom", "traceback"),
    ("java.lang.OutOfMemoryError: Java heap space", "out-of-memory"),
    ("FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory", "fatal"),
    ("malloc: Cannot allocate memory", "out-of-memory"),
    ("psycopg2.OperationalError: could not connect to server: Connection refused", "database-connection"),
    ('FATAL:  password authentication failed for user "app"', "fatal"),
    ("error: password authentication failed for user app", "database-connection"),
    ("sorry, too many clients already", "database-connection"),
    ("SQLSTATE[HY000] [2002] Connection refused", "database-connection"),
    ("MongoNetworkError: failed to connect to server", "database-connection"),
    ("connect ECONNREFUSED 172.18.0.2:5432", "database-connection"),
    ("GET /healthz 200 1ms", None),
    ("level=info msg=\"connection refused by upstream example.org, retrying\"", None),
    ("INFO using fatalistic scheduler", None),
]


@pytest.mark.parametrize(("line", "kind"), CRITICAL)
def test_critical_patterns(line: str, kind: str | None) -> None:
    assert critical_kind(line) == kind


def test_connection_refused_counts_only_for_our_own_dependencies() -> None:
    deps = frozenset({"db", "redis", "api"})
    assert critical_kind("dial tcp redis:6379: connect: connection refused", deps) == "dependency-refused"
    assert critical_kind("dial tcp 10.0.0.9:443: connect: connection refused", deps) is None
    assert critical_kind("failed to connect to api:8080", deps) == "dependency-refused"


def test_burst_is_more_than_ten_within_a_minute() -> None:
    assert not burst([float(i) for i in range(10)])
    assert burst([float(i) for i in range(11)])
    assert not burst([i * 7.0 for i in range(30)])  # ~8.6 a minute, steady
    assert burst([0, 100, *[200 + i for i in range(11)]])


def test_pressure_must_be_sustained() -> None:
    assert not sustained([(0, 99.0)], 30)
    assert not sustained([(0, 99.0), (2, 99.0), (4, 50.0), (6, 99.0), (8, 99.0)], 30)
    assert not sustained([(0, 99.0), (2, 99.0), (4, 99.0)], 30)  # 3 samples but only 4 s
    assert sustained([(0, 99.0), (4, 99.0), (8, 99.0), (12, 98.0)], 30)
    assert sustained([(0, 96.0), (3, 97.0), (6, 99.0)], 10)  # short window: half of it is enough


def test_usage_percent_against_limits() -> None:
    info = {"HostConfig": {"Memory": 100 * 2**20, "NanoCpus": 500_000_000}}
    stats = {"memory_stats": {"usage": 99 * 2**20, "stats": {"inactive_file": 2**20}},
             "cpu_stats": {"cpu_usage": {"total_usage": 1_500}, "system_cpu_usage": 10_000, "online_cpus": 2},
             "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 8_000}}
    mem, cpu = usage_percent(stats, info)
    assert mem == pytest.approx(98.0)
    assert cpu == pytest.approx(100.0)  # 0.25 of 2 CPUs = 0.5 CPU = all of the 0.5 limit
    assert usage_percent(stats, {"HostConfig": {}}) == (None, None)


def _info(status: str = "running", health: str | None = None, restarts: int = 0, exit_code: int = 0,
          oom: bool = False, started_ago: float = 100.0, log: str = "") -> dict:
    started = time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z", time.gmtime(time.time() - started_ago))
    state: dict = {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "StartedAt": started}
    if health:
        state["Health"] = {"Status": health, "Log": [{"Output": log}]}
    return {"Name": "/p-web-1", "State": state, "RestartCount": restarts}


def test_assess_each_rule() -> None:
    web, job = Watched("web"), Watched("job", one_shot=True)
    now = time.time()
    assert assess(_info(health="healthy"), web, baseline_restarts=0, now=now).verdict == "ready"
    assert assess(_info(health="starting"), web, baseline_restarts=0, now=now).verdict == "waiting"
    bad = assess(_info(health="unhealthy", log="connection refused"), web, baseline_restarts=0, now=now)
    assert bad.verdict == "failed" and "connection refused" in bad.evidence[0]
    assert "restart loop" in assess(_info(restarts=2), web, baseline_restarts=1, now=now).why
    assert assess(_info(restarts=2, health="healthy"), web, baseline_restarts=2, now=now).verdict == "ready"
    assert "OOMKilled" in assess(_info(oom=True), web, baseline_restarts=0, now=now).why
    assert assess(_info("exited", exit_code=0), web, baseline_restarts=0, now=now).verdict == "failed"
    assert assess(_info("exited", exit_code=0), job, baseline_restarts=0, now=now).verdict == "ready"
    assert assess(_info("exited", exit_code=2), job, baseline_restarts=0, now=now).verdict == "failed"
    assert assess(_info(), job, baseline_restarts=0, now=now).verdict == "waiting"
    # No healthcheck (waived): ready only after staying up for the grace period.
    assert assess(_info(started_ago=1), web, baseline_restarts=0, now=now).verdict == "waiting"
    assert assess(_info(started_ago=10), web, baseline_restarts=0, now=now).verdict == "ready"


def test_override_pins_and_compose_file(tmp_path: Path) -> None:
    d = tmp_path / "app"
    d.mkdir()
    (d / "compose.yaml").write_text("services: {web: {image: a:1}}\n")
    (d / "compose.override.yaml").write_text("services: {web: {environment: {X: '1'}}}\n")
    (d / ".env").write_text("TZ=UTC\n")
    assert user_files(d) == [d / "compose.yaml", d / "compose.override.yaml"]
    override.write_pins(d, {"web": "dsm-pin/app-web:1"})
    assert override.pinned_images(d) == {"web": "dsm-pin/app-web:1"}
    env = (d / ".env").read_text()
    assert "TZ=UTC" in env and "COMPOSE_FILE=compose.yaml:compose.override.yaml:compose.dsm.yaml" in env
    assert user_files(d) == [d / "compose.yaml", d / "compose.override.yaml"]  # ours is never a user file
    assert override.clear_pins(d)
    assert not (d / "compose.dsm.yaml").exists() and (d / ".env").read_text() == "TZ=UTC\n"
    assert not override.clear_pins(d)


def test_user_compose_file_is_kept(tmp_path: Path) -> None:
    d = tmp_path / "app"
    d.mkdir()
    (d / "base.yaml").write_text("services: {web: {image: a:1}}\n")
    (d / "prod.yaml").write_text("services: {web: {restart: always}}\n")
    (d / ".env").write_text("COMPOSE_FILE=base.yaml:prod.yaml\n")
    override.write_pins(d, {"web": "dsm-pin/app-web:1"})
    assert "COMPOSE_FILE=base.yaml:prod.yaml:compose.dsm.yaml" in (d / ".env").read_text()
    override.clear_pins(d)
    assert (d / ".env").read_text() == "COMPOSE_FILE=base.yaml:prod.yaml\n"


def test_xdsm_verify_s_and_restore_on_rollback() -> None:
    from server.xdsm import XdsmInvalid, parse_service_settings, parse_stack_settings

    assert parse_stack_settings({"verify_s": 0}).verify_s == 0
    assert parse_stack_settings(None).verify_s is None
    svc = parse_service_settings("db", {"verify_s": 90, "backup": {"restore_on_rollback": False}})
    assert svc.verify_s == 90 and svc.backup.restore_on_rollback is False
    assert parse_service_settings("db", {}).backup.restore_on_rollback is True
    for bad in ({"verify_s": -1}, {"verify_s": 100_000}, {"verify_s": "soon"}):
        with pytest.raises(XdsmInvalid):
            parse_stack_settings(bad)
