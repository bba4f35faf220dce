"""The YAML screen's limits, stated as promises: one case per bomb shape, each at its exact edge.

Every shape is refused with an UnsafeYaml that names the limit and the line; one step inside the
limit is accepted. Memory is measured with tracemalloc in this process, which is the one that
reads, and only after the test's own fixture was written.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from server import yamlsafe
from server.errors import UnsafeYaml
from server.yamlsafe import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_EXPANDED_NODES,
    decode_text,
    dump_yaml,
    load_yaml,
    read_text_capped,
)

MB = 1024 * 1024


def flow_sequences(depth: int) -> str:
    return "[" * depth + "]" * depth


def block_sequences(depth: int) -> str:
    return "".join("  " * i + "-\n" for i in range(depth - 1)) + "  " * (depth - 1) + "- x\n"


def block_mappings(depth: int) -> str:
    return "".join("  " * i + f"k{i}:\n" for i in range(depth - 1)) + "  " * (depth - 1) + "leaf: x\n"


def flow_mappings(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth


def mixed(depth: int) -> str:
    """Mapping, sequence, mapping... alternating, in block style."""
    out, indent = [], 0
    for i in range(depth - 1):
        if i % 2 == 0:
            out.append(" " * indent + f"k{i}:")
        else:
            out.append(" " * indent + "-")
        indent += 2
    out.append(" " * indent + ("leaf: x" if (depth - 1) % 2 == 0 else "- x"))
    return "\n".join(out) + "\n"


SHAPES: dict[str, Callable[[int], str]] = {
    "flow sequences": flow_sequences,
    "block sequences": block_sequences,
    "block mappings": block_mappings,
    "flow mappings": flow_mappings,
    "mixed mappings and sequences": mixed,
}


def depth_of(data: object) -> int:
    depth = 0
    while isinstance(data, dict | list) and data:
        data = next(iter(data.values())) if isinstance(data, dict) else data[0]
        depth += 1
    return depth + (1 if data in ({}, []) else 0)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_nesting_at_the_limit_is_accepted(shape: str) -> None:
    doc = load_yaml(SHAPES[shape](MAX_DEPTH))
    assert depth_of(doc.data) == MAX_DEPTH


# 65-1000 is below libyaml's own guard (1000), so only our screen stands between them and the
# loader; block shapes deeper than ~1000 are over the byte limit, which is another promise.
DEEP = [(shape, depth) for shape in sorted(SHAPES) for depth in (MAX_DEPTH + 1, 100, 500, 999, 1000, 1001, 5000)
        if len(SHAPES[shape](depth)) <= 1_048_576]


@pytest.mark.parametrize(("shape", "depth"), DEEP)
def test_nesting_past_the_limit_is_refused_at_any_depth(shape: str, depth: int) -> None:
    text = SHAPES[shape](depth)
    with pytest.raises(UnsafeYaml, match=f"nests deeper than {MAX_DEPTH} levels") as info:
        load_yaml(text, "compose.yaml")
    assert info.value.line is not None and info.value.column is not None
    assert "compose.yaml" in str(info.value) and "nothing was changed" in str(info.value)


def test_alias_bomb_shapes_are_refused_without_expanding() -> None:
    # Nine levels of nine aliases: 9**9 nodes if expanded.
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    start = time.perf_counter()
    with pytest.raises(UnsafeYaml, match="would expand to more than") as info:
        load_yaml("\n".join(lines))
    assert time.perf_counter() - start < 0.5
    assert info.value.line == 6  # f: 9**6 * 10 nodes is the first past 200k
    # A mapping anchor counts its keys and values when aliased.
    mapping = "base: &m {" + ", ".join(f"k{i}: v" for i in range(999)) + "}\nuse: [" + ", ".join(["*m"] * 101) + "]\n"
    with pytest.raises(UnsafeYaml, match="would expand"):
        load_yaml(mapping)


def test_expanded_size_counts_aliases_of_nested_anchors() -> None:
    # An anchor on an inner collection: every alias of it costs its whole size, not one node.
    inner = "[" + ", ".join(["x"] * 99) + "]"
    fits = f"outer: [&in {inner}]\nrefs: [" + ", ".join(["*in"] * 1900) + "]\n"
    assert len(load_yaml(fits).data["refs"]) == 1900
    too_many = f"outer: [&in {inner}]\nrefs: [" + ", ".join(["*in"] * 2100) + "]\n"
    with pytest.raises(UnsafeYaml, match="would expand"):
        load_yaml(too_many)


def test_alias_count_limit_is_exact() -> None:
    doc = "a: &a x\nb:\n" + "  - *a\n" * MAX_ALIASES
    assert len(load_yaml(doc).data["b"]) == MAX_ALIASES
    with pytest.raises(UnsafeYaml, match=f"more than {MAX_ALIASES} aliases") as info:
        load_yaml(doc + "  - *a\n")
    assert info.value.line == MAX_ALIASES + 3


def test_a_huge_flat_document_is_refused_at_the_node_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real limit, refused side: the screen stops at node 200 001 without building anything.
    with pytest.raises(UnsafeYaml, match="would expand to more than"):
        load_yaml("[" + "x," * MAX_EXPANDED_NODES + "]", max_bytes=2 * MB)
    # The exact edge on a smaller limit (a full parse of 200 000 nodes is slow): a top-level
    # sequence is one node plus one per item.
    monkeypatch.setattr(yamlsafe, "MAX_EXPANDED_NODES", 2000)
    assert len(load_yaml("[" + "x," * 1999 + "]").data) == 1999
    with pytest.raises(UnsafeYaml, match="would expand to more than 2000 nodes"):
        load_yaml("[" + "x," * 2000 + "]")


def test_top_level_aliases_count_towards_the_total() -> None:
    many = "- &a [" + ", ".join(["x"] * 999) + "]\n" + "- *a\n" * 198
    assert len(load_yaml(many).data) == 199
    with pytest.raises(UnsafeYaml, match="would expand"):
        load_yaml(many + "- *a\n" * 2)


@pytest.mark.parametrize(
    ("text", "limit", "refused"),
    [
        ("k: " + "x" * (MB - 3), MB, False),  # a huge scalar exactly at the byte limit
        ("k: " + "x" * (MB - 2), MB, True),
        ("k: " + "é" * (MB // 2), MB, True),  # counted in UTF-8 bytes, not characters
        ("k: 'x\x00y'", MB, True),
    ],
)
def test_huge_scalars_and_nul_in_text(text: str, limit: int, refused: bool) -> None:
    if refused:
        with pytest.raises(UnsafeYaml, match=r"limit|NUL"):
            load_yaml(text, max_bytes=limit)
    else:
        assert len(load_yaml(text, max_bytes=limit).data["k"]) == MB - 3


@pytest.mark.parametrize("text", ["a: 1\n---\nb: 2\n", "---\n" * 1000, "--- 1\n--- 2\n"])
def test_many_documents_are_refused(text: str) -> None:
    with pytest.raises(UnsafeYaml) as info:
        load_yaml(text)
    assert info.value.line is not None


def test_syntax_error_names_the_file_line_and_column() -> None:
    with pytest.raises(UnsafeYaml, match=r"^compose.yaml: YAML syntax error at line 2, column 7: mapping values") as e:
        load_yaml("ok: 1\nbad: b: c\n", "compose.yaml")
    assert (e.value.line, e.value.column) == (2, 7)
    with pytest.raises(UnsafeYaml, match="line 4, column 1: did not find expected ',' or ']' while parsing") as e:
        load_yaml("services:\n  web:\n    image: [unclosed\n", "compose.yaml")
    assert "fix the YAML at that line" in str(e.value)


def test_empty_document_is_none_and_lines_cover_four_levels() -> None:
    assert load_yaml("").data is None and load_yaml("# only a comment\n").data is None
    doc = load_yaml("a:\n  b:\n    c:\n      d:\n        e: 1\n")
    assert doc.lines.get("a", "b", "c", "d") == 4
    assert doc.lines.by_path.get(("a", "b", "c", "d", "e")) is None  # deeper keys fall back to their parent
    assert doc.lines.get("a", "b", "c", "d", "e") == 4
    first = load_yaml("k: 1\nlist:\n  - {k: 2}\nk2: 3\n")
    assert first.lines.get("k") == 1 and first.lines.get("k2") == 4 and first.lines.get("list", "k") == 2


def test_a_key_of_its_own_beats_a_merged_one_for_its_line() -> None:
    doc = load_yaml("x-a: &a {image: one}\nservices:\n  web:\n    <<: *a\n    image: two\n")
    assert doc.lines.get("services", "web", "image") == 5


# ---------------------------------------------------------------- reading files: size, encoding, memory


def test_size_limit_of_a_file_is_exact(tmp_path: Path) -> None:
    f = tmp_path / "compose.yaml"
    f.write_bytes(b"k: " + b"x" * 1021)
    assert len(read_text_capped(f, 1024)) == 1024
    f.write_bytes(b"k: " + b"x" * 1022)
    with pytest.raises(UnsafeYaml, match="1025 bytes, over the 1024-byte limit"):
        read_text_capped(f, 1024)


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnsafeYaml, match=r"cannot read missing\.yaml"):
        read_text_capped(tmp_path / "missing.yaml", 1024)


def test_bom_is_dropped_and_nul_or_bad_utf8_refused() -> None:
    assert decode_text("\ufeffname: x\n".encode(), "c.yaml") == "name: x\n"
    with pytest.raises(UnsafeYaml, match=r"c\.yaml is binary"):
        decode_text(b"name: x\x00\n", "c.yaml")
    with pytest.raises(UnsafeYaml, match=r"c.yaml is not valid UTF-8 text \(byte 7\)"):
        decode_text(b"name: x\xff\n", "c.yaml")


def _write_big(path: Path, size: int) -> None:
    chunk = b"# padding padding padding padding padding padding padding padding\n" * 1024
    with path.open("wb") as fh:
        for _ in range(size // len(chunk) + 1):
            fh.write(chunk)


def test_a_50mb_file_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "compose.yaml"
    _write_big(big, 50 * MB)
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeYaml, match="over the"):
            read_text_capped(big, MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MB // 2  # refused from its size, before any of it was read


def test_a_file_that_grows_while_read_is_cut_at_the_limit(tmp_path: Path) -> None:
    """A FIFO reports size 0 and then streams 50 MB: the read itself must stop at the limit."""
    fifo = tmp_path / "compose.yaml"
    os.mkfifo(fifo)
    chunk = b"#" * 65536

    def writer() -> None:
        try:
            with fifo.open("wb") as fh:
                for _ in range(50 * MB // len(chunk)):
                    fh.write(chunk)
        except BrokenPipeError:
            pass  # the reader stopped at its limit and closed the pipe

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeYaml, match="over the 1048576-byte limit") as info:
            read_text_capped(fifo, MB)
        _, peak = tracemalloc.get_traced_memory()
        assert info.value.state == "nothing was changed"
    finally:
        tracemalloc.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert peak < 4 * MB


def test_dump_keeps_order_and_block_style() -> None:
    text = dump_yaml({"services": {"web": {"image": "é", "ports": ["80:80"]}}, "a": 1})
    assert text == "services:\n  web:\n    image: é\n    ports:\n    - 80:80\na: 1\n"


# ---------------------------------------------------------------- every refusal says what, where, and the state


def _refusal(call: Callable[[], object]) -> UnsafeYaml:
    with pytest.raises(UnsafeYaml) as info:
        call()
    return info.value


def test_every_refusal_names_the_file_and_the_state(tmp_path: Path) -> None:
    """The calling model reads these: the file's name, and that nothing was parsed or changed."""
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"a: \x00")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: caf\xe9")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2000)
    cases: list[tuple[Callable[[], object], str, str]] = [
        (lambda: load_yaml("k: " + "x" * 2000, "c.yaml", max_bytes=1024),
         "c.yaml is over the 1024-byte limit", "nothing was parsed"),
        (lambda: load_yaml("k: '\x00'", "c.yaml"), "c.yaml contains NUL characters, not YAML text",
         "nothing was parsed"),
        (lambda: load_yaml("k: \x07", "c.yaml"), "c.yaml: unacceptable character", "nothing was parsed"),
        (lambda: load_yaml("a: *nope\n", "c.yaml"),
         "c.yaml: YAML syntax error at line 1, column 4: found undefined alias",
         "nothing was parsed or changed"),
        (lambda: read_text_capped(binary, 1024), "bin.yaml is binary (contains NUL bytes), not a YAML text file",
         "nothing was parsed"),
        (lambda: read_text_capped(latin, 1024), "latin.yaml is not valid UTF-8 text (byte 6)", "nothing was parsed"),
        (lambda: read_text_capped(big, 1024), "big.yaml is 2000 bytes, over the 1024-byte limit for compose files",
         "nothing was parsed or changed"),
        (lambda: read_text_capped(tmp_path / "missing.yaml", 1024),
         "cannot read missing.yaml: No such file or directory", "nothing was changed"),
        (lambda: load_yaml("[" * 65 + "]" * 65, "c.yaml"), "c.yaml nests deeper than 64 levels (line 1, column 65)",
         "the file was refused before any tool read it; nothing was changed"),
    ]
    for call, what, state in cases:
        err = _refusal(call)
        assert err.what.startswith(what), (err.what, what)
        assert err.state == state, (what, err.state)


