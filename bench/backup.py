"""Benchmark: backup_stack(create) of a stack with a 500 MB volume vs `docker run --rm -v VOL:/v IMAGE tar c`.

The server runs as its own process over stdio, called the way an agent calls it; its archive
goes through the engine's archive API from a never-started helper container and is hashed
while written. The baseline is what an operator types: a throw-away container tarring the same
volume to a file on the same disk. The two alternate (ABBA), medians and their ratio are printed
with the median of per-pair ratios, and the server process's peak RSS (VmHWM) after all rounds.
Targets: ratio <= 1.2, peak RSS < 200 MB.

    .venv/bin/python bench/backup.py [--rounds 6] [--mb 500] [--check]
"""

from __future__ import annotations

import argparse
import os
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

TARGET_RATIO = 1.2
TARGET_RSS_MB = 200
EXE = str(Path(sys.executable).parent / "docker-stack-mcp")


def provision(key: str, default: str) -> str:
    path = REPO / ".cache" / "provision.env"
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith(key + "="):
            return line.split("=", 1)[1].strip()
    return default


def docker(*argv: str, **kw: Any) -> str:
    return subprocess.run(["docker", *argv], check=True, capture_output=True, text=True, timeout=900, **kw).stdout


def fill(project: str, image: str, mb: int) -> str:
    """The stack's volume with one big file and 2,000 small ones (real trees have both)."""
    volume = f"{project}_data"
    small = min(100, mb // 5)
    script = (f"dd if=/dev/urandom of=/v/big.bin bs=1M count={mb - small} 2>/dev/null && "
              f"i=0; while [ $i -lt 2000 ]; do dd if=/dev/urandom of=/v/f$i bs={small * 512} count=1 2>/dev/null; "
              "i=$((i+1)); done")
    docker("run", "--rm", "--label", "dsm.test=1", "-v", f"{volume}:/v", image, "sh", "-c", script)
    return volume


def server_pid(marker: str) -> int | None:
    """The stdio server we spawned: a descendant of this process whose environment names our state dir."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"docker-stack-mcp" in cmdline and marker.encode() in environ:
            return int(entry.name)
    return None


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench(rounds: int, mb: int) -> dict[str, Any]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    image = provision("DSM_TEST_IMAGE_WEB_1_0", "dsm-test/web:1.0")
    project = f"dsmtest{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="dsm-bench-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "stacks"
        (root / project).mkdir(parents=True)
        (root / project / "compose.yaml").write_text(
            f"name: {project}\nservices:\n  web:\n    image: {image}\n    init: true\n"
            "    volumes: [data:/data]\nvolumes:\n  data: {}\n"
        )
        state = Path(tmp) / "state"
        try:
            docker("compose", "--project-directory", str(root / project), "up", "-d", "--wait")
            volume = fill(project, image, mb)
            env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", tmp), "DSM_STACKS_ROOT": str(root),
                   "DSM_STATE_DIR": str(state), "DSM_BACKUP_KEEP": "1"}
            # No embedding model: its warm-up (onnxruntime, ~250 MB) is the memory feature's cost,
            # measured by bench/memory.py, not the backup path's; offline so nothing is downloaded.
            env["HF_HUB_OFFLINE"] = "1"
            ours_s: list[float] = []
            base_s: list[float] = []
            cp_s: list[float] = []
            sizes: list[int] = []
            async with Client(StdioServerParameters(command=EXE, args=[], env=env)) as client:

                async def ours() -> None:
                    started = time.perf_counter()
                    result = await client.call_tool("backup_stack", {"stack": project, "action": "create"})
                    ours_s.append(time.perf_counter() - started)
                    assert not result.is_error, result.content
                    sizes.append(result.structured_content["backups"][0]["bytes"])

                def baseline() -> None:
                    out = Path(tmp) / "baseline.tar"
                    started = time.perf_counter()
                    with out.open("wb") as handle:
                        subprocess.run(["docker", "run", "--rm", "--label", "dsm.test=1", "-v", f"{volume}:/v",
                                        image, "tar", "c", "-C", "/v", "."], stdout=handle, check=True, timeout=900)
                    base_s.append(time.perf_counter() - started)
                    out.unlink()

                def docker_cp() -> None:
                    """The same archive API through the docker CLI: create (never start), cp out, rm."""
                    out = Path(tmp) / "cp.tar"
                    started = time.perf_counter()
                    cid = docker("create", "--label", "dsm.test=1", "-v", f"{volume}:/v", image).strip()
                    try:
                        with out.open("wb") as handle:
                            subprocess.run(["docker", "cp", f"{cid}:/v/.", "-"], stdout=handle, check=True,
                                           timeout=900)
                    finally:
                        docker("rm", "-f", cid)
                    cp_s.append(time.perf_counter() - started)
                    out.unlink()

                await ours()  # warm-up: the server's first call pays its lazy imports and docker connect
                pid = server_pid(str(state))
                rss_before = peak_rss_mb(pid) if pid else float("nan")
                ours_s.clear()
                sizes.clear()
                for index in range(rounds):
                    if index % 2 == 0:
                        baseline()
                        await ours()
                        docker_cp()
                    else:
                        docker_cp()
                        await ours()
                        baseline()
                rss = peak_rss_mb(pid) if pid else float("nan")
        finally:
            docker("compose", "--project-directory", str(root / project), "down", "-v")
            refs = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                          f"reference=dsm-pin/{project}-*").split()
            if refs:
                docker("rmi", *refs)
    return {"ours": ours_s, "base": base_s, "cp": cp_s, "bytes": sizes[-1] if sizes else 0, "rss_mb": rss,
            "rss_first_mb": rss_before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    result = anyio.run(bench, args.rounds, args.mb)
    ours, base = result["ours"], result["base"]
    ratio = statistics.median(ours) / statistics.median(base)
    pairs = statistics.median(o / b for o, b in zip(ours, base, strict=True))
    print(f"backup.py: {args.mb} MB volume ({result['bytes'] / 1e6:.0f} MB backup), {args.rounds} rounds alternated")
    print(f"  backup_stack create (stdio): median {statistics.median(ours):.2f}s  runs {[round(x, 2) for x in ours]}")
    print(f"  docker run --rm tar c      : median {statistics.median(base):.2f}s  runs {[round(x, 2) for x in base]}")
    cp = result["cp"]
    print(f"  docker create + cp + rm    : median {statistics.median(cp):.2f}s  runs {[round(x, 2) for x in cp]}")
    print(f"  ratio vs docker run tar (median/median) {ratio:.2f}  median per-pair ratio {pairs:.2f}  "
          f"target <= {TARGET_RATIO}")
    print(f"  ratio vs docker cp (same archive API via the CLI) {statistics.median(ours) / statistics.median(cp):.2f}")
    print(f"  server peak RSS (VmHWM) {result['rss_mb']:.0f} MB after all rounds "
          f"({result['rss_first_mb']:.0f} MB after the first backup)  target < {TARGET_RSS_MB} MB")
    ok = ratio <= TARGET_RATIO and result["rss_mb"] < TARGET_RSS_MB
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
