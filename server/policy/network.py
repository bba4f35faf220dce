"""Ports: a host port the stack publishes twice or that something on the host holds
(port-conflict), and database or admin ports published on every interface (exposed-port)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext
from server.policy.shape import WILDCARD_IPS, Published, ips_overlap, parse_image, published_ports, replicas

# Container ports of databases, caches, brokers and admin APIs: never meant for the whole network.
_SENSITIVE_PORTS: dict[int, str] = {
    5432: "PostgreSQL", 3306: "MySQL/MariaDB", 33060: "MySQL X", 27017: "MongoDB", 6379: "Redis",
    11211: "Memcached", 9200: "Elasticsearch", 9300: "Elasticsearch transport", 5984: "CouchDB",
    8086: "InfluxDB", 9042: "Cassandra", 7687: "Neo4j Bolt", 1433: "SQL Server", 1521: "Oracle",
    26257: "CockroachDB", 8123: "ClickHouse HTTP", 5672: "AMQP (RabbitMQ)", 2379: "etcd", 6333: "Qdrant",
    2375: "Docker API (no TLS)", 2376: "Docker API", 9443: "Portainer admin", 15672: "RabbitMQ admin",
    9001: "MinIO console", 8384: "Syncthing admin", 61208: "Glances", 10000: "Webmin", 9090: "Prometheus",
}
_DATABASE_FAMILIES = frozenset({
    "postgres", "postgis", "pgvector", "timescaledb", "mysql", "mariadb", "mongo", "redis", "valkey", "keydb",
    "memcached", "elasticsearch", "opensearch", "couchdb", "influxdb", "cassandra", "neo4j", "clickhouse-server",
    "rabbitmq", "etcd", "qdrant", "dragonfly",
})


def _label(p: Published) -> str:
    ip = f"{p.host_ip}:" if p.host_ip else ""
    return f"{ip}{p.port}/{p.protocol}"


def stack_ports(ctx: LintContext) -> list[Published]:
    ports: list[Published] = []
    for name, svc in sorted(ctx.services.items()):
        if replicas(svc):
            ports.extend(published_ports(name, svc))
    return ports


def port_conflict(ctx: LintContext) -> Iterator[Finding]:
    ports = stack_ports(ctx)
    reported: set[tuple[str, int, str]] = set()
    for i, a in enumerate(ports):
        for b in ports[i + 1 :]:
            if a.port != b.port or a.protocol != b.protocol or not ips_overlap(a.host_ip, b.host_ip):
                continue
            key = (b.service, b.port, b.protocol)
            if key in reported:
                continue
            reported.add(key)
            same = a.service == b.service
            where = f"service {a.service!r} twice" if same else f"services {a.service!r} and {b.service!r}"
            yield finding(
                "port-conflict",
                f"host port {_label(b)} is published by {where}: the second container cannot start",
                service=b.service,
                line=ctx.stack.line_of(b.service, "ports"),
                evidence=[f"{a.service}: {_label(a)} -> {a.target}", f"{b.service}: {_label(b)} -> {b.target}"],
                fix="give each a different host port, or publish only one and reach the other over the network",
            )
    for name, svc in sorted(ctx.services.items()):
        n = replicas(svc)
        short = _too_narrow(svc, n)
        if n > 1 and short:
            yield finding(
                "port-conflict",
                f"service {name!r} runs {n} replicas but publishes host port {short}: "
                "each replica needs its own host port, so only some of them can start",
                service=name,
                line=ctx.stack.line_of(name, "ports"),
                fix="publish the container port only (\"8080\" without a host port) behind a proxy, a host port "
                f"range with at least {n} ports (\"8000-{8000 + n - 1}:80\"), or run 1 replica",
            )
    if ctx.facts is None:
        return
    slack = _range_slack(ctx)
    held_in_range: dict[tuple[str, str], int] = {}
    for p in ports:
        for holder in ctx.facts.port_holders:
            if holder.port != p.port or holder.protocol != p.protocol or not ips_overlap(p.host_ip, holder.host_ip):
                continue
            spare = slack.get((p.service, p.port, p.protocol))
            if spare is not None:  # a range: replicas take the ports still free in it
                range_key = (p.service, spare[0])
                held_in_range[range_key] = held_in_range.get(range_key, 0) + 1
                if held_in_range[range_key] <= spare[1]:
                    break
            yield finding(
                "port-conflict",
                f"host port {_label(p)} of service {p.service!r} is already bound by {holder.holder}"
                + (f" (and the rest of range {spare[0]} is too small for the replicas)" if spare else ""),
                service=p.service,
                line=ctx.stack.line_of(p.service, "ports"),
                evidence=[f"bound: {holder.host_ip or '*'}:{holder.port}/{holder.protocol} by {holder.holder}"]
                + ([ctx.facts.ports_scope] if ctx.facts.ports_scope else []),
                fix=f"stop what holds port {p.port}, or publish the service on another host port",
            )
            break


def _range_slack(ctx: LintContext) -> dict[tuple[str, int, str], tuple[str, int]]:
    """(service, port, protocol) of ports published as a range -> (the range, ports it has to spare)."""
    out: dict[tuple[str, int, str], tuple[str, int]] = {}
    for name, svc in ctx.services.items():
        n = max(replicas(svc), 1)
        for p in svc.get("ports") or []:
            raw = str(p.get("published") or "") if isinstance(p, dict) else ""
            low, sep, high = raw.partition("-")
            if not sep:
                continue
            try:
                first, last = int(low), int(high)
            except ValueError:
                continue
            proto = str(p.get("protocol") or "tcp")
            for port in range(first, min(last, first + 1024) + 1):
                out[(name, port, proto)] = (raw, last - first + 1 - n)
    return out


def _too_narrow(svc: dict[str, Any], n: int) -> str | None:
    """The first published host port (or range) that has fewer ports than ``n`` replicas need."""
    for p in svc.get("ports") or []:
        raw = str(p.get("published") or "") if isinstance(p, dict) else ""
        if not raw:
            continue
        low, _, high = raw.partition("-")
        try:
            width = int(high or low) - int(low) + 1
        except ValueError:
            continue
        if width < n:
            ip = f"{p.get('host_ip')}:" if p.get("host_ip") else ""
            return f"{ip}{raw}/{p.get('protocol') or 'tcp'}" + (f" ({width} ports)" if high else "")
    return None


def _database_image(svc: dict[str, Any]) -> bool:
    image = svc.get("image")
    return bool(image) and parse_image(str(image)).family in _DATABASE_FAMILIES


def exposed_port(ctx: LintContext) -> Iterator[Finding]:
    for name, svc in sorted(ctx.services.items()):
        role = ctx.stack.service_settings_for(name).role
        database = role in ("database", "cache") or _database_image(svc)
        for p in svc.get("ports") or []:
            # No published port is still published: on an ephemeral host port, every interface.
            if not isinstance(p, dict) or str(p.get("host_ip") or "") not in WILDCARD_IPS:
                continue
            target = int(p.get("target") or 0)
            what = _SENSITIVE_PORTS.get(target) or ("the database" if database else None)
            if what is None:
                continue
            host_port = p.get("published") or "ephemeral"
            yield finding(
                "exposed-port",
                f"{what} port {target} of service {name!r} is published on every interface (host port "
                f"{host_port}): Docker's own iptables rules bypass host firewalls like ufw, so the whole "
                "network (or the internet) can reach it",
                service=name,
                line=ctx.stack.line_of(name, "ports"),
                evidence=[f"ports: {p.get('published') or ''}:{target}/{p.get('protocol') or 'tcp'} (no host IP)"],
                fix=f'bind it to loopback ("127.0.0.1:{p.get("published") or ""}:{target}") or drop the published '
                "port and reach it over the stack's network",
            )


RULES = [port_conflict, exposed_port]