def test_limit_errors_carry_the_exact_position() -> None:
    err = _refusal(lambda: load_yaml("x:\n  y: " + "[" * 70 + "]" * 70))
    assert (err.line, err.column) == (2, 68) and "(line 2, column 68)" in err.what
    err = _refusal(lambda: load_yaml("a: &a x\nb:\n" + "  - *a\n" * (MAX_ALIASES + 1)))
    assert (err.line, err.column) == (MAX_ALIASES + 3, 5)
    assert err.next_step == "remove the deep nesting or alias chains"
    # Root 1 + anchored list 100 + 100 per alias: the 1999th alias (line 2000) is the first past 200 000.
    bomb = _refusal(lambda: load_yaml("- &a [" + "x, " * 99 + "]\n" + "- *a\n" * 2500))
    assert bomb.what == (f"<content> would expand to more than {MAX_EXPANDED_NODES} nodes through YAML aliases "
                         "(an alias bomb or a far too large file) (line 2000, column 3)")


def test_syntax_errors_read_whole_with_and_without_context() -> None:
    assert _refusal(lambda: load_yaml("a: [1, 2\n", "c.yaml")).what == (
        "c.yaml: YAML syntax error at line 2, column 1: did not find expected ',' or ']' while parsing a flow sequence")
    assert _refusal(lambda: load_yaml("a: b: c\n", "c.yaml")).what == (
        "c.yaml: YAML syntax error at line 1, column 5: mapping values are not allowed in this context")


