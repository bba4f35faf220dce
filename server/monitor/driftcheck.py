"""Drift: what changed behind the server's back since the last recorded deployment (issue 18).

The running stack and its files are compared with the baseline the last successful deploy or
rollback recorded (server.monitor.baseline). Each difference is one :class:`DriftItem`, with what
changed and since when (the container's creation time, the file's modification time; ``after T``
when only the deployment bounds it):

- ``removed``: a service of the deployment has no container now; ``added``: a service the
  deployment did not run has one;
- ``image``: a container runs another image (id, with the digests) than the deployment left;
- ``config``: a container was recreated with another config hash (``docker compose up`` by hand
  after an edit); ``recreated``: a container replaced with the same configuration and image;
- ``replicas``: another number of containers for a service (``--scale`` by hand);
- ``network``: a container detached from (or attached to) a network (``docker network disconnect``:
  the config hash does not change, only this tells);
- ``file``: a compose file or ``.env`` edited, created or removed since.

Our own acts since the deployment are not drift: a container created, or a file written, while one
of our journaled operations ran (the watcher's recovery, stack_control, a backup restore) is left
out, and so is a removal by stack_control. A stack with nothing recorded has no drift, only the note
"no deployment recorded"; when the journal holds a newer deploy or rollback than the baseline (one
that failed, or is running) nothing is compared either: the note says which.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.engine import ContainerSummary, Engine, events_between
from server.monitor.baseline import HASH_LABEL, ONEOFF_LABEL, Baseline, ServiceBaseline, file_hashes, image_digest
from server.monitor.baseline import load as load_baseline
from server.monitor.watchstate import iso_to_epoch
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.monitor")

NO_DEPLOYMENT = "no deployment recorded"
_CHANGED_NOTHING = frozenset({"unchanged", "blocked", "planned", "adopted"})
_OURS_KINDS = ("restore", "control", "recovery", "backup")
_SLACK_S = 2.0
MAX_ITEMS = 12
"""Results are size-budgeted: more items are counted in the last one."""


@dataclass(frozen=True)
class DriftItem:
    """One change made behind the server's back since the last recorded deployment."""

    kind: str
    service: str | None
    change: str
    since: str
    """When (container created, file modified); ``after T``: only bounded by the deployment at T."""

    def line(self) -> str:
        return f"{self.kind} {self.service or 'files'}: {self.change} (since {self.since})"


@dataclass(frozen=True)
class DriftReport:
    deployment: str | None = None
    """The deployment compared with."""
    note: str | None = None
    """Why nothing was compared (no deployment recorded, a newer deploy failed or runs)."""
    items: list[DriftItem] = field(default_factory=list)

    @property
    def since(self) -> str:
        """What a result says drift is measured from: the deployment, or why nothing was compared."""
        return self.note or f"deployment {self.deployment}"

    def lines(self) -> list[str]:
        return [i.line() for i in self.items]

    def for_plan(self) -> list[str]:
        """A plan's ``drift``: the lines, or the one reason nothing was compared."""
        return [f"not compared: {self.note}"] if self.note else self.lines()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _short(value: str | None) -> str:
    text = (value or "?").rsplit("@", 1)[-1]
    return text.removeprefix("sha256:")[:12]


class _Ours:
    """Our journaled operations since the baseline: time windows, and stack_control removals."""

    def __init__(self, records: Iterable[Any], after: float) -> None:
        self.windows: list[tuple[float, float]] = []
        self.removed: list[list[str]] = []
        now = time.time()
        for r in records:
            start = iso_to_epoch(getattr(r, "started_at", None))
            end = iso_to_epoch(getattr(r, "ended_at", None)) or now
            if start is None or end < after:
                continue
            self.windows.append((start - _SLACK_S, end + _SLACK_S))
            params = getattr(r, "params", None) or {}
            if getattr(r, "kind", "") == "control" and params.get("action") == "remove":
                self.removed.append([str(s) for s in params.get("services") or []])

    def made(self, epoch: float | None) -> bool:
        return epoch is not None and any(a <= epoch <= b for a, b in self.windows)

    def removed_service(self, service: str) -> bool:
        return any(not services or service in services for services in self.removed)


