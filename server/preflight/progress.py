"""Progress reporting for the pre-flight tools: the callback type and the call that tolerates its absence."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Progress = Callable[[float, float, str], Awaitable[None]]


async def report_progress(progress: Progress | None, done: float, total: float, message: str) -> None:
    if progress is not None:
        await progress(done, total, message)
