"""The secret promise, per shape: each case is masked by exactly the layer under test.

Every text is scrubbed by a Scrubber with only that layer able to catch it (no known values,
``assignments=False`` unless the assignment layer is the subject), and the words around the
secret must survive: a mutation that disables the layer leaks the secret, one that masks too
much loses the context, and either fails here.
"""

from __future__ import annotations

import pytest

from server.redact import (
    MASK,
    Scrubber,
    is_secret_key,
    positional_secrets,
    redact_mapping,
    structure_words,
)

# -- one definition of a credential key --------------------------------------------------------

CREDENTIAL_KEYS = [
    "POSTGRES_PASSWORD", "DB_PASS", "MYSQL_ROOT_PWD", "JWT_SECRET", "GITHUB_TOKEN", "MEILI_MASTER_KEY",
    "N8N_ENCRYPTION_KEY", "VAULT_ENC_KEY", "ENC", "AUTH_SALT", "AWS_CREDENTIALS", "PRIVATE", "SSH_PRIVATE",
    "AES_IV", "api_key", "db.password", "secret-key", "apikey", "SERVICE_ROLE_KEY", "ENCRYPTION",
    "KEYCLOAK_ADMIN_PASSWORD", "FTP_PASSIVE_PASSWORD",
    "pass", "passwd", "passphrase", "pwd", "SMTPPASS", "dbPassword", "PASS_1", "mail.pass", "ADMIN_PASSCODE",
]
NOT_CREDENTIAL_KEYS = [
    "POSTGRES_PASSWORD_FILE", "TLS_KEY_PATH", "SUPABASE_PUBLIC_URL", "NEXT_PUBLIC_ANON_KEY", "JWT_EXPIRY",
    "TOKEN_EXPIRES_IN", "SESSION_TTL", "PASSWORD_MIN_LENGTH", "POSTGRES_USER", "TZ", "PORT", "AUTH_ENABLED",
    "POSTGRES_HOST_AUTH_METHOD", "LATENCY_MS", "WORKER_CONCURRENCY", "DSN", "IV", "DATABASE_URL",
    "THEME_IVORY", "KEYCLOAK_ADMIN", "KEYCLOAK_HOSTNAME", "FTP_PASSIVE_PORTS", "DB_ENCODING", "AUTH_BYPASS",
    "passed", "passes", "passing", "compass", "bypass", "PASSENGER_COUNT", "checks_passed", "secretary",
]


@pytest.mark.parametrize("key", CREDENTIAL_KEYS)
def test_credential_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", NOT_CREDENTIAL_KEYS)
def test_not_credential_keys(key: str) -> None:
    assert not is_secret_key(key)


