"""Reading untrusted YAML: the only module that imports ``yaml``.

Compose files come from users, from the internet and from the model itself. An alias bomb
("billion laughs") makes ``docker compose config`` eat all memory, so nothing else reads a
file before it passes :func:`load_yaml`:

1. size cap, checked before the whole file is read; NUL bytes and invalid UTF-8 refused;
2. one pass over libyaml's event stream that measures nesting depth and the number of nodes the
   document would have with every alias expanded, without expanding anything;
3. only then compose + construct, keeping each node's line so findings point at the right line
   (Compose itself sometimes says "line 1").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from server.errors import UnsafeYaml

MAX_DEPTH = 64
MAX_EXPANDED_NODES = 200_000
MAX_ALIASES = 10_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class SourceLines:
    """1-based line numbers of mapping keys by key path, e.g. ``("services", "web", "ports")``."""

    file: str
    by_path: dict[tuple[str, ...], int] = field(default_factory=dict)

    def get(self, *path: str) -> int | None:
        """Line of the deepest known prefix of ``path`` (so a nested key falls back to its parent)."""
        for end in range(len(path), 0, -1):
            line = self.by_path.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


@dataclass(frozen=True)
class YamlDocument:
    data: Any
    lines: SourceLines
    text: str = ""
    """The screened source text, for rules that read references as written."""


def read_text_capped(path: Path, max_bytes: int) -> str:
    """Read a file as UTF-8 text, refusing files over ``max_bytes`` and binary content."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UnsafeYaml(
                f"{path.name} is {size} bytes, over the {max_bytes}-byte limit for compose files",
                state="nothing was parsed or changed",
                next_step="split the file or raise DSM_YAML_MAX_BYTES if it is genuinely this large",
            )
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UnsafeYaml(f"cannot read {path.name}: {exc.strerror or exc}", state="nothing was changed") from None
    if len(raw) > max_bytes:  # the file grew between stat and read
        raise UnsafeYaml(f"{path.name} is over the {max_bytes}-byte limit", state="nothing was changed")
    return decode_text(raw, path.name)


def decode_text(raw: bytes, name: str) -> str:
    if b"\x00" in raw:
        raise UnsafeYaml(f"{name} is binary (contains NUL bytes), not a YAML text file", state="nothing was parsed")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsafeYaml(f"{name} is not valid UTF-8 text (byte {exc.start})", state="nothing was parsed") from None


def load_yaml(text: str, name: str = "<content>", *, max_bytes: int = 1_048_576) -> YamlDocument:
    """Screen then parse one YAML document. Raises :class:`UnsafeYaml` with line/column on any problem."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise UnsafeYaml(f"{name} is over the {max_bytes}-byte limit", state="nothing was parsed")
    if "\x00" in text:
        raise UnsafeYaml(f"{name} contains NUL characters, not YAML text", state="nothing was parsed")
    _screen_events(text, name)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, name) from None
    except yaml.YAMLError as exc:
        raise UnsafeYaml(f"{name}: {exc}", state="nothing was parsed") from None
    finally:
        loader.dispose()
    lines = SourceLines(file=name)
    if node is not None:
        _collect_lines(node, (), lines.by_path, depth=0)
    return YamlDocument(data=data, lines=lines, text=text)


def dump_yaml(data: Any) -> str:
    """Serialise data we built ourselves (snapshots, patches) as block-style YAML."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _screen_events(text: str, name: str) -> None:
    """Measure depth and alias expansion from the event stream, iteratively (no recursion)."""
    # Each open collection keeps a running count of the nodes it would expand to.
    open_counts: list[int] = []
    anchor_sizes: dict[str, int] = {}
    open_anchors: list[str | None] = []
    total = 0
    aliases = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.CollectionStartEvent):
                open_counts.append(1)
                open_anchors.append(event.anchor)
                if len(open_counts) > MAX_DEPTH:
                    raise _limit(f"{name} nests deeper than {MAX_DEPTH} levels", event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                size = open_counts.pop()
                anchor = open_anchors.pop()
                if anchor is not None:
                    anchor_sizes[anchor] = size
                if open_counts:
                    open_counts[-1] += size
                else:
                    total += size
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    anchor_sizes[event.anchor] = 1
                _add(open_counts, 1)
                total += 0 if open_counts else 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _limit(f"{name} uses more than {MAX_ALIASES} aliases", event.start_mark)
                size = anchor_sizes.get(event.anchor or "", 1)
                _add(open_counts, size)
                total += 0 if open_counts else size
            else:
                continue
            expanded = total + sum(open_counts)
            if expanded > MAX_EXPANDED_NODES:
                raise _limit(
                    f"{name} would expand to more than {MAX_EXPANDED_NODES} nodes through YAML aliases "
                    "(an alias bomb or a far too large file)",
                    event.start_mark,
                )
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, name) from None
    except yaml.YAMLError as exc:
        raise UnsafeYaml(f"{name}: {exc}", state="nothing was parsed") from None


def _add(open_counts: list[int], n: int) -> None:
    if open_counts:
        open_counts[-1] += n


def _limit(message: str, mark: Any) -> UnsafeYaml:
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    where = f" (line {line}, column {column})" if line else ""
    return UnsafeYaml(
        message + where,
        line=line,
        column=column,
        state="the file was refused before any tool read it; nothing was changed",
        next_step="remove the deep nesting or alias chains",
    )


def _syntax_error(exc: yaml.MarkedYAMLError, name: str) -> UnsafeYaml:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    problem = exc.problem or "invalid YAML"
    if "nesting depth" in problem:  # libyaml's own guard fired before ours could
        return _limit(f"{name} nests deeper than {MAX_DEPTH} levels", mark)
    context = f" {exc.context}" if exc.context else ""
    where = f" at line {line}, column {column}" if line else ""
    return UnsafeYaml(
        f"{name}: YAML syntax error{where}: {problem}{context}",
        line=line,
        column=column,
        state="nothing was parsed or changed",
        next_step="fix the YAML at that line and validate again",
    )


def _collect_lines(node: Any, path: tuple[str, ...], out: dict[tuple[str, ...], int], depth: int) -> None:
    # Only the first four levels matter for findings (services.<name>.<key>.<subkey>).
    if depth >= 4 or not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        key_path = (*path, str(key_node.value))
        # Last one wins, as in the constructed data: merged (``<<``) keys come first in the node
        # after construction, so a service's own key overrides its anchor's line.
        out[key_path] = key_node.start_mark.line + 1
        _collect_lines(value_node, key_path, out, depth + 1)
