"""Watching running stacks: status, logs, diagnosis, alerts, and the watcher that heals them.

Small modules, one concern each: ``models`` (result shapes), ``status`` (one list query and one
inspect per container), ``logs``, ``diagnose`` and ``netcheck`` (the troubleshooting pass),
``alerts`` (apprise), ``budget`` and ``watchstate`` (what the watcher persists), ``watcher``,
``control`` (stack_control), ``metrics`` (Prometheus).
"""
