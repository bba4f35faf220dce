"""An image's own config read from its registry without pulling, on the real local registry.

Images with and without a HEALTHCHECK are pushed to the registry from provision.env under
``dsmtest-*`` repositories (and removed from the host, so only the registry has them), plus an
OCI index whose platforms point at different images, so the engine's platform decides. The
bearer-token dance of public registries is checked against a small in-process server, since no
public registry is reachable here. Everything pushed is deleted afterwards.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from server.compose import ComposeRunner
from server.engine import Engine
from server.preflight.images import image_fact
from server.preflight.validation import validate
from server.registry import RegistryView, parse_reference, read_image_config
from server.settings import Settings

pytestmark = [pytest.mark.anyio]

WEB_HC = "dsm-test/web:1.0"
WEB_NOHC = "dsm-test/web:1.0-nohc"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _push(local: str, remote: str) -> None:
    subprocess.run(["docker", "tag", local, remote], check=True, timeout=30)
    try:
        subprocess.run(["docker", "push", remote], check=True, capture_output=True, timeout=120)
    finally:
        subprocess.run(["docker", "rmi", remote], capture_output=True, timeout=30)


def delete_from_registry(registry: str, ref: str) -> None:
    """Best effort: remove a tag's manifest from the test registry (it may refuse deletes)."""
    repo, _, tag = ref.removeprefix(f"{registry}/").rpartition(":")
    try:
        digest, _ = _head(registry, repo, tag)
        requests.delete(f"http://{registry}/v2/{repo}/manifests/{digest}", timeout=5)
    except requests.RequestException:
        pass


def _head(registry: str, repo: str, ref: str, accept: str = MANIFEST_V2) -> tuple[str, int]:
    r = requests.head(f"http://{registry}/v2/{repo}/manifests/{ref}", headers={"Accept": accept}, timeout=5)
    r.raise_for_status()
    return r.headers["Docker-Content-Digest"], int(r.headers["Content-Length"])


@pytest.fixture(scope="module")
def pushed(registry: str) -> Iterator[dict[str, str]]:
    """``{hc, nohc, multi}``: registry-only refs; ``multi`` is an index (arm64 -> hc, amd64 -> nohc)."""
    repo = f"dsmtest-{uuid.uuid4().hex[:8]}/web"
    refs = {"hc": f"{registry}/{repo}:hc", "nohc": f"{registry}/{repo}:nohc", "multi": f"{registry}/{repo}:multi"}
    _push(WEB_HC, refs["hc"])
    _push(WEB_NOHC, refs["nohc"])
    hc_digest, hc_size = _head(registry, repo, "hc")
    nohc_digest, nohc_size = _head(registry, repo, "nohc")
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": MANIFEST_V2, "digest": hc_digest, "size": hc_size,
             "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": MANIFEST_V2, "digest": nohc_digest, "size": nohc_size,
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": MANIFEST_V2, "digest": hc_digest, "size": hc_size,
             "platform": {"os": "unknown", "architecture": "unknown"}},  # an attestation-like entry
        ],
    }
    put = requests.put(f"http://{registry}/v2/{repo}/manifests/multi", data=json.dumps(index),
                       headers={"Content-Type": OCI_INDEX}, timeout=10)
    put.raise_for_status()
    multi_digest = put.headers["Docker-Content-Digest"]
    yield refs
    for digest in (multi_digest, hc_digest, nohc_digest):  # best effort: the registry may refuse deletes
        requests.delete(f"http://{registry}/v2/{repo}/manifests/{digest}", timeout=5)


def _amd64() -> RegistryView:
    return RegistryView(architecture="amd64")


@pytest.mark.docker
def test_config_from_the_registry_with_and_without_healthcheck(pushed: dict[str, str]) -> None:
    with_hc = read_image_config(pushed["hc"], _amd64())
    assert with_hc.state == "present" and with_hc.config is not None, with_hc
    assert with_hc.config["Healthcheck"]["Test"][0] == "CMD-SHELL" and with_hc.digest
    without = read_image_config(pushed["nohc"], _amd64())
    assert without.state == "present" and without.config is not None and not without.config.get("Healthcheck")
    gone = read_image_config(pushed["hc"].replace(":hc", ":no-such-tag"), _amd64())
    assert gone.state == "absent" and "manifest unknown" in gone.detail and gone.config is None


