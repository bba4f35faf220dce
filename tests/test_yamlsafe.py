"""The YAML screen: every hostile shape is refused fast, with a line, before anything parses it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.errors import UnsafeYaml
from server.yamlsafe import MAX_DEPTH, load_yaml, read_text_capped

ALIAS_BOMB = "\n".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]",
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]",
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]",
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]",
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]",
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]",
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]",
        "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]",
        "i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]",
    ]
)


def test_alias_bomb_is_refused_without_expanding() -> None:
    start = time.perf_counter()
    with pytest.raises(UnsafeYaml, match="alias") as info:
        load_yaml(ALIAS_BOMB)
    assert time.perf_counter() - start < 0.5
    assert info.value.line is not None and 5 <= info.value.line <= 9


def test_modest_aliases_are_fine() -> None:
    doc = load_yaml("x-common: &c {restart: unless-stopped}\nservices:\n  a:\n    <<: *c\n    image: busybox:1\n")
    assert doc.data["services"]["a"]["restart"] == "unless-stopped"


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(UnsafeYaml, match="nests deeper"):
        load_yaml("[" * 5000 + "]" * 5000)
    nested = "services:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * 80 + "v\n"
    with pytest.raises(UnsafeYaml, match="nests deeper"):
        load_yaml(nested)


def test_syntax_error_has_real_line_and_column() -> None:
    text = "services:\n  web:\n    image: busybox:1\n    ports:\n      - '80:80\n  db:\n    image: x\n"
    with pytest.raises(UnsafeYaml, match="syntax error") as info:
        load_yaml(text)
    assert info.value.line is not None and info.value.line >= 5


def test_binary_and_invalid_utf8_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "compose.yaml"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(UnsafeYaml, match="binary"):
        read_text_capped(garbage, 1_000_000)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UnsafeYaml, match="UTF-8"):
        read_text_capped(latin, 1_000_000)


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "compose.yaml"
    with big.open("wb") as fh:  # 50 MB without holding it in memory
        chunk = b"# padding padding padding padding padding padding padding padding\n" * 16384
        for _ in range(50 * 1024 * 1024 // len(chunk) + 1):
            fh.write(chunk)
    start = time.perf_counter()
    with pytest.raises(UnsafeYaml, match="over the"):
        read_text_capped(big, 1_048_576)
    assert time.perf_counter() - start < 0.5


def test_line_map_points_at_keys() -> None:
    doc = load_yaml("name: x\nservices:\n  web:\n    image: a\n\n    ports: ['80:80']\n  db:\n    image: b\n")
    assert doc.lines.get("services", "web") == 3
    assert doc.lines.get("services", "web", "ports") == 6
    assert doc.lines.get("services", "db", "nonexistent") == 7  # falls back to the service
    assert doc.lines.get("nothing") is None


def test_multiple_documents_are_refused() -> None:
    with pytest.raises(UnsafeYaml):
        load_yaml("a: 1\n---\nb: 2\n")