def _journal(settings: Settings, operations: Any) -> Any:
    if operations is not None:
        return operations
    from server.operations import Operations

    return Operations(settings)


def _stale(ops: Any, stack: str, base: Baseline) -> str | None:
    """A deploy or rollback newer than the baseline (failed, interrupted, running): its note."""
    for h in ops.history(stack, kinds=("deploy", "rollback"), limit=50):
        if h.operation_id == base.deployment_id:
            return None
        if h.status in _CHANGED_NOTHING:
            continue
        return (f"{h.kind} {h.operation_id} ({h.status}) is newer than deployment {base.deployment_id}: "
                "drift not compared until a deploy or rollback succeeds")
    return None


async def check(settings: Settings, engine: Engine, stack: str, directory: Path | None,
                containers: list[ContainerSummary], *, services: set[str] | None = None,
                operations: Any = None) -> DriftReport:
    """Drift of ``stack`` (its Compose containers as listed now) from its last recorded deployment.
    ``services``: only these (a plan for some services); files are always compared. Never raises
    for a missing or unreadable record: the note says why nothing was compared."""
    base = load_baseline(settings, stack)
    if base is None:
        return DriftReport(note=NO_DEPLOYMENT)
    try:
        ops = _journal(settings, operations)
        stale = _stale(ops, stack, base)
        ours = _Ours(ops.history(stack, kinds=_OURS_KINDS, limit=100), base.recorded_epoch)
    except Exception as exc:  # no journal (read-only state, first start): compare without it
        log.debug("journal of %s unavailable for drift: %s", stack, exc)
        stale, ours = None, _Ours((), base.recorded_epoch)
    if stale:
        return DriftReport(deployment=base.deployment_id, note=stale)
    items = await _containers(engine, base, containers, services, ours)
    if directory is not None:
        items += _files(base, directory, ours)
    if len(items) > MAX_ITEMS:
        rest = len(items) - MAX_ITEMS + 1
        items = [*items[:MAX_ITEMS - 1], DriftItem(kind=items[-1].kind, service=None,
                                                   change=f"and {rest} more change(s)", since=items[-1].since)]
    return DriftReport(deployment=base.deployment_id, items=items)


async def _containers(engine: Engine, base: Baseline, containers: list[ContainerSummary],
                      only: set[str] | None, ours: _Ours) -> list[DriftItem]:
    after = f"after {base.recorded_at}"
    grouped: dict[str, list[ContainerSummary]] = {}
    for c in containers:
        if c.labels.get(ONEOFF_LABEL) != "True":
            grouped.setdefault(c.service or c.name, []).append(c)
    items: list[DriftItem] = []
    for name in sorted(set(base.services) | set(grouped)):
        if only is not None and name not in only:
            continue
        b, cs = base.services.get(name), sorted(grouped.get(name, []), key=lambda c: c.created or 0)
        if b is None:
            new = [c for c in cs if not ours.made(c.created)]
            if new:
                items.append(DriftItem(kind="added", service=name, since=_at(new[-1].created, after),
                                       change=f"{len(new)} container(s) of a service deployment "
                                       f"{base.deployment_id} did not run ({new[-1].image})"))
            continue
        if not cs:
            if not ours.removed_service(name):
                items.append(DriftItem(kind="removed", service=name, since=after,
                                       change=f"its container(s) were removed (the deployment ran {b.replicas})"))
            continue
        items += await _service(engine, name, b, cs, ours, after)
    return items


