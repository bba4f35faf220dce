"""Result shapes of the monitoring tools (pydantic, frozen: a report is evidence)."""

from __future__ import annotations

from pydantic import Field

from server.models import Finding, Frozen


class WatcherView(Frozen):
    """What the watcher last saw and did for a service (from DSM_STATE_DIR/watcher)."""

    seen: str | None = None
    seen_at: str | None = None
    action: str | None = Field(default=None, description="restart | recreate | gave-up")
    action_at: str | None = None
    outcome: str | None = None
    restarts_in_window: int = 0
    budget_exhausted: bool = False


class ServiceStatus(Frozen):
    service: str
    name: str
    container_id: str
    state: str
    health: str | None = Field(description="null: no healthcheck, or not running")
    restarts: int
    exit_code: int | None
    oom_killed: bool
    started_at: str | None
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = Field(description="null: unlimited")
    ports: list[str]
    image: str | None
    networks: list[str] = Field(default_factory=list, description="Networks the container is attached to now.")
    watcher: WatcherView | None = None
    node: str | None = Field(default=None, description="Swarm: the node the task runs (or failed) on.")
    error: str | None = Field(default=None, description="Swarm: the task's error.")


class StackStatus(Frozen):
    stack: str
    managed: bool = Field(description="Under the stacks root (else observe only).")
    state: str = Field(description="running | degraded | stopped")
    maintenance: dict[str, object] | None = None
    services: list[ServiceStatus]
    drift_since: str | None = Field(default=None, description="The deployment drift is compared with, or why "
                                    "not (no deployment recorded).")
    drift: list[str] = Field(default_factory=list, description="Changes by hand since that deployment: "
                             "'kind service: what (since when)'.")
    engine: str | None = None
    """The DSM_ENGINES engine it runs on (null with one engine)."""


class StatusReport(Frozen):
    stacks: list[StackStatus]
    problems: list[str] = Field(default_factory=list)


class LogLine(Frozen):
    service: str
    time: str | None
    text: str


class LogsPage(Frozen):
    stack: str
    lines: list[LogLine] = Field(description="Oldest first, secrets redacted.")
    truncated: bool = Field(description="More lines exist before this page.")
    next_until: str | None = Field(description="Pass as `until` to read the page before this one.")
    cut: str | None = Field(default=None, description="What was shortened or left out to bound the page.")


class SimilarIncident(Frozen):
    incident_id: str
    title: str
    stack: str | None = None
    root_cause: str | None = None
    resolution: str | None = None
    score: float | None = Field(default=None, description="Relevance: cosine similarity with the symptoms, 0-1.")


class DiagnosisFinding(Finding):
    """A Finding with the most likely cause of what was observed."""

    likely_cause: str = Field(description="The most likely cause, in one sentence.")


class Diagnosis(Frozen):
    stack: str
    healthy: bool = Field(description="No error findings.")
    findings: list[DiagnosisFinding]
    similar_incidents: list[SimilarIncident]
    next_steps: list[str]
    drift: str | None = Field(default=None, description="Deployment drift was compared with, or why not.")
    engine: str | None = None
    """The DSM_ENGINES engine diagnosed (null with one engine)."""


class ServiceHealth(Frozen):
    service: str
    verdict: str = Field(description="ready | waiting | failed")
    why: str


class HealthAfter(Frozen):
    """The health gate a deploy uses, run on the services acted on (short timeout)."""

    ok: bool
    timeout_s: float
    failure: str = ""
    services: list[ServiceHealth] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)


class ControlResult(Frozen):
    stack: str
    action: str
    operation_id: str | None = Field(description="Journal id (operation_status shows it).")
    services: list[str] = Field(description="Services acted on.")
    maintenance: dict[str, object] | None = None
    detail: str
    health: HealthAfter | None = Field(default=None, description="start/restart: health after the act.")
