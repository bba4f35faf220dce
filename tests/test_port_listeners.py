"""The host port check sees every listener kind on this machine: TCP and UDP, IPv4 and IPv6,
and keeps protocols and addresses apart. Real sockets, /proc/net; no engine."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from server.preflight.ports import port_holders
from server.stackmodel import LoadedStack
from server.xdsm import parse_service_settings, parse_stack_settings
from server.yamlsafe import SourceLines


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def stack(port: int, protocol: str, host_ip: str) -> LoadedStack:
    services: dict[str, Any] = {"web": {"image": "x/web:1", "ports": [
        {"target": 80, "published": str(port), "protocol": protocol, "host_ip": host_ip}]}}
    return LoadedStack(
        name="listeners", directory=Path("/nonexistent"), files=[], rendered={"services": services},
        settings=parse_stack_settings(None), service_settings={"web": parse_service_settings("web", None)},
        lines=SourceLines("compose.yaml"),
    )


# (socket family, type, bind address, the stack's host_ip, protocol it publishes, conflict?)
KINDS = [
    ("tcp4", socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", "127.0.0.1", "tcp", True),
    ("tcp4-wildcard-stack", socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", "", "tcp", True),
    ("tcp6", socket.AF_INET6, socket.SOCK_STREAM, "::1", "::1", "tcp", True),
    ("tcp6-any", socket.AF_INET6, socket.SOCK_STREAM, "::", "127.0.0.1", "tcp", True),
    ("udp4", socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", "127.0.0.1", "udp", True),
    ("udp6", socket.AF_INET6, socket.SOCK_DGRAM, "::1", "::1", "udp", True),
    ("udp-listener-tcp-publish", socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", "127.0.0.1", "tcp", False),
    ("tcp-listener-udp-publish", socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", "127.0.0.1", "udp", False),
    ("other-v4-address", socket.AF_INET, socket.SOCK_STREAM, "127.0.0.2", "127.0.0.1", "tcp", False),
]


@pytest.mark.parametrize(("kind", "family", "stype", "bind_ip", "host_ip", "protocol", "conflict"), KINDS,
                         ids=[k[0] for k in KINDS])
def test_listener_kinds(kind: str, family: int, stype: int, bind_ip: str, host_ip: str, protocol: str,
                        conflict: bool) -> None:
    if family == socket.AF_INET6 and not has_ipv6():
        pytest.fail("this machine has no IPv6 loopback; the v6 listener kinds cannot be checked")
    with socket.socket(family, stype) as sock:
        if family == socket.AF_INET6 and bind_ip == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((bind_ip, 0))
        if stype == socket.SOCK_STREAM:
            sock.listen(1)
        port = sock.getsockname()[1]
        holders = port_holders(stack(port, protocol, host_ip), [], local=True)
    assert bool(holders) is conflict, holders
    if conflict:
        assert holders[0].protocol == protocol and holders[0].port == port and holders[0].kind == "process"
        assert f"pid {os.getpid()}" in holders[0].holder
