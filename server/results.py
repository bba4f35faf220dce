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


def without_nulls(data: Any) -> Any:
    """The data with every null member of an object left out (at any depth; list items stay)."""
    if isinstance(data, dict):
        return {k: without_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [without_nulls(v) for v in data]
    return data


def compact_result(result: CallToolResult) -> CallToolResult:
    """The same result with each JSON text block re-serialised without indentation and without
    null members (a field the text leaves out is null: twelve planned services repeat
    `"digest_from":null` twelve times otherwise). Plain text (an error's message, a log excerpt)
    and the structured content, which keeps every field, are left as they are."""
    blocks: list[Any] = []
    changed = False
    for block in result.content:
        if isinstance(block, TextContent) and block.text[:1] in ("{", "["):
            try:
                text = compact_json(without_nulls(json.loads(block.text)))
            except ValueError:
                text = block.text
            if text != block.text:
                block = block.model_copy(update={"text": text})
                changed = True
        blocks.append(block)
    return result.model_copy(update={"content": blocks}) if changed else result


_NULL = {"type": "null"}


def slim_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema that accepts every result the tool gives, minus what only pydantic needs.

    Dropped: auto-generated ``title``s (the property name again), ``default``s and ``required``
    (pydantic lists only the fields without a default, yet a result always carries every field:
    the list says nothing a reader can use), ``additionalProperties: false`` (our models never
    add any), ``type: string`` beside an enum of strings and ``type: object`` beside properties;
    a client that validates still accepts every result. ``anyOf [T, null]`` of a simple type
    becomes ``type: [T, "null"]``; a ``$defs`` entry used once is inlined.

    And the field descriptions: the published output schema is the result's structure (names,
    types, enums, nesting); what the fields mean is the tool description's job, which a model
    reads anyway. They stay in the pydantic models. This halves the schemas (issue 17: the
    tool list with output schemas within 40,000 characters).
    """
    slim = _inline_single_use(_drop_descriptions(_slim(schema)))
    # MCP requires `type: object` at the root of an output schema (clients of the older
    # protocol versions reject a tool list without it).
    return {"type": "object", **slim}


def slim_input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema that accepts exactly the same arguments, without pydantic's generated
    ``title``s (the argument name again); ``anyOf [T, null]`` of a simple type becomes
    ``type: [T, "null"]``. Descriptions, defaults and ``required`` stay: a caller needs them.
    (The SDK validates arguments with its own model, not with the published schema.)"""
    slim: dict[str, Any] = _slim_input(schema)
    return slim


def _slim_input(node: Any) -> Any:
    if isinstance(node, list):
        return [_slim_input(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _slim_input(sub) for name, sub in value.items()}
        elif key != "title":
            out[key] = _slim_input(value)
    return _collapse_nullable(out)


def _inline_single_use(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``$defs`` entry referenced once is written where it is used (the same schema, shorter)."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict) or not defs:
        return schema
    text = json.dumps(schema)
    once = {name for name in defs if text.count(f'"#/$defs/{name}"') == 1}

    def sub(node: Any) -> Any:
        if isinstance(node, list):
            return [sub(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in once:
            return sub(defs[ref[8:]])
        return {k: sub(v) for k, v in node.items() if k != "$defs"}

    out = sub(schema)
    kept = {name: sub(d) for name, d in defs.items() if name not in once}
    if kept:
        out["$defs"] = kept
    return out


def _slim(node: Any) -> Any:
    if isinstance(node, list):
        return [_slim(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):  # property names are data, never keywords
            out[key] = {name: _slim(sub) for name, sub in value.items()}
        elif key in ("title", "default", "required") or (key == "additionalProperties" and value is False):
            continue
        else:
            out[key] = _slim(value)
    if "enum" in out and out.get("type") == "string" and all(isinstance(v, str) for v in out["enum"]):
        del out["type"]  # the enum says it
    if out.get("type") == "object" and "properties" in out:
        del out["type"]  # the properties say it
    return _collapse_nullable(out)


def _collapse_nullable(out: dict[str, Any]) -> dict[str, Any]:
    """``anyOf [T, null]`` of a simple type becomes ``type: [T, "null"]`` (same values accepted)."""
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
