"""More Docker engines for tests of several engines and of Swarm: each runs in a container of the
test engine, from this machine's own engine binaries.

Facts checked on this machine kind (issue 19): `--privileged` fails in this sandbox; what works is
every capability but SYS_RESOURCE, seccomp/apparmor/systempaths unconfined, a device cgroup rule
allowing everything, /sys/fs/cgroup and /usr bind-mounted from the host, /var/lib/docker on a volume
(overlay2 needs a real filesystem under it), and the API published on 127.0.0.1. `--tls=false` skips
the 15 s start-up delay dockerd imposes on an unauthenticated TCP listener. An inner engine answers in
about 3 s. Images come from the test engine through `docker save | docker load` (nothing can be
pulled here). The inner engine's containers are not reachable from this machine's loopback: publish
ports on the inner engine and reach them through ``InnerEngine.ip`` (its address on the test
engine's bridge).

Usage::

    with inner_engines(2, images=[BUSYBOX]) as (one, two):
        subprocess.run(["docker", "-H", one.host, "ps"])

Every container and volume made here carries ``dsm.test=1`` (``make clean-test`` removes them).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tests.conftest import provision_facts

# The image whose userland the inner engine runs in: a Debian rootfs (for /etc, /lib links) that
# scripts/provision.sh builds anyway; the engine binaries come from the host's /usr.
BASE_IMAGE = provision_facts().get("DSM_TEST_IMAGE_PROXY", "dsm-test/proxy:1")


@dataclass(frozen=True)
class InnerEngine:
    name: str  # the container's name on the test engine
    host: str  # DOCKER_HOST for this engine, e.g. tcp://127.0.0.1:32771
    ip: str  # its address on the test engine's default bridge (for swarm joins and published ports)

    def docker(self, *argv: str, timeout: float = 120, check: bool = True,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """``docker -H <this engine> argv...``; raises AssertionError with stderr when it fails."""
        result = subprocess.run(["docker", "-H", self.host, *argv], capture_output=True, timeout=timeout,
                                input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"docker -H {self.host} {' '.join(argv)}: {result.stderr.decode()[-800:]}")
        return result

    def stop(self) -> None:
        """Stop the engine (the container); its state stays for start()."""
        _sh("docker", "stop", "-t", "5", self.name)

    def start(self) -> None:
        _sh("docker", "start", self.name)
        _wait_ready(self.host, self.name)


def _sh(*argv: str, timeout: float = 120) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.stderr[-800:]}")
    return result.stdout.strip()


def _wait_ready(host: str, name: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = subprocess.run(["docker", "-H", host, "info", "--format", "{{.ServerVersion}}"],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return
        time.sleep(0.5)
    logs = subprocess.run(["docker", "logs", "--tail", "20", name], capture_output=True, text=True, timeout=30)
    raise AssertionError(f"inner engine {name} did not answer in {timeout_s:.0f} s: {logs.stderr[-1500:]}")


def start_engine(images: Sequence[str] = ()) -> InnerEngine:
    """Start one inner engine and load ``images`` (references on the test engine) into it."""
    name = f"dsmtest-engine-{uuid.uuid4().hex[:8]}"
    argv = ["docker", "run", "-d", "--name", name, "--hostname", name, "--label", "dsm.test=1",
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup", "-v", "/usr:/usr:ro",
            "-v", "/etc/alternatives:/etc/alternatives:ro",  # iptables is an alternatives link on Debian
            "--mount", "type=volume,dst=/var/lib/docker,volume-label=dsm.test=1",
            "-p", "127.0.0.1::2375", "--entrypoint", "/usr/sbin/dockerd", BASE_IMAGE,
            "-H", "tcp://0.0.0.0:2375", "-H", "unix:///var/run/docker.sock", "--tls=false"]
    _sh(*argv)
    try:
        port = _sh("docker", "port", name, "2375/tcp").splitlines()[0].rsplit(":", 1)[1]
        ip = _sh("docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
        engine = InnerEngine(name=name, host=f"tcp://127.0.0.1:{port}", ip=ip)
        _wait_ready(engine.host, name)
        for image in images:
            load_image(engine, image)
        return engine
    except BaseException:
        remove_engine(name)
        raise


def load_image(engine: InnerEngine, image: str, timeout_s: float = 300) -> None:
    """Copy ``image`` from the test engine into ``engine`` (streamed, never held in memory)."""
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, start_new_session=True)
    try:
        load = subprocess.run(["docker", "-H", engine.host, "load", "-q"], stdin=save.stdout, capture_output=True,
                              timeout=timeout_s)
    finally:
        if save.stdout is not None:
            save.stdout.close()
        try:
            save.wait(timeout=30)
        except subprocess.TimeoutExpired:
            save.kill()
    if load.returncode != 0 or save.returncode != 0:
        raise AssertionError(f"could not copy {image} into {engine.name}: {load.stderr.decode()[-500:]}")


def remove_engine(name: str) -> None:
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, timeout=120)


@contextlib.contextmanager
def inner_engines(count: int, images: Sequence[str] = ()) -> Iterator[list[InnerEngine]]:
    """``count`` inner engines with ``images`` loaded; removed (with their volumes) afterwards."""
    if shutil.which("docker") is None:
        raise AssertionError("the docker CLI is required")
    engines: list[InnerEngine] = []
    try:
        for _ in range(count):
            engines.append(start_engine(images))
        yield engines
    finally:
        for engine in engines:
            remove_engine(engine.name)
