"""Benchmark: validate_compose (check_host off) vs `docker compose config`, per stack, over the corpus.

The stacks are tests/corpus/* (real-world-shaped, 1 to 13 services, each with its .env).
validate_compose is called the way an agent calls it, through the MCP client against the real
server; the baseline is what an operator types in the stack directory (`docker compose config`,
its output read through a pipe; `--quiet` to compare with `config --quiet` instead). Per stack
the two alternate (ABBA order, so drift on a shared machine hits both alike) and the ratio of
the medians is taken; the median and the worst of those ratios over the stacks are printed.
Targets: median <= 1.15, worst <= 1.3 (the fixed cost per call is what small stacks feel).

    .venv/bin/python bench/validate.py [--rounds 10] [--stacks a,b] [--quiet] [--baseline cli|plugin] [--check]

--check exits 1 when the median or the worst ratio is above its target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.settings import Settings  # noqa: E402

CORPUS = REPO / "tests" / "corpus"
TARGET_MEDIAN = 1.15
TARGET_WORST = 1.3


@dataclass
class StackResult:
    name: str
    services: int
    ours: list[float]
    theirs: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.theirs)


async def bench(rounds: int, names: list[str], quiet: bool, baseline_kind: str) -> list[StackResult]:
    from mcp import Client

    from server.app import build_server
    from server.compose import client_env
    from server.runtime import Runtime
    from tools import preflight

    results: list[StackResult] = []
    with tempfile.TemporaryDirectory(prefix="dsm-bench-") as tmp:
        root = Path(tmp) / "stacks"
        root.mkdir()
        for name in names:
            shutil.copytree(CORPUS / name, root / name)
        settings = Settings(stacks_root=root, state_dir=Path(tmp) / "state")
        runtime = Runtime(settings)
        server = build_server(settings, runtime)
        if "validate_compose" not in {t.name for t in await server.list_tools()}:
            preflight.register(server, runtime)
        # What the operator types (`docker compose config`), or with --baseline plugin the Compose
        # binary the server itself runs, called directly (our overhead over Compose's own work).
        if baseline_kind == "plugin":
            prefix = await runtime.compose().prefix()
        else:
            docker = shutil.which("docker")
            if docker is None:
                raise SystemExit("no docker CLI on PATH: use --baseline plugin")
            prefix = [docker, "compose"]
        baseline = [*prefix, "config", *(["--quiet"] if quiet else [])]

        async with Client(server) as client:
            for name in names:
                stack_dir = root / name

                async def ours(stack: str = name) -> tuple[float, int]:
                    started = time.perf_counter()
                    result = await client.call_tool("validate_compose", {"path": stack, "check_host": False})
                    elapsed = time.perf_counter() - started
                    if result.is_error:
                        raise SystemExit(f"validate_compose failed on {stack}: {result.content}")
                    return elapsed, len((result.structured_content or {}).get("services") or [])

                async def theirs(directory: Path = stack_dir) -> float:
                    started = time.perf_counter()
                    done = await anyio.run_process(baseline, cwd=directory, env=client_env(), check=False)
                    elapsed = time.perf_counter() - started
                    if done.returncode != 0:
                        raise SystemExit(f"docker compose config failed in {directory}: {done.stderr.decode()[-400:]}")
                    return elapsed

                _, services = await ours()  # warm both paths (page cache, the compose binary)
                await theirs()
                a: list[float] = []
                b: list[float] = []
                for i in range(rounds):
                    if i % 2 == 0:
                        a.append((await ours())[0])
                        b.append(await theirs())
                    else:
                        b.append(await theirs())
                        a.append((await ours())[0])
                results.append(StackResult(name, services, a, b))
        runtime.close()
        print("baseline: " + " ".join([Path(baseline[0]).name, *baseline[1:]]) + " (in the stack directory)")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="calls of each per stack (alternating)")
    parser.add_argument("--stacks", default="", help="comma-separated corpus stacks (default: all)")
    parser.add_argument("--quiet", action="store_true", help="baseline `config --quiet` (no output)")
    parser.add_argument("--baseline", choices=["cli", "plugin"], default="cli",
                        help="cli: `docker compose config` (default); plugin: the Compose binary the server runs")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio is above its target")
    args = parser.parse_args()
    names = [n for n in args.stacks.split(",") if n] or sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
    results = anyio.run(bench, args.rounds, names, args.quiet, args.baseline)
    print(f"rounds per stack: {args.rounds}, alternating; validate_compose check_host=false via MCP")
    print(f"{'stack':16s} {'svc':>3s} {'ours ms':>8s} {'compose ms':>10s} {'ratio':>6s}")
    for r in sorted(results, key=lambda r: r.services):
        print(f"{r.name:16s} {r.services:3d} {statistics.median(r.ours) * 1000:8.1f} "
              f"{statistics.median(r.theirs) * 1000:10.1f} {r.ratio:6.2f}")
    ratios = [r.ratio for r in results]
    median, worst = statistics.median(ratios), max(ratios)
    worst_name = max(results, key=lambda r: r.ratio).name
    ok = median <= TARGET_MEDIAN and worst <= TARGET_WORST
    print(f"stacks: {len(results)}; median ratio {median:.2f} (target <= {TARGET_MEDIAN}), worst {worst:.2f} "
          f"({worst_name}; target <= {TARGET_WORST}) {'OK' if ok else 'ABOVE TARGET'}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
