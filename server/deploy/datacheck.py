"""The data check after a rollback's restore: is the data what the backup says it was?

Tables and row counts in each restored database, counted by the same recipe the backup used
(``BackupStore.exec_counts``), against those recorded when the dump was taken. A missing or extra
table, or a different count, is a mismatch: the rollback then ends ``failed``. A dump with no
counts recorded (not postgres, hooks of an unknown kind) is reported plainly as NOT verified, never
as a success; a hooks dump of a known kind was counted as that kind when taken and is recounted so.
"""

from __future__ import annotations

from typing import Any

from server.backups.databases import counts_recipe
from server.engine import Engine


async def data_check(engine: Engine, store: Any, project: str, backup: Any, services: list[str] | None
                     ) -> tuple[bool, str]:
    """Tables and row counts now against those recorded when each dump was taken (postgres dumps
    record them). ``services`` None: every dump of the backup. Returns (all match, summary)."""
    running = {c.service: c.id for c in await engine.compose_containers(project) if c.running}
    ok, parts = True, []
    for dump in backup.dumps:
        if services is not None and dump.service not in services:
            continue
        if dump.tables is None:
            parts.append(f"{dump.service}: restored, not verified: no row counts were recorded for this dump")
            continue
        recipe = counts_recipe(dump.kind, dump.counted_as)
        now = await store.exec_counts(running[dump.service], recipe) \
            if recipe is not None and dump.service in running else None
        if now is None:
            ok = False
            parts.append(f"{dump.service}: rows could not be counted after the restore")
            continue
        diff = [f"{t} {now.get(t, 'missing')} rows, dumped {n}" for t, n in sorted(dump.tables.items())
                if now.get(t) != n]
        diff += [f"{t} not in the dump" for t in sorted(set(now) - set(dump.tables))]
        if diff:
            ok = False
            parts.append(f"{dump.service}: MISMATCH " + "; ".join(diff[:5]))
        else:
            parts.append(f"{dump.service}: {len(dump.tables)} table(s), {sum(dump.tables.values())} row(s) as dumped")
    return ok, ("; ".join(parts) or "no dump: volume archives restored, not verified (rows not counted)")[:400]
