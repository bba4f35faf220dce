"""Version tags of the same shape: ``1.2.3-alpine`` is followed by ``1.2.4-alpine``, never by
``1.3.0-rc1``, ``1.2.4`` or ``1.2.4-bookworm``.

A tag's shape is its prefix (``v`` or nothing), how many numeric parts it has, and its suffix
(everything after the numbers, compared exactly). Only tags of the same shape are compared, so a
pre-release, another variant or a date-stamped build is never offered as the next version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Level = Literal["patch", "minor", "major"]
LEVELS: tuple[Level, ...] = ("patch", "minor", "major")
_TAG = re.compile(r"^(v?)(\d{1,9})(?:\.(\d{1,9}))?(?:\.(\d{1,9}))?((?:[-_+][A-Za-z0-9._-]*)?)$")


@dataclass(frozen=True)
class Version:
    tag: str
    prefix: str
    numbers: tuple[int, ...]
    suffix: str

    @property
    def shape(self) -> tuple[str, int, str]:
        return self.prefix, len(self.numbers), self.suffix


def parse(tag: str) -> Version | None:
    """The tag as a version, or None (``latest``, ``stable``, a digest, a date with dashes...)."""
    match = _TAG.match(tag)
    if not match:
        return None
    numbers = tuple(int(n) for n in match.group(2, 3, 4) if n is not None)
    return Version(tag, match.group(1), numbers, match.group(5))


def level(old: Version, new: Version) -> Level:
    """How far ``new`` is from ``old`` (same shape): the first numeric part that differs."""
    by_position: tuple[Level, ...] = ("major", "minor", "patch")
    for index, (a, b) in enumerate(zip(old.numbers, new.numbers, strict=True)):
        if a != b:
            return by_position[index]
    return "patch"


def newer(current: str, tags: Iterable[str]) -> list[tuple[str, Level]]:
    """The tags newer than ``current`` with its shape, newest first, each with its level."""
    base = parse(current)
    if base is None:
        return []
    found = [v for v in (parse(t) for t in tags) if v is not None and v.shape == base.shape
             and v.numbers > base.numbers]
    found.sort(key=lambda v: v.numbers, reverse=True)
    return [(v.tag, level(base, v)) for v in found]


def newest_within(current: str, tags: Iterable[str], to: Level) -> str | None:
    """The newest tag of ``current``'s shape at most ``to`` away (``minor``: patch or minor)."""
    allowed = LEVELS[: LEVELS.index(to) + 1]
    for tag, lvl in newer(current, tags):
        if lvl in allowed:
            return tag
    return None
