"""How each kind of database is dumped, restored, probed and counted, as argv run by exec.

A service is a database when its ``x-dsm`` block has ``backup.dump`` hooks, or server.roles
resolves it to one (its original image, x-dsm role, what it runs). Kinds: postgres
(pg_dumpall), mysql/mariadb (mysqldump / mariadb-dump), mongo (mongodump), redis (``SAVE``
first, then its volume is archived: the snapshot on disk is consistent).
Credentials are read inside the container from its own environment (``sh -c`` expands them
there), so no password ever sits in our argv, manifest or logs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from server.roles import ServiceRole, resolve_role
from server.xdsm import ServiceSettings

_PG_ENV = 'export PGPASSWORD="${POSTGRES_PASSWORD:-}"; U="${POSTGRES_USER:-postgres}"; '
_MY_ENV = (
    'MYSQL_PWD="${MYSQL_ROOT_PASSWORD:-${MARIADB_ROOT_PASSWORD:-}}"; export MYSQL_PWD; '
)
_MONGO_AUTH = (
    '${MONGO_INITDB_ROOT_USERNAME:+--username "$MONGO_INITDB_ROOT_USERNAME" '
    '--password "$MONGO_INITDB_ROOT_PASSWORD" --authenticationDatabase admin}'
)
# One line per table, "database.schema.table|rows", exact counts (query_to_xml runs count(*)).
_PG_COUNT_SQL = (
    "SELECT current_database() || '.' || table_schema || '.' || table_name || '|' || "
    "(xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', table_schema, table_name), "
    "false, true, '')))[1]::text FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


@dataclass(frozen=True)
class Recipe:
    kind: str
    ext: str
    dump: list[str] | None
    """argv whose stdout is the dump; None for kinds archived after a snapshot (redis)."""
    restore: list[str] | None
    """argv reading the dump on stdin; None when restoring is not possible this way."""
    ready: list[str] | None = None
    """Exits 0 once the database accepts connections (restore drills in a scratch container)."""
    counts: list[str] | None = None
    """Prints 'table|rows' lines."""
    before_restore: list[str] | None = None
    """Run first in the live container (drop other sessions so databases can be dropped)."""
    snapshot: list[str] | None = None
    """Flushes a consistent snapshot to the volume before it is archived (redis)."""
    scratch_env: dict[str, str] = field(default_factory=dict)
    """Environment for a scratch container of this image (on top of the service's user names)."""
    counts_kind: str | None = None
    """The kind whose ``counts`` these are (a hooks dump of a known database counts as that kind)."""


def _postgres() -> Recipe:
    return Recipe(
        kind="postgres",
        ext="sql",
        dump=["sh", "-c", _PG_ENV + 'exec pg_dumpall --clean --if-exists -U "$U"'],
        # ON_ERROR_STOP stays off: pg_dumpall --clean drops and recreates the roles, and the role
        # we connect as cannot be dropped; psql reports that and goes on, as intended.
        restore=["sh", "-c", _PG_ENV + 'exec psql -X -q -v ON_ERROR_STOP=0 -U "$U" -d postgres -o /dev/null'],
        counts_kind="postgres",
        ready=["sh", "-c", 'pg_isready -q -h 127.0.0.1 -U "${POSTGRES_USER:-postgres}"'],
        counts=[
            "sh",
            "-c",
            _PG_ENV + 'psql -X -At -U "$U" -d postgres -c "SELECT datname FROM pg_database WHERE datallowconn '
            'AND NOT datistemplate ORDER BY 1" | while IFS= read -r db; do psql -X -At -U "$U" -d "$db" -c "'
            + _PG_COUNT_SQL.replace('"', '\\"')
            + '" || exit 1; done',
        ],
        before_restore=[
            "sh",
            "-c",
            _PG_ENV + 'psql -X -q -At -U "$U" -d postgres -c "SELECT count(pg_terminate_backend(pid)) FROM '
            "pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'\"",
        ],
        scratch_env={"POSTGRES_HOST_AUTH_METHOD": "trust"},
    )


def _mysql() -> Recipe:
    return Recipe(
        kind="mysql",
        ext="sql",
        dump=["sh", "-c", _MY_ENV + 'D=$(command -v mariadb-dump || command -v mysqldump); exec "$D" -uroot '
              "--all-databases --single-transaction --routines --events --triggers"],
        restore=["sh", "-c", _MY_ENV + 'C=$(command -v mariadb || command -v mysql); exec "$C" -uroot'],
        ready=["sh", "-c", _MY_ENV + 'A=$(command -v mariadb-admin || command -v mysqladmin); exec "$A" -uroot ping'],
    )


def _mongo() -> Recipe:
    return Recipe(
        kind="mongo",
        ext="archive",
        dump=["sh", "-c", "exec mongodump --archive --quiet " + _MONGO_AUTH],
        restore=["sh", "-c", "exec mongorestore --archive --drop --quiet " + _MONGO_AUTH],
        ready=["sh", "-c", 'M=$(command -v mongosh || command -v mongo); exec "$M" --quiet --eval '
               "'db.adminCommand(\"ping\")'"],
    )


def _redis() -> Recipe:
    return Recipe(
        kind="redis",
        ext="rdb",
        dump=None,
        restore=None,
        snapshot=["sh", "-c", 'REDISCLI_AUTH="${REDIS_PASSWORD:-}" exec redis-cli SAVE'],
    )


_BY_KIND = {"postgres": _postgres, "mysql": _mysql, "mongo": _mongo, "redis": _redis}


def recipe_for_role(role: ServiceRole, settings: ServiceSettings) -> Recipe | None:
    """The recipe for a service whose role is resolved (server.roles): its x-dsm backup hooks, else
    the built-in recipe of its database kind; none for anything that is not a database."""
    hooks = settings.backup
    if hooks.dump:
        # Hooks replace how the dump is taken, not what the database is: a known kind's row counts
        # are still recorded, so the data check after a restore compares rows (a dump without
        # --clean replayed over the failed version's data shows up as a mismatch, not as success).
        known = recipe_by_kind(role.known_kind) if role.known_kind else None
        counts = known.counts if known is not None else None
        return Recipe(kind="hooks", ext="dump", dump=list(hooks.dump),
                      restore=list(hooks.restore) if hooks.restore else None,
                      counts=counts, counts_kind=role.known_kind if counts is not None else None)
    if not role.is_database or role.kind is None:
        return None
    factory = _BY_KIND.get(role.kind)
    return factory() if factory is not None else None


def recipe_for(image: str | None, settings: ServiceSettings) -> Recipe | None:
    """The recipe for a service known only by its image reference and settings (no command known)."""
    return recipe_for_role(resolve_role(settings, image=image), settings)


def scratch_environment(recipe: Recipe, service_env: dict[str, str]) -> dict[str, str]:
    """Environment for a scratch container: the service's user names, fresh throw-away passwords."""
    keep = ("POSTGRES_USER", "MONGO_INITDB_ROOT_USERNAME")
    env = {k: v for k, v in service_env.items() if k in keep}
    password = secrets.token_urlsafe(18)
    env.update({
        "POSTGRES_PASSWORD": password,
        "MYSQL_ROOT_PASSWORD": password,
        "MARIADB_ROOT_PASSWORD": password,
    })
    if "MONGO_INITDB_ROOT_USERNAME" in env:
        env["MONGO_INITDB_ROOT_PASSWORD"] = password
    env.update(recipe.scratch_env)
    return env


def parse_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, rows = line.rpartition("|")
        if sep and rows.strip().isdigit():
            counts[name] = int(rows)
    return counts


def recipe_by_kind(kind: str) -> Recipe | None:
    """The built-in recipe of a dump's kind (hooks have none: their argv is in the manifest)."""
    factory = _BY_KIND.get(kind)
    return factory() if factory is not None else None


def counts_recipe(kind: str, counted_as: str | None) -> Recipe | None:
    """The recipe whose ``counts`` recount a dump's tables: its own kind's, or for a hooks dump the
    kind it was counted as when taken (``DatabaseDump.counted_as``)."""
    return recipe_by_kind(counted_as or kind)
