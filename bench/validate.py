"""Benchmark: validate_compose (check_host off) vs `docker compose config --quiet`, same file, same run.

The stack is the Supabase-shaped fixture (12 services, .env interpolation). validate_compose is
called the way an agent calls it, through the MCP client against the real server; the baseline is
what an operator types in the stack directory. The two alternate (ABBA order, so drift on a shared
machine hits both alike); medians and the ratio of medians are printed, with the median of the
per-pair ratios as a drift-robust cross-check. Target: ratio <= 1.3.

    .venv/bin/python bench/validate.py [--rounds 40] [--check]

--check exits 1 when the ratio is above the target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.settings import Settings  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "stacks" / "supabase"
TARGET = 1.3


async def bench(rounds: int) -> tuple[list[float], list[float], dict[str, Any]]:
    from mcp import Client

    from server.app import build_server
    from server.compose import client_env
    from server.runtime import Runtime
    from tools import preflight

    with tempfile.TemporaryDirectory(prefix="dsm-bench-") as tmp:
        root = Path(tmp) / "stacks"
        root.mkdir()
        stack_dir = Path(shutil.copytree(FIXTURE, root / "supabase"))
        settings = Settings(stacks_root=root, state_dir=Path(tmp) / "state")
        runtime = Runtime(settings)
        server = build_server(settings, runtime)
        if "validate_compose" not in {t.name for t in await server.list_tools()}:
            preflight.register(server, runtime)
        # The same Compose the server found (`docker compose` when the CLI plugin is installed).
        baseline_argv = [*(await runtime.compose().prefix()), "-f", "compose.yaml", "config", "--quiet"]

        async with Client(server) as client:

            async def ours() -> float:
                started = time.perf_counter()
                result = await client.call_tool("validate_compose", {"path": "supabase", "check_host": False})
                elapsed = time.perf_counter() - started
                if result.is_error:
                    raise SystemExit(f"validate_compose failed: {result.content}")
                return elapsed

            async def theirs() -> float:
                started = time.perf_counter()
                done = await anyio.run_process(baseline_argv, cwd=stack_dir, env=client_env(), check=False)
                elapsed = time.perf_counter() - started
                if done.returncode != 0:
                    raise SystemExit(f"docker compose config failed: {done.stderr.decode()[-400:]}")
                return elapsed

            first = await client.call_tool("validate_compose", {"path": "supabase", "check_host": False})
            summary = dict(first.structured_content or {})
            for _ in range(3):  # warm both paths (page cache, the compose binary, our imports)
                await ours()
                await theirs()
            a: list[float] = []
            b: list[float] = []
            for i in range(rounds):
                if i % 2 == 0:
                    a.append(await ours())
                    b.append(await theirs())
                else:
                    b.append(await theirs())
                    a.append(await ours())
        runtime.close()
        summary["baseline"] = " ".join([Path(baseline_argv[0]).name, *baseline_argv[1:]])
        return a, b, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the ratio is above {TARGET}")
    args = parser.parse_args()
    ours, theirs, summary = anyio.run(bench, args.rounds)
    med_a, med_b = statistics.median(ours), statistics.median(theirs)
    p90 = lambda xs: sorted(xs)[int(len(xs) * 0.9) - 1]  # noqa: E731
    ratio = med_a / med_b
    print(f"stack: tests/fixtures/stacks/supabase ({len(summary.get('services', []))} services, "
          f"{len(summary.get('findings', []))} findings: {summary.get('summary', '')[:60]}...)")
    print(f"rounds: {args.rounds}, alternating")
    for label, xs, med in (
        ("validate_compose (check_host=false, via MCP)", ours, med_a),
        (summary["baseline"], theirs, med_b),
    ):
        print(f"{label:46s} median {med * 1000:7.1f} ms   p90 {p90(xs) * 1000:7.1f} ms")
    paired = statistics.median(x / y for x, y in zip(ours, theirs, strict=True))
    verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
    print(f"ratio: {ratio:.2f} (target <= {TARGET}) {verdict}; median of paired ratios {paired:.2f} "
          f"(robust to load drift on a shared machine)")
    return 1 if args.check and ratio > TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
