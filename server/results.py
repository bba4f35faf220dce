"""What every tool result and tool listing goes through on its way to the model: compact JSON.

The SDK renders a tool's text content as JSON indented by two spaces and publishes pydantic's
output schemas verbatim (a ``title`` per field, a ``default`` per optional field, ``anyOf`` for
each nullable one). A model pays for every character; none of these carry meaning for it.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.types import CallToolResult, TextContent


def compact_json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def compact_result(result: CallToolResult) -> CallToolResult:
    """The same result with each JSON text block re-serialised without indentation; plain text
    (an error's message, a log excerpt) and the structured content are left as they are."""
    blocks: list[Any] = []
    changed = False
    for block in result.content:
        if isinstance(block, TextContent) and block.text[:1] in ("{", "["):
            try:
                text = compact_json(json.loads(block.text))
            except ValueError:
                text = block.text
            if text != block.text:
                block = block.model_copy(update={"text": text})
                changed = True
        blocks.append(block)
    return result.model_copy(update={"content": blocks}) if changed else result


_NULL = {"type": "null"}


def slim_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema that validates the same documents, minus what only pydantic needs.

    Dropped: auto-generated ``title``s (the property name again), ``default``s (an output always
    carries every field), ``additionalProperties: false`` (our models never add any; a client
    that validates still accepts every result). ``anyOf [T, null]`` of a simple type becomes
    ``type: [T, "null"]``. Descriptions stay at the top level of the result; inside ``$defs``
    (nested records: a finding, a service) they go, the tool's description says what matters.
    """
    slim = _slim(schema)
    defs = slim.get("$defs")
    if isinstance(defs, dict):
        slim["$defs"] = {name: _drop_descriptions(d) for name, d in defs.items()}
    return slim


def _slim(node: Any) -> Any:
    if isinstance(node, list):
        return [_slim(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):  # property names are data, never keywords
            out[key] = {name: _slim(sub) for name, sub in value.items()}
        elif key in ("title", "default") or (key == "additionalProperties" and value is False):
            continue
        else:
            out[key] = _slim(value)
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and len(any_of) == 2 and _NULL in any_of:
        other = any_of[0] if any_of[1] == _NULL else any_of[1]
        if isinstance(other, dict) and set(other) == {"type"} and isinstance(other["type"], str):
            del out["anyOf"]
            out["type"] = [other["type"], "null"]
    return out


def _drop_descriptions(node: Any) -> Any:
    if isinstance(node, list):
        return [_drop_descriptions(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _drop_descriptions(sub) for name, sub in value.items()}
        elif key != "description":
            out[key] = _drop_descriptions(value)
    return out
