"""What deploy_stack and rollback return: the plan and the report, as pydantic models."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.digest import Detail, briefly
from server.models import Finding, Frozen

Action = Literal["create", "recreate", "unchanged", "remove"]
DeployStatus = Literal["deployed", "unchanged", "rolled_back", "blocked", "failed", "planned", "busy"]


class ServicePlan(Frozen):
    service: str
    action: Action
    image_from: str | None = Field(default=None, description="Image id running now (null: none).")
    image_to: str | None = Field(default=None, description="Image reference to run.")
    pull: bool = Field(default=False, description="The image will be pulled: not local, or its tag moved.")
    digest_from: str | None = Field(default=None, description="Tag moved: the digest the local image has.")
    digest_to: str | None = Field(default=None, description="Tag moved: the digest its registry has now.")
    registry_note: str | None = Field(default=None, description="Why the tag could not be compared.")
    release_notes: str | None = Field(default=None, description="update_stack: the new image's release notes.")
    strategy: str = Field(default="recreate", description="What will run: rolling | blue_green | "
                          "planned_downtime | recreate.")
    strategy_reason: str | None = Field(default=None, description="The rule that chose the strategy.")
    reason: str


class BackupPlan(Frozen):
    files: bool = True
    images: list[str] = Field(default_factory=list, description="Services whose running image gets pinned.")
    volumes: list[str] = Field(default_factory=list, description="Named volumes archived.")
    dumps: list[str] = Field(default_factory=list, description="Database services dumped.")


class DeployPlan(Frozen):
    plan_id: str = Field(description="Pass back as plan_id to apply exactly this plan.")
    services: list[ServicePlan]
    volumes_to_create: list[str] = Field(default_factory=list)
    networks_to_create: list[str] = Field(default_factory=list)
    backup: BackupPlan
    findings: list[Finding] = Field(
        default_factory=list, description="What the plan changes about data (a database volume moved): confirm first."
    )
    drift: list[str] = Field(default_factory=list, description="Changes by hand since our last deployment, which "
                             "this deploy overwrites ('kind service: what (since when)'), or why not compared.")
    blocked: list[Finding] = Field(default_factory=list, description="Why this plan cannot run (a strategy asked "
                                   "for that the service's rules forbid): nothing is changed.")

    @property
    def changes(self) -> list[ServicePlan]:
        return [s for s in self.services if s.action != "unchanged"]


class Phase(Frozen):
    name: str
    status: Literal["ok", "failed", "skipped", "blocked"]
    duration_s: float
    detail: str = ""


class ServiceState(Frozen):
    name: str
    state: str
    health: str | None = None
    image: str | None = None
    image_digest: str | None = None


class RollbackInfo(Frozen):
    why: str
    to_deployment: str | None = Field(default=None, description="Deployment (operation) id rolled back to.")
    result: Literal["restored", "failed", "nothing_changed"]
    time_to_recover_s: float | None = Field(default=None, description="From the change to the old version passing.")
    data_check: str | None = Field(
        default=None, description="Tables and row counts after the restore against those at the dump.")
    failed_images: dict[str, str] | None = Field(default=None, description="service -> image of the failed version.")


class DeployReport(Frozen):
    status: DeployStatus
    stack: str
    deployment_id: str | None = None
    operation_id: str | None = None
    phases: list[Phase] = Field(default_factory=list)
    services: list[ServiceState] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    backup_id: str | None = None
    rollback: RollbackInfo | None = None
    incident_id: str | None = None
    plan: DeployPlan | None = None
    next_steps: list[str] = Field(default_factory=list)
    needs_confirm: str | None = Field(
        default=None, description="Dry run: the confirmation the real call will need (confirm=true), and why; "
        "null: none.")
    omitted: dict[str, int] = Field(
        default_factory=dict, description="Left out of this answer (detail='full' shows them): info_findings, "
        "unchanged_services, warning_details (fix and evidence of pre-flight warnings).")

    def for_the_caller(self, detail: Detail = "summary") -> DeployReport:
        """The answer as the tools give it. ``summary``: no info findings, one finding per rule
        listing its services, pre-flight warnings without fix and evidence (validate_compose
        gives them), no unchanged service that runs as it should; each left-out kind counted in
        ``omitted``. Errors always keep every detail. ``full``: the report as built."""
        if detail == "full":
            return self
        kept = [f for f in self.findings if f.severity != "info"]
        omitted = dict(self.omitted)
        if len(kept) < len(self.findings):
            omitted["info_findings"] = len(self.findings) - len(kept)
        kept, stripped = briefly(kept)
        if stripped:
            omitted["warning_details"] = stripped
        update: dict[str, object] = {"findings": kept}
        if self.plan is not None:
            same = {s.service for s in self.plan.services if s.action == "unchanged"}
            if same:
                omitted["unchanged_services"] = len(same)
                update["plan"] = self.plan.model_copy(
                    update={"services": [s for s in self.plan.services if s.service not in same]})
                update["services"] = [s for s in self.services if not (
                    s.name in same and s.state == "running" and s.health in (None, "healthy"))]
        update["omitted"] = omitted
        return self.model_copy(update=update)


def needs_confirm(stack: str, *, critical: bool, data_moves: list[str]) -> str | None:
    """What a dry run says the real call will need confirmed (confirm=true or the user's yes),
    in the order the deploy asks; None when nothing."""
    reasons = []
    if critical:
        reasons.append(f"critical stack {stack!r}")
    if data_moves:
        reasons.append(f"data move: {', '.join(data_moves)} would start on a new, empty data volume")
    return "; ".join(reasons) or None
