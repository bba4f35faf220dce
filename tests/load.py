"""A small open-loop HTTP load generator for the update tests and bench/rolling_update.py.

Requests go out at a steady rate whether or not earlier ones have answered (a slow or dead
backend shows up as latency and failures, not as a lower rate), each on its own connection
(``Connection: close``), so every request is routed afresh by the proxy. A request fails when it
cannot connect, times out, or gets anything but 200. Standard library + anyio only.

    async with steady_load("127.0.0.1", port, rate=50) as load:
        ...                                   # update the service
        mark = load.mark()                    # or windows by time
    print(load.summary().line("rolling"))     # "rolling: 0 failed of 512"

``LoadProcess`` runs the same load in a child process (``python -m tests.load``): a benchmark whose
own process also runs the deployment must not count the stalls of its event loop (the deployer's
work between awaits) as the service's latency. Both processes read the same CLOCK_MONOTONIC.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio


@dataclass(frozen=True)
class Sample:
    start: float          # time.monotonic() when the request was sent
    latency_s: float
    status: int           # HTTP status, 0 when there was no response
    body: str             # first line of the body ("web 1.1")
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    total: int
    failed: int
    p50_ms: float
    p99_ms: float
    bodies: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def line(self, label: str) -> str:
        return f"{label}: {self.failed} failed of {self.total}"

    def latency_line(self, label: str) -> str:
        return f"{label}: p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"


def summarise(samples: list[Sample]) -> Summary:
    failed = [s for s in samples if not s.ok]
    latencies = [s.latency_s * 1000 for s in samples if s.ok]
    return Summary(
        total=len(samples), failed=len(failed),
        p50_ms=percentile(latencies, 50), p99_ms=percentile(latencies, 99),
        bodies=dict(Counter(s.body for s in samples if s.ok)),
        errors=dict(Counter(s.error or f"HTTP {s.status}" for s in failed)),
    )


async def fetch(host: str, port: int, path: str = "/", timeout_s: float = 5.0) -> Sample:
    """One GET on a fresh connection."""
    start = time.monotonic()
    status, body, error = 0, "", ""
    try:
        with anyio.fail_after(timeout_s):
            async with await anyio.connect_tcp(host, port) as stream:
                await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    try:
                        chunk = await stream.receive(65536)
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        first = head.split(b"\r\n", 1)[0].split()
        if len(first) >= 2 and first[1].isdigit():
            status = int(first[1])
            body = rest.decode(errors="replace").strip().split("\n", 1)[0][:80]
        else:
            error = "no HTTP response"
    except TimeoutError:
        error = f"timeout after {timeout_s:g}s"
    except OSError as exc:
        error = type(exc).__name__
    return Sample(start=start, latency_s=time.monotonic() - start, status=status, body=body, error=error)


class Load:
    """Samples of one steady load run; read them while it runs or after."""

    def __init__(self, host: str, port: int, rate: float, path: str, timeout_s: float) -> None:
        self.host, self.port, self.rate, self.path, self.timeout_s = host, port, rate, path, timeout_s
        self.samples: list[Sample] = []
        self.started = time.monotonic()

    def mark(self) -> float:
        return time.monotonic()

    def between(self, t0: float = 0.0, t1: float = math.inf) -> list[Sample]:
        """Samples of requests sent in [t0, t1)."""
        return [s for s in self.samples if t0 <= s.start < t1]

    def summary(self, t0: float = 0.0, t1: float = math.inf) -> Summary:
        return summarise(self.between(t0, t1))

    async def _one(self) -> None:
        self.samples.append(await fetch(self.host, self.port, self.path, self.timeout_s))

    async def _run(self, stop: anyio.Event) -> None:
        interval = 1.0 / self.rate
        async with anyio.create_task_group() as tg:
            n = 0
            while not stop.is_set():
                tg.start_soon(self._one)
                n += 1
                # Open loop: the schedule is fixed from the start, late ticks are not skipped.
                delay = self.started + n * interval - time.monotonic()
                if delay > 0:
                    with anyio.move_on_after(delay):
                        await stop.wait()


@asynccontextmanager
async def steady_load(host: str, port: int, rate: float = 50.0, path: str = "/",
                      timeout_s: float = 5.0) -> AsyncIterator[Load]:
    """Send GET ``path`` at ``rate`` per second until the block ends; in-flight requests finish."""
    load = Load(host, port, rate, path, timeout_s)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(load._run, stop)
        try:
            yield load
        finally:
            stop.set()


class LoadProcess:
    """``steady_load`` in a child process that appends each sample to ``out`` as a JSON line; the
    same reading interface as :class:`Load` (``mark``, ``between``, ``summary``)."""

    def __init__(self, host: str, port: int, rate: float, out: Path, path: str = "/", timeout_s: float = 5.0) -> None:
        self.out = out
        repo = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(  # stops when its stdin closes (stop(), or this process dying)
            [sys.executable, "-m", "tests.load", host, str(port), str(rate), str(out), path, str(timeout_s)],
            cwd=repo, stdin=subprocess.PIPE, start_new_session=True)

    def mark(self) -> float:
        return time.monotonic()

    @property
    def samples(self) -> list[Sample]:
        if not self.out.exists():
            return []
        return [Sample(**json.loads(line)) for line in self.out.read_text().splitlines() if line.endswith("}")]

    def between(self, t0: float = 0.0, t1: float = math.inf) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.start < t1]

    def summary(self, t0: float = 0.0, t1: float = math.inf) -> Summary:
        return summarise(self.between(t0, t1))

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def _record(host: str, port: int, rate: float, out: Path, path: str, timeout_s: float) -> None:
    written = 0

    def flush(samples: list[Sample]) -> int:
        with out.open("a") as f:
            f.writelines(json.dumps(asdict(s)) + "\n" for s in samples)
        return len(samples)

    async with steady_load(host, port, rate, path, timeout_s) as load, anyio.create_task_group() as tg:
        async def until_stdin_closes() -> None:
            await anyio.to_thread.run_sync(sys.stdin.read)
            tg.cancel_scope.cancel()
        tg.start_soon(until_stdin_closes)
        while True:
            written += flush(load.samples[written:])
            await anyio.sleep(0.2)
    flush(load.samples[written:])  # the requests that were in flight


if __name__ == "__main__":
    h, p, r, o, pa, t = sys.argv[1:7]
    anyio.run(_record, h, int(p), float(r), Path(o), pa, float(t))
