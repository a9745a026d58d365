"""Artifact files and manifest schema of the beat autoencoder, and their validation.

A model folder holds `beat_ae.onnx` and `beat_ae.manifest.json`. A manifest whose file hash,
window spec, sampling rate or format disagree with the model file or with this code's
`ecgcommon.windowing.WINDOW` (the windows the detector feeds) is refused, naming the field.
Standard library and numpy only: checking a manifest needs neither onnxruntime nor torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ecgcommon.windowing import WINDOW, WindowSpec

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "artifacts"
MODEL_FILE = "beat_ae.onnx"
MANIFEST_FILE = "beat_ae.manifest.json"
MANIFEST_FORMAT = 1


class ModelMismatchError(Exception):
    """The model file and its manifest (or this code's windowing) disagree; the message says how."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(model_dir: Path, manifest_file: str = MANIFEST_FILE) -> dict[str, Any]:
    """The manifest JSON of a model folder (ModelMismatchError when missing or unreadable)."""
    path = Path(model_dir) / manifest_file
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelMismatchError(f"manifest {path} not found") from exc
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError
        raise ModelMismatchError(f"manifest {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelMismatchError(f"manifest {path} is not a JSON object")
    return data


def check_artifact(manifest: Mapping[str, Any], model_path: Path, fmt: int) -> None:
    """The checks every artifact shares: manifest `format`, model file present, its sha256."""
    if manifest.get("format") != fmt:
        raise ModelMismatchError(f"manifest format {manifest.get('format')!r} != supported {fmt}")
    if not model_path.is_file():
        raise ModelMismatchError(f"model file {model_path} not found")
    digest = sha256_file(model_path)
    if manifest.get("model_sha256") != digest:
        raise ModelMismatchError(
            f"model_sha256 mismatch: {model_path.name} hashes to {digest}, "
            f"manifest says {manifest.get('model_sha256')!r}"
        )


def check_manifest(
    manifest: Mapping[str, Any], model_path: Path, spec: WindowSpec = WINDOW
) -> None:
    """Raise ModelMismatchError naming the first field where model, manifest and spec disagree."""
    check_artifact(manifest, model_path, MANIFEST_FORMAT)
    if manifest.get("sampling_rate_hz") != spec.fs:
        raise ModelMismatchError(
            f"sampling_rate_hz mismatch: manifest {manifest.get('sampling_rate_hz')!r}, "
            f"expected {spec.fs}"
        )
    window = manifest.get("window")
    expected = spec.as_dict()
    if not isinstance(window, Mapping):
        raise ModelMismatchError("manifest has no 'window' object")
    for key, value in expected.items():
        if window.get(key) != value:
            raise ModelMismatchError(
                f"window mismatch on {key!r}: manifest {window.get(key)!r}, expected {value!r}"
            )
