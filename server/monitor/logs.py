"""stack_logs: bounded, paged container logs with secrets redacted.

The engine cuts the tail (``tail``) and the window (``since``/``until``), so a container that
logged gigabytes costs us at most a page. Pages go backwards in time: ``next_until`` is the
oldest timestamp of the page; pass it as ``until`` for the page before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from server.engine import container_logs
from server.errors import DsmError, StackNotFound
from server.monitor.models import LogLine, LogsPage
from server.monitor.resolve import StackRef, resolve_stack
from server.monitor.status import Observed, observe
from server.monitor.watchstate import iso_to_epoch
from server.redact import DEFAULT_ACCOUNTS, Scrubber, is_secret_key
from server.runtime import Runtime
from server.stacks import read_dotenv

MAX_LIMIT = 2000
_MAX_READ = 50_000
"""Most lines read from one container for one page (grep over a very chatty container stops here)."""
_GREP_FACTOR = 10
"""With grep, read up to this many times ``limit`` lines per container to find matches."""
_SINCE = re.compile(r"^(\d+)([smhd])$")


class BadArgument(DsmError):
    """A tool argument is out of range or malformed."""


def parse_time(value: str | None, what: str) -> float | None:
    """'15m', '2h', '1d', '30s' ago, or an ISO timestamp; as epoch seconds."""
    if not value:
        return None
    match = _SINCE.match(value.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        try:
            return int((datetime.now(UTC) - timedelta(seconds=int(match.group(1)) * unit)).timestamp())
        except (OverflowError, ValueError):
            raise BadArgument(f"{what}={value!r} reaches before the year 1", state="nothing was read",
                              next_step="pass a shorter duration, e.g. '30d'") from None
    epoch = iso_to_epoch(value.strip() if "T" in value else "")
    if epoch is None:
        try:
            epoch = datetime.fromisoformat(value.strip()).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise BadArgument(f"{what}={value!r} is neither a duration like '15m' nor an ISO time",
                              next_step="pass e.g. '30m', '2h' or '2024-05-01T10:00:00Z'") from None
    return epoch


def stack_scrubber(ref: StackRef, observed: Iterable[Observed] = ()) -> Scrubber:
    """A scrubber that knows the stack's .env values and the values of the credential keys in its
    containers' environment (a literal ``DB_PASSWORD: x`` in the compose file is in no .env):
    the secrets most likely to leak into logs."""
    secrets: list[str] = []
    if ref.location is not None:
        try:
            secrets = [v for v in read_dotenv(ref.location.directory).values() if v]
        except DsmError:
            secrets = []
    for o in observed:
        for item in (o.inspect.get("Config") or {}).get("Env") or []:
            key, _, value = str(item).partition("=")
            if value and is_secret_key(key) and value not in DEFAULT_ACCOUNTS:
                secrets.append(value)
    return Scrubber(secrets)


async def stack_logs(
    runtime: Runtime, stack: str, service: str | None = None, since: str | None = None,
    grep: str | None = None, limit: int = 200, until: str | None = None,
) -> LogsPage:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadArgument(f"limit={limit} must be between 1 and {MAX_LIMIT}")
    pattern = None
    if grep:
        try:
            pattern = re.compile(grep, re.IGNORECASE)
        except re.error as exc:
            raise BadArgument(f"grep={grep!r} is not a valid regular expression: {exc}") from None
    ref = resolve_stack(runtime.settings, stack)
    since_s, until_s = parse_time(since, "since"), parse_time(until, "until")
    boundary_ns = _ns(until.strip()) if until and "T" in until else None
    observed = [o for o in await observe(runtime, ref.name) if service is None or o.service == service]
    if not observed:
        what = f"service {service!r} of stack {ref.name!r}" if service else f"stack {ref.name!r}"
        raise StackNotFound(f"no containers of {what} on the engine",
                            next_step="call stack_status to see the services and their containers")
    scrub = stack_scrubber(ref, observed)
    want = limit * (_GREP_FACTOR if pattern else 1) + 1
    lines: list[tuple[int, LogLine]] = []
    truncated = False
    for o in observed:
        # Lines logged in the same millisecond as the page boundary come back from the engine
        # (its `until` is coarse and inclusive) and are dropped here; read more until a page fills.
        tail = want
        while True:
            raw = await container_logs(runtime.engine(), o.full_id, tail=tail, since=since_s,
                                       until=until_s + 1e-3 if until_s is not None else None)
            kept = []
            for entry in raw:
                stamp, _, text = entry.partition(" ")
                ns = _ns(stamp)
                if boundary_ns is not None and ns >= boundary_ns:
                    continue
                if pattern and not pattern.search(scrub(text)):  # never a probe of a secret's value
                    continue
                kept.append((ns, LogLine(service=o.service, time=stamp or None, text=text)))
            more = len(raw) >= tail
            if len(kept) >= want or not more or tail >= _MAX_READ:
                break
            tail = min(tail * 4, _MAX_READ)
        truncated = truncated or more or len(kept) > limit
        lines.extend(kept[-(limit + 1):])
    lines.sort(key=lambda item: item[0])
    if len(lines) > limit:
        truncated = True
        lines = lines[-limit:]
    page = [LogLine(service=ln.service, time=ln.time, text=scrub(ln.text)) for _, ln in lines]
    return LogsPage(stack=ref.name, lines=page, truncated=truncated,
                    next_until=page[0].time if truncated and page else None)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def _ns(stamp: str) -> int:
    """Docker's RFC3339Nano UTC timestamp as integer nanoseconds (exact: floats lose the order)."""
    match = _STAMP.match(stamp)
    if not match:
        return 0
    seconds = int(datetime.fromisoformat(match.group(1) + "+00:00").timestamp())
    return seconds * 1_000_000_000 + int((match.group(2) or "0").ljust(9, "0"))


async def recent_lines(runtime: Runtime, o: Observed, tail: int = 200, since: float | None = None) -> list[str]:
    """The container's last lines without timestamps (for diagnosis and the watcher's log scan)."""
    raw = await container_logs(runtime.engine(), o.full_id, tail=tail, since=since)
    return [entry.partition(" ")[2] for entry in raw]
