"""Alerts through apprise (Slack, Discord, email, ntfy, gotify, ... from DSM_ALERT_URLS).

De-duplicated: the same ``key`` (e.g. ``budget:web/db``) is sent once per ``dedup_s``, also
across watcher restarts (DSM_STATE_DIR/alerts/sent.json). Rate-limited: at most
``rate_per_min`` alerts in any minute; what was held back is counted into the next one. A
critical alert says what broke, what was tried and what a person should do. Title and body
are scrubbed by the stack's one scrubber (server.stacksecrets: its known secrets, its .env
credentials, every shape), not by shape only. The URLs carry tokens: they are never logged by
us, and apprise's and urllib3's loggers (which print them at DEBUG) get a LogScrubber that knows
them. apprise is imported on first send.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio

from server.redact import Scrubber, guard_logs
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.alerts")
Level = Literal["critical", "warning", "info", "success"]
_MAX_KEYS = 2000


@dataclass(frozen=True)
class Alert:
    key: str
    level: Level
    title: str
    what_broke: str
    what_was_tried: str = ""
    what_to_do: str = ""
    stack: str | None = None
    """The stack it is about: its known secrets are masked (when the sender passes no scrubber)."""

    def body(self) -> str:
        parts = [self.what_broke]
        if self.what_was_tried:
            parts.append(f"Tried: {self.what_was_tried}")
        if self.what_to_do:
            parts.append(f"Do: {self.what_to_do}")
        return "\n".join(parts)


class Alerter:
    def __init__(self, settings: Settings, scrub: Scrubber | None = None) -> None:
        self.urls = list(settings.alert_urls)
        self.dedup_s = settings.alert_dedup_s
        self.rate_per_min = settings.alert_rate_per_min
        self.settings = settings
        self.scrub = scrub or Scrubber()
        if self.urls:
            guard_logs(url_secrets(self.urls))
        self._path = settings.state_dir / "alerts" / "sent.json"
        self._lock = threading.Lock()
        self._sent = _read(self._path)
        self._recent: deque[float] = deque()
        self._held_back = 0
        self.delivered = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def forget(self, key: str) -> None:
        """The condition behind ``key`` cleared: a new occurrence alerts again."""
        with self._lock:
            if self._sent.pop(key, None) is not None:
                _write(self._path, self._sent)

    def _scrubber(self, alert: Alert, scrub: Scrubber | None) -> Scrubber:
        if scrub is not None:
            return scrub
        if alert.stack:
            from server.stacksecrets import stack_scrubber

            return stack_scrubber(self.settings, alert.stack)
        return self.scrub

    async def send(self, alert: Alert, scrub: Scrubber | None = None) -> bool:
        """Send unless a duplicate or over the rate; True when delivered to at least one URL.
        ``scrub``: the stack's scrubber (default: the known secrets of ``alert.stack``)."""
        clean = self._scrubber(alert, scrub)
        if not self.urls:
            log.info("alert (no DSM_ALERT_URLS): %s: %s", clean(alert.title), clean(alert.body()))
            return False
        now = time.time()
        with self._lock:
            last = self._sent.get(alert.key)
            if last is not None and now - last < self.dedup_s:
                log.debug("alert %s suppressed as a duplicate", alert.key)
                return False
            while self._recent and now - self._recent[0] > 60:
                self._recent.popleft()
            if len(self._recent) >= self.rate_per_min:
                self._held_back += 1
                log.warning("alert %s held back: more than %d alerts this minute", alert.key, self.rate_per_min)
                return False
            self._recent.append(now)
            self._sent[alert.key] = now
            if len(self._sent) > _MAX_KEYS:
                for old in sorted(self._sent, key=self._sent.__getitem__)[: len(self._sent) - _MAX_KEYS]:
                    del self._sent[old]
            _write(self._path, self._sent)
            held, self._held_back = self._held_back, 0
        body = clean(alert.body()) + (f"\n({held} other alerts were held back by the rate limit)" if held else "")
        ok = await anyio.to_thread.run_sync(self._notify, clean(alert.title), body, alert.level)
        if ok:
            self.delivered += 1
        else:
            self.failed += 1
            log.warning("alert %s could not be delivered to any DSM_ALERT_URLS target", alert.key)
        return ok

    def _notify(self, title: str, body: str, level: Level) -> bool:
        import apprise

        notify_type = {"critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING,
                       "info": apprise.NotifyType.INFO, "success": apprise.NotifyType.SUCCESS}[level]
        apobj = apprise.Apprise()
        for url in self.urls:
            if not apobj.add(url):
                log.warning("an entry of DSM_ALERT_URLS is not a URL apprise understands (skipped)")
        try:
            return bool(apobj.notify(body=body, title=title, notify_type=notify_type))
        except Exception:  # a broken notifier must never take the watcher down
            log.exception("apprise failed")
            return False


def url_secrets(urls: Iterable[str]) -> list[str]:
    """The parts of alert URLs that can be tokens: user, password, host (apprise's ``slack://T/B/x``
    keeps one there), path segments and query values; loopback hosts and short parts are not."""
    parts: list[str] = []
    for url in urls:
        try:
            split = urlsplit(url)
            candidates = [split.username, split.password, split.hostname, *split.path.split("/"),
                          *(v for _, v in parse_qsl(split.query))]
        except ValueError:
            continue
        parts += [unquote(c) for c in candidates if c and len(c) >= 6 and c not in ("127.0.0.1", "localhost")]
    return parts


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(path: Path, data: dict[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


async def announce_outcome(settings: Settings, *, stack: str, kind: str, status: str, operation_id: str,
                           detail: str = "", what_to_do: str = "") -> bool:
    """What deploy_stack and rollback call at the end: their outcome through the same alert path.

    ``status`` ``deployed``/``unchanged``/``done`` is announced as success, ``rolled_back`` as a
    warning, anything else (``failed``, ``blocked``, ...) as critical. Never raises.
    """
    level: Level = ("success" if status in ("deployed", "unchanged", "done")
                    else "warning" if status == "rolled_back" else "critical")
    try:
        return await Alerter(settings).send(Alert(
            key=f"{kind}:{stack}:{operation_id}", level=level, title=f"{stack}: {kind} {status}",
            what_broke=detail or f"{kind} {operation_id} ended {status}",
            what_was_tried="" if level == "success" else f"{kind} {operation_id}", what_to_do=what_to_do,
            stack=stack))
    except Exception:  # an alert must never fail the operation it reports
        log.exception("announcing %s of %s failed", kind, stack)
        return False
