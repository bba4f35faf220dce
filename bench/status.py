"""Benchmark: stack_status for 50 containers in 10 stacks vs `docker compose ls` + `docker compose ps`.

Ten stacks of five services (busybox, init) are started with labels dsm.test=1 and removed at the
end. stack_status (no stats) is called through the MCP client on the real server, for every stack on
the host; the baseline is what an operator types: `docker compose ls --all --format json`, then
`docker compose -p <project> ps --all --format json` for each of the ten stacks (sequentially,
like a script would). Both alternate (ABBA); medians and their ratio are printed. Targets: ratio
<= 0.5; stack_status with stats (CPU sampled from cgroups) <= 1.5 s.

    .venv/bin/python bench/status.py [--rounds 10] [--check]

The engine is shared with other work: other projects on the host are also listed by both sides.
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

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.settings import Settings  # noqa: E402

STACKS, SERVICES = 10, 5
TARGET_RATIO, TARGET_STATS_S = 0.5, 1.5


def compose_text(name: str) -> str:
    services = "".join(
        f"  s{i}:\n    image: dsm-test/busybox:1\n    init: true\n    command: [sleep, '3600']\n"
        f"    labels: {{dsm.test: '1'}}\n"
        for i in range(SERVICES)
    )
    return f"name: {name}\nservices:\n{services}"


def run(argv: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True, timeout=300).stdout


async def bench(rounds: int) -> tuple[list[float], list[float], list[float]]:
    from mcp import Client

    from server.app import build_server
    from server.runtime import Runtime

    prefix = f"dsmtestbench{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}{i}" for i in range(STACKS)]
    with tempfile.TemporaryDirectory(prefix="dsm-bench-") as tmp:
        root = Path(tmp) / "stacks"
        for name in names:
            (root / name).mkdir(parents=True)
            (root / name / "compose.yaml").write_text(compose_text(name))
        try:
            for name in names:
                run(["docker", "compose", "up", "-d", "--quiet-pull"], cwd=root / name)
            settings = Settings(stacks_root=root, state_dir=Path(tmp) / "state")
            runtime = Runtime(settings)
            compose = [*(await runtime.compose().prefix())]
            async with Client(build_server(settings, runtime)) as client:

                async def ours(stats: bool = False) -> float:
                    started = time.perf_counter()
                    result = await client.call_tool("stack_status", {"with_stats": stats})
                    took = time.perf_counter() - started
                    assert not result.is_error, result.content
                    seen = [s for s in result.structured_content["stacks"] if s["stack"].startswith(prefix)]
                    assert len(seen) == STACKS and sum(len(s["services"]) for s in seen) == STACKS * SERVICES
                    return took

                def baseline() -> float:
                    started = time.perf_counter()
                    run([*compose, "ls", "--all", "--format", "json"])
                    for name in names:
                        run([*compose, "-p", name, "ps", "--all", "--format", "json"])
                    return time.perf_counter() - started

                await ours()
                baseline()  # warm both
                a, b, c = [], [], []
                for i in range(rounds):
                    if i % 2 == 0:
                        a.append(await ours())
                        b.append(baseline())
                    else:
                        b.append(baseline())
                        a.append(await ours())
                    c.append(await ours(stats=True))
            runtime.close()
            return a, b, c
        finally:
            for name in names:
                subprocess.run(["docker", "compose", "-p", name, "down", "-t", "0"], capture_output=True, timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    ours, base, stats = anyio.run(bench, args.rounds)
    mo, mb, ms = statistics.median(ours), statistics.median(base), statistics.median(stats)
    ratio = mo / mb
    print(f"stack_status, {STACKS} stacks x {SERVICES} containers, {args.rounds} rounds")
    print(f"  stack_status (no stats)                        median {mo * 1000:7.1f} ms")
    print(f"  docker compose ls + {STACKS} x docker compose ps   median {mb * 1000:7.1f} ms")
    print(f"  ratio {ratio:.2f} (target <= {TARGET_RATIO})")
    print(f"  stack_status with_stats                        median {ms * 1000:7.1f} ms (target <= {TARGET_STATS_S} s)")
    ok = ratio <= TARGET_RATIO and ms <= TARGET_STATS_S
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
