"""stack_logs: bounded, paged container logs with secrets redacted.

The engine cuts the tail (``tail``) and the window (``since``/``until``), so a container that
logged gigabytes costs us at most a page. Pages go backwards in time: ``next_until`` is the
oldest timestamp of the page; pass it as ``until`` for the page before.

Each container's lines are scrubbed as one text (server.redact.Scrubber.page: a PEM key or a
multi-line value is masked on every line it spans) by the stack's one scrubber
(server.stacksecrets: credentials only, so versions, ports and booleans stay readable), and
``grep`` sees exactly the scrubbed text that is shown: it can never probe a secret. ``grep`` is a
literal substring; a regular expression is opt-in (``regex``) and runs under a time bound with
the GIL released (the ``regex`` library), so ``(a|aa)+$`` costs at most _GREP_S. Scrubbing and
matching run in a worker thread: other tool calls and signals are served meanwhile. A line is
cut at MAX_LINE_CHARS and a page at MAX_PAGE_CHARS, and the page says what was cut.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from server.engine import container_logs
from server.errors import DsmError, StackNotFound
from server.monitor.models import LogLine, LogsPage
from server.monitor.resolve import StackRef, resolve_stack
from server.monitor.status import Observed, observe
from server.monitor.watchstate import iso_to_epoch
from server.redact import Scrubber
from server.runtime import Runtime
from server.settings import Settings

MAX_LIMIT = 2000
MAX_LINE_CHARS = 4000
"""A longer line is cut here, with a marker saying how long it was."""
MAX_PAGE_CHARS = 100_000
"""Characters of line text in one page; the older lines past it are left for the next page."""
MAX_GREP_CHARS = 500
_MAX_READ = 50_000
"""Most lines read from one container for one page (grep over a very chatty container stops here)."""
_MAX_SCAN_CHARS = 8_000_000
"""Most characters read from one container for one page, whatever the line count."""
_GREP_FACTOR = 10
"""With grep, read up to this many times ``limit`` lines per container to find matches."""
_GREP_S = 1.0
"""Time a regular expression may take over one page before the call is refused: CPU time in the
``regex`` library's own timeout, and wall-clock time for the answer (on a busy machine the
first is reached long after the second; the worker is then left to hit its own bound)."""
_SINCE = re.compile(r"^(\d+)([smhd])$")

Matcher = Callable[[str], bool]


class BadArgument(DsmError):
    """A tool argument is out of range or malformed."""


def parse_time(value: str | None, what: str) -> float | None:
    """'15m', '2h', '1d', '30s' ago, or an ISO timestamp; as epoch seconds. Only None is "not
    given": "" or "null" is an error, never silently "no bound"."""
    if value is None:
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


def stack_scrubber(ref: StackRef, observed: Iterable[Observed] = (), settings: Settings | None = None) -> Scrubber:
    """The stack's one scrubber (server.stacksecrets): its known secrets (with ``settings``), the
    credential values of its .env and of its containers' environment."""
    from server.stacksecrets import stack_scrubber as build

    return build(settings, ref.name, ref.location.directory if ref.location is not None else None,
                 [(o.inspect.get("Config") or {}).get("Env") or [] for o in observed])


class _Regex:
    """A case-insensitive regular expression whose matching over one page is bounded by _GREP_S of
    CPU time (the ``regex`` library's timeout; the GIL is released meanwhile)."""

    def __init__(self, grep: str, pattern: Any) -> None:
        self.grep, self._pattern, self._spent = grep, pattern, 0.0  # matching time only, not the reads

    def __call__(self, text: str) -> bool:
        started = time.monotonic()
        try:
            return self._pattern.search(text, timeout=max(_GREP_S - self._spent, 0.001), concurrent=True) is not None
        except TimeoutError:
            raise _too_slow(self.grep) from None
        finally:
            self._spent += time.monotonic() - started


def matcher(grep: str | None, regex: bool) -> Matcher | None:
    """``grep`` as a case-insensitive literal substring, or (``regex``) a time-bounded _Regex."""
    if not grep:
        return None
    if len(grep) > MAX_GREP_CHARS:
        raise BadArgument(f"grep has {len(grep)} characters, more than {MAX_GREP_CHARS}", state="nothing was read")
    if not regex:
        needle = grep.casefold()
        return lambda text: needle in text.casefold()
    import regex as rx

    try:
        return _Regex(grep, rx.compile(grep, rx.IGNORECASE))
    except rx.error as exc:
        raise BadArgument(f"grep={grep!r} is not a valid regular expression: {exc}", state="nothing was read",
                          next_step="fix the expression, or pass regex=false to match it literally") from None


def _too_slow(grep: str) -> BadArgument:
    return BadArgument(f"grep={grep!r} took more than {_GREP_S:.0f} s over these logs (a pattern that backtracks "
                       "without end, such as (a|aa)+$)", state="nothing was returned",
                       next_step="pass a literal substring (regex=false) or a simpler expression")


