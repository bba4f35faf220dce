"""What an image is, read from its repository name: the family, its kind, sizes and a probe that fits.

Matching is by name, never by substring of the path: ``pgvector/pgvector`` is PostgreSQL, not
the ``vector`` log shipper, and ``supabase/postgres-meta`` is an API, not a database. A family
is keyed by the repository path without its registry (``vaultwarden/server``) or by the last
path component (``postgres`` matches ``postgres``, ``library/postgres``, ``bitnami/postgres``);
the full path is tried first. Memory figures are a container's: ``memory`` is the limit proposed
when nothing was observed, ``floor`` the least it is documented to need (a proposal never goes
below it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.registry import parse_reference

MIB = 1024**2
GIB = 1024**3

Kind = Literal["database", "cache", "search", "queue", "proxy", "web", "worker", "game", "tool", "unknown"]
Probe = Literal["postgres", "mysql", "mariadb", "mongo", "redis", "valkey", "keydb", "http", "tcp", "none"]


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    memory: int
    floor: int
    cpus: float
    probe: Probe = "http"
    health_path: str = "/"
    """For http probes: the path the project documents for health (``/`` when it documents none)."""
    port: int | None = None
    """The port the service listens on inside the container, when the project fixes it."""


def _f(names: str, kind: Kind, memory: int, floor: int, cpus: float, probe: Probe = "http", path: str = "/",
       port: int | None = None) -> list[tuple[str, Family]]:
    keys = names.split()
    fam = Family(keys[0], kind, memory, floor, cpus, probe, path, port)
    return [(k, fam) for k in keys]


_TABLE: list[tuple[str, Family]] = [
    # Databases. Floors: what the server needs to start with its default buffers.
    *_f("postgres postgis/postgis timescale/timescaledb timescale/timescaledb-ha pgvector/pgvector supabase/postgres "
        "tensorchord/pgvecto-rs ankane/pgvector bitnami/postgresql immich-app/postgres cloudnative-pg/postgresql "
        "postgresql", "database", 1 * GIB, 256 * MIB, 2.0, "postgres", port=5432),
    *_f("mysql bitnami/mysql percona percona/percona-server mysql/mysql-server", "database", 1 * GIB, 512 * MIB, 2.0,
        "mysql", port=3306),
    *_f("mariadb bitnami/mariadb linuxserver/mariadb yobasystems/alpine-mariadb", "database", 1 * GIB, 256 * MIB,
        2.0, "mariadb", port=3306),
    *_f("mongo bitnami/mongodb mongodb/mongodb-community-server", "database", 1 * GIB, 512 * MIB, 1.0, "mongo",
        port=27017),
    *_f("clickhouse/clickhouse-server yandex/clickhouse-server clickhouse-server", "database", 2 * GIB, 1 * GIB,
        2.0, "http", "/ping", 8123),
    *_f("influxdb", "database", 1 * GIB, 256 * MIB, 1.0, "http", "/health", 8086),
    # Caches and queues.
    *_f("redis bitnami/redis redis/redis-stack-server redis/redis-stack", "cache", 256 * MIB, 32 * MIB, 0.5,
        "redis", port=6379),
    *_f("valkey/valkey valkey bitnami/valkey", "cache", 256 * MIB, 32 * MIB, 0.5, "valkey", port=6379),
    *_f("eqalpha/keydb keydb", "cache", 256 * MIB, 32 * MIB, 0.5, "keydb", port=6379),
    *_f("dragonflydb/dragonfly", "cache", 512 * MIB, 256 * MIB, 1.0, "redis", port=6379),
    *_f("memcached bitnami/memcached", "cache", 256 * MIB, 64 * MIB, 0.5, "tcp", port=11211),
    *_f("rabbitmq bitnami/rabbitmq", "queue", 512 * MIB, 256 * MIB, 1.0, "tcp", port=5672),
    *_f("eclipse-mosquitto", "queue", 128 * MIB, 16 * MIB, 0.25, "tcp", port=1883),
    # Search engines (JVM heaps: the floor is what the default heap needs).
    *_f("elasticsearch elastic/elasticsearch elasticsearch/elasticsearch", "search", 2 * GIB, 1 * GIB, 2.0,
        "http", "/_cluster/health", 9200),
    *_f("opensearchproject/opensearch opensearch", "search", 2 * GIB, 1 * GIB, 2.0, "http", "/_cluster/health",
        9200),
    *_f("getmeili/meilisearch meilisearch", "search", 1 * GIB, 256 * MIB, 1.0, "http", "/health", 7700),
    *_f("qdrant/qdrant qdrant", "search", 1 * GIB, 256 * MIB, 1.0, "http", "/healthz", 6333),
    *_f("typesense/typesense", "search", 1 * GIB, 256 * MIB, 1.0, "http", "/health", 8108),
    # Supabase's services.
    *_f("supabase/postgres-meta postgres-meta", "web", 256 * MIB, 64 * MIB, 0.5, "http", "/health", 8080),
    *_f("postgrest/postgrest postgrest", "web", 256 * MIB, 32 * MIB, 0.5, "tcp", port=3000),
    *_f("supabase/supavisor supavisor", "proxy", 512 * MIB, 128 * MIB, 1.0, "http", "/api/health", 4000),
    *_f("supabase/logflare logflare", "web", 1 * GIB, 512 * MIB, 1.0, "http", "/health", 4000),
    *_f("supabase/edge-runtime edge-runtime", "web", 512 * MIB, 128 * MIB, 1.0, "tcp", port=9000),
    *_f("supabase/storage-api storage-api", "web", 512 * MIB, 128 * MIB, 1.0, "http", "/status", 5000),
    *_f("supabase/gotrue gotrue supabase/auth", "web", 256 * MIB, 32 * MIB, 0.5, "http", "/health", 9999),
    *_f("supabase/realtime realtime", "web", 512 * MIB, 256 * MIB, 1.0, "http", "/api/tenants/realtime-dev/health",
        4000),
    *_f("supabase/studio studio", "web", 512 * MIB, 256 * MIB, 1.0, "http", "/api/platform/profile", 3000),
    *_f("darthsim/imgproxy imgproxy", "web", 512 * MIB, 64 * MIB, 1.0, "tcp", port=8080),
    *_f("kong", "proxy", 512 * MIB, 128 * MIB, 1.0, "tcp", port=8000),
    *_f("timberio/vector", "worker", 256 * MIB, 64 * MIB, 0.5, "http", "/health", 9001),
    # Proxies.
    *_f("nginx nginxinc/nginx-unprivileged jc21/nginx-proxy-manager", "proxy", 256 * MIB, 16 * MIB, 1.0),
    *_f("traefik", "proxy", 256 * MIB, 64 * MIB, 1.0, "tcp", port=80),
    *_f("caddy", "proxy", 256 * MIB, 32 * MIB, 1.0),
    *_f("haproxy", "proxy", 256 * MIB, 32 * MIB, 1.0, "tcp"),
    *_f("envoyproxy/envoy", "proxy", 256 * MIB, 64 * MIB, 1.0, "tcp"),
    # Applications of the reference host and of the corpus.
    *_f("n8nio/n8n n8n", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/healthz", 5678),
    *_f("danny-avila/librechat danny-avila/librechat-dev danny-avila/librechat-api danny-avila/librechat-dev-api "
        "librechat", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/health", 3080),
    *_f("danny-avila/librechat-rag-api-dev-lite danny-avila/librechat-rag-api-dev", "web", 1 * GIB, 256 * MIB, 1.0,
        "http", "/health", 8000),
    *_f("linkwarden/linkwarden linkwarden", "web", 1 * GIB, 512 * MIB, 1.0, "http", "/", 3000),
    *_f("gitroomhq/postiz-app postiz-app", "web", 2 * GIB, 1 * GIB, 2.0, "http", "/", 5000),
    *_f("vaultwarden/server", "web", 256 * MIB, 64 * MIB, 0.5, "http", "/alive", 80),
    *_f("portainer/portainer-ce portainer/portainer-ee portainer/agent", "web", 256 * MIB, 64 * MIB, 0.5, "none"),
    *_f("netdata/netdata", "web", 512 * MIB, 128 * MIB, 1.0, "http", "/api/v1/info", 19999),
    *_f("immich-app/immich-server", "web", 2 * GIB, 512 * MIB, 2.0, "http", "/api/server/ping", 2283),
    *_f("immich-app/immich-machine-learning", "worker", 3 * GIB, 1 * GIB, 2.0, "http", "/ping", 3003),
    *_f("paperless-ngx/paperless-ngx", "web", 2 * GIB, 512 * MIB, 2.0, "http", "/", 8000),
    *_f("gotenberg/gotenberg", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/health", 3000),
    *_f("apache/tika", "web", 1 * GIB, 512 * MIB, 1.0, "http", "/tika", 9998),
    *_f("goauthentik/server authentik/server", "web", 1 * GIB, 512 * MIB, 1.0, "http", "/-/health/live/", 9000),
    *_f("nextcloud", "web", 1 * GIB, 256 * MIB, 2.0, "http", "/status.php", 80),
    *_f("nextcloud-releases/all-in-one nextcloud/all-in-one", "web", 512 * MIB, 128 * MIB, 1.0, "http", "/",
        8080),
    *_f("gitea/gitea gitea", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/api/healthz", 3000),
    *_f("tootsuite/mastodon mastodon/mastodon ghcr.io/mastodon/mastodon", "web", 2 * GIB, 512 * MIB, 2.0, "http",
        "/health", 3000),
    *_f("tootsuite/mastodon-streaming mastodon/mastodon-streaming", "web", 512 * MIB, 128 * MIB, 0.5, "http",
        "/api/v1/streaming/health", 4000),
    *_f("plausible/community-edition plausible/analytics", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/api/health",
        8000),
    *_f("outlinewiki/outline", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/_health", 3000),
    *_f("home-assistant/home-assistant homeassistant/home-assistant", "web", 1 * GIB, 256 * MIB, 2.0, "http", "/",
        8123),
    *_f("traefik/whoami", "web", 64 * MIB, 8 * MIB, 0.25, "none"),
    *_f("wordpress", "web", 512 * MIB, 128 * MIB, 1.0, "http", "/wp-login.php", 80),
    *_f("gethomepage/homepage", "web", 256 * MIB, 64 * MIB, 0.5, "http", "/api/healthcheck", 3000),
    *_f("louislam/uptime-kuma", "web", 512 * MIB, 128 * MIB, 1.0, "http", "/", 3001),
    *_f("pihole/pihole", "web", 256 * MIB, 64 * MIB, 0.5, "http", "/admin/", 80),
    *_f("grafana/grafana", "web", 512 * MIB, 128 * MIB, 1.0, "http", "/api/health", 3000),
    *_f("prom/prometheus", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/-/healthy", 9090),
    *_f("minio/minio", "web", 1 * GIB, 256 * MIB, 1.0, "http", "/minio/health/live", 9000),
    *_f("jellyfin/jellyfin", "web", 2 * GIB, 512 * MIB, 2.0, "http", "/health", 8096),
    # Game servers: never an HTTP probe.
    *_f("itzg/minecraft-server itzg/minecraft-bedrock-server", "game", 4 * GIB, 1 * GIB, 2.0, "tcp", port=25565),
    *_f("lloesche/valheim-server factoriotools/factorio cm2network/csgo cm2network/steamcmd "
        "ich777/steamcmd", "game", 4 * GIB, 1 * GIB, 2.0, "tcp"),
    # Small base images.
    *_f("busybox alpine debian ubuntu", "tool", 64 * MIB, 8 * MIB, 0.25, "none"),
]
_BY_NAME: dict[str, Family] = {}
for _key, _fam in _TABLE:
    _BY_NAME.setdefault(_key, _fam)

UNKNOWN = Family("unknown", "unknown", 512 * MIB, 0, 1.0)


def repository_name(image: str) -> str:
    """The repository path without registry or ``library/``, lower-case: ``pgvector/pgvector``."""
    ref = parse_reference(image)
    path = ref.repository.lower()
    return path.removeprefix("library/")


def family_of(image: str | None) -> Family:
    """The family ``image`` belongs to, by its repository name (full path first, then last component)."""
    if not image:
        return UNKNOWN
    path = repository_name(image)
    ref = parse_reference(image)
    for key in (f"{ref.registry}/{path}", path, path.rsplit("/", 1)[-1]):
        fam = _BY_NAME.get(key)
        if fam is not None:
            return fam
    return UNKNOWN


NON_HTTP_PORTS: frozenset[int] = frozenset({
    21, 22, 25, 53, 110, 143, 389, 465, 587, 636, 993, 995, 1194, 1433, 1521, 1883, 2456, 2457, 3306, 3478, 5222,
    5269, 5432, 5672, 6379, 7777, 8883, 9042, 9092, 9987, 11211, 19132, 25565, 25575, 26900, 27015, 27017, 28015,
    34197, 51820, 64738,
})
"""Ports whose protocol is not HTTP (mail, DNS, databases, brokers, VPNs, voice and game servers)."""
