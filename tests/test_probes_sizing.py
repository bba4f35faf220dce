"""Labelled cases: proposed healthchecks fit the image, sizing reads the repository name and never
proposes a limit below what the service is known to need."""

from __future__ import annotations

from typing import Any

import pytest

from server.policy.families import family_of, repository_name
from server.policy.probes import healthcheck_patch, probe_test
from server.policy.sizing import GIB, MIB, propose


def svc(image: str, *ports: str, expose: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A rendered service: ``ports`` as 'target' or 'target/udp'."""
    rendered = []
    for p in ports:
        target, _, proto = p.partition("/")
        rendered.append({"target": int(target), "published": str(int(target) + 10000), "protocol": proto or "tcp"})
    body: dict[str, Any] = {"image": image, "ports": rendered, **extra}
    if expose:
        body["expose"] = expose
    return body


# (case, service, a string the test must contain, strings it must not)
PROBE_CASES: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    ("postgres official", svc("postgres:16", "5432"), "pg_isready", ("wget", "curl")),
    ("pgvector is postgres", svc("pgvector/pgvector:pg16"), "pg_isready", ("wget",)),
    ("supabase postgres", svc("supabase/postgres:15.8.1.060"), "pg_isready", ()),
    ("immich postgres on ghcr", svc("ghcr.io/immich-app/postgres:14-vectorchord0.3.0"), "pg_isready", ()),
    ("bitnami postgresql", svc("bitnami/postgresql:16"), "pg_isready", ()),
    ("postgres-meta is an API", svc("supabase/postgres-meta:v0.84.2", expose=["8080"]), "/health", ("pg_isready",)),
    ("postgrest is not a database", svc("postgrest/postgrest:v12.2.0", expose=["3000"]), "nc -z 127.0.0.1 3000",
     ("pg_isready", "wget")),
    ("redis", svc("redis:7.4-alpine", "6379"), '"redis-cli", "ping"', ("wget",)),
    ("valkey", svc("valkey/valkey:8-alpine"), '"valkey-cli", "ping"', ("wget",)),
    ("keydb", svc("eqalpha/keydb:latest"), '"keydb-cli", "ping"', ()),
    ("mysql", svc("mysql:8.4", "3306"), "mysqladmin ping", ("wget",)),
    ("mariadb", svc("mariadb:11.4"), "healthcheck.sh", ("mysqladmin", "wget")),
    ("mongo", svc("mongo:7"), "mongosh", ("wget",)),
    ("memcached tcp", svc("memcached:1.6"), "nc -z 127.0.0.1 11211", ("wget",)),
    ("wireguard udp only", svc("linuxserver/wireguard:latest", "51820/udp"), "REPLACE", ("wget", "nc -z")),
    ("dns udp first then tcp", svc("someone/dns:1", "53/udp", "53"), "nc -z 127.0.0.1 53", ("wget",)),
    ("udp first then web", svc("someone/app:1", "9987/udp", "8080"), "http://127.0.0.1:8080/", ()),
    ("minecraft", svc("itzg/minecraft-server:java21", "25565"), "nc -z 127.0.0.1 25565", ("wget",)),
    ("factorio udp", svc("factoriotools/factorio:stable", "34197/udp"), "REPLACE", ("wget",)),
    ("valheim udp", svc("lloesche/valheim-server", "2456/udp", "2457/udp"), "REPLACE", ("wget",)),
    ("unknown db port", svc("someone/customdb:2", "5432"), "nc -z 127.0.0.1 5432", ("wget",)),
    ("unknown web", svc("someone/web:2", "8080"), "wget -q --spider http://127.0.0.1:8080/", ()),
    ("vaultwarden health path", svc("vaultwarden/server:1.32.5", "80"), "http://127.0.0.1:80/alive", ()),
    ("gitea health path", svc("gitea/gitea:1.22", "3000", "22"), "http://127.0.0.1:3000/api/healthz", ()),
    ("n8n on its registry", svc("docker.n8n.io/n8nio/n8n:1.70.3", "5678"), "127.0.0.1:5678/healthz", ()),
    ("portainer has no shell", svc("portainer/portainer-ce:2.21.4", "9443"), "REPLACE", ("wget",)),
    ("no ports at all", svc("someone/worker:1"), "REPLACE", ("wget",)),
    ("mastodon sidekiq runs no server", svc("ghcr.io/mastodon/mastodon:v4.3.8", command=["bundle", "exec", "sidekiq"]),
     "REPLACE", ("wget", "nc -z")),
    ("nextcloud cron loop", svc("nextcloud:30-apache", entrypoint=["/cron.sh"]), "REPLACE", ("wget", "status.php")),
    ("authentik worker", svc("ghcr.io/goauthentik/server:2025.4.1", command=["worker"]), "REPLACE", ("wget",)),
    ("authentik server", svc("ghcr.io/goauthentik/server:2025.4.1", "9000", command=["server"]),
     "127.0.0.1:9000/-/health/live/", ()),
    ("postgres with flags", svc("postgres:16", command=["postgres", "-c", "max_connections=200"]), "pg_isready", ()),
    ("traefik tcp", svc("traefik:v3.2", "80", "443"), "nc -z 127.0.0.1 80", ("wget",)),
]


@pytest.mark.parametrize(("case", "service", "expected", "forbidden"), PROBE_CASES, ids=[c[0] for c in PROBE_CASES])
def test_proposed_healthcheck_fits_the_image(
    case: str, service: dict[str, Any], expected: str, forbidden: tuple[str, ...]
) -> None:
    patch = healthcheck_patch("svc", service)
    assert expected in patch, (case, patch)
    for word in forbidden:
        assert word not in patch, (case, patch)


def test_probes_never_copy_a_credential() -> None:
    service = svc("postgres:16", environment={"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "s3cr3t-value"})
    test, _ = probe_test(service)
    assert "s3cr3t" not in " ".join(test) and "$${POSTGRES_USER:-postgres}" in test[1]


# (image, family name, kind)
FAMILY_CASES = [
    ("pgvector/pgvector:pg16", "postgres", "database"),
    ("timberio/vector:0.28.1-alpine", "timberio/vector", "worker"),
    ("supabase/postgres-meta:v0.84.2", "supabase/postgres-meta", "web"),
    ("postgres:16", "postgres", "database"),
    ("docker.io/library/postgres:16", "postgres", "database"),
    ("registry.example.lan:5000/postgres:16", "postgres", "database"),
    ("myorg/notpostgres:1", "unknown", "unknown"),
    ("myorg/postgres-backup:1", "unknown", "unknown"),
    ("ghcr.io/danny-avila/librechat-dev:latest", "danny-avila/librechat", "web"),
    ("ghcr.io/immich-app/immich-machine-learning:v1.120.0", "immich-app/immich-machine-learning", "worker"),
    ("getmeili/meilisearch:v1.12", "getmeili/meilisearch", "search"),
    ("ghcr.io/mastodon/mastodon:v4.3.2", "tootsuite/mastodon", "web"),
    ("vaultwarden/server:1.32.5", "vaultwarden/server", "web"),
    ("myorg/server:1", "unknown", "unknown"),
]


@pytest.mark.parametrize(("image", "name", "kind"), FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES])
def test_family_is_read_from_the_repository_name(image: str, name: str, kind: str) -> None:
    fam = family_of(image)
    assert (fam.name, fam.kind) == (name, kind)


def test_repository_name_drops_registry_and_library() -> None:
    assert repository_name("docker.io/library/redis:7") == "redis"
    assert repository_name("ghcr.io/goauthentik/server:2024.10") == "goauthentik/server"


# (case, image, observed bytes, service extras, least limit, most limit)
SIZING_CASES: list[tuple[str, str, int | None, dict[str, Any], int, int]] = [
    ("pgvector is sized as a database", "pgvector/pgvector:pg16", None, {}, 1 * GIB, 1 * GIB),
    ("vector log shipper is small", "timberio/vector:0.28.1-alpine", None, {}, 256 * MIB, 256 * MIB),
    ("idle postgres never below its floor", "postgres:16", 20 * MIB, {}, 256 * MIB, 256 * MIB),
    ("busy postgres: twice observed", "postgres:16", 600 * MIB, {}, 1200 * MIB, 1280 * MIB),
    ("jvm heap from ES_JAVA_OPTS", "elasticsearch:8.15.0", None,
     {"environment": {"ES_JAVA_OPTS": "-Xms3g -Xmx3g"}}, 4608 * MIB, 5 * GIB),
    ("idle jvm still needs its heap", "opensearchproject/opensearch:2", 100 * MIB,
     {"environment": {"OPENSEARCH_JAVA_OPTS": "-Xmx1g"}}, 1536 * MIB, 1536 * MIB),
    ("a reservation is a need", "someone/app:1", None, {"deploy": {"resources": {"reservations": {"memory": "2g"}}}},
     2 * GIB, 2 * GIB),
    ("unknown image default", "someone/app:1", None, {}, 512 * MIB, 512 * MIB),
    ("immich ml floor", "ghcr.io/immich-app/immich-machine-learning:release", 50 * MIB, {}, 1 * GIB, 1 * GIB),
    ("clickhouse floor", "clickhouse/clickhouse-server:24.3.3.102-alpine", 200 * MIB, {}, 1 * GIB, 1 * GIB),
]


@pytest.mark.parametrize(("case", "image", "observed", "extra", "least", "most"), SIZING_CASES,
                         ids=[c[0] for c in SIZING_CASES])
def test_sizing_never_below_what_the_service_needs(
    case: str, image: str, observed: int | None, extra: dict[str, Any], least: int, most: int
) -> None:
    proposal = propose(image, observed, 1, service={"image": image, **extra})
    assert least <= proposal.memory_bytes <= most, (case, proposal)
    assert proposal.reservation_bytes <= proposal.memory_bytes
    if least > (observed or 0) * 2 and observed:
        assert "known to need" in proposal.basis, proposal.basis


def test_cpus_never_exceed_the_host() -> None:
    assert propose("postgres:16", None, service={}, host_cpus=1).cpus == 1.0
    assert propose("postgres:16", None, service={}, host_cpus=None).cpus == 2.0
