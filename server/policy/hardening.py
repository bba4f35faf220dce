"""Hardening: hints (info) of what a well-run stack also does, and warnings for what an operator
regrets later (no logs at all, no pids limit, a bind source that is not there). None of these
blocks a deployment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.policy.security import bind_device, is_sensitive_path, is_socket_path
from server.policy.shape import bind_mounts


def no_cap_drop(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        if "ALL" not in [str(c).upper() for c in svc.get("cap_drop") or []]:
            yield finding(
                "no-cap-drop",
                "runs with Docker's default capabilities",
                service=name,
                line=ctx.stack.line_of(name, "cap_drop"),
                fix="cap_drop: [ALL], then cap_add only what it needs (e.g. NET_BIND_SERVICE, CHOWN, SETUID)",
            )


def writable_rootfs(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        if not svc.get("read_only"):
            yield finding(
                "writable-rootfs",
                "the container's root filesystem is writable",
                service=name,
                line=ctx.stack.line_of(name, "read_only"),
                fix="read_only: true, with tmpfs: [/tmp] and volumes for the paths it writes",
            )


def no_new_privileges(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        opts = [str(o).replace("=", ":", 1).lower() for o in svc.get("security_opt") or []]
        if not any(o in ("no-new-privileges", "no-new-privileges:true") for o in opts):
            yield finding(
                "no-new-privileges",
                "processes may gain privileges through setuid binaries",
                service=name,
                line=ctx.stack.line_of(name, "security_opt"),
                fix='security_opt: ["no-new-privileges:true"]',
            )


def root_user(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        user = str(svc.get("user") or "")
        if user and user.split(":")[0] not in ("root", "0"):
            continue
        if not user and ctx.facts is not None:
            fact = ctx.facts.images.get(str(svc.get("image") or ""))
            if fact is not None and fact.user and fact.user.split(":")[0] not in ("root", "0"):
                continue
        why = "user: root" if user else "no user: in the file" + (
            "" if ctx.facts is not None else " (the image's default user was not checked)")
        yield finding(
            "root-user",
            f"runs as root ({why})",
            service=name,
            line=ctx.stack.line_of(name, "user"),
            fix='user: "1000:1000" (a user the image supports; check the image docs)',
        )


def no_log_rotation(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        logging = svc.get("logging") or {}
        driver = logging.get("driver") or "json-file"
        if driver == "json-file" and not (logging.get("options") or {}).get("max-size"):
            yield finding(
                "no-log-rotation",
                "json-file logs without max-size grow until the disk is full (unless daemon.json sets log-opts)",
                service=name,
                line=ctx.stack.line_of(name, "logging"),
                fix='logging: {driver: json-file, options: {max-size: "10m", max-file: "3"}}',
            )


def bind_mount_data(ctx: LintContext) -> Iterator[Finding]:
    stack_dir = str(ctx.stack.directory) if ctx.stack.directory else None
    for name, svc in sorted(ctx.services.items()):
        for mount in bind_mounts(svc):
            source = str(mount.get("source") or "")
            if mount.get("read_only") or is_socket_path(source) or is_sensitive_path(source, stack_dir):
                continue
            yield finding(
                "bind-mount-data",
                f"writable bind mount {source} -> {mount.get('target')}: data in a host directory carries "
                "host ownership and permission problems and is not handled by volume backups",
                service=name,
                line=ctx.stack.line_of(name, "volumes"),
                fix="use a named volume for data (volumes: {data: {}} and data:/path); keep bind mounts read-only "
                "for configuration",
            )


def logging_disabled(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        if str((svc.get("logging") or {}).get("driver") or "").lower() == "none":
            yield finding(
                "logging-disabled",
                "logging driver none: `docker logs` shows nothing, so a crash leaves no trace to diagnose",
                service=name,
                line=ctx.stack.line_of(name, "logging"),
                fix='logging: {driver: json-file, options: {max-size: "10m", max-file: "3"}}',
            )


def pids_limit(svc: dict[str, object]) -> int | None:
    """The service's pids limit: pids_limit or deploy.resources.limits.pids (None: unlimited)."""
    deploy = svc.get("deploy")
    limits = ((deploy.get("resources") or {}).get("limits") or {}) if isinstance(deploy, dict) else {}
    for raw in (svc.get("pids_limit"), limits.get("pids") if isinstance(limits, dict) else None):
        try:
            value = int(str(raw))
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None


def no_pids_limit(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        if name in ctx.one_shots or pids_limit(svc) is not None:
            continue
        yield finding(
            "no-pids-limit",
            "no pids limit: a fork bomb or a thread leak in this service exhausts the host's process table",
            service=name,
            line=ctx.stack.line_of(name, "pids_limit") or ctx.stack.line_of(name),
            fix="pids_limit: 512 (or deploy.resources.limits.pids), above what the service runs at its busiest",
        )


def bind_source_missing(ctx: LintContext) -> Iterator[Finding]:
    """A long-syntax bind (no create_host_path) whose host path does not exist on this host."""
    if ctx.facts is not None and not ctx.facts.engine_local:
        return  # the paths live on another machine
    declared = ctx.stack.rendered.get("volumes") or {}
    for name, svc in sorted(ctx.services.items()):
        for mount in svc.get("volumes") or []:
            if not isinstance(mount, dict):
                continue
            if mount.get("type") == "volume" and isinstance(declared, dict):
                # A bind-backed named volume: the engine fails the mount when its device is missing.
                source = bind_device(declared.get(str(mount.get("source") or ""))) or ""
                via = f" (named volume {mount.get('source')!r})"
            elif mount.get("type") == "bind" and not (mount.get("bind") or {}).get("create_host_path"):
                source, via = str(mount.get("source") or ""), ""  # short syntax would create it on purpose
            else:
                continue
            if not source.startswith("/") or Path(source).exists():
                continue
            yield finding(
                "bind-source-missing",
                f"bind source {source}{via} does not exist on this host: Docker creates an empty directory in "
                "its place (a bind-backed volume fails to mount), and the service sees none of the data or "
                "configuration it expects",
                service=name,
                line=ctx.stack.line_of(name, "volumes"),
                evidence=[f"{source} -> {mount.get('target')}"],
                fix=f"create {source} with the content the service expects, or correct the path",
            )


RULES = [no_cap_drop, writable_rootfs, no_new_privileges, root_user, no_log_rotation, bind_mount_data,
         logging_disabled, no_pids_limit, bind_source_missing]
