"""What the operation tools return (pydantic: the tools' output schemas)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.operations.changes import Changes
from server.operations.models import OperationKind, OperationRecord, OperationStatus


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Phase(_Frozen):
    name: str
    status: str = Field(description="running, ok, failed, skipped...")
    duration_s: float | None = None
    detail: str = ""


class OperationView(_Frozen):
    operation_id: str
    stack: str
    kind: OperationKind
    status: OperationStatus
    started_at: str
    ended_at: str | None = None
    updated_at: str | None = Field(None, description="Last progress the journal recorded.")
    elapsed_s: float = Field(description="Seconds from start to end (or to now while running).")
    pid: int = Field(description="Server process that ran it.")
    phases: list[Phase]
    params: dict[str, Any] = Field(description="Inputs, scrubbed; env as names only.")
    result: dict[str, Any] | None = Field(None, description="The final report; null while running.")

    @classmethod
    def of(cls, rec: OperationRecord) -> OperationView:
        return cls(
            operation_id=rec.operation_id, stack=rec.stack, kind=rec.kind, status=rec.status,
            started_at=rec.started_at, ended_at=rec.ended_at, updated_at=rec.updated_at,
            elapsed_s=_elapsed(rec.started_at, rec.ended_at), pid=rec.pid,
            phases=[Phase(name=str(p.get("name")), status=str(p.get("status")), duration_s=p.get("duration_s"),
                          detail=str(p.get("detail") or "")) for p in rec.phases],
            params=rec.params, result=rec.result,
        )


class ImageRef(_Frozen):
    service: str
    image: str | None = None
    digest: str | None = None


class DeploymentEntry(_Frozen):
    deployment_id: str = Field(description="== operation_id; pass to operation_status or rollback.")
    kind: OperationKind
    status: OperationStatus
    started_at: str
    ended_at: str | None = None
    images: list[ImageRef] = Field(default_factory=list)
    backup_id: str | None = None
    failed_images: list[ImageRef] = Field(
        default_factory=list, description="Rolled back: the images of the version that failed.")
    detail: str | None = Field(None, description="Why it failed, was interrupted or rolled back.")
    changes: Changes | None = Field(None, description="What it changed against the deployment before.")

    @classmethod
    def of(cls, rec: OperationRecord, changes: Changes | None = None) -> DeploymentEntry:
        result = rec.result or {}
        return cls(
            deployment_id=rec.operation_id, kind=rec.kind, status=rec.status, started_at=rec.started_at,
            ended_at=rec.ended_at, images=images_of(result), backup_id=backup_id_of(rec),
            failed_images=_failed_images(result), detail=_detail(rec), changes=changes,
        )


class StackHistory(_Frozen):
    stack: str
    deployments: list[DeploymentEntry] = Field(description="Newest first.")


def images_of(result: dict[str, Any]) -> list[ImageRef]:
    """Images with digests from a deploy/rollback report: ``services: [{name|service, image,
    image_digest|digest}]`` (the DeployReport shape), else ``images: [...]`` of the same keys."""
    rows = result.get("services")
    if not isinstance(rows, list) or not rows:
        rows = result.get("images")
    out: list[ImageRef] = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        service = row.get("service") or row.get("name")
        if not isinstance(service, str):
            continue
        image, digest = row.get("image"), row.get("image_digest") or row.get("digest")
        ref = ImageRef(service=service, image=image if isinstance(image, str) else None,
                       digest=digest if isinstance(digest, str) else None)
        if ref not in out:  # one row per container: a service's replicas running one image are one entry
            out.append(ref)
    return out


def backup_id_of(rec: Any) -> str | None:
    """The backup the operation took: in its result, else in its backup phase (journaled when the
    backup was taken, so an interrupted operation names it too)."""
    result = getattr(rec, "result", None) or {}
    if isinstance(result.get("backup_id"), str):
        return str(result["backup_id"])
    for phase in getattr(rec, "phases", None) or []:
        detail = str(phase.get("detail") or "")
        if phase.get("name") == "backup" and phase.get("status") == "ok" and detail.startswith("backup "):
            return detail.split()[1].rstrip(":")
    return None


def _failed_images(result: dict[str, Any]) -> list[ImageRef]:
    rollback = result.get("rollback")
    failed = rollback.get("failed_images") if isinstance(rollback, dict) else None
    if not isinstance(failed, dict):
        return []
    return [ImageRef(service=str(k), image=str(v)) for k, v in sorted(failed.items())]


def _detail(rec: OperationRecord) -> str | None:
    if rec.status in ("deployed", "unchanged", "planned", "running", "done"):
        return None
    result = rec.result or {}
    for key in ("error", "reason", "summary"):
        if isinstance(result.get(key), str) and result[key]:
            return str(result[key])[:300]
    rollback = result.get("rollback")
    if isinstance(rollback, dict) and isinstance(rollback.get("why"), str):
        return str(rollback["why"])[:300]
    failed = next((p for p in reversed(rec.phases) if p.get("status") == "failed"), None)
    if failed:
        return f"phase {failed.get('name')} failed: {failed.get('detail') or ''}".strip()[:300]
    return None


def _elapsed(started_at: str, ended_at: str | None) -> float:
    try:
        start = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(ended_at.replace("Z", "+00:00")) if ended_at else datetime.now(UTC)
    except ValueError:
        return 0.0
    return round(max(0.0, (end - start).total_seconds()), 3)
