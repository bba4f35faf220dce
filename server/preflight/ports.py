"""Ports in use: who holds the host ports a stack publishes (containers, and local processes via /proc)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from server.engine import RunningContainer
from server.policy import LintContext, PortHolder
from server.policy.network import stack_ports
from server.policy.shape import ips_overlap
from server.stackmodel import LoadedStack


def port_holders(stack: LoadedStack, containers: list[RunningContainer], local: bool) -> list[PortHolder]:
    wanted = stack_ports(LintContext(stack=stack))
    if not wanted:
        return []
    holders: list[PortHolder] = []
    own_ports: set[tuple[str, int]] = set()
    taken: set[tuple[str, int]] = set()
    for c in containers:
        for p in c.summary.ports:
            if not p.get("PublicPort"):
                continue
            proto, port, ip = str(p.get("Type") or "tcp"), int(p["PublicPort"]), str(p.get("IP") or "")
            taken.add((proto, port))
            if c.summary.project == stack.name:
                own_ports.add((proto, port))
                continue
            if any(w.port == port and w.protocol == proto and ips_overlap(w.host_ip, ip) for w in wanted):
                who = f"container {c.summary.name}" + (f" (stack {c.summary.project})" if c.summary.project else "")
                holders.append(PortHolder(protocol=proto, port=port, host_ip=ip, holder=who, kind="container"))
    if not local:
        return _dedupe(holders)
    listeners = _listeners()
    for w in wanted:
        key = (w.protocol, w.port)
        if key in taken:  # a container publishes it: named above, or it is our own
            continue
        for ip, inode in listeners.get(key, []):
            if ips_overlap(w.host_ip, ip):
                holders.append(
                    PortHolder(protocol=w.protocol, port=w.port, host_ip=ip, holder=_process_of(inode), kind="process")
                )
                break
    return _dedupe(holders)


def _dedupe(holders: list[PortHolder]) -> list[PortHolder]:
    seen: set[tuple[str, int, str]] = set()
    out = []
    for h in holders:
        key = (h.protocol, h.port, h.holder)
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


def _listeners() -> dict[tuple[str, int], list[tuple[str, int]]]:
    """Listening TCP and bound UDP sockets of this machine: (proto, port) -> [(ip, inode)]."""
    out: dict[tuple[str, int], list[tuple[str, int]]] = {}
    tables = (("tcp", "tcp", "0A"), ("tcp", "tcp6", "0A"), ("udp", "udp", "07"), ("udp", "udp6", "07"))
    for proto, file, state in tables:
        try:
            lines = Path(f"/proc/net/{file}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[3] != state:
                continue
            ip_hex, _, port_hex = parts[1].partition(":")
            out.setdefault((proto, int(port_hex, 16)), []).append((_ip(ip_hex), int(parts[9])))
    return out


def _ip(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return str(address.ipv4_mapped or address)


def _process_of(inode: int) -> str:
    """The process holding a socket inode (root sees all; otherwise only our own)."""
    target = f"socket:[{inode}]"
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) == target:
                    name = (pid_dir / "comm").read_text().strip()
                    return f"process {name} (pid {pid_dir.name})"
        except OSError:
            continue
    return "a process this server cannot see (another user's or another namespace's)"
