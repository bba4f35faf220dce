"""One endpoint for every adapter: DOCKER_HOST, DOCKER_CONTEXT and the CLI's current context are
resolved once, in the docker CLI's order, and docker-py and Compose both use the result.

Contexts are created in a temporary DOCKER_CONFIG, in the docker CLI's own layout
(contexts/meta/<sha256 of the name>/meta.json), so nothing of the machine's docker config is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from server.compose import ComposeRunner, client_env
from server.endpoint import DEFAULT_HOST, Endpoint, EndpointSource, resolve_endpoint
from server.errors import DockerUnavailable
from server.settings import Settings

pytestmark = pytest.mark.anyio


def make_context(config: Path, name: str, host: str, *, skip_verify: bool = False, tls: bool = False) -> None:
    context_id = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / context_id
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip_verify}}}))
    if tls:
        material = config / "contexts" / "tls" / context_id / "docker"
        material.mkdir(parents=True, exist_ok=True)
        for f in ("ca.pem", "cert.pem", "key.pem"):
            (material / f).write_text("not a real pem\n")


def use_context(config: Path, name: str) -> None:
    (config / "config.json").write_text(json.dumps({"auths": {}, "currentContext": name}))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    directory = tmp_path / "docker-config"
    directory.mkdir()
    make_context(directory, "ctxa", "tcp://127.0.0.1:9")
    make_context(directory, "ctxb", "unix:///nonexistent-b.sock")
    return directory


def resolve(settings: Settings, config: Path, host: str | None = None, context: str | None = None) -> Endpoint:
    return resolve_endpoint(replace(settings, docker_host=host, docker_context=context),
                            {"DOCKER_CONFIG": str(config)})


# The docker CLI's order, checked with docker CLI 28.2 (`docker context inspect` / `docker version`):
# DOCKER_HOST > DOCKER_CONTEXT > currentContext > the default socket.
PRECEDENCE = [
    # (currentContext, DOCKER_CONTEXT, DOCKER_HOST) -> (name, host, source)
    (None, None, None, ("default", DEFAULT_HOST, "default")),
    ("ctxa", None, None, ("ctxa", "tcp://127.0.0.1:9", "currentContext")),
    ("ctxa", "ctxb", None, ("ctxb", "unix:///nonexistent-b.sock", "DOCKER_CONTEXT")),
    ("ctxa", "ctxb", "tcp://10.0.0.1:2375", ("default", "tcp://10.0.0.1:2375", "DOCKER_HOST")),
    (None, None, "tcp://10.0.0.1:2375", ("default", "tcp://10.0.0.1:2375", "DOCKER_HOST")),
    ("ctxa", "default", None, ("default", DEFAULT_HOST, "DOCKER_CONTEXT")),
    ("default", None, None, ("default", DEFAULT_HOST, "default")),
]


@pytest.mark.parametrize(("current", "context", "host", "expected"), PRECEDENCE)
def test_docker_host_wins_over_context_and_context_over_current_context(
    settings: Settings, config: Path, current: str | None, context: str | None, host: str | None,
    expected: tuple[str, str, str],
) -> None:
    if current:
        use_context(config, current)
    endpoint = resolve(settings, config, host, context)
    assert (endpoint.name, endpoint.host, endpoint.source) == expected


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI to compare with")
@pytest.mark.parametrize(("current", "context", "host", "expected"), PRECEDENCE)
def test_the_order_is_the_docker_cli_s(
    settings: Settings, config: Path, current: str | None, context: str | None, host: str | None,
    expected: tuple[str, str, str],
) -> None:
    # The real CLI on the same config and environment names the same context and host.
    if current:
        use_context(config, current)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(config)
    env.update({k: v for k, v in (("DOCKER_CONTEXT", context), ("DOCKER_HOST", host)) if v})
    out = subprocess.run(["docker", "context", "inspect", "--format", "{{.Name}} {{.Endpoints.docker.Host}}"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ours = resolve(settings, config, host, context)
    assert out.stdout.split() == [ours.name, ours.host]


def test_a_context_that_does_not_exist_is_an_error_not_the_local_socket(settings: Settings, config: Path) -> None:
    with pytest.raises(DockerUnavailable) as named:
        resolve(settings, config, context="nosuch")
    assert "'nosuch'" in str(named.value) and "DOCKER_CONTEXT=nosuch" in str(named.value)
    assert "nothing was run" in str(named.value)
    use_context(config, "gone")
    with pytest.raises(DockerUnavailable, match="currentContext 'gone'"):
        resolve(settings, config)
    (config / "contexts" / "meta" / hashlib.sha256(b"ctxa").hexdigest() / "meta.json").write_text("{not json")
    with pytest.raises(DockerUnavailable, match="cannot be read"):
        resolve(settings, config, context="ctxa")


def test_an_unreadable_config_json_means_the_default_engine_as_for_the_cli(settings: Settings,
                                                                           config: Path) -> None:
    (config / "config.json").write_text("{broken")
    assert resolve(settings, config).host == DEFAULT_HOST


def test_tls_material_of_a_context_and_of_docker_host(settings: Settings, config: Path, tmp_path: Path) -> None:
    make_context(config, "secure", "tcp://nas:2376", tls=True)
    secure = resolve(settings, config, context="secure")
    assert secure.tls is not None and secure.tls.verify and secure.tls.ca and secure.tls.cert and secure.tls.key
    assert secure.client_env() == {"DOCKER_HOST": "tcp://nas:2376", "DOCKER_CERT_PATH": secure.tls.directory,
                                   "DOCKER_TLS_VERIFY": "1"}
    make_context(config, "lax", "tcp://nas:2376", skip_verify=True)
    lax = resolve(settings, config, context="lax")
    assert lax.tls is not None and not lax.tls.verify and "DOCKER_TLS" in lax.client_env()
    assert "DOCKER_TLS_VERIFY" not in lax.client_env()
    assert resolve(settings, config, context="ctxa").tls is None  # plain tcp, as the CLI does

    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_text("x")
    from_env = resolve_endpoint(replace(settings, docker_host="tcp://h:2376"),
                                {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)})
    assert from_env.tls is not None and from_env.tls.ca == str(certs / "ca.pem") and from_env.tls.cert is None
    assert resolve_endpoint(replace(settings, docker_host="tcp://h:2375"), {}).tls is None


def test_compose_gets_the_endpoint_as_docker_host_and_never_docker_context(config: Path) -> None:
    endpoint = Endpoint("ctxb", "unix:///nonexistent-b.sock", "DOCKER_CONTEXT")
    base = {"PATH": "/usr/bin", "DOCKER_CONTEXT": "ctxa", "DOCKER_HOST": "tcp://stale:1", "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CONFIG": str(config)}
    env = client_env({"TAG": "1", "DOCKER_CONTEXT": "evil"}, base=base, endpoint=endpoint)
    assert env["DOCKER_HOST"] == "unix:///nonexistent-b.sock"
    assert "DOCKER_CONTEXT" not in env and "DOCKER_TLS_VERIFY" not in env
    assert env["DOCKER_CONFIG"] == str(config) and env["TAG"] == "1"


async def test_a_broken_context_stops_compose_before_it_runs_but_not_linting(
    settings: Settings, config: Path, tmp_path: Path
) -> None:
    broken = replace(settings, docker_context="nosuch")
    runner = ComposeRunner(broken, EndpointSource(broken, {"DOCKER_CONFIG": str(config)}))
    project = tmp_path / "p"
    project.mkdir()
    (project / "compose.yaml").write_text("services:\n  a:\n    image: busybox\n")
    flags = ["--project-directory", str(project), "-p", "dsmtestendpoint"]
    with pytest.raises(DockerUnavailable, match="nosuch"):
        await runner.run(flags, ["ps", "--format", "json"], cwd=project)
    # `config` never reaches an engine: validate_compose(check_host=false) lints without one.
    result = await runner.run(flags, ["config", "--hash", "*"], cwd=project)
    assert result.stdout.split()[0] == "a"


def test_the_runtime_s_adapters_share_one_endpoint(settings: Settings) -> None:
    from server.runtime import Runtime

    runtime = Runtime(settings)
    assert runtime.engine().endpoint_source is runtime.compose().endpoint_source is runtime.endpoint_source
    assert runtime.backups().engine.endpoint_source is runtime.endpoint_source


async def test_list_stacks_names_the_engine_and_a_dead_context_s_problem(
    settings: Settings, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.inventory import list_stacks
    from server.runtime import Runtime

    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    runtime = Runtime(replace(settings, docker_host=None, docker_context="ctxb"))
    try:
        listed = await list_stacks(runtime)
    finally:
        runtime.close()
    assert listed.engine == "unix:///nonexistent-b.sock (context 'ctxb', from DOCKER_CONTEXT)"
    assert any("context 'ctxb'" in p and "cannot be reached" in p for p in listed.problems), listed.problems
    missing = Runtime(replace(settings, docker_host=None, docker_context="nosuch"))
    listed = await list_stacks(missing)
    assert listed.engine is None and any("'nosuch'" in p and "does not exist" in p for p in listed.problems)
