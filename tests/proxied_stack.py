"""The stack of the update-under-load tests and bench/rolling_update.py: a stateless web service
(2 replicas, listening only 2 s after it starts, ``init: true``) behind dsm-test/proxy:1, a real
HAProxy that finds the replicas through Docker's DNS (scripts/images/proxy/haproxy.cfg).
"""

from __future__ import annotations

import time

import anyio

from tests.load import fetch

PROXY = "dsm-test/proxy:1"
START_DELAY_S = 2


def web_block(image: str, replicas: int = 2, extra: str = "", deploy: str = "") -> str:
    """``deploy``: the service's whole ``deploy`` mapping in flow style (default: the replicas)."""
    # The wrapper command is the 2 s start delay; start_period keeps those 2 s from counting as
    # failed checks (Engine 20.10 has no start_interval).
    return (f"  web:\n    image: {image}\n    init: true\n"
            f"    command: ['sh', '-c', 'sleep {START_DELAY_S}; exec /usr/local/bin/web-start']\n"
            "    healthcheck: {test: ['CMD', 'wget', '-qO-', 'http://127.0.0.1/'], interval: 1s, timeout: 2s,"
            " retries: 2, start_period: 10s}\n"
            f"    deploy: {deploy or f'{{replicas: {replicas}}}'}\n"
            f"    labels: {{dsm.test: '1'}}\n    mem_limit: 64m\n{extra}")


def web_xdsm(drain_s: float, hook: bool = False) -> str:
    """web's x-dsm: the drain time, and with ``hook`` the drain hook that fails the proxy's health
    check (/healthz, see ``proxied_stack(check_path=...)``) while requests to / are still served."""
    drain = ", drain: ['rm', '-f', '/www/healthz']" if hook else ""
    return f"    x-dsm: {{drain_s: {drain_s:g}{drain}}}\n"


def proxied_stack(name: str, image: str, port: int, *, replicas: int = 2, web_extra: str = "",
                  x_dsm: str = "{verify_s: 0}", check_path: str = "/", deploy: str = "") -> str:
    """compose.yaml text: ``web`` (``image``) behind ``proxy`` published on 127.0.0.1:``port``; the
    proxy health-checks each replica on ``check_path``."""
    return (f"name: {name}\nx-dsm: {x_dsm}\nservices:\n{web_block(image, replicas, web_extra, deploy)}"
            f"  proxy:\n    image: {PROXY}\n    init: true\n"
            f"    environment: {{PROXY_BACKEND: 'web:80', PROXY_CHECK_PATH: '{check_path}'}}\n"
            f"    ports: ['127.0.0.1:{port}:80']\n    labels: {{dsm.test: '1', dsm.role: proxy}}\n"
            "    mem_limit: 128m\n")


async def wait_serving(port: int, body: str, timeout_s: float = 60, streak: int = 20) -> None:
    """Until ``streak`` requests in a row through the proxy answer ``body`` (every replica in the pool)."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    last = ""
    while time.monotonic() < deadline:
        sample = await fetch("127.0.0.1", port, timeout_s=2)
        seen = seen + 1 if sample.ok and sample.body == body else 0
        last = sample.body or sample.error or f"HTTP {sample.status}"
        if seen >= streak:
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"proxy on {port} did not serve {body!r} steadily within {timeout_s}s (last: {last})")
