from __future__ import annotations

from server.redact import MASK, Scrubber, is_secret_key, redact_mapping


def test_secret_keys() -> None:
    for key in ("POSTGRES_PASSWORD", "JWT_SECRET", "ANON_KEY_TOKEN", "api_key", "SERVICE_ROLE_KEY_SECRET", "DSN"):
        assert is_secret_key(key), key
    for key in ("POSTGRES_PASSWORD_FILE", "POSTGRES_USER", "TZ", "PORT", "AUTH_ENABLED"):
        assert not is_secret_key(key), key


def test_redact_mapping_and_urls() -> None:
    data = {"env": {"DB_PASSWORD": "s3cret", "URL": "postgres://app:pw123@db:5432/x", "MODE": "prod"}}
    out = redact_mapping(data)
    assert out["env"]["DB_PASSWORD"] == MASK
    assert "pw123" not in out["env"]["URL"] and out["env"]["MODE"] == "prod"


def test_scrubber_replaces_known_values_longest_first() -> None:
    scrub = Scrubber(["abcd1234", "abcd"])
    assert scrub("token=abcd1234 and abcd") == f"token={MASK} and {MASK}"
    assert Scrubber(["ab"])("ab") == "ab"  # too short to scrub safely
