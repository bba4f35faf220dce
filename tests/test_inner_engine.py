"""The harness for tests of several engines and Swarm (tests/inner_engine.py) gives real engines:
separate from the test engine, with the images loaded, joinable into one swarm."""

from __future__ import annotations

import pytest

from tests.inner_engine import inner_engines
from tests.test_backups import BUSYBOX

pytestmark = pytest.mark.docker


def test_two_inner_engines_are_separate_engines_and_form_a_swarm(docker_engine: None) -> None:
    with inner_engines(2, images=[BUSYBOX]) as (one, two):
        ids = {e.docker("info", "--format", "{{.ID}}").stdout.strip() for e in (one, two)}
        assert len(ids) == 2
        assert one.docker("run", "--rm", BUSYBOX, "echo", "inside").stdout.strip() == b"inside"
        one.docker("swarm", "init", "--advertise-addr", one.ip)
        token = one.docker("swarm", "join-token", "-q", "worker").stdout.decode().strip()
        two.docker("swarm", "join", "--token", token, f"{one.ip}:2377")
        nodes = one.docker("node", "ls", "--format", "{{.Status}}").stdout.decode().split()
        assert nodes == ["Ready", "Ready"]
