"""``deploy.update_config`` of a service, read in plain Compose (Swarm's semantics where they fit).

- ``parallelism``: containers replaced per batch (0: all at once; default 1);
- ``delay``: wait between batches; ``monitor``: how long each batch's new containers must stay
  ready after turning ready (default 5 s, as Swarm: a release that crashes after its first
  healthy probe is caught here, not after the old containers are gone);
- ``order``: ``start-first`` (default for rolling) or ``stop-first``;
- ``failure_action``: ``rollback`` (default: the transaction's rollback runs), ``pause`` (stop
  here, no rollback: the report says how far it got), ``continue`` (try the remaining batches,
  then fail: every failing container is named);
- ``max_failure_ratio``: the share of replicas whose new container may fail ONCE and be
  retried before ``failure_action`` applies (a transient failure is not a bad release).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(value: Any, default: float) -> float:
    """A Compose duration (``10s``, ``1m30s``, ``500ms``; a bare number: seconds) in seconds."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return default
    return sum(float(n) * _UNIT[u] for n, u in parts)


@dataclass(frozen=True)
class UpdateConfig:
    parallelism: int = 1
    delay_s: float = 0.0
    order: Literal["start-first", "stop-first"] = "start-first"
    failure_action: Literal["rollback", "pause", "continue"] = "rollback"
    monitor_s: float = 5.0
    max_failure_ratio: float = 0.0

    @classmethod
    def of(cls, body: dict[str, Any]) -> UpdateConfig:
        raw = ((body.get("deploy") or {}).get("update_config")) or {}
        order = str(raw.get("order") or "start-first")
        action = str(raw.get("failure_action") or "rollback")
        try:
            parallelism = max(0, int(raw.get("parallelism", 1)))
        except (TypeError, ValueError):
            parallelism = 1
        try:
            ratio = min(1.0, max(0.0, float(raw.get("max_failure_ratio") or 0)))
        except (TypeError, ValueError):
            ratio = 0.0
        return cls(parallelism=parallelism, delay_s=seconds(raw.get("delay"), 0.0),
                   order="stop-first" if order == "stop-first" else "start-first",
                   failure_action=action if action in ("pause", "continue") else "rollback",  # type: ignore[arg-type]
                   monitor_s=seconds(raw.get("monitor"), 5.0), max_failure_ratio=ratio)

    def batch(self, total: int) -> int:
        return total if self.parallelism == 0 else max(1, min(self.parallelism, total))
