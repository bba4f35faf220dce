"""What each recorded deployment left running: the baseline drift is measured against (issue 18).

After every successful deploy and rollback (the state our last act left), the pipeline records,
next to the deployment's files (``DSM_STATE_DIR/deployments/<stack>/``, server.deploy.snapshots):

- per service: its containers (ids), config hash (``com.docker.compose.config-hash``), image id,
  image reference and registry digest, the networks each container was attached to, and the
  replica count;
- a sha256 of each compose file and of ``.env`` (hashes only: ``.env`` holds secrets).

``<deployment>/BASELINE.json`` keeps it with that deployment; ``baseline.json`` is the newest one,
one small file read by stack_status, diagnose_stack, every plan and the watcher's passes. It is
local on purpose: the memory record (Qdrant) is slower and may be queued.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.engine import ContainerSummary, Engine
from server.settings import Settings
from server.statefiles import private_dir, write_private

log = logging.getLogger("docker_stack_mcp.monitor")

HASH_LABEL = "com.docker.compose.config-hash"
ONEOFF_LABEL = "com.docker.compose.oneoff"
LATEST = "baseline.json"
VERSION = 1


@dataclass(frozen=True)
class ServiceBaseline:
    replicas: int
    config_hash: str
    image: str
    image_id: str
    digest: str | None
    containers: dict[str, list[str]] = field(default_factory=dict)
    """Container id (12 characters, as listed) -> the networks it was attached to."""


@dataclass(frozen=True)
class Baseline:
    stack: str
    deployment_id: str
    kind: str
    recorded_at: str
    recorded_epoch: float
    files: dict[str, str]
    services: dict[str, ServiceBaseline]

    def to_json(self) -> str:
        return json.dumps({
            "version": VERSION, "stack": self.stack, "deployment_id": self.deployment_id, "kind": self.kind,
            "recorded_at": self.recorded_at, "recorded_epoch": self.recorded_epoch, "files": self.files,
            "services": {n: s.__dict__ for n, s in sorted(self.services.items())}}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Baseline:
        data = json.loads(text)
        if data.get("version") != VERSION:
            raise ValueError(f"baseline version {data.get('version')!r}")
        return cls(stack=str(data["stack"]), deployment_id=str(data["deployment_id"]), kind=str(data["kind"]),
                   recorded_at=str(data["recorded_at"]), recorded_epoch=float(data["recorded_epoch"]),
                   files={str(k): str(v) for k, v in data["files"].items()},
                   services={str(n): ServiceBaseline(**s) for n, s in data["services"].items()})


def stack_dir(settings: Settings, stack: str) -> Path:
    return settings.state_dir / "deployments" / stack


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of the stack's compose files (COMPOSE_FILE honoured, our override left out) and .env,
    by their path relative to the stack directory."""
    from server.deploy.project import user_files

    out: dict[str, str] = {}
    for path in [*user_files(directory), directory / ".env"]:
        try:
            rel = str(path.absolute().relative_to(directory.absolute()))
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        except (OSError, ValueError):
            continue
    return out


def image_digest(attrs: dict[str, Any] | None) -> str | None:
    digests = [str(d) for d in (attrs or {}).get("RepoDigests") or []]
    return digests[0] if digests else None


async def capture(engine: Engine, stack: str, directory: Path, deployment_id: str, kind: str) -> Baseline:
    from server.operations.models import now_iso

    summaries = [c for c in await engine.compose_containers(stack) if c.labels.get(ONEOFF_LABEL) != "True"]
    grouped: dict[str, list[ContainerSummary]] = {}
    for c in summaries:
        grouped.setdefault(c.service or c.name, []).append(c)
    digests: dict[str, str | None] = {}
    services: dict[str, ServiceBaseline] = {}
    for name, cs in sorted(grouped.items()):
        first = cs[0]
        image_id = first.image_id or ""
        if image_id and image_id not in digests:
            digests[image_id] = image_digest(await engine.image_attrs(image_id))
        services[name] = ServiceBaseline(
            replicas=len(cs), config_hash=first.labels.get(HASH_LABEL, ""), image=first.image or "",
            image_id=image_id, digest=digests.get(image_id),
            containers={c.id: sorted(c.networks or ()) for c in cs})
    return Baseline(stack=stack, deployment_id=deployment_id, kind=kind, recorded_at=now_iso(),
                    recorded_epoch=time.time(), files=file_hashes(directory), services=services)


async def record(settings: Settings, engine: Engine, stack: str, directory: Path, deployment_id: str,
                 kind: str, only: list[str] | None = None) -> bool:
    """Record what ``deployment_id`` left running (after a successful deploy or rollback).
    ``only``: the services a partial deploy acted on; the others keep what the previous record
    says (a change by hand to a service the deploy did not touch stays drift). Never raises:
    False (logged) when it could not be recorded; drift is then not compared."""
    try:
        base = await capture(engine, stack, directory, deployment_id, kind)
        previous = load(settings, stack) if only else None
        if only and previous is not None:
            base = dataclasses.replace(base, services={
                **{n: s for n, s in base.services.items() if n in only},
                **{n: s for n, s in previous.services.items() if n not in only}})
        where = private_dir(stack_dir(settings, stack))
        text = base.to_json()
        write_private(private_dir(where / deployment_id) / "BASELINE.json", text)
        write_private(where / LATEST, text)
        return True
    except Exception as exc:  # a nicety of the record: the deploy itself ended as it went
        log.warning("could not record the drift baseline of %s (%s): %s", stack, deployment_id, exc)
        return False


def load(settings: Settings, stack: str) -> Baseline | None:
    """The newest baseline of ``stack``, or None when none was recorded (or it is unreadable)."""
    try:
        return Baseline.from_json((stack_dir(settings, stack) / LATEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("drift baseline of %s unreadable: %s", stack, exc)
        return None
