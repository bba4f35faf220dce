"""Prometheus metrics of the watcher on a loopback port (prometheus_client, imported lazily).

Counters of what it did and one gauge per service (1 = running and healthy), so Netdata,
Prometheus or Grafana can scrape ``http://127.0.0.1:<port>/metrics``.
"""

from __future__ import annotations

from typing import Any

from server.monitor.watcher import Watcher

_COUNTERS = ("ticks", "restarts", "recreates", "rollbacks", "gave_up", "alerts", "events", "reconnects",
             "engine_errors", "skipped_busy")


def serve(watcher: Watcher, port: int, host: str = "127.0.0.1") -> int:
    """Start the exporter thread; returns the bound port (``port=0`` picks a free one)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self) -> Any:
            for name in _COUNTERS:
                yield CounterMetricFamily(f"dsm_watcher_{name}", f"watcher {name.replace('_', ' ')}",
                                          value=getattr(watcher.counters, name))
            gauge = GaugeMetricFamily("dsm_service_up", "1 when the service runs and is healthy",
                                      labels=["stack", "service", "seen"])
            for key, seen in sorted(watcher.counters.by_service.items()):
                stack, _, service = key.partition("/")
                gauge.add_metric([stack, service, seen], 1.0 if seen in ("running", "healthy") else 0.0)
            yield gauge

    registry = CollectorRegistry()
    registry.register(Collector())
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_address[1])
