"""The ssh bridge (server/sshbridge.py) never leaves a relay behind a connection its client gave up
on: a `docker system dial-stdio` still connecting to a host that drops packets would otherwise live
until ssh itself gives up, one process per abandoned connection."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from server import sshbridge


def test_a_relay_whose_client_left_is_ended_after_the_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    pidfile = tmp_path / "relay.pid"
    docker = fake / "docker"
    # A CLI stuck connecting: it ignores its stdin closing and never answers.
    docker.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 300\n")
    docker.chmod(0o755)
    monkeypatch.setattr(sshbridge, "_ABANDONED_GRACE_S", 0.3)
    bridge = sshbridge.SshBridge("ssh://nobody@192.0.2.1", env={"PATH": f"{fake}:{os.environ['PATH']}"})
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(bridge.path)
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        client.close()  # the client gives up (docker-py's timeout)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the relay of an abandoned connection is still running after the grace")
    finally:
        bridge.close()