async def stack_logs(
    runtime: Runtime, stack: str, service: str | None = None, since: str | None = None,
    grep: str | None = None, limit: int = 200, until: str | None = None, regex: bool = False,
) -> LogsPage:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadArgument(f"limit={limit} must be between 1 and {MAX_LIMIT}")
    match = matcher(grep, regex)
    ref = resolve_stack(runtime.settings, stack)
    since_s, until_s = parse_time(since, "since"), parse_time(until, "until")
    boundary_ns = _ns(until.strip()) if until and "T" in until else None
    observed = [o for o in await observe(runtime, ref.name) if service is None or o.service == service]
    if not observed:
        what = f"service {service!r} of stack {ref.name!r}" if service else f"stack {ref.name!r}"
        raise StackNotFound(f"no containers of {what} on the engine",
                            next_step="call stack_status to see the services and their containers")
    scrub = await anyio.to_thread.run_sync(stack_scrubber, ref, observed, runtime.settings)
    want = limit + 1
    deadline: list[float] = []  # wall-clock end of a regex's matching, set when it starts
    lines: list[tuple[int, LogLine, int]] = []
    truncated = False
    for o in observed:
        # Lines logged in the same millisecond as the page boundary come back from the engine
        # (its `until` is coarse and inclusive) and are dropped here; read more until a page fills.
        tail = min(limit * _GREP_FACTOR, 2000) + 1 if match else want
        while True:
            raw = await container_logs(runtime.engine(), o.full_id, tail=tail, since=since_s,
                                       until=until_s + 1e-3 if until_s is not None else None)
            kept = await _select_bounded(o.service, raw, boundary_ns, scrub, match, deadline)
            more = len(raw) >= tail
            if (len(kept) >= want or not more or tail >= _MAX_READ
                    or sum(len(r) for r in raw) >= _MAX_SCAN_CHARS):
                break
            tail = min(tail * 4, _MAX_READ)
        truncated = truncated or more or len(kept) > limit
        lines.extend(kept[-(limit + 1):])
    lines.sort(key=lambda item: item[0])
    if len(lines) > limit:
        truncated = True
        lines = lines[-limit:]
    # The page's size: newest lines first until MAX_PAGE_CHARS; the older ones are the next page.
    size, first = 0, len(lines)
    while first > 0 and (size + len(lines[first - 1][1].text) <= MAX_PAGE_CHARS or first == len(lines)):
        first -= 1
        size += len(lines[first][1].text)
    left_out = first
    lines = lines[first:]
    truncated = truncated or left_out > 0
    page = [ln for _, ln, _ in lines]
    shortened = sum(1 for _, _, cut in lines if cut)
    notes = []
    if shortened:
        notes.append(f"{shortened} line(s) longer than {MAX_LINE_CHARS} characters cut (marked)")
    if left_out:
        notes.append(f"{left_out} older line(s) left out to keep the page under {MAX_PAGE_CHARS} characters "
                     "(page back with until=next_until)")
    return LogsPage(stack=ref.name, lines=page, truncated=truncated,
                    next_until=page[0].time if truncated and page else None, cut="; ".join(notes) or None)


async def _select_bounded(service: str, raw: list[str], boundary_ns: int | None, scrub: Scrubber,
                          match: Matcher | None, deadline: list[float]) -> list[tuple[int, LogLine, int]]:
    """_select in a worker thread; with a regex, abandoned at the wall-clock deadline (the matching
    releases the GIL and ends at its own CPU-time bound, so the thread cannot run on for long)."""
    if not isinstance(match, _Regex):
        return await anyio.to_thread.run_sync(_select, service, raw, boundary_ns, scrub, match)
    if not deadline:
        deadline.append(time.monotonic() + _GREP_S)
    with anyio.move_on_after(max(deadline[0] - time.monotonic(), 0)):
        return await anyio.to_thread.run_sync(_select, service, raw, boundary_ns, scrub, match,
                                              abandon_on_cancel=True)
    raise _too_slow(match.grep)


def _select(service: str, raw: list[str], boundary_ns: int | None, scrub: Scrubber,
            match: Matcher | None) -> list[tuple[int, LogLine, int]]:
    """One container's raw lines (oldest first) -> (time, shown line, characters cut), scrubbed as
    one text, cut to MAX_LINE_CHARS, and filtered by ``match`` on exactly what is shown. Runs in a
    worker thread."""
    entries: list[tuple[int, str, str]] = []
    for entry in raw:
        stamp, _, text = entry.partition(" ")
        ns = _ns(stamp)
        if boundary_ns is not None and ns >= boundary_ns:
            continue
        entries.append((ns, stamp, text))
    # Scrubbed with twice the kept length, then cut: a secret across the cut is masked whole.
    clean = scrub.page([text[: 2 * MAX_LINE_CHARS] for _, _, text in entries])
    out: list[tuple[int, LogLine, int]] = []
    for (ns, stamp, text), shown in zip(entries, clean, strict=True):
        cut = max(len(text) - MAX_LINE_CHARS, 0)
        shown = shown[:MAX_LINE_CHARS]
        if match is not None and not match(shown):
            continue
        if cut:
            shown += f" …[cut: the line has {len(text)} characters]"
        out.append((ns, LogLine(service=service, time=stamp or None, text=shown), cut))
    return out


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
