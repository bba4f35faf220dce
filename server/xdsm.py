"""The ``x-dsm`` contract: our per-stack and per-service settings inside compose files.

Top level::

    x-dsm:
      environment: production        # production (default) | staging | development
      critical: true                 # the whole stack is critical (blue-green when resources allow)
      verify_s: 30                   # verification window after a deploy, seconds (0 = none)
      engine: nas                    # the DSM_ENGINES engine it runs on (default: the first listed)
      mode: swarm                    # compose (default) | swarm: `docker stack deploy` on a swarm manager
      policy:
        severity: {image-unpinned: error, no-resource-limits: warning}   # or "off"
        waive:
          - {rule: host-path-mount, services: [netdata], reason: "reads /proc by design"}

Per service (``services.<name>.x-dsm``)::

      x-dsm:
        role: database               # database | cache | web | worker | proxy | one-shot (wins over
                                     # what server.roles reads off the image and its command)
        critical: true
        one_shot: true               # runs to completion (migrations, init); exempt from health rules
        waive: [{rule: missing-healthcheck, reason: "vendor image, watched by smoke test"}]
        update: {strategy: planned-downtime}   # auto | rolling | blue_green | planned_downtime | recreate
                                     # (hyphenated forms accepted)
        drain: ["touch", "/tmp/drain"]   # rolling: argv run in an old container to take it out of
                                     # traffic (default: off the service's DNS name, address kept)
        drain_s: 10                  # rolling: seconds between out of traffic and stopped
        backup:
          dump: ["pg_dumpall", "-U", "postgres"]            # argv run in the container, stdout = dump
          restore: ["psql", "-U", "postgres"]               # argv run in the container, stdin = dump
          restore_on_rollback: true  # a failed deploy that touched this database puts the dump back
        verify_s: 60                 # this service's verification window (the longest one wins)
        smoke:
          - {http: "http://127.0.0.1:8080/health", expect_status: 200, timeout_s: 5}
          - {exec: ["pg_isready", "-U", "postgres"], expect_exit: 0}
        recovery: {max_restarts: 3, window_s: 600, backoff_s: 10, enabled: true}

Top level, for the watcher (``docker-stack-mcp watch``)::

      watch_after_deploy_s: 600      # a service breaking this soon after deploy_stack is rolled back
      watch: {on_threshold: alert, unavailable_s: 120, memory_percent: 95, cpu_percent: 95,
              critical_lines_per_min: 10, database_errors: true}   # on_threshold: alert | restart

Simple values have label equivalents on the service: ``dsm.role``, ``dsm.critical``,
``dsm.one-shot``, ``dsm.strategy``, ``dsm.waive`` (comma-separated rule ids). ``x-dsm`` wins
over a label. Compose drops service-level ``x-`` keys when it renders, so service settings are
read from the screened source files; top-level ones survive rendering.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.errors import DsmError

Role = Literal["database", "cache", "web", "worker", "proxy", "one-shot"]
Strategy = Literal["auto", "rolling", "blue_green", "planned_downtime", "recreate"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Waiver(_Strict):
    rule: str
    reason: str = Field(min_length=1, description="Why the rule does not apply; shown with the waived finding.")
    services: list[str] | None = Field(default=None, description="Top level only: services it covers (all if null).")


class Policy(_Strict):
    severity: dict[str, Literal["error", "warning", "info", "off"]] = Field(default_factory=dict)
    waive: list[Waiver] = Field(default_factory=list)


class SmokeCheck(_Strict):
    http: str | None = None
    exec: list[str] | None = None
    expect_status: int = 200
    expect_exit: int = 0
    timeout_s: float = Field(default=5.0, gt=0, le=300)

    @field_validator("exec")
    @classmethod
    def _argv(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("exec needs at least one argument")
        return v

    @field_validator("http")
    @classmethod
    def _web_only(cls, v: str | None) -> str | None:
        # urllib opens file:// (and ftp://) too: a smoke check must not read host files or hang on a FIFO.
        if v is not None and not smoke_url_allowed(v):
            raise ValueError(f"http must be an http:// or https:// URL, not {v[:80]!r}")
        return v


def smoke_url_allowed(url: str) -> bool:
    """Only http(s) with a host: what a smoke check may fetch (checked at parse and again at run time)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


class BackupHooks(_Strict):
    dump: list[str] | None = None
    restore: list[str] | None = None
    restore_on_rollback: bool = Field(
        default=True, description="Put the dump back when a failed deployment touched this database."
    )


