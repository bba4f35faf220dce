"""An answer for every request line, even one the SDK's strict parser refuses.

A JSON string may spell a lone UTF-16 surrogate (``"\\ud800"``): valid JSON, invalid Unicode.
pydantic-core's parser refuses the whole line, the SDK's stdio transport hands the dispatcher an
exception instead of a message, and the dispatcher drops it (a debug log line): the client's
request got no JSON-RPC answer at all and waited for its timeout. Here the refused line is
parsed again with Python's lenient parser; when it is a request, it gets an answer naming the
argument: a tool error for ``tools/call`` (what the calling model reads), a JSON-RPC
invalid-params error for any other method. Nothing is run for it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

log = logging.getLogger("docker_stack_mcp.transport")

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE = re.compile("[\ud800-\udfff]")  # after json.loads a valid pair is one code point: any left is lone
_INVALID_PARAMS = -32602


def refused_line(exc: BaseException) -> str | None:
    """The input line of a pydantic ``json_invalid`` error, else None."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return None
    try:
        first = errors()[0]
    except Exception:
        return None
    line = first.get("input") if isinstance(first, dict) and first.get("type") == "json_invalid" else None
    return line if isinstance(line, str) else None


def _lone_surrogate_at(value: Any, where: str) -> str | None:
    """The dotted path of the first string (or key) holding a lone surrogate, else None."""
    if isinstance(value, str):
        return where if _LONE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _LONE.search(key):
                return f"{where}.{_LONE.sub('?', key)}" if where else _LONE.sub("?", key)
            found = _lone_surrogate_at(item, f"{where}.{key}" if where else key)
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate_at(item, f"{where}[{i}]")
            if found:
                return found
    return None


def answer_for_refused(exc: BaseException) -> dict[str, Any] | None:
    """The JSON-RPC answer (a plain dict) to a request the transport could not read because a
    string in it holds a lone UTF-16 surrogate; None when there is nothing to answer (not that
    case, not parseable at all, or a notification)."""
    line = refused_line(exc)
    if line is None or not _SURROGATE_ESCAPE.search(line):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None  # a notification (or a malformed id): JSON-RPC answers neither
    params = message.get("params")
    where = _lone_surrogate_at(params, "") or "a string"
    if message["method"] == "tools/call" and isinstance(params, dict):
        arguments = params.get("arguments")
        where = _lone_surrogate_at(arguments, "") or where
        name = params.get("name")
        tool = name if isinstance(name, str) else "the tool"
        text = (f"Argument `{where}` holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its "
                f"pair), which is not valid Unicode. State: {_LONE.sub('?', tool)} was not run; nothing "
                "changed. Next: send the text as valid Unicode (escape a character outside the BMP as "
                "a high+low surrogate pair, or as UTF-8).")
        log.warning("refused a tools/call: %s holds a lone UTF-16 surrogate", where)
        return {"jsonrpc": "2.0", "id": request_id,
                "result": {"content": [{"type": "text", "text": text}], "isError": True}}
    log.warning("refused a %s request: %s holds a lone UTF-16 surrogate", message["method"][:60], where)
    return {"jsonrpc": "2.0", "id": request_id, "error": {
        "code": _INVALID_PARAMS,
        "message": f"invalid params: `{where}` holds a lone UTF-16 surrogate, which is not valid Unicode; "
                   "nothing was run"}}


class AnswerRefusedLines:
    """The transport's read stream, minus the requests answered here (see the module docstring).

    Duck-types the SDK's ReadStream (and its ``last_context``); answers go out on the write
    stream the session writes its own answers to."""

    def __init__(self, inner: Any, write_stream: Any) -> None:
        self._inner = inner
        self._write = write_stream

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        while True:
            item = await self._inner.receive()
            if not await self._answered(item):
                return item

    async def _answered(self, item: Any) -> bool:
        if not isinstance(item, Exception):
            return False
        answer = answer_for_refused(item)
        if answer is None:
            return False
        import mcp_types as types
        from mcp.shared.message import SessionMessage

        message = types.jsonrpc_message_adapter.validate_python(answer)
        await self._write.send(SessionMessage(message))
        return True

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> AnswerRefusedLines:
        return self

    async def __anext__(self) -> Any:
        while True:
            item = await self._inner.__anext__()
            if not await self._answered(item):
                return item

    async def __aenter__(self) -> AnswerRefusedLines:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._inner.__aexit__(*exc)  # type: ignore[no-any-return,unused-ignore]