def test_nested_collections_count_inside_their_anchor() -> None:
    # The anchored list holds 999 scalars and one nested list: every alias costs all of it.
    anchored = "a: &a [" + "x, " * 999 + "[y]]\nb: [" + ", ".join(["*a"] * 199) + "]\n"
    with pytest.raises(UnsafeYaml, match="would expand"):
        load_yaml(anchored)


def test_scalar_anchors_count_one_node_per_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsafe, "MAX_EXPANDED_NODES", 3000)
    monkeypatch.setattr(yamlsafe, "MAX_ALIASES", 1000)
    # 1 root + 1998 plain + 1 anchored scalar + 1000 aliases = exactly the node limit.
    k = 3000 - 2 - 1000
    text = "[" + "x," * k + "&s y," + "*s," * 1000 + "]"
    assert len(load_yaml(text).data) == k + 1 + 1000
    with pytest.raises(UnsafeYaml, match="would expand"):
        load_yaml(text.replace("[x,", "[x,x,", 1))


def test_an_undefined_alias_is_a_syntax_error_not_a_crash() -> None:
    err = _refusal(lambda: load_yaml("services:\n  web: *nothing\n"))
    assert err.line == 2 and "undefined alias" in err.what and err.what.startswith("<content>: ")


def test_the_document_keeps_its_name_and_text() -> None:
    text = "services:\n  web: {image: a}\n"
    doc = load_yaml(text, "compose.yaml")
    assert doc.text == text and doc.lines.file == "compose.yaml"
    assert load_yaml("a: 1").lines.file == "<content>"
    assert len(load_yaml("k: " + "x" * (1_048_576 - 3)).data["k"]) == 1_048_576 - 3  # default limit: 1 MiB
    with pytest.raises(UnsafeYaml):
        load_yaml("k: " + "x" * (1_048_576 - 2))
