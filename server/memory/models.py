"""What memory returns: frozen pydantic models, used as the tools' structured output."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.models import Frozen

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")
DeploymentOutcome = Literal["success", "failure", "rolled_back", "rollback_failed"]
DEPLOYMENT_OUTCOMES: tuple[str, ...] = ("success", "failure", "rolled_back", "rollback_failed")
PatternOutcome = Literal["success", "failure"]
SearchMode = Literal["hybrid", "lexical"]
Kind = Literal["incident", "pattern", "deployment"]

_MODE = ("hybrid: dense (all-MiniLM-L6-v2) and BM25 fused with RRF; lexical: BM25 only, because the "
         "embedding model is not available (see note)")


class IncidentHit(Frozen):
    incident_id: str
    title: str
    score: float = Field(description="Fused rank score; compare within one result list only.")
    relevance: float | None = Field(
        default=None, description="Cosine similarity with the query, 0-1, the same at any memory size; null "
        "when lexical.")
    stack: str | None
    service: str | None
    severity: Severity
    symptoms: str
    root_cause: str | None
    resolution: str | None
    time: str = Field(description="When it was last seen (ISO 8601, UTC).")
    first_seen: str
    occurrences: int = Field(description="How many times this same incident was recorded.")
    tags: list[str]
    signature_match: bool = Field(
        description="True when a line of the query has the same error signature as a log line of this incident.")


class IncidentSearch(Frozen):
    results: list[IncidentHit]
    mode: SearchMode = Field(description=_MODE)
    note: str | None = Field(default=None, description="Why the search ran lexical-only, or other caveats.")


class IncidentRecorded(Frozen):
    incident_id: str
    created: bool = Field(description="False when the same incident existed and was updated instead.")
    occurrences: int
    signatures: list[str] = Field(description="Error signatures stored for the log and symptom lines.")
    mode: SearchMode = Field(description="hybrid when the dense vector was stored too; lexical otherwise.")


class Incident(Frozen):
    incident_id: str
    title: str
    symptoms: str
    root_cause: str | None
    resolution: str | None
    stack: str | None
    service: str | None
    severity: Severity
    tags: list[str]
    log_lines: list[str] = Field(description="Stored log lines (secrets masked), at most 50.")
    signatures: list[str]
    first_seen: str
    last_seen: str
    occurrences: int
    source: str = Field(description="'agent' (record_incident) or the pipeline that captured it.")
    deployment_id: str | None = None
    image_digests: dict[str, str] = Field(default_factory=dict)
    time_to_recover_s: float | None = None
    outcome: str | None = None


class PatternHit(Frozen):
    pattern_id: str
    title: str
    score: float
    steps: list[str]
    stack: str | None = Field(description="null: applies to any stack.")
    service: str | None
    operation: str | None = Field(description="deploy, update, rollback, backup, restore, migrate, ...")
    successes: int
    failures: int
    last_outcome: str | None
    last_used: str | None
    tags: list[str]
    notes: str | None


class PatternSearch(Frozen):
    results: list[PatternHit]
    mode: SearchMode = Field(description=_MODE)
    note: str | None = None


class PatternRecorded(Frozen):
    pattern_id: str
    created: bool = Field(description="False when a pattern with this title and scope existed and was updated.")
    successes: int
    failures: int


class Pattern(Frozen):
    pattern_id: str
    title: str
    steps: list[str]
    stack: str | None
    service: str | None
    operation: str | None
    tags: list[str]
    notes: str | None
    successes: int
    failures: int
    last_outcome: str | None
    last_used: str | None
    history: list[dict[str, str]] = Field(default_factory=list,
                                          description="The last outcomes: time, outcome, notes.")


class Deployment(Frozen):
    deployment_id: str
    stack: str
    services: list[str]
    image_digests: dict[str, str]
    outcome: DeploymentOutcome
    duration_s: float | None
    time: str = Field(description="When it finished (ISO 8601, UTC).")
    strategy: str | None = None
    error_signatures: list[str] = Field(default_factory=list)
    notes: str | None = None
    pattern_id: str | None = None
    incident_id: str | None = None
    operation_id: str | None = None


class DeploymentList(Frozen):
    deployments: list[Deployment]


class Deleted(Frozen):
    id: str
    kind: Kind
    deleted: bool = Field(description="False when nothing had this id (deleting twice is harmless).")


class MemoryStatus(Frozen):
    backend: Literal["embedded", "server"]
    location: str
    mode: SearchMode
    model_state: str = Field(description="not_loaded, loading, downloading, ready or unavailable.")
    model_detail: str
    incidents: int
    patterns: int
    deployments: int
