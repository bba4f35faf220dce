"""The file ``docker stack deploy`` gets: the stack as ``docker compose config`` rendered it
(interpolation, .env, profiles, includes done once, by Compose), reshaped where the stack loader
reads the same key differently, with each service's strategy written as Swarm's own
``update_config``/``rollback_config``.

Strategies map onto Swarm's updater instead of being reimplemented (Swarm rolls tasks across nodes;
we only choose how):

==================  =========== =========== ==============
strategy            order       parallelism failure_action
==================  =========== =========== ==============
rolling (default)   start-first 1           pause
blue_green          start-first 0 (all)     pause
recreate            stop-first  0 (all)     pause
planned_downtime    stop-first  0 (all)     pause
==================  =========== =========== ==============

``monitor`` is how long Swarm watches each new task before it calls the update a success; a task
that fails inside it pauses that service's update, our gate sees it, and the stack-level rollback
(server/deploy/swarm/executor.py) sends every changed service back with ``docker service
rollback``, which follows each service's ``rollback_config``. ``pause`` rather than Swarm's own
``rollback``: a per-service rollback Swarm starts by itself races ours (seen in the engine tests:
the stack-level rollback came back failed while Swarm was rolling a service back itself). A file that
asks for ``failure_action: rollback`` keeps it: the executor waits for such rollbacks to settle.
A host-mode published port forces stop-first: a new task
cannot bind the port the old one holds on the same node (Swarm leaves it pending: "host-mode port
already in use"). What the file states itself (``deploy.update_config`` keys) wins over ours.
"""

from __future__ import annotations

import copy
import json
from typing import Any

MONITOR = "5s"

_ORDERS: dict[str, tuple[str, int]] = {
    "rolling": ("start-first", 1),
    "blue_green": ("start-first", 0),
    "recreate": ("stop-first", 0),
    "planned_downtime": ("stop-first", 0),
}


def update_config(strategy: str | None, body: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Swarm's update_config for ``strategy`` on service ``body``; and a note when it had to differ."""
    order, parallelism = _ORDERS.get(strategy or "rolling", _ORDERS["rolling"])
    note = None
    if order == "start-first" and host_ports(body):
        order, note = "stop-first", "stop-first: a host-mode port cannot be bound by the new and old task at once"
    return {"order": order, "parallelism": parallelism, "failure_action": "pause", "monitor": MONITOR}, note


def host_ports(body: dict[str, Any]) -> list[int]:
    """Published ports in host mode (the only ones that work without IPVS)."""
    out = []
    for port in body.get("ports") or []:
        if isinstance(port, dict) and port.get("mode") == "host" and port.get("published") not in (None, ""):
            out.append(int(str(port["published"]).split("-")[0]))
    return out


def stack_file(project: str, rendered: dict[str, Any], strategies: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """``rendered`` (compose config JSON) as a stack file; ``strategies``: service -> strategy name.
    Returns the file and notes (what was changed and why)."""
    doc = copy.deepcopy(rendered)
    notes: list[str] = []
    doc.pop("name", None)  # the stack's name is the deploy argument
    for kind in ("networks", "volumes"):
        # Compose names them <project>_<key>; the stack loader does the same with the stack name.
        # An explicit other name (an external network, say) stays.
        for key, body in (doc.get(kind) or {}).items():
            if isinstance(body, dict) and body.get("name") == f"{project}_{key}":
                body.pop("name")
    for name, body in (doc.get("services") or {}).items():
        for key in [k for k, v in body.items() if v is None]:
            body.pop(key)  # `command: null` and friends: the stack loader's schema refuses null
        if isinstance(body.get("depends_on"), dict):
            body["depends_on"] = sorted(body["depends_on"])  # conditions mean nothing to Swarm (no ordering)
        body.pop("build", None)  # pre-flight warns: the nodes run `image`, nothing is built
        for port in body.get("ports") or []:
            if isinstance(port, dict) and isinstance(port.get("published"), str) and port["published"].isdigit():
                port["published"] = int(port["published"])
        deploy = body.setdefault("deploy", {})
        ours, note = update_config(strategies.get(name), body)
        given = deploy.get("update_config") or {}
        deploy["update_config"] = {**ours, **given}
        deploy["rollback_config"] = {"order": deploy["update_config"]["order"], "parallelism": 0,
                                     **(deploy.get("rollback_config") or {})}
        if note and "order" not in given:
            notes.append(f"{name}: {note}")
    return doc, notes


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True)
