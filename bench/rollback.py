"""Benchmark: a broken deployment rolled back, from the start of deploy_stack to the previous
version serving again, next to a plain `docker compose up -d --wait` of the previous version.

The stack is bench/deploy.py's 5-service stack with its web service published on a host port.
Each round: deploy v1.0 (healthy), then deploy a release whose web crashes at once (restart
loop) with verify_s=0; the clock runs from the deploy_stack call until the host port answers
"web 1.0" again (polled every 50 ms) and until the call returns (old version verified healthy).
The baseline, on the same stack left broken by a plain `up`, is `up -d --wait` of the v1.0
file: what an operator does by hand once they have noticed. Medians are printed.

    .venv/bin/python bench/rollback.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from deploy import compose_text, fresh_stack, teardown  # noqa: E402

from server.settings import Settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def versions(name: str, port: int) -> tuple[str, str]:
    good = compose_text(name).replace("    volumes: [data:/data]\n",
                                      f"    volumes: [data:/data]\n    ports: ['127.0.0.1:{port}:80']\n", 1)
    bad = good.replace("image: dsm-test/web:1.0\n", "image: dsm-test/web:2.0-broken\n"
                       "    environment: {WEB_CRASH_AFTER: '0'}\n", 1)
    return good, bad


def serving(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5) as r:
            return str(r.read().decode().strip())
    except OSError:
        return ""


async def bench(rounds: int) -> dict[str, list[float]]:
    from mcp import Client

    from server.app import build_server
    from server.runtime import Runtime

    out: dict[str, list[float]] = {"serving_again": [], "call": [], "plain_up_wait": []}
    with tempfile.TemporaryDirectory(prefix="dsm-bench-") as tmp:
        root = Path(tmp) / "stacks"
        root.mkdir()
        model = REPO / ".cache" / "embedding-model"
        settings = Settings(stacks_root=root, state_dir=Path(tmp) / "state",
                            embedding_model_path=model if model.is_dir() else None)
        runtime = Runtime(settings)
        async with Client(build_server(settings, runtime)) as client:
            for _ in range(rounds):
                name, directory = fresh_stack(root)
                port = free_port()
                good, bad = versions(name, port)
                try:
                    (directory / "compose.yaml").write_text(good)
                    first = await client.call_tool("deploy_stack", {"path": name, "verify_s": 0})
                    assert (first.structured_content or {}).get("status") == "deployed", first
                    (directory / "compose.yaml").write_text(bad)
                    seen: dict[str, float] = {}
                    started = time.perf_counter()
                    broken_seen = False

                    async def watch(port: int = port, seen: dict[str, float] = seen, started: float = started) -> None:
                        nonlocal broken_seen
                        while True:
                            text = await anyio.to_thread.run_sync(serving, port)
                            if text != "web 1.0":
                                broken_seen = True
                            elif broken_seen and "serving" not in seen:
                                seen["serving"] = time.perf_counter() - started
                                return
                            await anyio.sleep(0.05)

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(watch)
                        result = await client.call_tool("deploy_stack", {"path": name, "verify_s": 0})
                        call = time.perf_counter() - started
                        with anyio.move_on_after(10):
                            while "serving" not in seen:
                                await anyio.sleep(0.05)
                        tg.cancel_scope.cancel()
                    report: dict[str, Any] = result.structured_content or {}
                    assert report.get("status") == "rolled_back", report
                    out["call"].append(call)
                    out["serving_again"].append(seen.get("serving", call))
                    # Baseline: a plain up of the broken file, then up --wait of the good one.
                    subprocess.run(["docker", "compose", "-f", "compose.yaml", "-p", name, "up", "-d"], cwd=directory,
                                   capture_output=True, timeout=300)
                    (directory / "compose.yaml").write_text(good)
                    t = time.perf_counter()
                    subprocess.run(["docker", "compose", "-f", "compose.yaml", "-p", name, "up", "-d", "--wait"],
                                   cwd=directory, capture_output=True, timeout=300, check=True)
                    out["plain_up_wait"].append(time.perf_counter() - t)
                finally:
                    teardown(name, directory)
        runtime.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = anyio.run(bench, args.rounds)
    for key, label in (("serving_again", "start of broken deploy -> v1.0 serving again"),
                       ("call", "deploy_stack call (ends with v1.0 verified healthy)"),
                       ("plain_up_wait", "plain `up -d --wait` of v1.0 from the broken state")):
        values = out[key]
        print(f"{label:<55} median {statistics.median(values):.2f}s  runs "
              + ", ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
