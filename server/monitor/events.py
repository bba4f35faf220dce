"""The ``stack://{stack}/events`` resource: recent engine events and the watcher's actions."""

from __future__ import annotations

import json
import time

from server.engine import events_between
from server.monitor import watchstate
from server.monitor.resolve import resolve_stack
from server.runtime import Runtime

WINDOW_S = 3600
MAX_EVENTS = 200


async def recent_events(runtime: Runtime, stack: str) -> str:
    name = resolve_stack(runtime.settings, stack).name
    now = int(time.time())
    raw = await events_between(runtime.engine(), now - WINDOW_S, now,
                               {"type": "container", "label": f"com.docker.compose.project={name}"})
    events = [
        {
            "time": ev.get("time"),
            "action": ev.get("Action") or ev.get("status"),
            "service": ((ev.get("Actor") or {}).get("Attributes") or {}).get("com.docker.compose.service"),
            "container": ((ev.get("Actor") or {}).get("Attributes") or {}).get("name"),
        }
        for ev in raw[-MAX_EVENTS:]
        if not str(ev.get("Action") or "").startswith("exec_")
    ]
    actions = [a for a in (watchstate.load(runtime.settings).get("actions") or []) if a.get("stack") == name]
    return json.dumps({"stack": name, "window_s": WINDOW_S, "events": events, "watcher_actions": actions[-50:]})
