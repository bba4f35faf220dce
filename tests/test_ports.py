"""Who holds a port: one real socket per listener kind (IPv4/IPv6, TCP/UDP, loopback/wildcard),
found in /proc/net and named by process; and containers' published ports, ours or another stack's.
No engine needed: containers are given as the engine would list them."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from server.engine import ContainerSummary, RunningContainer
from server.preflight import ports
from server.preflight.ports import port_holders
from tests.test_policy_units import good, make_stack

OURS = f"(pid {os.getpid()})"

KINDS = {
    # kind: (family, type, bind address, protocol, address as /proc/net shows it)
    "tcp v4 loopback": (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1", "tcp", "127.0.0.1"),
    "tcp v4 wildcard": (socket.AF_INET, socket.SOCK_STREAM, "0.0.0.0", "tcp", "0.0.0.0"),
    "tcp v6 loopback": (socket.AF_INET6, socket.SOCK_STREAM, "::1", "tcp", "::1"),
    "tcp v6 wildcard": (socket.AF_INET6, socket.SOCK_STREAM, "::", "tcp", "::"),
    "udp v4 loopback": (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", "udp", "127.0.0.1"),
    "udp v4 wildcard": (socket.AF_INET, socket.SOCK_DGRAM, "0.0.0.0", "udp", "0.0.0.0"),
    "udp v6 loopback": (socket.AF_INET6, socket.SOCK_DGRAM, "::1", "udp", "::1"),
    "udp v6 wildcard": (socket.AF_INET6, socket.SOCK_DGRAM, "::", "udp", "::"),
}


def _open(kind: str) -> tuple[socket.socket, int]:
    family, type_, address, _, _ = KINDS[kind]
    s = socket.socket(family, type_)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((address, 0))
    if type_ == socket.SOCK_STREAM:
        s.listen(1)
    return s, s.getsockname()[1]


@pytest.fixture(params=sorted(KINDS))
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    s, port = _open(request.param)
    with s:
        yield request.param, port


def publish(port: int, protocol: str = "tcp", host_ip: str = "") -> Any:
    entry: dict[str, Any] = {"target": 80, "published": str(port), "protocol": protocol}
    if host_ip:
        entry["host_ip"] = host_ip
    return make_stack({"web": good(ports=[entry])})


def test_every_listener_kind_is_seen_in_proc_net(listener: tuple[str, int]) -> None:
    kind, port = listener
    _, _, _, protocol, shown = KINDS[kind]
    found = ports._listeners().get((protocol, port))
    assert found and [ip for ip, _ in found] == [shown]
    assert OURS in ports._process_of(found[0][1])


def test_every_listener_kind_is_a_port_holder(listener: tuple[str, int]) -> None:
    kind, port = listener
    _, _, _, protocol, shown = KINDS[kind]
    holders = port_holders(publish(port, protocol), [], local=True)
    assert len(holders) == 1
    h = holders[0]
    assert (h.protocol, h.port, h.host_ip, h.kind) == (protocol, port, shown, "process") and OURS in h.holder
    other = "udp" if protocol == "tcp" else "tcp"
    assert port_holders(publish(port, other), [], local=True) == []  # the other protocol is free


@pytest.mark.parametrize(
    ("bound", "published", "conflict"),
    [
        ("tcp v4 loopback", "127.0.0.1", True),
        ("tcp v4 loopback", "0.0.0.0", True),
        ("tcp v4 loopback", "127.0.0.2", False),
        ("tcp v4 wildcard", "127.0.0.2", True),
        ("tcp v6 loopback", "::1", True),
        ("tcp v6 loopback", "127.0.0.1", False),
        ("udp v6 wildcard", "127.0.0.1", True),
    ],
)
def test_addresses_must_overlap(bound: str, published: str, conflict: bool) -> None:
    s, port = _open(bound)
    with s:
        holders = port_holders(publish(port, KINDS[bound][3], published), [], local=True)
    assert bool(holders) is conflict


def test_a_connected_socket_is_not_a_listener() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()) as client:
            accepted, _ = server.accept()
            with accepted:
                client_port = client.getsockname()[1]
                assert ("tcp", client_port) not in ports._listeners()
                assert port_holders(publish(client_port), [], local=True) == []


def test_a_free_port_has_no_holder_and_a_stack_without_ports_checks_nothing() -> None:
    s, port = _open("tcp v4 loopback")
    s.close()
    assert port_holders(publish(port), [], local=True) == []
    assert port_holders(make_stack({"web": good()}), [_container("x", "other", port)], local=True) == []


def _container(name: str, project: str | None, port: int, proto: str = "tcp", ip: str = "0.0.0.0") -> RunningContainer:
    summary = ContainerSummary(id=name, name=name, project=project, service="web", state="running", status="Up",
                               health=None, image="busybox:1",
                               ports=[{"PrivatePort": 80, "PublicPort": port, "Type": proto, "IP": ip},
                                      {"PrivatePort": 9000, "Type": "tcp"}])
    return RunningContainer(full_id=name * 8, summary=summary)


def test_containers_of_other_stacks_hold_ports_and_our_own_do_not() -> None:
    stack = publish(18080)  # the stack is called "unit"
    other = _container("shop-web-1", "shop", 18080)
    loose = _container("adhoc", None, 18080)
    ours = _container("unit-web-1", "unit", 18080)
    holders = port_holders(stack, [ours, other, loose, other], local=False)
    assert [(h.holder, h.kind, h.host_ip) for h in holders] == [
        ("container shop-web-1 (stack shop)", "container", "0.0.0.0"),
        ("container adhoc", "container", "0.0.0.0"),
    ]
    assert port_holders(stack, [ours], local=False) == []
    assert port_holders(stack, [_container("dns", "dns", 18080, proto="udp")], local=False) == []
    assert len(port_holders(stack, [_container("lo", "lo", 18080, ip="127.0.0.5")], local=False)) == 1


def test_container_address_must_overlap() -> None:
    stack = publish(18080, host_ip="127.0.0.1")
    assert port_holders(stack, [_container("a", "a", 18080, ip="127.0.0.2")], local=False) == []
    assert len(port_holders(stack, [_container("a", "a", 18080, ip="0.0.0.0")], local=False)) == 1
    assert len(port_holders(stack, [_container("a", "a", 18080, ip="")], local=False)) == 1


def test_a_port_a_container_publishes_is_not_blamed_on_a_process() -> None:
    # docker-proxy listens for every published port: the container is the holder, not the proxy.
    s, port = _open("tcp v4 wildcard")
    with s:
        stack = publish(port)
        assert port_holders(stack, [_container("unit-web-1", "unit", port)], local=True) == []
        holders = port_holders(stack, [_container("other-web-1", "other", port)], local=True)
        assert [h.kind for h in holders] == ["container"]
        # Without the local check, a process is never looked for.
        assert port_holders(stack, [], local=False) == []
        assert [h.kind for h in port_holders(stack, [], local=True)] == ["process"]


@pytest.mark.parametrize(
    ("hex_ip", "ip"),
    [("0100007F", "127.0.0.1"), ("0101A8C0", "192.168.1.1"), ("00000000000000000000000000000000", "::"),
     ("0000000000000000FFFF00000100007F", "127.0.0.1"), ("00000000000000000000000001000000", "::1"),
     ("B80D0120000000000000000001000000", "2001:db8::1")],
)
def test_proc_net_addresses(hex_ip: str, ip: str) -> None:
    assert ports._ip(hex_ip) == ip


def test_an_inode_nobody_holds() -> None:
    assert ports._process_of(2**40) == "a process this server cannot see (another user's or another namespace's)"
