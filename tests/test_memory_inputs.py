"""What memory accepts: every stored text scrubbed, every value bounded, every bad value refused
with a clear error; search scopes and time bounds become exactly the filter they name."""

from __future__ import annotations

import pytest

from server.memory import inputs
from server.memory.errors import MemoryInputError, MemoryRecordNotFound

SECRET_LINES = [
    "DB_PASSWORD=hunter2hunter",
    "connect postgres://app:pw-in-url-123@db/app",
    "Authorization: Bearer abcdefghijklmnop1234",
]
SECRETS = ["hunter2hunter", "pw-in-url-123", "abcdefghijklmnop1234"]


def no_secret(text: str | list[str] | None) -> bool:
    joined = "\n".join(text) if isinstance(text, list) else text or ""
    return not any(s in joined for s in SECRETS) and "***" in joined


@pytest.mark.parametrize("line", SECRET_LINES)
def test_every_stored_text_field_is_scrubbed(line: str) -> None:
    assert no_secret(inputs.scrubbed_text(f"title {line}", "title", 300))
    assert no_secret(inputs.optional_text(f"  {line}  ", "root_cause"))
    assert no_secret(inputs.clean_steps([line, "restart it"]))
    assert no_secret(inputs.clean_steps(f"first\n{line}\n"))
    assert no_secret(inputs.clean_log_lines([f"ERROR {line}"]))
    assert no_secret(inputs.clean_log_lines(f"a\nERROR {line}\nb"))


def test_required_text_edges() -> None:
    assert inputs.required_text("  x  ", "title", 1) == "x"
    assert inputs.required_text("x" * 300, "title", 300) == "x" * 300
    with pytest.raises(MemoryInputError, match="title has 301 characters, more than 300"):
        inputs.required_text("x" * 301, "title", 300)
    for empty in (None, "", "   \n"):
        with pytest.raises(MemoryInputError, match="title is empty"):
            inputs.required_text(empty, "title", 300)


def test_scrubbing_happens_before_the_length_check() -> None:
    # A long credential shrinks to the mask: the stored text is what is measured.
    text = "x" * 290 + " password=" + "p" * 50
    assert len(inputs.scrubbed_text(text, "title", 310)) < 310


