"""Container escapes: privileged mode, the Docker socket, host namespaces, sensitive host paths,
escape-grade capabilities, raw host devices and disabled confinement.

Host paths are normalised before they are judged (``//dev``, ``/etc/.``, ``/srv/../etc``), and a
named volume that is a bind in disguise (``driver_opts: {type: none, o: bind, device: /etc}``)
is judged by the host path it binds.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext

_SOCKETS = ("docker.sock", "podman.sock", "containerd.sock", "crio.sock")
_SENSITIVE_EXACT = {
    "/", "/etc", "/root", "/home", "/proc", "/sys", "/dev", "/boot", "/usr", "/lib", "/lib64", "/bin",
    "/sbin", "/var", "/var/lib", "/var/log", "/var/run", "/run", "/var/lib/docker", "/opt",
}
# /root/<dir> and /home/<user>/<dir> are data folders (`~/appdata` renders to /root/appdata when
# the server runs as root): only the home itself and its credential folders are sensitive.
_SENSITIVE_PREFIXES = ("/etc/", "/proc/", "/sys/", "/dev/", "/boot/", "/var/lib/docker/", "/run/",
                       "/var/run/", "/usr/", "/lib/", "/bin/", "/sbin/")
_SENSITIVE_PARTS = {".ssh", ".docker", ".aws", ".kube", ".gnupg", ".config"}
_HARMLESS = {"/etc/localtime", "/etc/timezone", "/etc/hostname", "/dev/null"}
_ESCAPE_CAPS = {"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_BOOT",
                "MAC_ADMIN", "MAC_OVERRIDE", "BPF"}
# Not here: Docker's default set (CHOWN, DAC_OVERRIDE, FOWNER, SETUID, NET_BIND_SERVICE, ...).
# Adding one back after cap_drop: [ALL] is the standard hardening, and without cap_drop it
# changes nothing.
# Devices that give raw access to the host's disks, memory or kernel.
_RAW_DEVICE = re.compile(
    r"^/dev/(sd[a-z]+\d*|hd[a-z]+\d*|vd[a-z]+\d*|xvd[a-z]+\d*|nvme\d+(n\d+)?(p\d+)?|mmcblk\d+(p\d+)?|md\d+|"
    r"dm-\d+|loop\d*|mapper(/.*)?|disk(/.*)?|mem|kmem|port|kmsg|cpu(/.*)?|mtd\d*|sg\d+|nbd\d+|zd\d+|"
    r"vda|fuse)$"
)


def normalize_host_path(source: str) -> str:
    """``//dev`` -> ``/dev``, ``/etc/.`` -> ``/etc``, ``/srv/../etc`` -> ``/etc``; relative paths unchanged."""
    if not source.startswith("/"):
        return source
    return posixpath.normpath(re.sub(r"/+", "/", source))


