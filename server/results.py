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

UNPUBLISHED: dict[str, frozenset[str]] = {
    # model (its schema title) -> fields its results carry that the published schema leaves out:
    # bookkeeping a caller rarely reads (container and process ids, second timestamps, figures
    # another field already gives, notes the text says). Still in every result (structured
    # content and text): a schema only describes, and these schemas allow more fields.
    "Finding": frozenset({"category"}),
    "DiagnosisFinding": frozenset({"category"}),
    "Phase": frozenset({"duration_s"}),
    "ServicePlan": frozenset({"registry_note", "suggested_strategy", "pull", "strategy"}),
    "RollbackInfo": frozenset({"failed_images", "data_check", "time_to_recover_s"}),
    "DeployPlan": frozenset({"backup", "volumes_to_create", "networks_to_create"}),
    "OperationView": frozenset({"pid", "updated_at", "params", "elapsed_s"}),
    "HostResources": frozenset({"engine_local", "docker_root_dir", "source"}),
    "ContainerUsage": frozenset({"project", "memory_limit_bytes"}),
    "ResourceRequest": frozenset({"credited_bytes"}),
    "ServiceRequest": frozenset({"memory_source"}),
    "ServiceView": frozenset({"profiles", "dsm", "build"}),
    "PortBinding": frozenset({"host_ip", "protocol"}),
    "VolumeMount": frozenset({"read_only"}),
    "ServiceStatus": frozenset({"container_id", "name", "started_at"}),
    "WatcherView": frozenset({"seen_at", "action_at", "restarts_in_window"}),
    "StackList": frozenset({"stacks_root"}),
    "StackEntry": frozenset({"compose_files"}),
    "ObservedProject": frozenset({"working_dir"}),
    "IncidentHit": frozenset({"first_seen"}),
    "PatternHit": frozenset({"last_used"}),
    "BackupSummary": frozenset({"bytes"}),
    "BackupVerification": frozenset({"backup_id", "stack", "duration_s"}),
    "RestoreStep": frozenset({"failed_state", "way"}),
    "DataCheck": frozenset({"tables_expected", "tables_found"}),
    "MemoryStatus": frozenset({"model_detail", "location"}),
    "DeploymentEntry": frozenset({"ended_at"}),
    "Changes": frozenset({"removed"}),
    "SimilarIncident": frozenset({"stack"}),
    "StackInspection": frozenset({"settings"}),
}
UNPUBLISHED_BY_TOOL: dict[str, frozenset[str]] = {
    # Top-level fields a tool never fills: a rollback has no dry run, so never a plan.
    "rollback": frozenset({"plan", "needs_confirm"}),
}


def _unpublish(node: Any, top: frozenset[str]) -> Any:
    """The schema without the UNPUBLISHED fields (by model title) and ``top`` (root fields)."""
    def walk(node: Any, drop: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(v, frozenset()) for v in node]
        if not isinstance(node, dict):
            return node
        drop = drop | UNPUBLISHED.get(str(node.get("title")), frozenset())
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {k: walk(v, frozenset()) for k, v in value.items() if k not in drop}
            elif key == "$defs" and isinstance(value, dict):
                out[key] = {k: walk(v, frozenset()) for k, v in value.items()}
            else:
                out[key] = walk(value, frozenset())
        return out

    return walk(node, top)


def slim_output_schema(schema: dict[str, Any], tool: str | None = None) -> dict[str, Any]:
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

    And the fields a caller rarely reads (``UNPUBLISHED``): left out of the published schema
    only. The result still carries them (a schema without ``additionalProperties: false``
    accepts them), in the structured content and the text. Finally ``type: array`` beside
    ``items`` and a nullable object's ``anyOf`` go (``items``/``properties`` apply to arrays and
    objects only, so every result is still accepted).
    """
    schema = _unpublish(schema, UNPUBLISHED_BY_TOOL.get(tool or "", frozenset()))
    slim = _inline_single_use(_slim(_drop_descriptions(schema)))
    # MCP requires `type: object` at the root of an output schema (clients of the older
    # protocol versions reject a tool list without it).
    return {"type": "object", **slim}


def slim_input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An input schema that accepts exactly the same arguments, without pydantic's generated
    ``title``s (the argument name again), ``default: null`` (an argument left out is null) and
    ``type: string`` beside a string enum; ``anyOf [T, null]`` becomes T accepting null where
    that is exactly equivalent. Descriptions, other defaults and ``required`` stay: a caller
    needs them.
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
        elif key != "title" and not (key == "default" and value is None):
            out[key] = _slim_input(value)
    if "enum" in out and out.get("type") == "string" and all(isinstance(v, str) for v in out["enum"]):
        del out["type"]  # the enum says it
    return _merge_nullable(out)


def _merge_nullable(out: dict[str, Any]) -> dict[str, Any]:
    """``anyOf [X, null]`` written as X accepting null too, where that is exactly equivalent: X
    has one simple ``type`` (its other keywords apply to that type only, so null passes them)
    and, when it has an ``enum``, null joins the enum. A ``default: null`` goes: an argument
    left out is null already."""
    any_of = out.get("anyOf")
    if not (isinstance(any_of, list) and len(any_of) == 2 and _NULL in any_of):
        return out
    other = any_of[0] if any_of[1] == _NULL else any_of[1]
    if not (isinstance(other, dict) and isinstance(other.get("type"), str)
            and not any(k in other for k in ("const", "anyOf", "allOf", "oneOf", "not", "$ref"))):
        return out
    merged = {k: v for k, v in out.items() if k != "anyOf"}
    merged.update(other)
    if "enum" in other:
        merged["enum"] = [*other["enum"], None]
        del merged["type"]
    else:
        merged["type"] = [other["type"], "null"]
    return merged


def _inline_single_use(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``$defs`` entry referenced once is written where it is used (the same schema, shorter)."""
    defs = schema.get("$defs")
    if not isinstance(defs, dict) or not defs:
        return schema
    # Count references from the schema and the definitions still used (a field left unpublished
    # can leave a definition unreferenced: it goes).
    body = {k: v for k, v in schema.items() if k != "$defs"}
    used: dict[str, int] = {}
    reach = [body]
    while reach:
        text = json.dumps(reach.pop())
        for name in defs:
            n = text.count(f'"#/$defs/{name}"')
            if n and not used.get(name):
                reach.append(defs[name])
            used[name] = used.get(name, 0) + n
    defs = {name: d for name, d in defs.items() if used.get(name)}
    once = {name for name in defs if used[name] == 1}

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
    if out.get("additionalProperties") is True:
        del out["additionalProperties"]  # the default
    if out.get("type") == "object" and ("properties" in out or "additionalProperties" in out):
        del out["type"]  # the properties say it
    if out.get("type") == "array" and "items" in out:
        del out["type"]  # the items say it
    return _null_accepted(_collapse_nullable(out))


_TYPE_BOUND = ("type", "enum", "const", "anyOf", "allOf", "oneOf", "not")


def _null_accepted(out: dict[str, Any]) -> dict[str, Any]:
    """``anyOf [X, null]`` where X has no keyword that refuses null (only ``properties``,
    ``items``, ``$ref`` to such a schema...) is X: it accepts null already."""
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and len(any_of) == 2 and _NULL in any_of and len(out) == 1:
        other = any_of[0] if any_of[1] == _NULL else any_of[1]
        if isinstance(other, dict) and other and not any(k in other for k in _TYPE_BOUND):
            return other
        if other == {"type": "object"}:
            return {"type": ["object", "null"]}
    return out


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
