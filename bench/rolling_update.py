"""Benchmark: failed requests and latency while a proxied web service is updated three ways.

The stack (tests/proxied_stack.py): ``web``, 2 replicas of dsm-test/web that listen only 2 s after
they start (``init: true``), behind dsm-test/proxy:1, a real HAProxy 2.6 from Debian's packages
that finds the replicas through Docker's DNS at 127.0.0.11 (scripts/images/proxy/haproxy.cfg, the
same config throughout). One steady open-loop load (tests/load.py, fresh connection per request, in
a process of its own so that the deployer's work in this one never delays it) runs through the
proxy's published port for the whole run, and is cut into windows:

- steady:   before any update
- rolling:  our rolling update web:1.0 -> web:1.1 (Deployer.deploy, strategy rolling)
- rollback: our rolling update to dsm-test/web:2.0-broken (fails its healthcheck), rolled back
            automatically
- recreate: the baseline, plain ``docker compose up -d`` of web:1.0 -> web:1.1

With ``--drain-hook`` the web service declares the x-dsm ``drain`` hook (it fails the proxy's
health check on /healthz while / is still served) and the proxy checks /healthz; without it the
default drain takes the old containers out of the service's DNS name, their address kept until
they are retired (server/deploy/strategies/fleet.py). ``--proxy-log FILE`` keeps HAProxy's request
log: a request that waited out ``timeout connect`` on a vanished address shows Tw ~2000 ms and a
redispatch (``+1``).

Each update window runs from the start of the update until it has ended and at least
``--min-requests`` requests were sent in it. Prints exactly ``rolling: F failed of N``,
``rollback: F failed of N``, ``recreate: F failed of N``, then p50/p99 of each window and of the
steady state. Targets (issue 16): rolling and rollback 0 failed; p99 during an update at most 2x
the steady state.

With ``--runs N`` the whole run is repeated: the failure lines sum every run, the latency lines
are the runs' medians (the steady state of a shared host varies from run to run).

    .venv/bin/python bench/rolling_update.py [--rate 50] [--min-requests 500] [--drain-hook] [--drain-s 3]
                                             [--runs 3] [--proxy-log FILE]
"""

from __future__ import annotations

import argparse
import socket
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
from tests.load import LoadProcess  # noqa: E402
from tests.proxied_stack import proxied_stack, wait_serving, web_xdsm  # noqa: E402

WEB_10, WEB_11, WEB_BROKEN = "dsm-test/web:1.0", "dsm-test/web:1.1", "dsm-test/web:2.0-broken"
WINDOWS = ("steady", "rolling", "rollback", "recreate")
BROKEN_EXTRA = "    environment: {WEB_CRASH_AFTER: '0'}\n"   # exits as soon as it starts listening


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker(*argv: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def teardown(name: str) -> None:
    for kind, listing in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"])):
        ids = docker(*listing, "--filter", f"label=com.docker.compose.project={name}").stdout.split()
        if ids:
            docker(*(["rm", "-f"] if kind == "container" else ["network", "rm"]), *ids)
    refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                  f"reference=dsm-pin/{name}-*").stdout.split()
    if refs:
        docker("rmi", *refs)


def stalls(samples: list[Any]) -> str:
    """Answered requests that waited out HAProxy's 2 s ``timeout connect`` (sent to an address that had
    left the network) and those ~1 s late (a SYN lost, retransmitted by the kernel 1 s later)."""
    ok = [s.latency_s for s in samples if s.ok]
    return f"{sum(t >= 1.9 for t in ok)} >=1.9s, {sum(0.9 <= t < 1.9 for t in ok)} ~1s"


async def window(load: LoadProcess, min_requests: int, update: Any) -> tuple[float, float, Any]:
    """Run ``update()`` under the load; the window lasts until it ended and had ``min_requests``."""
    t0 = load.mark()
    result = await update()
    while len(load.between(t0)) < min_requests:
        await anyio.sleep(0.25)
    return t0, load.mark(), result


