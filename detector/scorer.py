"""onnxruntime scorer for the beat autoencoder: windows in, reconstruction errors out.

The model folder holds `beat_ae.onnx` and `beat_ae.manifest.json`. The scorer refuses to load a
model whose file hash, window spec, sampling rate or input length disagree with its manifest or
with this code's `ecgcommon.windowing.WINDOW` (the windows it will be fed), and says which.
onnxruntime only: the detector never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ecgcommon.windowing import WINDOW, WindowSpec

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "artifacts"
MODEL_FILE = "beat_ae.onnx"
MANIFEST_FILE = "beat_ae.manifest.json"
MANIFEST_FORMAT = 1
MAX_BATCH = 4096  # windows per onnxruntime call


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
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelMismatchError(f"manifest {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelMismatchError(f"manifest {path} is not a JSON object")
    return data


def check_manifest(
    manifest: Mapping[str, Any], model_path: Path, spec: WindowSpec = WINDOW
) -> None:
    """Raise ModelMismatchError naming the first field where model, manifest and spec disagree."""
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelMismatchError(
            f"manifest format {manifest.get('format')!r} != supported {MANIFEST_FORMAT}"
        )
    if not model_path.is_file():
        raise ModelMismatchError(f"model file {model_path} not found")
    digest = sha256_file(model_path)
    if manifest.get("model_sha256") != digest:
        raise ModelMismatchError(
            f"model_sha256 mismatch: {model_path.name} hashes to {digest}, "
            f"manifest says {manifest.get('model_sha256')!r}"
        )
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


def open_session(model_path: Path, threads: int) -> ort.InferenceSession:
    """A sequential CPU onnxruntime session on `threads` threads (every detector model)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for bad graphs
        raise ModelMismatchError(f"onnxruntime cannot load {model_path}: {exc}") from exc


class OnnxScorer:
    """Batch scorer: (n, L) float32 windows -> (errors (n,), per-timestep squared errors (n, L))."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        threads: int = 1,
        spec: WindowSpec = WINDOW,
        model_file: str = MODEL_FILE,
        manifest_file: str = MANIFEST_FILE,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        self.spec = spec
        self.manifest: dict[str, Any] = load_manifest(self.model_dir, manifest_file)
        model_path = self.model_dir / model_file
        check_manifest(self.manifest, model_path, spec)
        self._session = open_session(model_path, threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelMismatchError(f"model has {len(inputs)} inputs, expected 1")
        self._input = inputs[0].name
        length = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        if length != spec.n_points:
            raise ModelMismatchError(
                f"model input shape {inputs[0].shape} does not take windows of "
                f"{spec.n_points} points"
            )
        self.n_points = spec.n_points

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reconstruction error (mean squared, per beat) and the squared error per timestep."""
        if not isinstance(windows, np.ndarray):
            raise TypeError(f"windows must be a numpy array, got {type(windows).__name__}")
        if windows.dtype != np.float32:
            raise TypeError(f"windows must be float32, got {windows.dtype}")
        if windows.ndim != 2 or windows.shape[1] != self.n_points:
            raise ValueError(f"windows must have shape (n, {self.n_points}), got {windows.shape}")
        if windows.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.n_points), np.float32)
        if not np.isfinite(windows).all():
            bad = np.flatnonzero(~np.isfinite(windows).all(axis=1))
            raise ValueError(f"windows hold NaN/inf in rows {bad[:10].tolist()}")
        x = np.ascontiguousarray(windows)
        if len(x) <= MAX_BATCH:
            err, per_t = self._session.run(None, {self._input: x})
            return err, per_t
        # big offline batches go in slices: the LSTM's working memory grows with the batch
        parts = [
            self._session.run(None, {self._input: x[i : i + MAX_BATCH]})
            for i in range(0, len(x), MAX_BATCH)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
