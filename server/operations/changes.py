"""What each deployment changed, in human terms, for stack_history (issue 17).

A journal record holds the deploy report (images and digests per service, the phases) and the
scrubbed call (``env`` by name); the files each successful deployment ran with are kept by
server/deploy/snapshots.py under ``DSM_STATE_DIR/deployments/<stack>/<deployment_id>/``. From
those, per deployment and against the deployment before it:

- ``recreated``/``removed``: the services the deployment created, recreated or removed (the
  journal's ``actions``, whichever strategy ran them; older records: the ``up`` phase's detail,
  ``"web recreate, job create"``; a rollback, which has no plan, falls back to the services whose
  image differs);
- ``images``: the services whose image reference or digest differs;
- ``env_keys``: the NAMES of the variables added, removed or changed in .env and in the
  services' ``environment`` (values are compared here and never leave this module), plus the
  ``env`` argument's names;
- ``one_shots_run``: services the deployment (re)created that ended ``exited`` in a passing
  deployment (the health gate accepts an exit only from a one-shot, with code 0).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.operations.models import OperationRecord
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.operations")

GOOD = ("deployed", "unchanged")
"""A deployment whose services are what the stack ran afterwards: the baseline of the next one."""
_ACTIONS = ("create", "recreate", "remove")


class Changes(BaseModel):
    model_config = ConfigDict(frozen=True)

    recreated: list[str] = Field(default_factory=list, description="Services created or recreated.")
    removed: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list, description="Services whose image or digest changed.")
    env_keys: list[str] | None = Field(
        default=None, description="Names of variables added, removed or changed (.env, environment, env "
        "argument); never values. null: the files were not kept.")
    one_shots_run: list[str] = Field(default_factory=list)


def changes_of(settings: Settings, records: list[OperationRecord]) -> dict[str, Changes]:
    """``deployment_id -> Changes`` for ``records`` (newest first, as Operations.history gives
    them). The oldest record has no baseline: its changes are against nothing (all created)."""
    out: dict[str, Changes] = {}
    for i, rec in enumerate(records):
        before = next((r for r in records[i + 1:] if r.status in GOOD and r.result), None)
        out[rec.operation_id] = _one(settings, rec, before)
    return out


def _one(settings: Settings, rec: OperationRecord, before: OperationRecord | None) -> Changes:
    result = rec.result or {}
    now, then = _images(result), _images((before.result or {}) if before else {})
    images = sorted(s for s, ref in now.items() if s in then and then[s] != ref)
    acted = _up_actions(rec)
    recreated = sorted(s for s, a in acted.items() if a in ("create", "recreate"))
    if not acted and rec.kind == "rollback":
        recreated = sorted(set(images) | (set(now) - set(then)))
    states = {str(s.get("name")): s.get("state") for s in result.get("services") or [] if isinstance(s, dict)}
    one_shots = sorted(s for s in recreated if states.get(s) == "exited") if rec.status in GOOD else []
    env = _env_keys(settings, rec, before)
    passed = [str(k) for k in (rec.params or {}).get("env") or [] if isinstance(k, str)]
    if passed:
        env = sorted(set(env or []) | set(passed))
    return Changes(recreated=recreated, removed=sorted(s for s, a in acted.items() if a == "remove"),
                   images=images, env_keys=env, one_shots_run=one_shots)


def _images(result: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    rows = result.get("services") if isinstance(result.get("services"), list) else []
    return {str(r.get("name") or r.get("service")): (r.get("image"), r.get("image_digest") or r.get("digest"))
            for r in rows or [] if isinstance(r, dict) and (r.get("name") or r.get("service"))}


def _up_actions(rec: OperationRecord) -> dict[str, str]:
    """``service -> action`` of a deployment that got as far as changing containers: the journal's
    ``actions`` (the plan's changes, whichever strategy ran them), else, for records written before
    it, the ``up`` phase's detail."""
    names = {p.get("name") for p in rec.phases}
    actions = (rec.result or {}).get("actions")
    if isinstance(actions, dict):
        if not names & {"up", "rolling", "blue_green", "downtime"}:
            return {}
        return {str(s): str(a) for s, a in actions.items() if a in _ACTIONS}
    up = next((p for p in rec.phases if p.get("name") == "up"), None)
    acted: dict[str, str] = {}
    for item in str((up or {}).get("detail") or "").split(","):
        words = item.split()
        if len(words) == 2 and words[1] in _ACTIONS:
            acted[words[0]] = words[1]
    return acted


def _env_keys(settings: Settings, rec: OperationRecord, before: OperationRecord | None) -> list[str] | None:
    """Names of the variables whose value differs between the two deployments' kept files."""
    mine = _kept_env(settings, rec)
    if mine is None:
        return None
    theirs = _kept_env(settings, before) if before is not None else {}
    if theirs is None:
        return None
    return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))


def _kept_env(settings: Settings, rec: OperationRecord) -> dict[str, str] | None:
    """``name -> digest of its value`` from the files the deployment ran with: .env entries and
    each service's ``environment`` (as written, before interpolation). Digests, so that no value
    is held longer than this read; None when the files were not kept."""
    directory = settings.state_dir / "deployments" / rec.stack / rec.operation_id  # server/deploy/snapshots.py
    out: dict[str, str] = {}
    try:
        # FILES lists what was kept. A directory without it holds only the drift baseline (a failed
        # deploy's rollback records one under the failed id): its files were not kept, which is
        # not "every variable removed".
        names = [n for n in (directory / "FILES").read_text().splitlines() if n]
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.debug("kept files of %s unreadable: %s", rec.operation_id, exc)
        return None
    try:
        dotenv = directory / ".env"
        if ".env" in names and dotenv.is_file():
            from server.dotenv import parse_dotenv

            for key, value in parse_dotenv(dotenv.read_text(errors="replace"), environ={}).items():
                out[key] = _digest(value)
        kept = [directory / n for n in names if n.endswith((".yaml", ".yml")) and n != "compose.dsm.yaml"]
        for compose in reversed(kept):  # the merge order's last file wins, as Compose merges them
            for key, value in _environment(compose).items():
                out.setdefault(key, _digest(value))
    except (OSError, ValueError) as exc:
        log.debug("kept files of %s unreadable: %s", rec.operation_id, exc)
        return None
    return out


def _environment(path: Path) -> dict[str, str]:
    from server.yamlsafe import load_yaml

    try:
        data = load_yaml(path.read_text(errors="replace"), path.name).data
    except Exception:  # an unreadable kept file: no environment to compare, not an error of the history
        return {}
    out: dict[str, str] = {}
    services = data.get("services") if isinstance(data, dict) else None
    for name, body in (services or {}).items() if isinstance(services, dict) else ():
        env = body.get("environment") if isinstance(body, dict) else None
        items = env.items() if isinstance(env, dict) else (
            (str(e).partition("=")[0], str(e).partition("=")[2]) for e in env or [] if isinstance(e, str))
        for key, value in items:
            out[f"{name}.{key}"] = str(value)
    return out


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
