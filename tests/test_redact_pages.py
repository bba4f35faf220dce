"""The Scrubber on pages of log lines, image references, and hostile inputs (issues 15 and 17)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from server.redact import MASK, Scrubber, remember_secrets, scrub_seen
from tests.conftest import write_stack

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("ref", [
    f"docker.io/valkey/valkey:8-bookworm@{DIGEST}", "valkey/valkey:8-bookworm", "valkey:8", "keydb:6.3.4",
    "bitnami/sealed-secrets-controller:v0.24.0", f"ghcr.io/acme/apikey-proxy@{DIGEST}", "eqalpha/keydb:latest",
])
def test_an_image_reference_is_never_masked(ref: str) -> None:
    for text in (ref, f"image: {ref}", f'"image": "{ref}"', f"pulling {ref} done", f"image={ref}"):
        assert Scrubber()(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("api_key:1.2", f"api_key:{MASK}"), ("password:hunter2", f"password:{MASK}"),
    ("apikey:8f3a9c2e1", f"apikey:{MASK}"), ("secret: valkey:8", f"secret: {MASK}"),
    ("VALKEY_PASSWORD=s3cret-xyz", f"VALKEY_PASSWORD={MASK}"), ("--api-key=abcdef", f"--api-key={MASK}"),
])
def test_credentials_next_to_image_like_words_are_still_masked(text: str, expected: str) -> None:
    assert Scrubber()(text) == expected


def test_versions_ports_booleans_and_hosts_stay_readable() -> None:
    text = "LibreChat v0.7.6 listening on PORT=8080 DEBUG=true host=db.internal url=http://api:3080/v1 monkey:8080"
    assert Scrubber()(text) == text


def test_a_page_keeps_one_line_per_line_and_masks_keys_and_multi_line_values_whole() -> None:
    value = "first-line-of-the-value\nsecond-line-of-value\nthird-line-of-value"
    lines = ["boot", "-----BEGIN RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA", "abc==", "-----END RSA PRIVATE KEY-----",
             "v0.7.6 ready", *value.split("\n"), "done"]
    assert Scrubber([value]).page(lines) == ["boot", MASK, MASK, MASK, MASK, "v0.7.6 ready", MASK, MASK, MASK, "done"]


def test_a_page_that_holds_only_part_of_a_key_or_value_masks_that_part() -> None:
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
    # starts inside a key (its BEGIN is on the page before)
    assert Scrubber().page([body, "Zm9v==", "-----END PRIVATE KEY-----", "next"]) == [MASK, MASK, MASK, "next"]
    # ends inside a key
    assert Scrubber().page(["x", "-----BEGIN PRIVATE KEY-----", body]) == ["x", MASK, MASK]
    # a line that only names the marker masks the key-like lines after it, not the rest of the page
    assert Scrubber().page(["want -----BEGIN RSA PRIVATE KEY----- here", body, "", "Zm9v==", "next line", "done"]) == [
        f"want {MASK}", MASK, MASK, MASK, "next line", "done"]
    # only body lines; a container id or digest alone on its line is no key
    assert Scrubber().page(["x", body, body, "y"]) == ["x", MASK, MASK, "y"]
    assert Scrubber().page(["0123456789abcdef" * 4, "0123456789ABCDEF" * 4]) == ["0123456789abcdef" * 4,
                                                                               "0123456789ABCDEF" * 4]
    # one line of a multi-line value
    value = "first-line-of-the-value\nsecond-line-of-value"
    assert Scrubber([value]).page(["got second-line-of-value here"]) == [f"got {MASK} here"]


def test_a_page_in_many_chunks_is_one_line_per_line() -> None:
    lines = [f"line {i} token=abc{i}" + "x" * 1000 for i in range(1000)]
    out = Scrubber().page(lines)
    assert len(out) == 1000 and all(o.startswith(f"line {i} token={MASK}") for i, o in enumerate(out))
    assert Scrubber().page(["a\nb", "c"]) == ["a\nb", "c"]  # a line with a newline: line by line


@pytest.mark.parametrize("hostile", ["a" * 20_000, "x:" * 10_000, "a://" * 5_000, "ab-" * 7_000, "a:b@" * 5_000,
                                     "key:" * 5_000, "pass=1 " * 3_000, "eyJ" + "a" * 20_000])
def test_scrubbing_a_hostile_20kb_line_is_linear(hostile: str) -> None:
    scrub = Scrubber([f"secret-value-{i}" for i in range(20)])
    started = time.perf_counter()
    for _ in range(10):
        scrub(hostile)
    assert time.perf_counter() - started < 1.0  # was 0.7 s for one "x:" line


def test_scrub_seen_follows_what_was_remembered() -> None:
    assert scrub_seen("a brand-new-secret-9921 here") == "a brand-new-secret-9921 here"
    remember_secrets(["brand-new-secret-9921"])
    assert scrub_seen("a brand-new-secret-9921 here") == f"a {MASK} here"
    assert scrub_seen("api_token=abc123") == f"api_token={MASK}"


VALKEY = f"""\
name: cache
services:
  cache:
    image: docker.io/valkey/valkey:8-bookworm@{DIGEST}
    environment:
      VALKEY_PASSWORD: ${{VALKEY_PASSWORD}}
      VALKEY_EXTRA_FLAGS: "--maxmemory 64mb --requirepass ${{VALKEY_PASSWORD}}"
  keydb:
    image: eqalpha/keydb:latest
"""


@pytest.mark.anyio
async def test_inspect_stack_shows_image_references_whole(mcp_client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "cache", VALKEY, env="VALKEY_PASSWORD=vk-Qz88-secret\n")
    result = await mcp_client.call_tool("inspect_stack", {"path": "cache"})
    assert not result.is_error, result.content
    services = {s["name"]: s for s in result.structured_content["services"]}
    assert services["cache"]["image"] == f"docker.io/valkey/valkey:8-bookworm@{DIGEST}"
    assert services["keydb"]["image"] == "eqalpha/keydb:latest"
    assert "vk-Qz88-secret" not in json.dumps(result.structured_content)
