"""Everything under DSM_STATE_DIR is private: directories 0700, files 0600, whatever the umask.

Backups, deployment snapshots, the journal, alerts, the watcher's state and the memory hold
secrets (``.env`` copies, rendered models, log lines). ``Path.mkdir(parents=True, mode=0o700)``
creates the missing parents with the default mode (0755 under the usual umask) and
``shutil.copy2`` copies a source's 0644; these helpers are the one way state is written:

- :func:`private_dir` creates a directory and every missing parent 0700 (and tightens the leaf);
- :func:`write_private` writes a file 0600 from the start, atomically (tmp + fsync + rename);
- :func:`copy_private` copies a file's content (and times) into a 0600 file;
- :func:`open_private` opens a file for binary writing, created 0600;
- :func:`tighten` sets 0700/0600 over a tree another library wrote (the memory shard).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``mkdir -p`` with each directory it creates 0700; ``path`` itself is tightened to 0700."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, DIR_MODE)
        os.chmod(directory, DIR_MODE)  # mkdir's mode passes through the umask; chmod does not
    if not missing:
        with contextlib.suppress(PermissionError):  # not ours to tighten: writing into it says so
            os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start, atomically (tmp + fsync + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an old tmp left with other bits keeps them through O_CREAT
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def open_private(path: Path) -> BinaryIO:
    """``path`` opened for binary writing (truncated), created 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "wb")


def copy_private(source: Path, dest: Path) -> None:
    """Copy ``source``'s content and times to ``dest`` as a 0600 file (never its mode)."""
    with source.open("rb") as src, open_private(dest) as out:
        shutil.copyfileobj(src, out)
    shutil.copystat(source, dest, follow_symlinks=True)
    os.chmod(dest, FILE_MODE)


def tighten(root: Path) -> None:
    """Directories 0700 and files 0600 under ``root`` (a tree a library created with its own modes)."""
    if not root.exists():
        return
    os.chmod(root, DIR_MODE)
    for base, dirs, files in os.walk(root):
        for name in dirs:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(base, name), DIR_MODE)
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(base, name), FILE_MODE)
