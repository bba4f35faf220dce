"""Benchmark: deploy_stack (verify_s=0, backup included) vs plain `docker compose up -d --wait`.

Identical fresh stacks of 5 services (busybox httpd images with healthchecks every 1 s and a 3 s
start period, one volume holding 1 MB), each run on a new project name, the two alternating
(ABBA, so drift on a shared machine hits both alike). deploy_stack is called through the MCP
client against the real server (in memory), as an agent calls it; the baseline is what an
operator types in the stack directory. Medians and the ratio of medians are printed, with the
median of per-pair ratios as a cross-check. Target: ratio <= 1.25.

    .venv/bin/python bench/deploy.py [--rounds 6] [--check]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.settings import Settings  # noqa: E402

TARGET = 1.25
IMAGE = "dsm-test/web:1.0"


def compose_text(name: str) -> str:
    def svc(n: str, volume: bool = False) -> str:
        vol = "    volumes: [data:/data]\n" if volume else ""
        return (f"  {n}:\n    image: {IMAGE}\n    init: true\n    restart: unless-stopped\n"
                f"    labels: {{dsm.test: '1'}}\n    mem_limit: 64m\n    cpus: 0.25\n{vol}"
                "    healthcheck:\n      test: ['CMD', 'wget', '-qO-', 'http://127.0.0.1/']\n"
                "      interval: 1s\n      timeout: 2s\n      retries: 3\n      start_period: 3s\n")

    return (f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n" + svc("web", volume=True) + svc("api")
            + svc("worker") + svc("cache") + svc("proxy") + "volumes:\n  data:\n    labels: {dsm.test: '1'}\n")


def fresh_stack(root: Path) -> tuple[str, Path]:
    name = f"dsmtestbench{uuid.uuid4().hex[:8]}"
    directory = root / name
    directory.mkdir()
    (directory / "compose.yaml").write_text(compose_text(name))
    # The volume exists with 1 MB in it before either side runs (owned by the project, as Compose
    # would have made it), so the deploy's backup has data to archive.
    subprocess.run(["docker", "volume", "create", "--label", "dsm.test=1", "--label",
                    f"com.docker.compose.project={name}", "--label", "com.docker.compose.volume=data",
                    f"{name}_data"], check=True, capture_output=True)
    subprocess.run(["docker", "run", "--rm", "--label", "dsm.test=1", "-v", f"{name}_data:/data", IMAGE, "sh", "-c",
                    "head -c 1048576 /dev/urandom > /data/blob 2>/dev/null || dd if=/dev/zero of=/data/blob "
                    "bs=1024 count=1024"], check=True, capture_output=True)
    return name, directory


def teardown(name: str, directory: Path) -> None:
    subprocess.run(["docker", "compose", "-p", name, "down", "--volumes", "--timeout", "3"], cwd=directory,
                   capture_output=True, timeout=120)
    subprocess.run(["docker", "volume", "rm", "-f", f"{name}_data"], capture_output=True)
    refs = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                           f"reference=dsm-pin/{name}-*"], capture_output=True, text=True).stdout.split()
    if refs:
        subprocess.run(["docker", "rmi", *refs], capture_output=True)


async def bench(rounds: int) -> tuple[list[float], list[float], dict[str, Any]]:
    from mcp import Client

    from server.app import build_server
    from server.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="dsm-bench-") as tmp:
        root = Path(tmp) / "stacks"
        root.mkdir()
        model = REPO / ".cache" / "embedding-model"
        settings = Settings(stacks_root=root, state_dir=Path(tmp) / "state",
                            embedding_model_path=model if model.is_dir() else None)
        runtime = Runtime(settings)
        server = build_server(settings, runtime)
        phases: dict[str, list[float]] = {}
        async with Client(server) as client:

            async def ours() -> float:
                name, directory = fresh_stack(root)
                try:
                    started = time.perf_counter()
                    result = await client.call_tool("deploy_stack", {"path": name, "verify_s": 0})
                    took = time.perf_counter() - started
                    out = result.structured_content or {}
                    assert not result.is_error and out.get("status") == "deployed", out
                    for p in out["phases"]:
                        phases.setdefault(p["name"], []).append(p["duration_s"])
                    return took
                finally:
                    teardown(name, directory)

            def plain() -> float:
                name, directory = fresh_stack(root)
                try:
                    started = time.perf_counter()
                    subprocess.run(["docker", "compose", "up", "-d", "--wait"], cwd=directory, check=True,
                                   capture_output=True, timeout=300)
                    return time.perf_counter() - started
                finally:
                    teardown(name, directory)

            await ours()  # warm-up: model load, first engine connection
            a: list[float] = []
            b: list[float] = []
            for i in range(rounds):
                if i % 2 == 0:
                    a.append(await ours())
                    b.append(plain())
                else:
                    b.append(plain())
                    a.append(await ours())
        runtime.close()
        return a, b, {k: statistics.median(v) for k, v in phases.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    ours, plain, phases = anyio.run(bench, args.rounds)
    ratio = statistics.median(ours) / statistics.median(plain)
    pairs = statistics.median(o / p for o, p in zip(ours, plain, strict=True))
    print(f"deploy_stack (verify_s=0, backup incl.): median {statistics.median(ours):.2f}s  "
          f"runs {', '.join(f'{x:.2f}' for x in ours)}")
    print(f"docker compose up -d --wait:            median {statistics.median(plain):.2f}s  "
          f"runs {', '.join(f'{x:.2f}' for x in plain)}")
    print("deploy_stack phases (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    print(f"ratio of medians {ratio:.2f} (median of pair ratios {pairs:.2f}); target <= {TARGET}")
    if args.check and ratio > TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