def host_mounts(ctx: LintContext, svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Bind mounts of a service, bind-backed named volumes included, with normalised sources."""
    volumes = ctx.stack.rendered.get("volumes") or {}
    out: list[dict[str, Any]] = []
    for mount in svc.get("volumes") or []:
        if not isinstance(mount, dict):
            continue
        if mount.get("type") == "bind":
            out.append({**mount, "source": normalize_host_path(str(mount.get("source") or ""))})
        elif mount.get("type") == "volume" and mount.get("source"):
            decl = volumes.get(str(mount["source"])) if isinstance(volumes, dict) else None
            device = bind_device(decl)
            if device:
                out.append({**mount, "type": "bind", "source": device, "via_volume": str(mount["source"])})
    return out


def bind_device(decl: Any) -> str | None:
    """The host path a named volume binds (local driver, o: bind), else None."""
    if not isinstance(decl, dict) or decl.get("external") or (decl.get("driver") or "local") != "local":
        return None
    opts = decl.get("driver_opts") or {}
    if not isinstance(opts, dict):
        return None
    o = [part.strip() for part in str(opts.get("o") or "").split(",")]
    device = str(opts.get("device") or "")
    if "bind" in o and device.startswith("/"):
        return normalize_host_path(device)
    return None


def _where(mount: dict[str, Any]) -> str:
    via = f" (named volume {mount['via_volume']!r})" if mount.get("via_volume") else ""
    return f"{mount.get('source')}{via}"
_RISKY_CAPS = {"NET_ADMIN", "SYS_TIME", "PERFMON", "SYS_RESOURCE", "SYSLOG", "LINUX_IMMUTABLE", "SYS_NICE",
               "IPC_LOCK", "NET_BROADCAST"}


def privileged(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        if svc.get("privileged"):
            yield finding(
                "privileged",
                "privileged: true gives the container every capability and every host device: "
                "a compromise of the service is a compromise of the host",
                service=name,
                line=ctx.stack.line_of(name, "privileged"),
                fix="remove privileged: true; grant only the capability or device it needs (cap_add, devices)",
            )


def is_socket_path(source: str) -> bool:
    return source.endswith(_SOCKETS)


def docker_socket(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        for mount in host_mounts(ctx, svc):
            source = str(mount.get("source") or "")
            if is_socket_path(source):
                ro = " (read-only does not help: the API still works)" if mount.get("read_only") else ""
                yield finding(
                    "docker-socket",
                    f"{_where(mount)} is mounted into the container{ro}: "
                    "whoever controls the service controls every container and the host as root",
                    service=name,
                    line=ctx.stack.line_of(name, "volumes"),
                    evidence=[f"{source} -> {mount.get('target')}"],
                    fix="put a filtering socket proxy in between (e.g. tecnativa/docker-socket-proxy with only the "
                    "endpoints it needs), or waive it in x-dsm with the reason (Portainer, Netdata)",
                )


def host_namespace(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        for key in ("pid", "ipc", "network_mode", "uts", "userns_mode", "cgroup"):
            if str(svc.get(key) or "") != "host":
                continue
            grave = key in ("pid", "ipc")
            yield finding(
                "host-namespace",
                f"{key}: host shares the host's {key.replace('_mode', '')} namespace with the container"
                + (": it can see and signal (pid) or read the shared memory (ipc) of every host process"
                   if grave else "; isolation is weaker and published ports are ignored" if key == "network_mode"
                   else ""),
                service=name,
                severity="error" if grave else "warning",
                line=ctx.stack.line_of(name, key),
                fix=f"remove {key}: host unless the service monitors the host by design (then waive it in x-dsm)",
            )


def is_sensitive_path(source: str, stack_dir: str | None) -> bool:
    if not source.startswith("/"):
        return False
    path = normalize_host_path(source)
    if stack_dir and (path == stack_dir or path.startswith(stack_dir.rstrip("/") + "/")):
        return False
    if path in _HARMLESS:
        return False
    if path in _SENSITIVE_EXACT or path.startswith(_SENSITIVE_PREFIXES):
        return True
    parts = PurePosixPath(path).parts
    if len(parts) == 3 and parts[1] == "home":  # a whole user's home: /home/alice
        return True
    return bool(_SENSITIVE_PARTS & set(parts))


def host_path_mount(ctx: LintContext) -> Iterator[Finding]:
    stack_dir = str(ctx.stack.directory) if ctx.stack.directory else None
    for name, svc in sorted(ctx.services.items()):
        for mount in host_mounts(ctx, svc):
            source = str(mount.get("source") or "")
            if is_socket_path(source) or not is_sensitive_path(source, stack_dir):
                continue
            ro = bool(mount.get("read_only"))
            yield finding(
                "host-path-mount",
                f"host path {_where(mount)} is bind-mounted {'read-only' if ro else 'writable'} at "
                f"{mount.get('target')}"
                + ("" if ro else ": the container can change the host's system files"),
                service=name,
                severity="warning" if ro else "error",
                line=ctx.stack.line_of(name, "volumes"),
                evidence=[f"{source} -> {mount.get('target')} ({'ro' if ro else 'rw'})"],
                fix="mount only the file or directory it needs, read-only (:ro); keep data in named volumes",
            )


def _caps(svc: dict[str, Any]) -> list[str]:
    return [str(c).upper().removeprefix("CAP_") for c in svc.get("cap_add") or []]


def dangerous_capability(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        caps = _caps(svc)
        escape = sorted(set(caps) & _ESCAPE_CAPS)
        risky = sorted(set(caps) & _RISKY_CAPS)
        if escape:
            yield finding(
                "dangerous-capability",
                f"cap_add {', '.join(escape)}: enough to break out of the container",
                service=name,
                line=ctx.stack.line_of(name, "cap_add"),
                evidence=[f"cap_add: {', '.join(caps)}"],
                fix="drop these capabilities; find the narrower one the service needs",
            )
        if risky:
            yield finding(
                "dangerous-capability",
                f"cap_add {', '.join(risky)}: broadens what a compromised service can do to the host",
                service=name,
                severity="warning",
                line=ctx.stack.line_of(name, "cap_add"),
                evidence=[f"cap_add: {', '.join(caps)}"],
                fix="keep only if the service needs it (VPN, time sync) and waive it in x-dsm with the reason",
            )


def unconfined_security_profile(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        opts = [str(o).replace("=", ":", 1).lower() for o in svc.get("security_opt") or []]
        bad = [o for o in opts if o in ("seccomp:unconfined", "apparmor:unconfined", "label:disable",
                                        "systempaths:unconfined")]
        if bad:
            yield finding(
                "unconfined-security-profile",
                f"security_opt {', '.join(bad)} turns off a layer of confinement",
                service=name,
                line=ctx.stack.line_of(name, "security_opt"),
                fix="remove it, or use a custom profile that allows only the extra syscalls the service needs",
            )


def host_device(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        for dev in svc.get("devices") or []:
            source = str(dev.get("source") or "") if isinstance(dev, dict) else str(dev).split(":")[0]
            path = normalize_host_path(source)
            if _RAW_DEVICE.match(path):
                yield finding(
                    "host-device",
                    f"raw host device {path} is passed into the container: it can read and write the host's disk, "
                    "memory or kernel under every file permission",
                    service=name,
                    line=ctx.stack.line_of(name, "devices"),
                    evidence=[f"devices: {source}"],
                    fix="pass a narrower device (a partition's mount as a volume, /dev/dri for a GPU), or waive it "
                    "in x-dsm with the reason (a disk health monitor)",
                )


RULES = [privileged, docker_socket, host_namespace, host_path_mount, dangerous_capability,
         unconfined_security_profile, host_device]