# -- shapes in free text, each caught by one layer -----------------------------------------------

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7v\nq9Zx==\n-----END RSA PRIVATE KEY-----"
SHAPES: list[tuple[str, str, str, str]] = [
    # (name, words before, the credential as it appears, words after): before and after must survive.
    ("url-password", "connect postgres://app:", "Hunter2pw", "@db:5432/x failed"),
    ("url-empty-user", "dial redis://:", "Redispw99", "@cache:6379/0 refused"),
    ("jwt", "anon ", "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJlMTIz", " in header"),
    ("aws-key-id", "key ", "AKIAIOSFODNN7EXAMPLE", " used"),
    ("github-token", "pushed with ", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", " ok"),
    ("openai-key", "model key ", "sk-proj-abcdefghijklmnopqrstuvwx", " rejected"),
    ("slack-token", "hook ", "xoxb-1234567890-abcdefghij", " sent"),
    ("pem-private-key", "pasted:\n", PEM, "\nend of paste"),
    ("pem-cut-off", "key ", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA", ""),
    ("bearer-lower", "401 with bearer ", "Abc123Def456Ghi789", " sent"),
    ("bearer-upper", "Authorization Bearer ", "Abc123Def456Ghi789", ""),
    ("basic", "basic ", "dXNlcjpwYXNzd29yZA==", " refused"),
]


@pytest.mark.parametrize(("name", "before", "secret", "after"), SHAPES, ids=[s[0] for s in SHAPES])
def test_shape_masked_by_its_own_layer(name: str, before: str, secret: str, after: str) -> None:
    out = Scrubber(assignments=False)(before + secret + after)
    assert out == before + MASK + after, name


def test_shapes_leave_ordinary_text_alone() -> None:
    text = "GET http://web:8080/health 200 in 12ms; user=alice host=db:5432 token_url=/auth"
    assert Scrubber(assignments=False)(text) == text


ASSIGNMENTS = [
    ("POSTGRES_PASSWORD=Sup3r", "Sup3r"),
    ('"api_key": "k-123456"', "k-123456"),
    ("MEILI_MASTER_KEY: 1234", "1234"),  # the key decides: short and numeric values too
    ("VAULT_ENC_KEY='abc def'", "abc def"),
]


@pytest.mark.parametrize(("text", "secret"), ASSIGNMENTS)
def test_assignment_layer(text: str, secret: str) -> None:
    assert secret not in Scrubber()(f"env {text} set")
    assert Scrubber(assignments=False)(f"env {text} set") == f"env {text} set"  # only that layer catches it


@pytest.mark.parametrize("text", [
    "5s window passed: 3 held", "compass: north, passes: 3", "tests passed=12 failed=0", "bypass: on",
    "passing: yes", "secretary: bob",
])
def test_ordinary_words_that_contain_pass_are_no_credential_keys(text: str) -> None:
    assert Scrubber(())(text) == text


def test_assignment_layer_keeps_non_credentials() -> None:
    text = "POSTGRES_USER=app PASSWORD_MIN_LENGTH=12 TOKEN_TTL=3600"
    assert Scrubber()(text) == text


def test_an_empty_or_already_masked_credential_stays_as_it_is() -> None:
    # "no password set" is a diagnosis worth keeping, and masking twice must not grow the text.
    text = 'REDIS_PASSWORD="" DB_PASSWORD=*** API_TOKEN=\'\''
    assert Scrubber()(text) == text


# -- known values -----------------------------------------------------------------------------


def test_known_values_longest_first() -> None:
    # No key, no URL, no token shape next to the values: only the known-value layer can act.
    scrub = Scrubber(["abcd", "abcd1234"], assignments=False)
    assert scrub("got abcd1234 then abcd.") == f"got {MASK} then {MASK}."
    assert scrub("x abcd1234abcd y") == f"x {MASK}{MASK} y"


def test_known_values_shorter_than_four_are_not_scrubbed() -> None:
    assert Scrubber(["ab1"], assignments=False)("ab1 stays") == "ab1 stays"
    assert Scrubber(["ab12"], assignments=False)("ab12 goes") == f"{MASK} goes"


def test_known_value_with_regex_characters() -> None:
    assert Scrubber(["p@ss.w*rd(1)"], assignments=False)("was p@ss.w*rd(1) and pXss") == f"was {MASK} and pXss"


# -- positional masking of a rendered model -------------------------------------------------------

RENDERED = {
    "name": "pg",
    "services": {
        "db": {
            "image": "postgres:16",
            "environment": {"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "postgres", "POSTGRES_DB": "app"},
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", "postgres"]},
        },
        "app": {"image": "shop/app:1", "user": "1000", "environment": {"API_TOKEN": "tok-9f8e7d6c"}},
    },
    "volumes": {"pgdata": {}},
}


def test_values_that_are_structure_are_masked_only_at_their_own_key() -> None:
    known = {"postgres", "tok-9f8e7d6c", "pgdata"}
    positional = positional_secrets(known, [RENDERED], RENDERED)
    assert positional == {"tok-9f8e7d6c"}
    assert {"postgres", "16", "pgdata", "app", "shop", "1000"} <= structure_words([RENDERED], RENDERED)
    scrub = Scrubber(positional, assignments=False)
    assert scrub("pg_isready -U postgres") == "pg_isready -U postgres"
    assert scrub("curl -H 'x: tok-9f8e7d6c'") == f"curl -H 'x: {MASK}'"


def test_a_user_name_from_dotenv_is_structure_even_when_the_password_equals_it() -> None:
    written = {"services": {"db": {"image": "postgres:16", "environment": {"POSTGRES_USER": "${DB_USER}"}}}}
    rendered = {"services": {"db": {"image": "postgres:16",
                                    "environment": {"POSTGRES_USER": "appuser", "POSTGRES_PASSWORD": "appuser",
                                                    "API_TOKEN": "other-Tk9"}}}}
    assert positional_secrets({"appuser", "other-Tk9"}, [written], rendered) == {"other-Tk9"}


def test_remembered_secrets_are_bounded_and_keep_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    from server import redact

    monkeypatch.setattr(redact, "_SEEN", {})
    redact.remember_secrets(["first-Aa11"])
    redact.remember_secrets(f"bulk-secret-{i:06d}" for i in range(redact._SEEN_MAX - 1))  # now full
    redact.remember_secrets(["first-Aa11"])  # seen again: now the newest, not the next to go
    redact.remember_secrets(["last-Zz99"])
    seen = redact.seen_secrets()
    assert len(seen) == redact._SEEN_MAX
    assert {"first-Aa11", "last-Zz99"} <= seen and "bulk-secret-000000" not in seen


def test_default_account_names_are_structure() -> None:
    # pgvector image, no POSTGRES_USER: a fix that says `pg_isready -U postgres` must stay whole.
    db = {"image": "pgvector/pgvector:pg16", "environment": {"POSTGRES_PASSWORD": "postgres"}}
    rendered = {"services": {"db": db}}
    assert positional_secrets({"postgres"}, [rendered], rendered) == frozenset()


def test_a_secret_interpolated_into_structure_is_still_masked() -> None:
    written = {"services": {"web": {"image": "registry.local/x/${DB_PASSWORD}:1"}}}
    rendered = {"services": {"web": {"image": "registry.local/x/s3cr3t-in-image:1"}}}
    assert positional_secrets({"s3cr3t-in-image"}, [written], rendered) == {"s3cr3t-in-image"}


def test_redact_mapping_masks_keys_urls_and_known_values() -> None:
    data = {"env": {"DB_PASSWORD": 1234, "URL": "postgres://app:pw123@db:5432/x", "MODE": "prod",
                    "CMD": "run --with tok-9f8e7d6c"}}
    out = redact_mapping(data, Scrubber(["tok-9f8e7d6c"], assignments=False))
    assert out["env"]["DB_PASSWORD"] == MASK  # numeric under a password key: still a credential
    assert out["env"]["URL"] == f"postgres://app:{MASK}@db:5432/x"
    assert out["env"]["MODE"] == "prod" and out["env"]["CMD"] == f"run --with {MASK}"


# -- tool errors ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["dsm", "tool", "internal"])
async def test_tool_error_text_is_scrubbed_whatever_raised_it(kind: str) -> None:
    from mcp.server.mcpserver.exceptions import ToolError

    from server.errors import DsmError
    from server.redact import remember_secrets
    from tools._common import tool_errors

    remember_secrets(["remembered-Vq72Lp"])
    text = "failed for postgres://u:Pw-Err-81@db/x with remembered-Vq72Lp and bearer Tok3nTok3nTok3n"

    @tool_errors
    async def tool() -> None:
        if kind == "dsm":
            raise DsmError(text)
        if kind == "tool":
            raise ToolError(text)
        raise RuntimeError(text)

    with pytest.raises(ToolError) as caught:
        await tool()
    message = str(caught.value)
    for secret in ("Pw-Err-81", "remembered-Vq72Lp", "Tok3nTok3nTok3n"):
        assert secret not in message
    if kind != "internal":
        assert "failed for postgres://u:***@db/x" in message  # the rest of the text is kept


# -- edges found by mutation (issue 10): each case states a promise the happy paths left open ------

# The masked value keeps its quoting exactly, and unquoted stays unquoted: a config file or a
# log line stays readable and parseable after scrubbing.
ASSIGNMENT_EXACT = [
    ("DB_PASSWORD=Sup3r", "DB_PASSWORD=***"),
    ('DB_PASSWORD="Sup3r pw"', 'DB_PASSWORD="***"'),
    ("DB_PASSWORD='Sup3r pw'", "DB_PASSWORD='***'"),
    ('"api_key": "k-123456"', '"api_key": "***"'),
    ("'api_key': 'k-123456'", "'api_key': '***'"),
    ("API_TOKEN: XXXXXXXX", "API_TOKEN: ***"),  # a value of only X's is a value, not "empty"
    ("API_TOKEN='XX'", "API_TOKEN='***'"),
]


@pytest.mark.parametrize(("text", "expected"), ASSIGNMENT_EXACT)
def test_assignment_masks_exactly_the_value_and_keeps_its_quotes(text: str, expected: str) -> None:
    assert Scrubber()(f"env {text} set") == f"env {expected} set"


# Quoted keys are judged by the name inside the quotes: `"X_FILE"` points at a secret, `"AES_IV"` is one.
QUOTED_KEYS = [
    ('"POSTGRES_PASSWORD_FILE": "/run/secrets/db"', '"POSTGRES_PASSWORD_FILE": "/run/secrets/db"'),
    ("'TLS_KEY_PATH': '/certs/k.pem'", "'TLS_KEY_PATH': '/certs/k.pem'"),
    ('"AES_IV": "00ff11ee"', '"AES_IV": "***"'),
    # ENC only at the start of a word: an X before it is part of the word, whatever the edges
    ("XENCODER=x264", "XENCODER=x264"),
    ("AES_IVX=on", "AES_IVX=on"),
]


@pytest.mark.parametrize(("text", "expected"), QUOTED_KEYS)
def test_assignment_judges_the_key_inside_its_quotes(text: str, expected: str) -> None:
    assert Scrubber()(text) == expected


# Key names are judged as words whatever separates them: "-" and "." count as "_".
SEPARATED_KEYS = [
    ("db-password-file", False), ("tls.key.path", False), ("aes-iv", True), ("aes.iv", True),
    ("keycloakEncryption", True),  # a look-alike word ends a word: ENC after it starts one
]


@pytest.mark.parametrize(("key", "secret"), SEPARATED_KEYS)
def test_key_separators_are_word_boundaries(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("DB_PASSWORD", None, None), ("DB_PASSWORD", "", ""), ("DB_PASSWORD", "pw-123", MASK),
    ("DB_PASSWORD", 1234, MASK), ("URL", "redis://:pw-123@cache:6379", f"redis://:{MASK}@cache:6379"),
    ("PORT", 5432, 5432), ("MODE", "", ""), ("MODE", "prod", "prod"),
])
def test_mask_value(key: str, value: object, expected: object) -> None:
    from server.redact import mask_value

    assert mask_value(key, value) == expected


def test_redact_mapping_edges() -> None:
    data = {
        # a compose `secrets:` section is structure, not a credential value: never one "***"
        "secrets": {"db_password": {"file": "./db_password.txt"}},
        "env": {"DB_PASSWORD": "", "API_TOKEN": None},  # "no password set" stays visible
        "command": ["run", "--url", "postgres://app:pw-9871@db/x", "--tok", "tok-9f8e7d6c"],
    }
    out = redact_mapping(data, Scrubber(["tok-9f8e7d6c"], assignments=False))
    assert out == {
        "secrets": {"db_password": {"file": "./db_password.txt"}},
        "env": {"DB_PASSWORD": "", "API_TOKEN": None},
        "command": ["run", "--url", f"postgres://app:{MASK}@db/x", "--tok", MASK],
    }
    # without a scrubber: URL passwords still hidden, in lists too, and the input is untouched
    bare = redact_mapping({"a": ["x postgres://u:pw-1234@h/d", 3]})
    assert bare == {"a": [f"x postgres://u:{MASK}@h/d", 3]}
    assert redact_mapping("s postgres://u:pw-1234@h/d") == f"s postgres://u:{MASK}@h/d"
    assert data["command"][2] == "postgres://app:pw-9871@db/x"


def test_scrubber_lines_masks_a_pem_pasted_as_lines_and_keeps_the_others() -> None:
    lines = ["start", "-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBg", "-----END PRIVATE KEY-----",
             "after pw-known-77", "", "end"]
    assert Scrubber(["pw-known-77"]).lines(lines) == ["start", MASK, "after ***", "", "end"]
    assert Scrubber().lines([]) == [""] and Scrubber().lines(["a b", "c"]) == ["a b", "c"]


# -- structure words: every name written in the files, whatever section or file it is in ----------

WRITTEN = [
    None,  # an empty override file loads as None: the files after it still count
    {"name": "shopstack",
     "services": {"cachesvc": {"image": "registry.local/shop/app:1.2", "container_name": "shop-web-1",
                               "hostname": "webhost01", "user": "1000:1000"}},
     "networks": {"backnet": {}}, "secrets": {"dbsecret": {}}, "configs": {"appconf": {}}, "volumes": {"pgdata": {}}},
    {"volumes": {"extra": {}}},  # an override without services
]
RENDERED_ENV = {"services": {
    "cachesvc": {"environment": {"DB_HOST": "db.internal", "APP_MODE": "mode-Qx71", "ADMIN_TOKEN_NAME": "tok-Nm83",
                                 "SKIP_DB": True}},
    "broken": None,
}}


@pytest.mark.parametrize("word", ["shopstack", "cachesvc", "backnet", "dbsecret", "appconf", "pgdata", "extra",
                                  "shop-web-1", "webhost01", "registry.local/shop/app:1.2", "1000:1000",
                                  "db.internal", "shop"])
def test_structure_words_are_not_masked_elsewhere(word: str) -> None:
    assert word in structure_words(WRITTEN, RENDERED_ENV)
    assert positional_secrets({word}, WRITTEN, RENDERED_ENV) == frozenset()


@pytest.mark.parametrize("value", ["mode-Qx71", "tok-Nm83", "None", "True", "abcd"])
def test_values_that_are_no_structure_stay_positional(value: str) -> None:
    # an ordinary env value, a value under a credential key that looks like a name key, and words
    # no file wrote (no `name:`, a boolean) are masked wherever they occur; four characters count
    assert positional_secrets({value, "abc"}, WRITTEN, RENDERED_ENV) == {value}


def test_remember_secrets_keeps_four_characters_and_more(monkeypatch: pytest.MonkeyPatch) -> None:
    from server import redact

    monkeypatch.setattr(redact, "_SEEN", {})
    redact.remember_secrets(["abc", "abcd", "", "abcde"])
    assert redact.seen_secrets() == {"abcd", "abcde"}


@pytest.mark.parametrize("rendered", [{}, {"services": None}])
def test_structure_words_without_a_rendered_model(rendered: dict[str, object]) -> None:
    # a stack whose render failed still has the names its files wrote
    assert {"shopstack", "cachesvc", "pgdata"} <= structure_words(WRITTEN, rendered)


@pytest.mark.parametrize(("text", "secret"), [
    ("config: API_KEY=abc123xyz", "abc123xyz"),
    ("old password in .env: DB_PASSWORD=pw-NC-Quoted", "pw-NC-Quoted"),
    ("env: POSTGRES_PASSWORD: s3cretvalue", "s3cretvalue"),
    ("x=DB_PASSWORD=abc123", "abc123"),
    ("a: b: c: TOKEN=zz99zz", "zz99zz"),
])
def test_an_assignment_inside_a_plain_keys_value_is_masked(text: str, secret: str) -> None:
    # A plain `key: ` before the credential must not swallow it (matches do not overlap).
    out = Scrubber()(text)
    assert secret not in out and MASK in out
    assert out == text[:text.index(secret)] + MASK  # the words before it survive