@pytest.mark.docker
def test_an_index_resolves_to_the_engine_s_platform(pushed: dict[str, str]) -> None:
    amd = read_image_config(pushed["multi"], RegistryView.from_info({"Architecture": "x86_64", "OSType": "linux"}))
    assert amd.config is not None and not amd.config.get("Healthcheck")  # amd64 -> the image without one
    arm = read_image_config(pushed["multi"], RegistryView.from_info({"Architecture": "aarch64", "OSType": "linux"}))
    assert arm.config is not None and arm.config.get("Healthcheck")
    none = read_image_config(pushed["multi"], RegistryView(architecture="s390x"))
    assert none.state == "present" and none.config is None and "s390x" in none.detail


@pytest.mark.docker
def test_a_secure_only_view_never_falls_back_to_plain_http(pushed: dict[str, str]) -> None:
    secure = RegistryView(insecure_cidrs=())  # the engine says this registry must speak TLS
    result = read_image_config(pushed["hc"], secure, timeout_s=2)
    assert result.state == "unreachable" and result.config is None, result


@pytest.mark.docker
async def test_image_fact_reads_registry_only_images_and_the_gate_trusts_them(
    settings: Settings, pushed: dict[str, str], docker_engine: None
) -> None:
    engine = Engine(settings)
    try:
        hc = await image_fact(engine, pushed["hc"])
        assert not hc.local and hc.registry == "present" and hc.healthcheck is True and hc.config_source == "registry"
        nohc = await image_fact(engine, pushed["nohc"])
        assert nohc.healthcheck is False and nohc.registry == "present"
        content = (
            f"services:\n  good:\n    image: {pushed['hc']}\n    mem_limit: 64m\n    cpus: 0.5\n"
            f"  bare:\n    image: {pushed['nohc']}\n    mem_limit: 64m\n    cpus: 0.5\n"
            "  far:\n    image: 127.0.0.1:1/team/app:1.0\n    mem_limit: 64m\n    cpus: 0.5\n"
        )
        report = await validate(settings, ComposeRunner(settings), lambda: engine, content=content)
        by = {(f.rule, f.service): f for f in report.findings if f.category == "reliability" and f.severity != "info"}
        assert set(by) == {("missing-healthcheck", "bare"), ("healthcheck-unverified", "far")}, report.findings
        assert "its registry" in by[("missing-healthcheck", "bare")].message
        assert by[("healthcheck-unverified", "far")].severity == "warning"
    finally:
        engine.close()


# ------------------------------------------------------------------------------ token auth, silence
class _TokenRegistry(http.server.BaseHTTPRequestHandler):
    """A registry that demands an anonymous bearer token, as Docker Hub and GHCR do."""

    token = "anon-token-1"
    config = {"config": {"Healthcheck": {"Test": ["CMD", "true"]}, "User": "1000"}}
    seen_scopes: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        host = self.headers["Host"]
        if self.path.startswith("/token"):
            self.seen_scopes.append(self.path)
            self._send(200, {"token": self.token})
            return
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            challenge = f'Bearer realm="http://{host}/token",service="test-registry",scope="repository:team/app:pull"'
            self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge})
            return
        if self.path == "/v2/team/app/manifests/1.0":
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"digest": "sha256:" + "b" * 64, "platform": {"os": "linux", "architecture": "amd64"}}]}
            self._send(200, index, {"Content-Type": OCI_INDEX, "Docker-Content-Digest": "sha256:" + "a" * 64})
        elif self.path == "/v2/team/app/manifests/sha256:" + "b" * 64:
            manifest = {"schemaVersion": 2, "config": {"digest": "sha256:" + "c" * 64}}
            self._send(200, manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        elif self.path == "/v2/team/app/blobs/sha256:" + "c" * 64:
            self._send(200, self.config)
        else:
            self._send(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})


@pytest.fixture
def token_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_anonymous_bearer_token_then_index_then_config(token_registry: str) -> None:
    _TokenRegistry.seen_scopes.clear()
    result = read_image_config(f"{token_registry}/team/app:1.0", _amd64(), timeout_s=3)
    assert result.state == "present" and result.config == _TokenRegistry.config["config"], result
    assert any("scope=repository%3Ateam%2Fapp%3Apull" in s and "service=test-registry" in s
               for s in _TokenRegistry.seen_scopes)
    missing = read_image_config(f"{token_registry}/team/app:2.0", _amd64(), timeout_s=3)
    assert missing.state == "absent"


