"""Healthcheck proposals that fit the image: the database's own client, else TCP, else HTTP.

A proposal must work inside the container it is for. Databases get their own readiness tool
(``pg_isready``, ``redis-cli ping``, ``mysqladmin ping``, MariaDB's ``healthcheck.sh``,
``mongosh``). An HTTP probe is only proposed for a TCP port that speaks HTTP, at the path the
project documents for health; other TCP ports get a TCP connect probe; a UDP-only service,
a game server without a TCP port or an image without a shell gets a placeholder that says so,
never a ``wget`` of ``/`` on whatever port comes first. Values from the service's environment
are referenced as ``$$VAR`` (expanded by the container's shell), so no credential is copied in.
"""

from __future__ import annotations

import json
from typing import Any

from server.policy.families import NON_HTTP_PORTS, family_of


def _tcp_ports(service: dict[str, Any]) -> tuple[list[int], bool]:
    """Target ports the service speaks TCP on (ports, then expose), and whether it has UDP ones."""
    tcp: list[int] = []
    udp = False
    for p in service.get("ports") or []:
        if not isinstance(p, dict) or not p.get("target"):
            continue
        if str(p.get("protocol") or "tcp") == "udp":
            udp = True
        elif int(p["target"]) not in tcp:
            tcp.append(int(p["target"]))
    for e in service.get("expose") or []:
        port, _, proto = str(e).partition("/")
        try:
            number = int(port.split("-")[0])
        except ValueError:
            continue
        if proto == "udp":
            udp = True
        elif number not in tcp:
            tcp.append(number)
    return tcp, udp


def probe_test(service: dict[str, Any]) -> tuple[list[str], str]:
    """The healthcheck ``test`` proposed for ``service``, and why that one."""
    image = str(service.get("image") or "")
    fam = family_of(image)
    tcp, udp = _tcp_ports(service)
    port = fam.port if fam.port and (not tcp or fam.port in tcp) else (tcp[0] if tcp else fam.port)
    if fam.probe == "postgres":
        return ["CMD-SHELL", 'pg_isready -h 127.0.0.1 -U "$${POSTGRES_USER:-postgres}"'], "PostgreSQL's pg_isready"
    if fam.probe == "mysql":
        return ["CMD-SHELL", "mysqladmin ping -h 127.0.0.1 --silent"], "MySQL's mysqladmin ping"
    if fam.probe == "mariadb":
        return ["CMD", "healthcheck.sh", "--connect", "--innodb_initialized"], "the MariaDB image's healthcheck.sh"
    if fam.probe == "mongo":
        return ["CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping').ok"], "mongosh ping"
    if fam.probe in ("redis", "valkey", "keydb"):
        cli = {"redis": "redis-cli", "valkey": "valkey-cli", "keydb": "keydb-cli"}[fam.probe]
        return ["CMD", cli, "ping"], f"{cli} ping"
    if fam.probe == "none":
        return _placeholder("the image has no shell or tool to probe with; watch it from outside or waive "
                            "the rule for this service"), f"{fam.name} ships no probe tool"
    kind_says_tcp = fam.probe == "tcp" or fam.kind in ("database", "cache", "queue", "game")
    if not tcp and (service.get("command") or service.get("entrypoint")) and fam.name != "unknown":
        # The image's server port is known, but this service runs it another way (a worker, a cron
        # loop, Sidekiq next to the web process): nothing may listen there.
        return _placeholder("a command that checks this service's own process: it runs a custom command "
                            "and declares no port"), "custom command, no port"
    if port is None:
        why = "it publishes only UDP" if udp else "it exposes no TCP port"
        return _placeholder(f"a command that exits 0 only when the service works ({why})"), why
    if kind_says_tcp or port in NON_HTTP_PORTS:
        return (["CMD-SHELL", f"nc -z 127.0.0.1 {port} || bash -c '</dev/tcp/127.0.0.1/{port}'"],
                f"a TCP connect to {port} (not an HTTP port)")
    url = f"http://127.0.0.1:{port}{fam.health_path}"
    return (["CMD-SHELL", f"wget -q --spider {url} || curl -fsS -o /dev/null {url}"],
            f"HTTP {fam.health_path} on {port}" + ("" if fam.name == "unknown" else f" ({fam.name}'s health path)"))


def _placeholder(what: str) -> list[str]:
    return ["CMD-SHELL", f"REPLACE with {what}"]


def healthcheck_patch(name: str, service: dict[str, Any]) -> str:
    """A YAML patch adding a healthcheck that fits ``service``'s image (see :func:`probe_test`)."""
    test, _why = probe_test(service)
    return (
        f"services:\n  {name}:\n    healthcheck:\n      test: {json.dumps(test)}\n"
        "      interval: 10s\n      timeout: 5s\n      retries: 5\n      start_period: 30s\n"
    )