async def bench(rate: float, min_requests: int, steady_s: float, hook: bool, drain_s: float,
                proxy_log: Path | None = None) -> dict[str, Any]:
    from server.deploy.pipeline import Deployer
    from server.runtime import Runtime

    out: dict[str, Any] = {}
    name = f"dsmbench{uuid.uuid4().hex[:8]}"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dsm-bench-") as tmp:
        root = Path(tmp) / "stacks"
        directory = root / name
        directory.mkdir(parents=True)
        compose = directory / "compose.yaml"
        model = REPO / ".cache" / "embedding-model"
        settings = Settings(stacks_root=root, state_dir=Path(tmp) / "state",
                            embedding_model_path=model if model.is_dir() else None)
        runtime = Runtime(settings)

        def text(image: str, extra: str = "") -> str:
            return proxied_stack(name, image, port, web_extra=web_xdsm(drain_s, hook) + extra,
                                 check_path="/healthz" if hook else "/")

        async def ours(image: str, extra: str = "") -> Any:
            compose.write_text(text(image, extra))
            return await Deployer(runtime).deploy(name, strategy="rolling", verify_s=0, wait_timeout_s=60)

        async def plain_up(image: str) -> Any:
            compose.write_text(text(image))
            return await anyio.to_thread.run_sync(
                lambda: docker("compose", "-f", "compose.yaml", "-p", name, "up", "-d", cwd=directory))

        try:
            first = await ours(WEB_10)
            assert first.status == "deployed", first
            await wait_serving(port, "web 1.0")
            load = LoadProcess("127.0.0.1", port, rate, Path(tmp) / "samples.jsonl")
            try:
                await anyio.sleep(steady_s)
                out["steady"] = load.summary(0, load.mark())
                out["steady_stalls"] = stalls(load.between(0, load.mark()))

                t0, t1, report = await window(load, min_requests, lambda: ours(WEB_11))
                out["rolling"], out["rolling_status"] = load.summary(t0, t1), report.status
                out["rolling_stalls"] = stalls(load.between(t0, t1))
                await wait_serving(port, "web 1.1")

                t0, t1, report = await window(load, min_requests, lambda: ours(WEB_BROKEN, BROKEN_EXTRA))
                out["rollback"], out["rollback_status"] = load.summary(t0, t1), report.status
                out["rollback_stalls"] = stalls(load.between(t0, t1))
                await wait_serving(port, "web 1.1")

                # The baseline starts from web:1.0 like ours did (an untimed plain up to get there).
                await plain_up(WEB_10)
                await wait_serving(port, "web 1.0")
                t0, t1, result = await window(load, min_requests, lambda: plain_up(WEB_11))
                out["recreate"], out["recreate_status"] = load.summary(t0, t1), result.returncode
                out["recreate_stalls"] = stalls(load.between(t0, t1))
                await wait_serving(port, "web 1.1")
            finally:
                load.stop()
            if proxy_log is not None:  # HAProxy's httplog: Tc (connect ms) and retries of each request
                proxy_log.write_text(docker("compose", "-p", name, "logs", "--no-color", "-t", "proxy",
                                            cwd=directory).stdout)
        finally:
            runtime.close()
            teardown(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--min-requests", type=int, default=500, help="requests per update window (default 500)")
    parser.add_argument("--steady-s", type=float, default=10.0, help="steady-state window, seconds (default 10)")
    parser.add_argument("--drain-hook", action="store_true", help="drain through the x-dsm hook + proxy health check")
    parser.add_argument("--drain-s", type=float, default=3.0, help="x-dsm drain_s of web (default 3)")
    parser.add_argument("--proxy-log", type=Path, help="write the proxy's request log here (for diagnosis)")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the whole run; failures are summed, p50/p99 are the runs' medians")
    args = parser.parse_args()
    t = time.monotonic()
    runs = []
    for n in range(args.runs):
        log = args.proxy_log.with_suffix(f".{n}{args.proxy_log.suffix}") if args.proxy_log and args.runs > 1 \
            else args.proxy_log
        out = anyio.run(bench, args.rate, args.min_requests, args.steady_s, args.drain_hook, args.drain_s, log)
        runs.append(out)
        print(f"(run {n + 1}: " + ", ".join(f"{k} {out[k].failed}/{out[k].total} p50 {out[k].p50_ms:.1f} "
                                            f"p99 {out[k].p99_ms:.1f} ({out[k + '_stalls']})" for k in WINDOWS)
              + f"; rolling -> {out['rolling_status']}, rollback -> {out['rollback_status']}, "
              f"plain up exit {out['recreate_status']}; errors: "
              + "; ".join(f"{k} {out[k].errors}" for k in WINDOWS if out[k].errors) + ")", file=sys.stderr)
    for key in WINDOWS[1:]:
        print(f"{key}: {sum(r[key].failed for r in runs)} failed of {sum(r[key].total for r in runs)}")
    for key in WINDOWS:
        p50, p99 = (statistics.median(getattr(r[key], f) for r in runs) for f in ("p50_ms", "p99_ms"))
        print(f"{key}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    steady = statistics.median(r["steady"].p99_ms for r in runs)
    rolling, rollback = (statistics.median(r[k].p99_ms for r in runs) for k in ("rolling", "rollback"))
    print(f"(rate {args.rate:g}/s, drain {'hook' if args.drain_hook else 'default (out of the DNS name)'} "
          f"{args.drain_s:g}s, {args.runs} run(s): p99 rolling/steady {rolling / steady:.2f}x, "
          f"rollback/steady {rollback / steady:.2f}x; {time.monotonic() - t:.0f}s)", file=sys.stderr)

if __name__ == "__main__":
    main()
