"""Helpers shared by the deploy tests: stacks on disk, the pipeline, and looking at the engine."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from server.deploy.report import DeployReport
from server.runtime import Runtime
from server.settings import Settings

WEB_10 = "dsm-test/web:1.0"
WEB_11 = "dsm-test/web:1.1"
WEB_BROKEN = "dsm-test/web:2.0-broken"
WEB_NOHC = "dsm-test/web:1.0-nohc"
POSTGRES = "dsm-test/postgres:15"


def free_port(count: int = 1) -> int:
    """The first of ``count`` adjacent loopback ports nothing holds now.

    Picked below the kernel's ephemeral range (32768+), so no outgoing connection takes it before the
    test's container publishes it, and from a block of its own per pytest-xdist worker (PYTEST_XDIST_WORKER),
    so two workers never race for one port; the bind check skips ports held by anyone else."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + (int(worker) % 12 if worker.isdigit() else 0) * 1000
    for _ in range(200):
        first = base + random.randrange(1000 - count)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {count} free adjacent ports in 127.0.0.1:{base}-{base + 999}")


def write(root: Path, name: str, compose: str, env: str | None = None) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(compose)
    if env is not None:
        (directory / ".env").write_text(env)
    return directory


def web_service(name: str = "web", image: str = WEB_10, port: int | None = None, extra: str = "") -> str:
    ports = f"    ports: ['127.0.0.1:{port}:80']\n" if port else ""
    return (f"  {name}:\n    image: {image}\n    init: true\n    restart: unless-stopped\n"
            f"    labels: {{dsm.test: '1'}}\n    mem_limit: 64m\n    cpus: 0.5\n{ports}{extra}")


def web_stack(name: str, image: str = WEB_10, port: int | None = None, verify_s: int = 0, extra: str = "",
              volume: bool = True) -> str:
    vol = "    volumes: [data:/data]\n" if volume else ""
    tail = "volumes:\n  data:\n    labels: {dsm.test: '1'}\n" if volume else ""
    return (f"name: {name}\nx-dsm: {{verify_s: {verify_s}}}\nservices:\n"
            f"{web_service('web', image, port, vol + extra)}{tail}")


def pg_db(env: str = "", x_dsm: str = "{role: database}", extra: str = "") -> str:
    """The ``db`` service of the PostgreSQL test stacks (trust auth, data on volume ``pgdata``);
    ``env`` continues the environment mapping (", KEY: value"), ``x_dsm`` "" leaves x-dsm out."""
    own = f"    x-dsm: {x_dsm}\n" if x_dsm else ""
    return (f"  db:\n    image: {POSTGRES}\n    init: true\n    restart: unless-stopped\n"
            f"    environment: {{POSTGRES_HOST_AUTH_METHOD: trust{env}}}\n"
            f"    volumes: [pgdata:/var/lib/postgresql/data]\n    mem_limit: 256m\n{extra}"
            f"    labels: {{dsm.test: '1'}}\n{own}")


def pg_migrate(sql: list[str]) -> str:
    """A one-shot ``migrate`` service running ``sql`` against ``db`` once it is healthy (each -c
    commits on its own: what runs before a failing statement stays done)."""
    statements = ", ".join(f'"-c", "{q}"' for q in sql)
    return ("  migrate:\n    image: " + POSTGRES + "\n"
            f'    entrypoint: ["psql", "-v", "ON_ERROR_STOP=1", "-h", "db", "-U", "postgres", {statements}]\n'
            "    depends_on: {db: {condition: service_healthy}}\n    restart: \"no\"\n    mem_limit: 64m\n"
            "    cpus: 0.5\n    labels: {dsm.test: '1'}\n    x-dsm: {one-shot: true}\n")


PG_VOLUME = "volumes:\n  pgdata:\n    labels: {dsm.test: '1'}\n"


def psql(project: str, sql: str) -> str:
    """``sql`` run by psql inside the project's ``db`` container, unaligned (-tA) output."""
    return docker("exec", container_of(project, "db"), "psql", "-U", "postgres", "-tAc", sql)


def get(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode().strip())


def docker(*args: str, check: bool = True, stdin: str | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, input=stdin, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}")
    return result.stdout.strip()


def containers(project: str) -> list[dict[str, Any]]:
    out = docker("ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "--format", "{{json .}}")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def container_of(project: str, service: str) -> str:
    for c in containers(project):
        if f"com.docker.compose.service={service}" in c.get("Labels", ""):
            return str(c["ID"])
    raise AssertionError(f"no container of {service} in {project}")


def remove_pins(project: str) -> None:
    refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference=dsm-pin/{project}-*",
                  check=False).split()
    if refs:
        docker("rmi", *refs, check=False)


async def deploy(runtime: Runtime, path: str, **kw: Any) -> DeployReport:
    from server.deploy.pipeline import Deployer

    return await Deployer(runtime).deploy(path, **kw)


def runtime_for(settings: Settings) -> Runtime:
    import os
    from dataclasses import replace

    model = os.environ.get("DSM_EMBEDDING_MODEL_PATH")
    default = Path(__file__).resolve().parent.parent / ".cache" / "embedding-model"
    model = model or (str(default) if default.is_dir() else None)
    return Runtime(replace(settings, embedding_model_path=Path(model)) if model else settings)


def phase(report: DeployReport, name: str) -> Any:
    return next((p for p in report.phases if p.name == name), None)
