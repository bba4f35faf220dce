"""Pure pieces of the host pre-flight: deciding whether the engine is local, decoding /proc/net,
computing usage from `docker stats`, classifying registry answers. No engine needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.engine import _registry_error
from server.preflight import facts, ports, usage


def test_engine_locality_needs_a_local_endpoint_and_the_same_memory() -> None:
    ours = facts._meminfo()["MemTotal"]
    assert facts._engine_is_local("unix:///var/run/docker.sock", {"MemTotal": ours})[0]
    assert facts._engine_is_local("tcp://127.0.0.1:2375", {"MemTotal": ours})[0]
    remote, why = facts._engine_is_local("ssh://admin@192.168.50.149", {"MemTotal": ours})
    assert not remote and "remote" in why
    vm, why = facts._engine_is_local("unix:///var/run/docker.sock", {"MemTotal": ours // 3})
    assert not vm and "another machine or VM" in why


@pytest.mark.parametrize(
    ("hex_ip", "ip"),
    [
        ("0100007F", "127.0.0.1"),
        ("00000000", "0.0.0.0"),
        ("00000000000000000000000000000000", "::"),
        ("0000000000000000FFFF00000100007F", "127.0.0.1"),  # v4-mapped
        ("00000000000000000000000001000000", "::1"),
    ],
)
def test_proc_net_addresses(hex_ip: str, ip: str) -> None:
    assert ports._ip(hex_ip) == ip


def test_listeners_include_a_socket_we_open() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        found = ports._listeners().get(("tcp", port))
        assert found and found[0][0] == "127.0.0.1"
        assert f"pid {__import__('os').getpid()}" in ports._process_of(found[0][1])


def test_usage_from_docker_stats_like_the_cli() -> None:
    stats: dict[str, Any] = {
        "memory_stats": {"usage": 300 * 2**20, "limit": 512 * 2**20, "stats": {"inactive_file": 100 * 2**20}},
        "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 20_000_000_000,
                      "online_cpus": 4},
        "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}, "system_cpu_usage": 10_000_000_000},
    }
    u = usage.usage_from_stats(stats)
    assert u.memory_bytes == 200 * 2**20 and u.memory_limit_bytes == 512 * 2**20 and u.cpu_percent == 40.0
    one_shot = usage.usage_from_stats({"memory_stats": {"usage": 10, "stats": {"total_inactive_file": 4}}})
    assert one_shot.memory_bytes == 6 and one_shot.cpu_percent is None


class _ApiError(Exception):
    def __init__(self, status: int, explanation: str) -> None:
        self.status_code = status
        self.explanation = explanation
        super().__init__(explanation)


@pytest.mark.parametrize(
    ("status", "text", "state"),
    [
        (404, "manifest unknown: manifest unknown", "absent"),
        (500, "Head https://r/v2/x/manifests/1: unauthorized: authentication required", "absent"),
        (500, 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused', "unreachable"),
        (500, "lookup registry-1.docker.io: no such host", "unreachable"),
        (500, "x509: certificate signed by unknown authority", "unreachable"),
    ],
)
def test_registry_answers_are_classified(status: int, text: str, state: str) -> None:
    got, detail = _registry_error(_ApiError(status, text))
    assert got == state and text[:40] in detail


def test_cgroup_readers_on_fake_files(tmp_path: Path) -> None:
    (tmp_path / "memory.current").write_text("1000\n")
    (tmp_path / "memory.stat").write_text("anon 700\ninactive_file 300\n")
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    assert usage._memory_usage(tmp_path, True) == 700
    assert usage._memory_limit(tmp_path, True) is None
    assert usage._cpu_ns(tmp_path, True) == 1_500_000
