"""The strategy registry: the Compose executor (server/deploy/compose_executor.py) rolls a service
with the strategy its plan names.

``strategy_named(name)`` is the registry; server/deploy/strategies/select.py decides which one a
service gets and why (the plan reports it); each module executes one.
"""

from __future__ import annotations

from server.deploy.executor import Strategy
from server.deploy.strategies.downtime import PlannedDowntime
from server.deploy.strategies.recreate import RECREATE, Recreate
from server.deploy.strategies.rolling import Rolling
from server.deploy.strategies.select import normalize

_REGISTRY: dict[str, Strategy] = {"recreate": RECREATE, "rolling": Rolling(), "planned_downtime": PlannedDowntime()}


def strategy_named(name: str) -> Strategy:
    """The strategy executed under ``name`` (hyphenated forms accepted); KeyError when none is."""
    return _REGISTRY[normalize(name)]


def register(strategy: Strategy) -> None:
    """Add a strategy (blue_green lives on another branch and registers itself here)."""
    _REGISTRY[strategy.name] = strategy


__all__ = ["RECREATE", "PlannedDowntime", "Recreate", "Rolling", "register", "strategy_named"]