def test_a_registry_that_never_answers_is_bounded() -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        started = time.monotonic()
        result = read_image_config(f"127.0.0.1:{silent.getsockname()[1]}/team/app:1.0", _amd64(), timeout_s=1.0)
        elapsed = time.monotonic() - started
    assert result.state == "unreachable" and result.config is None and elapsed < 2.5, (result, elapsed)


def test_references_normalise_as_the_docker_cli_does() -> None:
    assert parse_reference("redis") == parse_reference("docker.io/library/redis:latest")
    hub = parse_reference("pgvector/pgvector:pg16")
    assert (hub.registry, hub.repository, hub.reference, hub.api_host) == (
        "docker.io", "pgvector/pgvector", "pg16", "registry-1.docker.io")
    ghcr = parse_reference("ghcr.io/immich-app/immich-server:v1.120.0@sha256:" + "d" * 64)
    assert (ghcr.registry, ghcr.repository, ghcr.reference) == ("ghcr.io", "immich-app/immich-server",
                                                                "sha256:" + "d" * 64)
    local = parse_reference("localhost:5000/team/app")
    assert (local.registry, local.reference) == ("localhost:5000", "latest")


def test_the_engine_s_view_of_registries() -> None:
    info = {"Architecture": "aarch64", "OSType": "linux", "RegistryConfig": {
        "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.0.0.0/8"],
        "IndexConfigs": {"docker.io": {"Secure": True}, "reg.lan:5000": {"Secure": False}},
        "Mirrors": ["https://mirror.lan/"]}}
    view = RegistryView.from_info(info)
    assert (view.os, view.architecture, view.mirrors) == ("linux", "arm64", ("https://mirror.lan",))
    assert view.insecure("127.0.0.1:5000") and view.insecure("localhost:5000") and view.insecure("10.1.2.3")
    assert view.insecure("reg.lan:5000") and not view.insecure("ghcr.io") and not view.insecure("192.168.1.5:5000")
    assert RegistryView.from_info({"Architecture": "armv7l"}).variant == "v7"



@pytest.mark.docker
async def test_after_the_pull_unknown_healthchecks_become_known(settings: Settings, docker_engine: None) -> None:
    """deploy's second look: the images are local now, so the gate is certain either way."""
    from server.preflight.healthchecks import recheck_after_pull
    from server.stackload import load_stack

    content = (
        f"services:\n  baked:\n    image: {WEB_HC}\n  bare:\n    image: {WEB_NOHC}\n"
        "  waiter:\n    image: dsm-test/web:1.0\n    depends_on:\n      bare: {condition: service_healthy}\n"
        "  gone:\n    image: 127.0.0.1:1/team/never-pulled:1.0\n"
    )
    stack = await load_stack(settings, ComposeRunner(settings), content=content)
    before = await validate(settings, ComposeRunner(settings), lambda: None, content=content, check_host=False)
    assert {f.service for f in before.findings if f.rule == "healthcheck-unverified"} == {
        "baked", "bare", "gone", "waiter"}
    engine = Engine(settings)
    try:
        after = await recheck_after_pull(engine, stack)
    finally:
        engine.close()
    got = {(f.rule, f.service, f.severity) for f in after}
    assert got == {
        ("missing-healthcheck", "bare", "error"),
        ("dependency-without-healthcheck", "waiter", "error"),
        ("healthcheck-unverified", "gone", "warning"),
    }, after
    gone = next(f for f in after if f.service == "gone")
    assert "not on the host after the pull" in gone.message


@pytest.mark.parametrize(("ref", "loopback"), [
    ("127.0.0.1:5000/app:1", True), ("localhost:5000/app:1", True), ("localhost/app", True),
    ("[::1]:5000/app:1", True), ("[::1]/app:1", True), ("127.0.0.1/app@sha256:" + "a" * 64, True),
    # Hosts that only start like a loopback name are somewhere else.
    ("localhost.lan:5000/app:1", False), ("localhostregistry.example:443/app", False),
    ("registry.example/app:1", False), ("redis:7", False), ("[fd00::1]:5000/app", False),
])
def test_is_loopback_reads_the_host_not_a_prefix(ref: str, loopback: bool) -> None:
    from server.registry import is_loopback

    assert is_loopback(ref) is loopback
