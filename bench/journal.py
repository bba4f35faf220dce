"""What the journal costs: begin+end, a phase, operation_status and stack_history reads on a full journal.

Run: .venv/bin/python bench/journal.py   (prints medians; no Docker needed)

The reads scan the whole file (with a substring pre-filter), so they are measured on a journal
filled to just under DSM_JOURNAL_MAX_BYTES (8 MiB). The baseline is one bare ``write + fsync`` of
a line of the same size on the same disk, measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.operations import Operations
from server.operations.journal import encode
from server.settings import Settings


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        ops = Operations(Settings(stacks_root=Path(tmp) / "stacks", state_dir=state))

        fsync_s = []
        raw = Path(tmp) / "raw.jsonl"
        line = b'{"op":"op-20260101T000000Z-00000000","t":"phase","stack":"web","name":"deploy"}\n'
        for _ in range(200):
            start = time.perf_counter()
            fd = os.open(raw, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, line)
            os.fsync(fd)
            os.close(fd)
            fsync_s.append(time.perf_counter() - start)

        begin_end, phase = [], []
        for i in range(200):
            start = time.perf_counter()
            op = ops.begin("web", "deploy", {"i": i})
            mid = time.perf_counter()
            op.phase("deploy", "ok", detail="docker compose up", duration_s=1.0)
            after_phase = time.perf_counter()
            op.end("deployed", {"services": [{"name": "web", "image": "web:1", "image_digest": "sha256:" + "a" * 64}]})
            begin_end.append((mid - start) + (time.perf_counter() - after_phase))
            phase.append(after_phase - mid)

        t_fill = time.perf_counter()
        # Fill to just under the compaction threshold with other stacks' finished operations
        # (written directly: filling is set-up, not what is measured).
        pad = "p" * 1500
        with ops.journal.path.open("ab") as fill:
            n = 0
            while fill.tell() < ops.journal.max_bytes - 64 * 1024:
                oid, stack = f"op-20260101T000000Z-{n:08x}", f"fill{n % 20}"
                fill.write(encode({"op": oid, "t": "begin", "stack": stack, "kind": "deploy",
                                   "at": "2026-01-01T00:00:00.000Z", "pid": 1, "params": {"pad": pad}}))
                fill.write(encode({"op": oid, "t": "end", "stack": stack, "at": "2026-01-01T00:00:01.000Z",
                                   "status": "deployed", "result": {"pad": pad}}))
                n += 1
        full_mib = ops.journal.size() / 2**20
        target = ops.history("web", limit=1)[0].operation_id
        print(f"(filled in {time.perf_counter() - t_fill:.1f} s)", file=sys.stderr)
        get_s, hist_s, begin_full = [], [], []
        for _ in range(20):
            start = time.perf_counter()
            ops.begin("web", "deploy").end("unchanged")
            begin_full.append(time.perf_counter() - start)
            start = time.perf_counter()
            assert ops.get(target) is not None
            get_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            ops.history("web", limit=20)
            hist_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        dropped = ops.journal.compact()
        compact_s = time.perf_counter() - start

        print(f"bare write+fsync of one line   : {median_ms(fsync_s):7.2f} ms (baseline)")
        print(f"begin + end (2 fsync'd records): {median_ms(begin_end):7.2f} ms "
              f"({median_ms(begin_end) / median_ms(fsync_s):.1f}x baseline)")
        print(f"phase (1 fsync'd record)       : {median_ms(phase):7.2f} ms "
              f"({median_ms(phase) / median_ms(fsync_s):.1f}x baseline)")
        print(f"on a {full_mib:.1f} MiB journal ({n} other operations):")
        print(f"  begin + end                  : {median_ms(begin_full):7.2f} ms")
        print(f"  get (operation_status)       : {median_ms(get_s):7.2f} ms")
        print(f"  history(limit=20)            : {median_ms(hist_s):7.2f} ms")
        print(f"compaction of that journal     : {compact_s * 1000:7.1f} ms ({dropped} operations dropped, "
              f"{ops.journal.size() / 2**20:.1f} MiB left)")


if __name__ == "__main__":
    main()
