"""Known-value scrubbing, each case on its own layer: the texts here carry no ``KEY=`` or URL
context, so only the known-value replacement can mask them (the old "longest first" test had
``token=`` in front, which the assignment pattern masked whatever the order)."""

from __future__ import annotations

import pytest

from server.redact import MASK, Scrubber


@pytest.mark.parametrize("order", [["abcd1234", "abcd"], ["abcd", "abcd1234"]])
def test_known_values_longest_first_whatever_the_order(order: list[str]) -> None:
    scrub = Scrubber(order)
    assert scrub("saw abcd1234 then abcd") == f"saw {MASK} then {MASK}"
    assert "1234" not in scrub("saw abcd1234")


def test_every_occurrence_of_a_known_value_is_masked() -> None:
    assert Scrubber(["s3cr3t-v"])("s3cr3t-v s3cr3t-v|s3cr3t-v") == f"{MASK} {MASK}|{MASK}"


@pytest.mark.parametrize(("value", "masked"), [("abc", False), ("abcd", True)])
def test_values_shorter_than_four_characters_are_not_masked(value: str, masked: bool) -> None:
    out = Scrubber([value])(f"saw {value} here")
    assert (out == f"saw {MASK} here") is masked and (out == f"saw {value} here") is not masked


def test_a_scrubber_without_known_values_leaves_plain_text_alone() -> None:
    text = "port 5432 user postgres host db: connection refused"
    assert Scrubber()(text) == text and Scrubber([])(text) == text
