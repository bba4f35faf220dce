"""A digest of what a tar archive holds (names, types, modes, owners, link targets, contents),
independent of entry order and timestamps, read as a stream: two archives of the same tree give
the same digest however the engine ordered them. Restore drills compare volumes with it."""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from typing import BinaryIO

_READ = 1 << 20


@dataclass(frozen=True)
class TarContent:
    digest: str
    files: int
    entries: int


def tar_content(stream: BinaryIO) -> TarContent:
    lines: list[bytes] = []
    files = 0
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name.removeprefix("./").rstrip("/")
            if name in ("", "."):
                continue  # the volume root itself: its mode belongs to the mount point
            content = ""
            if member.isfile():
                files += 1
                handle = archive.extractfile(member)
                digest = hashlib.sha256()
                while handle is not None and (chunk := handle.read(_READ)):
                    digest.update(chunk)
                content = digest.hexdigest()
            kind = member.type.decode() if isinstance(member.type, bytes) else str(member.type)
            line = f"{name}\0{kind}\0{member.mode:o}\0{member.uid}:{member.gid}\0{member.linkname}\0{content}"
            lines.append(hashlib.sha256(line.encode("utf-8", "surrogateescape")).digest())
    # Drain trailing padding so the stream (an HTTP response) is read to its end.
    while stream.read(_READ):
        pass
    total = hashlib.sha256()
    for entry in sorted(lines):
        total.update(entry)
    return TarContent(digest=total.hexdigest(), files=files, entries=len(lines))


def tar_content_of_file(path: str) -> TarContent:
    with open(path, "rb") as handle:
        return tar_content(handle)
