"""server.roles: what a service is, from x-dsm, its original image reference and what it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.backups.databases import recipe_for, recipe_for_role
from server.backups.models import PinnedImage
from server.deploy import override
from server.roles import effective_argv, original_from_tags, resolve_role
from server.xdsm import parse_service_settings

PG_EP, PG_CMD = ["docker-entrypoint.sh"], ["postgres"]


def role(image: str | None, dsm: dict[str, Any] | None = None, **kw: Any) -> tuple[str, str | None]:
    r = resolve_role(parse_service_settings("svc", dsm), image=image, **kw)
    assert r.reason
    return r.role, r.kind


def test_a_pinned_postgres_is_still_postgres() -> None:
    pin = "dsm-pin/shop-db:20261207T101010Z-ab12"
    assert role(pin, original="postgres:16", image_entrypoint=PG_EP, image_cmd=PG_CMD) == ("database", "postgres")
    r = resolve_role(parse_service_settings("db", None), image=pin, original="postgres:16")
    assert "originally postgres:16" in r.reason
    # Without a recorded original, the image's default command still says what it is.
    assert role(pin, image_entrypoint=PG_EP, image_cmd=PG_CMD) == ("database", "postgres")
    # Nothing known at all: not a database by a guess.
    assert role(pin) == ("app", None)


def test_a_postgres_image_running_another_program_is_an_application() -> None:
    for command in (["perl", "/srv/api.pl"], ["sh", "-c", "sleep infinity"], "python -m http.server",
                    ["node", "server.js"]):
        assert role("postgres:16", command=command, image_entrypoint=PG_EP, image_cmd=PG_CMD) == ("app", None)
    # The official entrypoint execs any other program it is given.
    assert role("postgres:16", entrypoint=["docker-entrypoint.sh", "perl", "api.pl"]) == ("app", None)
    assert not recipe_for_role(resolve_role(parse_service_settings("api", None), image="postgres:16",
                                            command=["perl", "api.pl"], image_entrypoint=PG_EP),
                               parse_service_settings("api", None))


@pytest.mark.parametrize("command", [
    None,
    ["postgres"],
    ["postgres", "-c", "max_connections=200"],
    ["-c", "shared_buffers=256MB"],
    ["docker-entrypoint.sh", "postgres"],
    ["sh", "-c", "exec docker-entrypoint.sh postgres -c fsync=off"],
    ["tini", "--", "docker-entrypoint.sh", "postgres"],
])
def test_postgres_running_its_server_is_a_database(command: Any) -> None:
    assert role("postgres:16", command=command, image_entrypoint=PG_EP, image_cmd=PG_CMD) == ("database", "postgres")


def test_a_server_program_names_the_kind_whatever_the_image_is_called() -> None:
    assert role("registry:5000/team/datastore:3", command=["postgres", "-D", "/data"]) == ("database", "postgres")
    assert role("acme/cache:1", image_cmd=["redis-server", "/etc/redis.conf"]) == ("database", "redis")


def test_x_dsm_role_wins() -> None:
    assert role("postgres:16", {"role": "web"}) == ("app", None)
    assert role("postgres:16", {"role": "one-shot"}) == ("one_shot", None)
    assert role("postgres:16", {"one-shot": True}) == ("one_shot", None)
    assert role("nginx:1.27", {"role": "database"}) == ("database", None)
    assert role("postgres:16", {"role": "database"}, command=["perl", "x.pl"]) == ("database", "postgres")
    assert role("acme/app:1", {"role": "proxy"}) == ("proxy", None)
    assert role("redis:7", {"role": "cache"}) == ("database", "redis")  # its data is still snapshotted
    assert role("memcached:1", {"role": "cache"}) == ("app", None)
    # Hooks make a database of anything, and keep their argv.
    settings = parse_service_settings("db", {"backup": {"dump": ["pg_dump", "-Fc"]}})
    r = resolve_role(settings, image="acme/app:1")
    assert (r.role, r.kind, r.known_kind) == ("database", "hooks", None)
    # ... and still know what the database is underneath (its row counts are recorded).
    assert resolve_role(settings, image="dsm-pin/s-db:op-1", original="postgres:16").known_kind == "postgres"
    recipe = recipe_for_role(r, settings)
    assert recipe is not None and recipe.dump == ["pg_dump", "-Fc"]


@pytest.mark.parametrize(("image", "kind"), [
    ("mysql:8.4", "mysql"), ("mariadb:11", "mysql"), ("percona/percona-server:8", "mysql"),
    ("mongo:7", "mongo"), ("mongodb/mongodb-community-server:7", "mongo"),
    ("redis:7-alpine", "redis"), ("valkey/valkey:8", "redis"), ("eqalpha/keydb", "redis"),
    ("postgis/postgis:16-3.4", "postgres"), ("timescale/timescaledb:latest-pg16", "postgres"),
    ("docker.io/library/postgres:15@sha256:" + "a" * 64, "postgres"),
])
def test_database_kinds_by_image(image: str, kind: str) -> None:
    assert role(image) == ("database", kind)
    recipe = recipe_for(image, parse_service_settings("db", None))
    assert recipe is not None and recipe.kind == kind


def test_database_kinds_running_their_servers_or_not() -> None:
    assert role("mysql:8", image_entrypoint=PG_EP, image_cmd=["mysqld"]) == ("database", "mysql")
    assert role("mariadb:11", image_entrypoint=PG_EP, image_cmd=["mariadbd"]) == ("database", "mysql")
    assert role("mongo:7", image_entrypoint=PG_EP, image_cmd=["mongod"]) == ("database", "mongo")
    assert role("redis:7", image_entrypoint=PG_EP, image_cmd=["redis-server"]) == ("database", "redis")
    # Clients shipped in the same images are not the database.
    assert role("mysql:8", command=["mysqldump", "-h", "db"], image_entrypoint=PG_EP) == ("app", None)
    assert role("mongo:7", command=["mongosh", "--host", "db"]) == ("app", None)
    assert role("redis:7", command=["redis-cli", "-h", "cache", "monitor"]) == ("app", None)


def test_not_databases_by_name() -> None:
    for image in ("postgrest/postgrest:v12", "supabase/postgres-meta:v0.8", "ghcr.io/example/postgres-exporter:1",
                  "acme/api:1", None):
        assert role(image) == ("app", None), image


def test_one_shot_when_a_service_waits_for_it_to_complete() -> None:
    migrate = {"entrypoint": ["psql", "-h", "db", "-f", "/m.sql"], "image_entrypoint": PG_EP, "image_cmd": PG_CMD}
    assert role("postgres:16", awaited_completion=True, restart="no", **migrate) == ("one_shot", None)
    assert role("postgres:16", awaited_completion=True, **migrate) == ("one_shot", None)
    # Restarted forever, it is not expected to exit: what it runs decides.
    assert role("postgres:16", awaited_completion=True, restart="always", **migrate) == ("app", None)
    assert role("postgres:16", **migrate) == ("app", None)


@pytest.mark.parametrize("image", ["nginx:1.27", "traefik:v3.1", "caddy:2", "haproxy:3.0",
                                   "envoyproxy/envoy:v1.31", "nginxinc/nginx-unprivileged:1"])
def test_proxies(image: str) -> None:
    assert role(image) == ("proxy", None)
    assert recipe_for(image, parse_service_settings("p", None)) is None


def test_effective_argv_combines_like_docker() -> None:
    assert effective_argv(None, None, PG_EP, PG_CMD) == ["docker-entrypoint.sh", "postgres"]
    assert effective_argv(None, ["perl", "x"], PG_EP, PG_CMD) == ["docker-entrypoint.sh", "perl", "x"]
    assert effective_argv(["sh"], None, PG_EP, PG_CMD) == ["sh"]  # an entrypoint drops the image's CMD
    assert effective_argv("sh -c 'sleep 1'", None) == ["sh", "-c", "sleep 1"]
    assert effective_argv(None, None) is None


def test_original_from_the_image_tags() -> None:
    attrs = {"RepoTags": ["dsm-pin/a-db:1", "postgres:16"], "RepoDigests": ["postgres@sha256:" + "b" * 64]}
    assert original_from_tags(attrs) == "postgres:16"
    assert original_from_tags({"RepoTags": ["dsm-pin/a-db:1"], "RepoDigests": ["postgres@sha256:x"]}) == (
        "postgres@sha256:x")
    assert original_from_tags({"RepoTags": ["dsm-pin/a-db:1"]}) is None


def test_old_manifests_stay_readable() -> None:
    old = PinnedImage.model_validate({"service": "db", "image": "postgres:16", "image_id": "sha256:1",
                                      "pinned_ref": "dsm-pin/s-db:1"})
    assert old.original is None and old.reference == "postgres:16"
    new = old.model_copy(update={"image": "dsm-pin/s-db:0", "original": "postgres:16"})
    assert new.reference == "postgres:16"


def test_pins_record_their_original_and_only_for_defined_services(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  db: {image: postgres:16}\n  web: {image: web:1}\n")
    dropped = override.write_pins(tmp_path, {"db": "dsm-pin/s-db:1", "gone": "dsm-pin/s-gone:1"},
                                  originals={"db": "postgres:16", "gone": "x:1"}, defined=["db", "web"])
    assert dropped == ["gone"]
    assert override.pinned_images(tmp_path) == {"db": "dsm-pin/s-db:1"}
    assert override.pin_originals(tmp_path) == {"db": "postgres:16"}
    # Files that drop a service: its entries go, the others stay.
    override.write_pins(tmp_path, {"db": "dsm-pin/s-db:2", "web": "dsm-pin/s-web:2"},
                        originals={"db": "postgres:16", "web": "web:1"})
    assert override.drop_undefined_pins(tmp_path, ["db"]) == ["web"]
    assert override.pinned_images(tmp_path) == {"db": "dsm-pin/s-db:2"}
    assert override.pin_originals(tmp_path) == {"db": "postgres:16"}
    # Clearing the pins clears their record too (and the file, nothing else of ours being in it).
    assert override.clear_pins(tmp_path)
    assert not (tmp_path / "compose.dsm.yaml").exists() and override.pin_originals(tmp_path) == {}


def test_data_moves_renamed_replaced_dropped_or_kept() -> None:
    from types import SimpleNamespace

    from server.deploy.datamoves import data_moves
    from server.engine import ContainerSummary
    from server.roles import ServiceRole

    def plan(mounts: list[dict[str, Any]], top: dict[str, Any] | None = None) -> list[str]:
        stack = SimpleNamespace(name="s", services={"db": {"volumes": mounts}}, rendered={"volumes": top or {}})
        running = ContainerSummary(id="c", name="s-db-1", project="s", service="db", state="running", status="",
                                   health=None, image="postgres:16",
                                   volumes={"s_pgdata": "/var/lib/postgresql/data", "f" * 64: "/extra"})
        roles = {"db": ServiceRole("database", "postgres", "test")}
        found = data_moves(stack, roles, {"db": [running]})  # type: ignore[arg-type]
        assert all(f.severity == "error" and f.rule == "data-volume-moved" for f in found)
        return [f.message.split(" is ", 1)[1].split(" ", 1)[0] for f in found]

    target = "/var/lib/postgresql/data"
    assert plan([{"type": "volume", "source": "pgdata", "target": target}], {"pgdata": {"name": "s_pgdata"}}) == []
    assert plan([{"type": "volume", "source": "data", "target": target}], {"data": {"name": "s_pgdata"}}) == []
    assert plan([{"type": "volume", "source": "pg2", "target": target}], {"pg2": {"name": "s_pg2"}}) == ["renamed"]
    assert plan([{"type": "bind", "source": "/srv/pg", "target": target}]) == ["replaced"]
    assert plan([{"type": "volume", "target": target + "/"}]) == ["replaced"]  # anonymous
    assert plan([]) == ["dropped"]


@pytest.mark.anyio
async def test_a_deploy_renders_the_users_files_without_our_pins(settings: Any, stacks_root: Path) -> None:
    """After a rollback .env lists compose.dsm.yaml in COMPOSE_FILE; the deploy's render must still
    leave it out, or a pin brings back a service the new files dropped (and hides the new images)."""
    from server.compose import ComposeRunner
    from server.stackload import load_stack

    d = stacks_root / "app"
    d.mkdir()
    (d / "compose.yaml").write_text("services:\n  web: {image: 'img/web:1'}\n  api: {image: 'img/api:1'}\n")
    override.write_pins(d, {"web": "dsm-pin/app-web:1", "api": "dsm-pin/app-api:1"},
                        originals={"web": "img/web:1", "api": "img/api:1"})
    assert "compose.dsm.yaml" in (d / ".env").read_text()
    (d / "compose.yaml").write_text("services:\n  web: {image: 'img/web:2'}\n")
    runner = ComposeRunner(settings)
    stack = await load_stack(settings, runner, path="app", dsm_override=False)
    assert sorted(stack.services) == ["web"] and stack.services["web"]["image"] == "img/web:2"
    pinned = await load_stack(settings, runner, path="app")
    assert sorted(pinned.services) == ["api", "web"] and pinned.services["web"]["image"] == "dsm-pin/app-web:1"
