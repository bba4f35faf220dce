"""Concurrency for host checks: run jobs in parallel, failing with the first error as itself."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

_PARALLEL = 16
"""How many engine requests (registry checks, docker stats) may be in flight at once."""

T = TypeVar("T")


async def run_parallel(jobs: list[Callable[[], Awaitable[None]]]) -> None:
    """Run ``jobs`` concurrently; re-raise the first failure as itself (not an ExceptionGroup),
    so DockerUnavailable reaches the caller as the error it is. Cancellation passes through."""
    failures: list[Exception] = []

    async def guarded(job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except Exception as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(guarded, job)
    if failures:
        raise failures[0]


async def run_for_each(job: Callable[[T], Awaitable[None]], items: Iterable[T]) -> None:
    """Run ``job`` on every item concurrently, at most _PARALLEL at a time; failures as in run_parallel."""
    limiter = anyio.CapacityLimiter(_PARALLEL)

    async def limited(item: T) -> None:
        async with limiter:
            await job(item)

    await run_parallel([functools.partial(limited, item) for item in items])
