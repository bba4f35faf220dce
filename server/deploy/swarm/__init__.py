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
    """The SwarmExecutor for a swarm stack, else ``default`` (the Compose executor)."""
    if not is_swarm(stack):
        return default
    from server.deploy.swarm.executor import SwarmExecutor

    return default if isinstance(default, SwarmExecutor) else SwarmExecutor(runtime)
