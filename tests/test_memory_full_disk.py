"""The embedded memory on a full state disk (issue 15): its store writes through memory-mapped
sparse files, and a write to an unbacked page on a full disk is SIGBUS, which killed the whole
server. Now the memory refuses to open under a free-space floor, with a clear error. The store is
exercised in a child process, so that on a build without the floor the crash fails this test
instead of killing the test run. The state directory is a tiny tmpfs (root only)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.memory.errors import MemoryUnavailable
from server.memory.lease import ShardLease

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True,
                             timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[:200]}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_the_lease_refuses_to_open_on_a_disk_without_room(tiny: Path, tmp_path: Path) -> None:
    opened: list[int] = []
    lease: ShardLease[int] = ShardLease(tiny / "memory", lambda: opened.append(1) or 1, lambda _: None)
    with pytest.raises(MemoryUnavailable) as refused, lease.hold():
        pass
    assert "MiB free" in str(refused.value) and not opened
    lease.close()
    roomy: ShardLease[int] = ShardLease(tmp_path / "memory", lambda: 1, lambda _: None)
    with roomy.hold() as value:  # an ordinary disk: opened as before
        assert value == 1
    roomy.close()


_WRITE = """
import sys
from pathlib import Path
from server.memory import open_memory
from server.memory.errors import MemoryStoreError
from server.settings import Settings
memory = open_memory(Settings(stacks_root=Path(sys.argv[1]), state_dir=Path(sys.argv[2])))
try:
    memory.record_deployment(stack="web", services=["web"], outcome="success")
    print("written")
except MemoryStoreError as exc:
    print("refused:", exc)
finally:
    memory.close()
"""


def test_a_memory_write_on_a_full_disk_is_refused_not_a_crash(tiny: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _WRITE, str(tmp_path), str(tiny / "state")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])  # -7 was SIGBUS
    assert result.stdout.startswith("refused:") and "MiB free" in result.stdout
