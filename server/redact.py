"""Keeping secrets out of everything we say or store: tool output, errors, logs, memory.

ONE definition of a credential, shared by the ``plaintext-secret`` rule, the rendered-model
view and :class:`Scrubber`:

- the value of a key whose name contains PASS (as PASSWORD, PASSWD, PASSPHRASE or ending a
  word: ``DB_PASS``, not ``PASSED``), PWD, SECRET, TOKEN, KEY, SALT, CREDENTIAL,
  PRIVATE or ENC (at the start of a word: ``VAULT_ENC_KEY``, ``N8N_ENCRYPTION_KEY``, not
  ``LATENCY``), or ends in ``_IV``, unless the name also contains PUBLIC, EXPIR, TTL or LENGTH
  or ends in ``_FILE`` or ``_PATH`` (those point at a secret or describe one). The key decides,
  not the value: ``REDIS_PASSWORD: 1234`` is a credential. Look-alike words (KEYCLOAK,
  PASSIVE, ENCODING, ...) are taken out of the name first.
- a URL password (``scheme://user:pw@`` and ``scheme://:pw@``);
- a token shape (JWT, cloud and API keys, bearer/basic credentials, PEM private keys).

Masking is positional. In a rendered model the value at a credential key is masked; a known
secret value (from .env, given env, credential keys) is masked inside other *values*
(environment, labels, command, healthcheck) -- but never in structure (image, service, volume,
user and database names) or proposed fixes. A known value that is also structure (``postgres``
as password, user and image) is not masked anywhere but at its own key: masking it elsewhere
would mangle the model (``***:16``) and the mask itself would give the value away.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

MASK = "***"

# PASS only as a credential: PASSWORD, PASSWD, PASSPHRASE, PASSCODE, PASSKEY or PASS ending a word
# (DB_PASS, SMTPPASS) -- never the start of an ordinary word (PASSED, PASSES, PASSING, PASSENGER):
# a report line "5s window passed: 3 held" is no assignment of a password.
_CREDENTIAL_WORD = re.compile(r"PASS(?:W|PHRASE|CODE|KEY|$|[^A-Z])|PWD|SECRET|TOKEN|KEY|SALT|CREDENTIAL|PRIVATE|"
                              r"(?:^|[^A-Z0-9])ENC|_IV$")
_NOT_CREDENTIAL = re.compile(r"PUBLIC|EXPIR|TTL|LENGTH|_FILE$|_PATH$")
# Words that merely contain a credential word; taken out of the name before it is judged, so
# KEYCLOAK_ADMIN and FTP_PASSIVE_PORTS are no credentials but KEYCLOAK_ADMIN_PASSWORD is.
_LOOKALIKE = re.compile(r"KEYCLOAK|KEYBOARD|HOTKEY|PASSIVE|PASSTHROUGH|BYPASS|COMPASS|ENCODING|OVERPASS|UNDERPASS|"
                        r"TRESPASS|SURPASS|SECRETAR")
# The scheme is bounded: unbounded, every start inside a long run of letters and digits scans to
# the run's end, and scrubbing a hostile 40 kB log line would take seconds (quadratic).
URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]{0,31}://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
# Known values shorter than this are too common ("1", "true") to look for in free text.
_MIN_SCRUB_LEN = 4
# Environment keys whose values are structure (names of users, databases, hosts): never masked
# for containing a known secret value (``POSTGRES_USER: postgres`` when the password is also
# ``postgres``).
_STRUCTURE_KEY = re.compile(r"(USER|USERNAME|_DB|DATABASE|_NAME|HOST|HOSTNAME|_PORT|_SCHEMA)$", re.I)
# The images' default account names: structure wherever they occur (a fix's ``pg_isready -U
# postgres`` when POSTGRES_USER is unset), even when a password equals one -- such a password
# is no secret anyway, and default-credential says so.
DEFAULT_ACCOUNTS = frozenset({"postgres", "root", "admin", "mysql", "mariadb", "redis", "mongo", "guest", "user",
                              "elastic", "default"})


def is_secret_key(key: str) -> bool:
    """True when the value under ``key`` is a credential (see the module docstring)."""
    name = _LOOKALIKE.sub("_", key.upper().replace("-", "_").replace(".", "_"))
    return bool(_CREDENTIAL_WORD.search(name)) and not _NOT_CREDENTIAL.search(name)


def mask_url_passwords(text: str) -> str:
    return URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def mask_value(key: str, value: Any) -> Any:
    if value is None or value == "":
        return value
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask_url_passwords(value)
    return value


def redact_mapping(data: Any, scrub: Scrubber | None = None) -> Any:
    """Deep copy of ``data``: credential keys' scalar values masked, URL passwords hidden, and
    (with ``scrub``) known secret values masked inside the other string values."""
    if isinstance(data, dict):
        return {
            k: (MASK if is_secret_key(str(k)) and _scalar(v) and v not in (None, "") else redact_mapping(v, scrub))
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact_mapping(v, scrub) for v in data]
    if isinstance(data, str):
        return scrub(data) if scrub is not None else mask_url_passwords(data)
    return data


def _scalar(v: Any) -> bool:
    return not isinstance(v, dict | list)


# KEY=value, KEY: value, "key": "value" where KEY names a credential. The key cannot start inside
# a word (``(?<![\w.])``) and is matched possessively, and the value is matched only after a
# credential key: every start scanning a long run of word characters, or every ``x:`` rescanning
# the rest of the line as its value, made a hostile 20 kB log line cost seconds (quadratic).
_KEY_SEP = re.compile(r"""(?<![\w.])(?P<key>["']?[A-Za-z_][\w.-]{0,80}+["']?)(?P<sep>\s*+[=:]\s*+)""")
_VALUE = re.compile(r""""[^"\n]*"|'[^'\n]*'|[^\s,;&}]+""")
_BEARER = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
_PEM = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----|[\s\S]*)"
# Tokens that are secrets whatever key they stand next to.
_TOKENS = re.compile(
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT (Supabase anon/service keys)
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"  # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub tokens
    r"|\bglpat-[A-Za-z0-9_-]{20,}"  # GitLab personal access tokens
    r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style API keys (LibreChat)
    r"|\bxox[abpors]-[A-Za-z0-9-]{10,}"  # Slack tokens
    # PEM private keys: to the END line, or to the end of the text when it was cut off.
    r"|" + _PEM
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
# On a log page a BEGIN line without its END (the page ends inside the key, or a line merely
# names the marker) masks the key-like lines after it, not the rest of the page.
_PEM_OPEN = re.compile(r"[^\n]*+(?:\n[ \t]*+(?:[A-Za-z0-9+/=]++|(?:Proc-Type|DEK-Info):[^\n]*+)?[ \t]*+(?=\n|\Z))*+")
_BASE64_LINE = re.compile(r"[ \t]*[A-Za-z0-9+/=]+[ \t]*\r?")


def _mask_pem_page(text: str, repl: Callable[[re.Match[str]], str]) -> str:
    """PEM keys on a page, in one pass: BEGIN to its END, or BEGIN and the key-like lines after it
    when no END follows (no rescan of the page per BEGIN: linear)."""
    ends = [m.end() for m in _PEM_END.finditer(text)]
    out: list[str] = []
    done = 0
    for begin in _PEM_BEGIN.finditer(text):
        if begin.start() < done:
            continue
        i = bisect.bisect_left(ends, begin.end() + 1)  # the first END after this BEGIN
        opened = _PEM_OPEN.match(text, begin.end())
        stop = ends[i] if i < len(ends) else opened.end() if opened else begin.end()
        span = re.match(r"[\s\S]*", text[begin.start():stop])
        assert span is not None
        out.append(text[done:begin.start()] + repl(span))
        done = stop
    out.append(text[done:])
    return "".join(out)


def _mask_pem_tails(text: str, repl: Callable[[re.Match[str]], str]) -> str:
    """The tail of a PEM key whose BEGIN line is not in the text (a page that starts inside the
    key): the END line and the base64 lines right before it, walking back from each END."""
    out: list[str] = []
    done = 0
    for end in _PEM_END.finditer(text):
        if end.start() < done:
            continue
        line_start = text.rfind("\n", 0, end.start()) + 1
        if text[line_start:end.start()].strip():
            continue  # END inside a line with other text: not a key's own END line
        start = line_start
        while start > done:
            newline = text.rfind("\n", done, start - 1)
            prev = newline + 1 if newline >= 0 else done
            if not _BASE64_LINE.fullmatch(text, prev, start - 1):
                break
            start = prev
        if start == line_start:
            continue
        span = re.match(r"[\s\S]*", text[start:end.end()])
        assert span is not None
        out.append(text[done:start] + repl(span))
        done = end.end()
    out.append(text[done:])
    return "".join(out)


# A line of a PEM body alone (a page that starts and ends inside a key): 64 base64 characters,
# not a 64-digit hex string (a container id or a sha256 digest printed on its own line).
_PEM_BODY_LINE = re.compile(r"(?m)^[ \t]*(?![0-9a-f]{64}[ \t]*$|[0-9A-F]{64}[ \t]*$)[A-Za-z0-9+/]{64}[ \t]*$")

# An image reference (``docker.io/valkey/valkey:8-bookworm@sha256:...``) is structure, never a
# ``KEY: value`` pair, though its name may hold a credential word (valKEY, KEYdb, sealed-SECRETs).
_REF_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_REF_TAG = re.compile(r"\w[\w.-]{0,127}(?:@sha256:[0-9a-f]{64})?")
_REF_REST = re.compile(r"[^\w@:/=$]*")
_VERSION_TAG = re.compile(r"v?\d+(?:\.\d+)*(?:[-_.+][A-Za-z0-9][\w.-]*)?|(?:latest|stable|edge|alpine|slim|bookworm|"
                          r"bullseye|jammy|noble|focal)(?:[-_.][\w.-]*)?", re.IGNORECASE)
# Whole words of a name that make it a credential whatever follows (``api_key:1.2`` is no image).
_BARE_CREDENTIAL = frozenset({"key", "keys", "apikey", "pass", "passwd", "password", "passphrase", "pwd", "secret",
                              "secrets", "token", "tokens", "salt", "credential", "credentials", "private",
                              "privatekey", "auth"})


def _is_image_reference(text: str, start: int, key: str, sep: str, value: str) -> bool:
    name = key.lstrip("\"'")  # a quoted reference ("valkey:8"), not a quoted key ("key":)
    if sep != ":" or not _REF_NAME.fullmatch(name):
        return False
    tag = _REF_TAG.match(value)
    if tag is None or not _REF_REST.fullmatch(value, tag.end()):
        return False
    if (name == key and start > 0 and text[start - 1] == "/") or "@sha256:" in tag[0]:
        return True  # a repository path (registry/namespace/name:tag) or a pinned digest
    # ``valkey:8-bookworm``: a version tag, and the credential word only glued inside the name.
    words = re.split(r"[._-]+", name)
    return bool(_VERSION_TAG.fullmatch(tag[0].partition("@")[0])) and not _BARE_CREDENTIAL.intersection(words)


def _mask_assignments(text: str) -> str:
    """Every credential assignment in ``text`` masked. After a key the scan goes on at its value,
    which may itself hold one: matches must not swallow ``config: API_KEY=abc``,
    ``env: POSTGRES_PASSWORD: x`` or ``x=TOKEN=abc`` whole. Linear in the text."""
    out: list[str] = []
    done = scan = 0  # text[:done] is in out; the next key is searched from scan
    while (match := _KEY_SEP.search(text, scan)) is not None:
        scan = match.end()
        key = match["key"]
        if not is_secret_key(key.strip("\"'")):
            continue
        value = _VALUE.match(text, scan)
        if value is None or value[0].strip("\"'") in ("", MASK) or _is_image_reference(
                text, match.start(), key, match["sep"], value[0]):
            continue
        quote = value[0][0] if value[0][:1] in ("'", '"') else ""
        out.append(text[done:scan] + f"{quote}{MASK}{quote}")
        done = scan = value.end()
    out.append(text[done:])
    return "".join(out)


_MIN_LINE_OF_VALUE = 8
"""A line of a multi-line secret this long is a known value on its own (a page may hold only part of it)."""
_PAGE_CHUNK = 256 * 1024
"""Characters scrubbed in one go by :meth:`Scrubber.page`: the stdlib ``re`` holds the GIL for a whole
``sub``, so a huge page in one piece would stall every other thread (and the event loop) meanwhile."""


def _masked_lines(match: re.Match[str]) -> str:
    """The mask, once per line the masked text spans: a page keeps its line count."""
    return "\n".join([MASK] * (match[0].count("\n") + 1))


def _masked(match: re.Match[str]) -> str:
    return MASK


class Scrubber:
    """Masks known secret values and credential-shaped text in free text.

    Known values are matched by one alternation, longest first, so a secret never leaks as the
    tail of a shorter one (``abcd1234`` with ``abcd`` also secret gives ``***``, not ``***1234``).
    Each line of a multi-line known value is a known value too, so a page holding only part of
    it masks that part. ``assignments=False`` keeps ``KEY: value`` pairs as they are: Compose's
    own error messages read like ``...environment.TOKEN_URL: required variable X is missing`` and
    must stay parseable; the values that could be secret there are passed in as known ``secrets``.
    """

    def __init__(self, secrets: Iterable[str] = (), *, assignments: bool = True) -> None:
        values = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SCRUB_LEN}
        for multi in [s for s in values if "\n" in s]:
            values.update(ln.strip() for ln in multi.splitlines() if len(ln.strip()) >= _MIN_LINE_OF_VALUE)
        known = sorted(values, key=len, reverse=True)
        self._known = re.compile("|".join(re.escape(s) for s in known)) if known else None
        self._assignments = assignments

    def __call__(self, text: str) -> str:
        return self._scrub(text, keep_lines=False) if text else text

    def _scrub(self, text: str, *, keep_lines: bool) -> str:
        repl = _masked_lines if keep_lines else _masked
        # Shapes first: a known value that is also a word of the text around a URL must not
        # break the URL's shape before its password is found.
        text = mask_url_passwords(text)
        if keep_lines:
            text = _mask_pem_page(text, repl)
        text = _TOKENS.sub(repl, text)
        text = _mask_pem_tails(text, repl)
        if keep_lines:
            text = _PEM_BODY_LINE.sub(MASK, text)
        if self._known is not None:
            text = self._known.sub(repl, text)
        text = _BEARER.sub(lambda m: f"{m['scheme']} {MASK}", text)
        return _mask_assignments(text) if self._assignments else text

    def lines(self, lines: Iterable[str]) -> list[str]:
        """Scrub lines as one text: a PEM block pasted as log lines is masked whole, body included
        (line by line, only its BEGIN line would look like a key). The block becomes one line."""
        return self("\n".join(lines)).split("\n")

    def page(self, lines: Sequence[str]) -> list[str]:
        """Scrub lines as one text and give back exactly one line per line (a log page: each line
        keeps its timestamp). Every line a multi-line secret or key spans reads ``***``. Scrubbed
        in chunks of whole lines; a key cut by a chunk's end is masked to that end, and its rest
        by the PEM-tail rule of the next chunk."""
        out: list[str] = []
        chunk: list[str] = []
        size = 0
        for line in [*lines, None]:
            if line is None or (chunk and size + len(line) > _PAGE_CHUNK):
                text = self._scrub("\n".join(chunk), keep_lines=True) if chunk else ""
                parts = text.split("\n")
                # A line that itself held a newline: no positional mapping, so line by line.
                out.extend(parts if len(parts) == len(chunk) else [self(c) for c in chunk])
                chunk, size = [], 0
            if line is not None:
                chunk.append(line)
                size += len(line) + 1
        return out


def positional_secrets(candidates: Iterable[str], sources: Iterable[Any], rendered: dict[str, Any]) -> frozenset[str]:
    """The known secret values that may be masked wherever they occur inside values.

    A value that is also structure (a word of an image reference, a service, volume, network or
    secret name, a ``user:``, written so in the compose files; or the value of a user or database
    name key) is left out: it is masked only at its own key. Structure is read from the files as
    written, so a secret interpolated into an image (``x/${DB_PASSWORD}:1``) is still masked.
    """
    structure = structure_words(sources, rendered)
    return frozenset(
        s for s in candidates if isinstance(s, str) and len(s) >= _MIN_SCRUB_LEN and s not in structure
    )


_WORD_SPLIT = re.compile(r"[/:@.,=\s]+")


def structure_words(sources: Iterable[Any], rendered: dict[str, Any]) -> set[str]:
    """Names in the compose files as written (never interpolated parts), and the rendered values of
    user and database name keys."""
    words: set[str] = set(DEFAULT_ACCOUNTS)

    def add(text: Any) -> None:
        if isinstance(text, str | int) and not isinstance(text, bool):
            words.add(str(text))
            words.update(w for w in _WORD_SPLIT.split(str(text)) if w)

    for doc in sources:
        if not isinstance(doc, dict):
            continue
        add(doc.get("name"))
        for kind in ("services", "volumes", "networks", "secrets", "configs"):
            section = doc.get(kind)
            for name in section if isinstance(section, dict) else []:
                add(name)
        services = doc.get("services")
        for body in services.values() if isinstance(services, dict) else []:
            if isinstance(body, dict):
                for key in ("image", "user", "container_name", "hostname"):
                    add(body.get(key))
    services = rendered.get("services")
    for body in services.values() if isinstance(services, dict) else []:
        env = body.get("environment") if isinstance(body, dict) else None
        for key, value in env.items() if isinstance(env, dict) else []:
            if _STRUCTURE_KEY.search(str(key)) and not is_secret_key(str(key)):
                add(value)
    return words


# Every secret value a stack load has seen in this process, so a tool error's text can be
# scrubbed of them even where the raising code had no Scrubber at hand. Bounded: the oldest
# go first, so the stack just loaded (the likeliest source of the next error) is always known.
_SEEN: dict[str, None] = {}
_SEEN_LOCK = threading.Lock()
_SEEN_MAX = 10_000
_SEEN_GEN = [0]  # bumped whenever a new value is seen
_SEEN_SCRUB: dict[int, Scrubber] = {}  # generation -> its scrubber (one entry)


def remember_secrets(values: Iterable[str]) -> None:
    with _SEEN_LOCK:
        for v in values:
            if isinstance(v, str) and len(v) >= _MIN_SCRUB_LEN:
                if v not in _SEEN:
                    _SEEN_GEN[0] += 1
                _SEEN.pop(v, None)
                _SEEN[v] = None
                if len(_SEEN) > _SEEN_MAX:
                    del _SEEN[next(iter(_SEEN))]


def seen_secrets() -> frozenset[str]:
    with _SEEN_LOCK:
        return frozenset(_SEEN)


def scrub_seen(text: str) -> str:
    """``text`` scrubbed (assignments and shapes included) of every secret value a stack load has
    seen in this process: for texts with no stack at hand (progress messages, log records). The
    scrubber is compiled again only when a new value was seen."""
    with _SEEN_LOCK:
        scrub = _SEEN_SCRUB.get(_SEEN_GEN[0])
        if scrub is None:
            _SEEN_SCRUB.clear()
            scrub = _SEEN_SCRUB[_SEEN_GEN[0]] = Scrubber(_SEEN)
    return scrub(text)


class LogScrubber(logging.Filter):
    """A log record's text (message with its arguments, and its traceback) scrubbed of every secret
    seen in this process, ``extra`` values (the alert URLs' tokens) and every shape: for our own
    loggers' handlers and for dependencies that log what they were given (apprise logs each
    notification URL at DEBUG, urllib3 the request path that holds a webhook's token)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        super().__init__()
        self._extra = Scrubber(extra)

    def clean(self, text: str) -> str:
        return self._extra(scrub_seen(text))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        record.msg, record.args = self.clean(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
        return True


# Dependencies' loggers that print what they send: a filter on a logger sees only the records
# made by that very logger, so each is named (the root handlers catch what propagates).
_GUARDED_LOGGERS = ("apprise", "urllib3", "urllib3.connectionpool", "urllib3.poolmanager", "urllib3.util.retry",
                    "requests", "docker", "docker.api.build", "docker.utils.config", "httpx", "httpcore")


def guard_logs(extra: Iterable[str] = ()) -> None:
    """Install one LogScrubber (replacing an earlier one) on the root logger's handlers and on the
    dependencies' loggers that print URLs and payloads. Idempotent; cheap to call again."""
    guard = LogScrubber(extra)
    targets: list[logging.Filterer] = [logging.getLogger(n) for n in _GUARDED_LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        for old in [f for f in target.filters if isinstance(f, LogScrubber)]:
            target.removeFilter(old)
        target.addFilter(guard)
