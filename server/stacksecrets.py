"""Known secrets of a stack: what every later view of it masks, whoever reads it.

A secret given to deploy_stack as ``env`` lives nowhere on disk but in the backup's ``env.json``,
yet containers print it long after the deploy answered. So the credential values a stack was
deployed with (``LoadedStack.secret_values``: the values of credential keys in .env, in the
given env and in the rendered model, and the literals of the compose files, minus the ones that
are structure) are kept in ``DSM_STATE_DIR/secrets/<stack>.json``, 0600 in a 0700 directory, as
safely as the backup's ``env.json`` that holds the same values. They are kept in clear, not as
hashes: masking needs the value itself (one alternation over a page; a multi-line value line by
line), and hashing every substring of every page for every stored length would cost more than
it protects, with the same values beside it in the backups.

:func:`stack_scrubber` is the one scrubber of a stack for every sink that has no LoadedStack at
hand: stack_logs, diagnose_stack, the watcher's alerts, incidents and journal details. It knows
these values, the credential values of the stack's .env (only credentials: ``APP_VERSION=v0.7.6``
and ``PORT=8080`` stay readable) and of its containers' environment, plus every shape the
Scrubber knows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from server.errors import DsmError
from server.redact import DEFAULT_ACCOUNTS, Scrubber, is_secret_key
from server.settings import Settings

log = logging.getLogger("docker_stack_mcp.secrets")

MAX_VALUES = 200
"""Values kept per stack, newest first: a stack redeployed with rotated secrets keeps masking the
old ones for a while (old containers' logs still hold them)."""
MAX_VALUE_CHARS = 16_384
_MIN_LEN = 4
_LOCK = threading.Lock()


def _path(settings: Settings, stack: str) -> Path | None:
    name = re.sub(r"[^a-z0-9_.-]", "_", stack.lower()).strip(".")[:200]
    return settings.state_dir / "secrets" / f"{name}.json" if name else None


def known(settings: Settings, stack: str) -> list[str]:
    """The stack's known secret values (newest first); [] when none or unreadable."""
    path = _path(settings, stack)
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    values = data.get("values") if isinstance(data, dict) else None
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def remember(settings: Settings, stack: str, values: Iterable[str]) -> None:
    """Add ``values`` to the stack's known secrets. Never raises: a deploy must not fail for it
    (the values are still masked in its own answer; the log says the store failed)."""
    fresh = [v for v in values if isinstance(v, str) and _MIN_LEN <= len(v) <= MAX_VALUE_CHARS
             and v not in DEFAULT_ACCOUNTS]
    path = _path(settings, stack)
    if not fresh or path is None:
        return
    try:
        with _LOCK:
            old = known(settings, stack)
            merged = list(dict.fromkeys([*sorted(set(fresh)), *old]))[:MAX_VALUES]
            if merged == old:
                return
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path.parent, 0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"stack": stack, "values": merged}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not keep the known secrets of %s (%s): later logs mask only what .env and the "
                    "containers' environment name", stack, type(exc).__name__)


def credential_values(items: Iterable[tuple[str, str]]) -> list[str]:
    """The values of credential keys (server.redact's one definition) among ``items``."""
    return [v for k, v in items if v and is_secret_key(k) and v not in DEFAULT_ACCOUNTS]


def stack_scrubber(settings: Settings | None, stack: str, directory: Path | None = None,
                   environments: Iterable[Iterable[str]] = ()) -> Scrubber:
    """The scrubber of one stack: its known secrets, the credential values of its .env (in
    ``directory``) and of the containers' environments (``KEY=value`` lists from inspect: a
    literal ``DB_PASSWORD: x`` in the compose file is in no .env), and every shape."""
    from server.stacks import read_dotenv

    secrets: list[str] = known(settings, stack) if settings is not None else []
    if directory is not None:
        with contextlib.suppress(DsmError):  # an unreadable .env: its values cannot leak from it either
            secrets += credential_values(read_dotenv(directory).items())
    for env in environments:
        secrets += credential_values((k, v) for k, _, v in (str(item).partition("=") for item in env))
    return Scrubber(secrets)