class Recovery(_Strict):
    """What the watcher may do for a service: restarts per window, first at once, then backoff doubling."""

    max_restarts: int = Field(default=3, ge=0, le=100)
    window_s: int = Field(default=600, ge=10, le=86_400)
    backoff_s: float = Field(default=10.0, ge=0, le=3600)
    enabled: bool = True


class WatchPolicy(_Strict):
    """The operator's critical thresholds for the watcher, and what crossing one does."""

    on_threshold: Literal["alert", "restart"] = "alert"
    unavailable_s: int = Field(default=120, ge=10, le=86_400)
    memory_percent: float = Field(default=95.0, gt=0, le=100)
    cpu_percent: float = Field(default=95.0, gt=0)
    critical_lines_per_min: int = Field(default=10, ge=1)
    database_errors: bool = True


class UpdateSettings(_Strict):
    strategy: Strategy = "auto"

    @field_validator("strategy", mode="before")
    @classmethod
    def _underscored(cls, value: Any) -> Any:
        """``blue-green``/``planned-downtime`` (the spelling published first) read as the tools spell them."""
        return value.replace("-", "_") if isinstance(value, str) else value


class StackSettings(_Strict):
    environment: Literal["production", "staging", "development"] = "production"
    mode: Literal["compose", "swarm"] = Field(default="compose", description="swarm: docker stack deploy on a "
                                              "swarm manager (server/deploy/swarm/).")
    critical: bool = False
    policy: Policy = Field(default_factory=Policy)
    verify_s: int | None = Field(default=None, ge=0, le=3600, description="Verification window after a deploy.")
    watch_after_deploy_s: int = Field(default=600, ge=0, le=86_400)
    watch: WatchPolicy = Field(default_factory=WatchPolicy)
    engine: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
                               description="The DSM_ENGINES engine the stack runs on (default: the first).")


class ServiceSettings(_Strict):
    role: Role | None = None
    critical: bool = False
    one_shot: bool = Field(default=False, alias="one-shot")
    waive: list[Waiver] = Field(default_factory=list)
    update: UpdateSettings = Field(default_factory=UpdateSettings)
    backup: BackupHooks = Field(default_factory=BackupHooks)
    smoke: list[SmokeCheck] = Field(default_factory=list)
    recovery: Recovery = Field(default_factory=Recovery)
    verify_s: int | None = Field(default=None, ge=0, le=3600, description="Verification window (longest wins).")
    drain: list[str] | None = Field(default=None, description="Rolling: argv that takes an old container out of "
                                    "traffic (default: off the service's DNS name, address kept).")
    drain_s: float = Field(default=10.0, ge=0, le=3600, description="Rolling: wait between out of traffic and stop.")

    @property
    def is_one_shot(self) -> bool:
        return self.one_shot or self.role == "one-shot"


class XdsmInvalid(DsmError):
    """An ``x-dsm`` block does not follow the schema."""


def parse_stack_settings(raw: Any) -> StackSettings:
    """Validate the top-level ``x-dsm`` block (``None`` gives the defaults)."""
    if raw is None:
        return StackSettings()
    try:
        return StackSettings.model_validate(raw)
    except ValidationError as exc:
        raise XdsmInvalid(f"top-level x-dsm is invalid: {_brief(exc)}", next_step="fix the x-dsm block") from None


def parse_service_settings(service: str, raw: Any, labels: dict[str, str] | None = None) -> ServiceSettings:
    """Merge ``dsm.*`` labels under the service's ``x-dsm`` block and validate the result."""
    merged: dict[str, Any] = {}
    for key, value in (labels or {}).items():
        if key == "dsm.role":
            merged["role"] = value
        elif key == "dsm.critical":
            merged["critical"] = str(value).lower() in {"1", "true", "yes"}
        elif key == "dsm.one-shot":
            merged["one-shot"] = str(value).lower() in {"1", "true", "yes"}
        elif key == "dsm.strategy":
            merged["update"] = {"strategy": value}
        elif key == "dsm.waive":
            merged["waive"] = [
                {"rule": r.strip(), "reason": "waived by label dsm.waive"} for r in str(value).split(",") if r.strip()
            ]
    if raw is not None and not isinstance(raw, dict):
        raise XdsmInvalid(f"x-dsm of service {service!r} must be a mapping, got {type(raw).__name__}")
    merged.update(raw or {})
    try:
        return ServiceSettings.model_validate(merged)
    except ValidationError as exc:
        raise XdsmInvalid(
            f"x-dsm of service {service!r} is invalid: {_brief(exc)}", next_step="fix the service's x-dsm block"
        ) from None


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5])