def test_optional_text_edges() -> None:
    assert inputs.optional_text(None, "x") is None
    assert inputs.optional_text("   ", "x") is None
    assert inputs.optional_text(" a ", "x") == "a"
    # Words, not one 20k-character run: server.redact's URL pattern is quadratic on such runs
    # (reported to its owner), and this test is about the length limit.
    longest = "word " * (inputs.MAX_TEXT // 5 - 1) + "words"
    assert len(longest) == inputs.MAX_TEXT
    assert inputs.optional_text(longest, "x") == longest
    with pytest.raises(MemoryInputError, match=f"more than {inputs.MAX_TEXT}"):
        inputs.optional_text(longest + " y", "x")


def test_scope_is_trimmed_and_lowercased() -> None:
    assert inputs.clean_scope("  Shop ") == "shop"
    assert inputs.clean_scope("") is None and inputs.clean_scope(None) is None and inputs.clean_scope("  ") is None


def test_one_of() -> None:
    inputs.one_of("high", "severity", ("low", "high"))
    with pytest.raises(MemoryInputError, match="severity='urgent' is not one of low, high"):
        inputs.one_of("urgent", "severity", ("low", "high"), next_step="pick one")


def test_tags() -> None:
    assert inputs.clean_tags([" Traefik ", "traefik", "", "  ", "tls", "a.b:c/d+e-f_g"]) == [
        "a.b:c/d+e-f_g", "tls", "traefik"]
    assert len(inputs.clean_tags([f"t{i}" for i in range(inputs.MAX_TAGS)])) == inputs.MAX_TAGS
    assert inputs.clean_tags(["x" * 64]) == ["x" * 64]
    for bad in (["two words"], ["x" * 65], ["semi;colon"], ["new\nline"]):
        with pytest.raises(MemoryInputError, match="not simple words"):
            inputs.clean_tags(bad)
    with pytest.raises(MemoryInputError, match=f"at most {inputs.MAX_TAGS}"):
        inputs.clean_tags([f"t{i}" for i in range(inputs.MAX_TAGS + 1)])


def test_steps() -> None:
    assert inputs.clean_steps(["  one ", "", "  ", "two"]) == ["one", "two"]
    assert inputs.clean_steps("one\n\n two \n") == ["one", "two"]
    assert len(inputs.clean_steps(["s"] * inputs.MAX_STEPS)) == inputs.MAX_STEPS
    assert inputs.clean_steps(["x" * 2000]) == ["x" * 2000]
    for bad in ([], ["", " "], ""):
        with pytest.raises(MemoryInputError, match="steps is empty"):
            inputs.clean_steps(bad)
    for bad in (["s"] * (inputs.MAX_STEPS + 1), ["x" * 2001]):
        with pytest.raises(MemoryInputError, match="at most 50 steps of at most 2000"):
            inputs.clean_steps(bad)


def test_log_lines_are_bounded_split_and_kept_from_the_end() -> None:
    many = [f"line {i}" for i in range(inputs.MAX_LOG_LINES_IN + 10)]
    kept = inputs.clean_log_lines(many)
    assert kept[0] == "line 10" and kept[-1] == f"line {inputs.MAX_LOG_LINES_IN + 9}"
    assert len(kept) == inputs.MAX_LOG_LINES_IN
    assert inputs.clean_log_lines(["a\nb", "", "   ", "c   "]) == ["a", "b", "c"]
    assert inputs.clean_log_lines(["x " * 2500]) == ["x " * (inputs.MAX_LOG_LINE // 2)]
    assert inputs.clean_log_lines("  indented\n") == ["  indented"]


@pytest.mark.parametrize(("limit", "ok"), [(0, False), (1, True), (20, True), (21, False), (-1, False)])
def test_search_limit(limit: int, ok: bool) -> None:
    if ok:
        assert inputs.search_limit(limit) == limit
    else:
        with pytest.raises(MemoryInputError, match=f"limit={limit} is outside 1..20"):
            inputs.search_limit(limit)


def test_time_bounds() -> None:
    assert inputs.time_bound(None, 1000.0) is None and inputs.time_bound("", 1000.0) is None
    assert inputs.time_bound(5, 1000.0) == 5.0 and inputs.time_bound(0, 1000.0) == 0.0
    assert inputs.time_bound("90s", 1000.0) == 910.0
    with pytest.raises(MemoryInputError):
        inputs.time_bound("last tuesday-ish", 1000.0)


def test_record_ids() -> None:
    u = "0b4d0c8e-4b0c-4c53-9d62-3b1a7b8e2f10"
    assert inputs.record_uuid(f"  {u.upper()} ", "incident") == u
    for bad in ("", "42", "not-a-uuid", None):
        with pytest.raises(MemoryRecordNotFound, match="is not a incident id"):
            inputs.record_uuid(bad, "incident")  # type: ignore[arg-type]


def test_refusals_say_what_to_pass() -> None:
    with pytest.raises(MemoryInputError) as info:
        inputs.clean_steps([])
    assert (info.value.what, info.value.next_step) == ("steps is empty", "pass the procedure as a list of steps")
    with pytest.raises(MemoryInputError) as info:
        inputs.scrubbed_text("  ", "title", 300)
    assert (info.value.what, info.value.next_step) == ("title is empty", "pass a non-empty title")
    with pytest.raises(MemoryInputError) as info:
        inputs.one_of("x", "outcome", ("ok", "failed"), next_step="pass ok or failed")
    assert info.value.next_step == "pass ok or failed"
    with pytest.raises(MemoryInputError) as info:
        inputs.one_of("x", "outcome", ("ok", "failed"))
    assert info.value.next_step == ""