async def _service(engine: Engine, name: str, b: ServiceBaseline, cs: list[ContainerSummary], ours: _Ours,
                   after: str) -> list[DriftItem]:
    items: list[DriftItem] = []
    new = [c for c in cs if c.id not in b.containers and not ours.made(c.created)]
    other_image = next((c for c in new if b.image_id and c.image_id and c.image_id != b.image_id), None)
    other_config = next((c for c in new if b.config_hash and c.labels.get(HASH_LABEL, b.config_hash)
                         != b.config_hash), None)
    if other_image is not None:
        digest = image_digest(await engine.image_attrs(other_image.image_id or ""))
        items.append(DriftItem(kind="image", service=name, since=_at(other_image.created, after), change=(
            f"{other_image.name} runs {other_image.image} ({_short(digest or other_image.image_id)}); the deployment "
            f"left {b.image} ({_short(b.digest or b.image_id)})")))
    elif other_config is not None:
        items.append(DriftItem(kind="config", service=name, since=_at(other_config.created, after), change=(
            f"{other_config.name} was recreated with another configuration (config hash "
            f"{b.config_hash[:12]} -> {other_config.labels.get(HASH_LABEL, '')[:12]})")))
    if len(cs) != b.replicas:
        grew = len(cs) > b.replicas
        items.append(DriftItem(kind="replicas", service=name, since=_at(new[-1].created, after) if grew and new
                               else after, change=f"{b.replicas} -> {len(cs)} container(s)"))
    elif new and other_image is None and other_config is None:
        items.append(DriftItem(kind="recreated", service=name, since=_at(new[-1].created, after),
                               change=f"{new[-1].name} was recreated (same configuration and image)"))
    expected = next(iter(b.containers.values()), [])
    for c in cs:
        if c.networks is None or (ours.made(c.created) and c.id not in b.containers):
            continue
        was = set(b.containers.get(c.id, expected))
        missing, extra = sorted(was - set(c.networks)), sorted(set(c.networks) - was)
        if missing:
            when = await _disconnected_at(engine, c.id, missing[0], after)
            items.append(DriftItem(kind="network", service=name, since=when,
                                   change=f"{c.name} was detached from {', '.join(missing)}"))
        if extra:
            items.append(DriftItem(kind="network", service=name, since=after,
                                   change=f"{c.name} was attached to {', '.join(extra)}"))
    return items


def _at(epoch: float | None, fallback: str) -> str:
    return iso(epoch) if epoch else fallback


async def _disconnected_at(engine: Engine, container_id: str, network: str, after: str) -> str:
    """When ``docker network disconnect`` happened, from the engine's recent events (it keeps a
    bounded buffer: an old disconnect falls back to ``after`` the deployment)."""
    since = iso_to_epoch(after.removeprefix("after "))
    if since is None:
        return after
    try:
        events = await events_between(engine, int(since), int(time.time()) + 1,
                                      {"type": ["network"], "event": ["disconnect"], "network": [network]})
    except Exception as exc:
        log.debug("network events unavailable: %s", exc)
        return after
    times: list[float] = [float(e.get("time") or 0) for e in events if str(
        ((e.get("Actor") or {}).get("Attributes") or {}).get("container", "")).startswith(container_id)]
    latest = max(times, default=0.0)
    return iso(latest) if latest else after


def _files(base: Baseline, directory: Path, ours: _Ours) -> list[DriftItem]:
    now = file_hashes(directory)
    items: list[DriftItem] = []
    for rel in sorted(set(base.files) | set(now)):
        if base.files.get(rel) == now.get(rel):
            continue
        path = directory / rel
        try:
            mtime: float | None = path.stat().st_mtime
        except OSError:
            mtime = None
        if ours.made(mtime):
            continue
        what = "removed" if rel not in now else "created" if rel not in base.files else "edited"
        items.append(DriftItem(kind="file", service=None, change=f"{rel} {what} since the deployment",
                               since=iso(mtime) if mtime and what != "removed" else f"after {base.recorded_at}"))
    return items
