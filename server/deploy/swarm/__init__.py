"""Docker Swarm as a deploy target: a stack with x-dsm ``mode: swarm`` is deployed by
``docker stack deploy`` (server/deploy/swarm/executor.py) under the same Transaction as Compose.

The one place the executor is chosen from the stack is :func:`executor_for`: the Transaction asks
it once the stack is loaded (a per-target runtime later passes its own runtime, nothing else changes).
"""

from __future__ import annotations

from typing import Any

from server.stackmodel import LoadedStack


def is_swarm(stack: LoadedStack) -> bool:
    return getattr(stack.settings, "mode", "compose") == "swarm"


def executor_for(runtime: Any, stack: LoadedStack, default: Any) -> Any:
    """A fresh SwarmExecutor for a swarm stack (it holds the specs one deploy recorded: never
    shared between calls), else the Compose executor ``default`` (or the one a SwarmExecutor
    replaced, when a Transaction is reused for another stack)."""
    from server.deploy.swarm.executor import SwarmExecutor

    base = default.replaced if isinstance(default, SwarmExecutor) else default
    return SwarmExecutor(runtime, replaced=base) if is_swarm(stack) else base
