"""Benchmark: what a Swarm deploy costs against the same stack deployed with Compose on one engine.

Both sides go through the same Transaction (Deployer.deploy: pre-flight, plan, lock, backup,
apply, health gate, record; verify_s=0), in the same run, on inner engines (tests/inner_engine.py):
Compose on one engine, Swarm (x-dsm mode: swarm) on a two-node swarm whose manager is that same
engine. The stack is identical apart from x-dsm mode: 3 services of the test web image with a 1 s
healthcheck, 2 replicas of web, dnsrr endpoints (this kernel has no IPVS). Each round deploys a
fresh stack name; the two sides alternate (ABBA) so drift on a shared machine hits both alike.
Medians and the ratio of medians are printed. Not part of the test suite.

    .venv/bin/python bench/swarm_deploy.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from server.settings import Settings  # noqa: E402

IMAGE = "dsm-test/web:1.0"


def compose_text(name: str, swarm: bool) -> str:
    def svc(n: str, replicas: int = 1) -> str:
        return (f"  {n}:\n    image: {IMAGE}\n    labels: {{dsm.test: '1'}}\n"
                f"    deploy:\n      replicas: {replicas}\n      endpoint_mode: dnsrr\n"
                "      resources: {limits: {memory: 64M, pids: 100}}\n"
                "    healthcheck:\n      test: ['CMD', 'wget', '-qO-', 'http://127.0.0.1/']\n"
                "      interval: 1s\n      timeout: 5s\n      retries: 10\n")

    mode = "mode: swarm, " if swarm else ""
    return f"name: {name}\nx-dsm: {{{mode}verify_s: 0}}\nservices:\n" + svc("web", 2) + svc("api") + svc("worker")


PHASES: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}


async def one(root: Path, state: Path, host: str, swarm: bool) -> float:
    from server.deploy.pipeline import Deployer
    from tests.deploy_helpers import runtime_for

    name = f"dsmtestbench{uuid.uuid4().hex[:8]}"
    (root / name).mkdir()
    (root / name / "compose.yaml").write_text(compose_text(name, swarm))
    rt = runtime_for(Settings(stacks_root=root, state_dir=state, docker_host=host))
    try:
        began = time.perf_counter()
        report = await Deployer(rt).deploy(name, wait_timeout_s=180)
        took = time.perf_counter() - began
        if report.status != "deployed":
            raise SystemExit(f"{'swarm' if swarm else 'compose'} deploy of {name}: {report.status}: "
                             + "; ".join(f"{p.name} {p.status} {p.detail}" for p in report.phases))
        for p in report.phases:
            PHASES[swarm].setdefault(p.name, []).append(p.duration_s)
        return took
    finally:
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    from tests.inner_engine import inner_engines

    with inner_engines(2, images=[IMAGE]) as (manager, worker), tempfile.TemporaryDirectory(prefix="dsm-b-") as tmp:
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.decode().strip()
        worker.docker("swarm", "join", "--token", token, f"{manager.ip}:2377")
        root, state = Path(tmp) / "stacks", Path(tmp) / "state"
        root.mkdir()
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(args.rounds):
            order = (False, True) if i % 2 == 0 else (True, False)
            for swarm in order:
                times[swarm].append(anyio.run(one, root, state, manager.host, swarm))
        compose, swarm_t = statistics.median(times[False]), statistics.median(times[True])
        print(f"compose (one engine): median {compose:.2f}s  runs {[round(t, 2) for t in times[False]]}")
        print(f"swarm (two nodes):    median {swarm_t:.2f}s  runs {[round(t, 2) for t in times[True]]}")
        print(f"ratio swarm/compose: {swarm_t / compose:.2f}")
        for side, label in ((False, "compose"), (True, "swarm")):
            print(f"{label} phases (median s): " + ", ".join(f"{n} {statistics.median(v):.2f}"
                                                         for n, v in PHASES[side].items()))


if __name__ == "__main__":
    main()
