"""onnxruntime scorer for the beat autoencoder: windows in, reconstruction errors out.

`OnnxScorer` refuses a model folder whose manifest does not match the model file or this
code's `ecgcommon.windowing.WINDOW` (see `manifest.check_manifest`). The detector scores live
beats with it and `models/` evaluates its exported artifacts with the very same object.
onnxruntime is imported when a session is opened, so importing this module needs numpy only;
torch is never needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgcommon.model_contract.manifest import (
    DEFAULT_MODEL_DIR,
    MANIFEST_FILE,
    MODEL_FILE,
    ModelMismatchError,
    check_manifest,
    load_manifest,
)
from ecgcommon.windowing import WINDOW, WindowSpec

if TYPE_CHECKING:
    import onnxruntime as ort

MAX_BATCH = 4096  # windows per onnxruntime call


def open_session(model_path: Path, threads: int) -> ort.InferenceSession:
    """A sequential CPU onnxruntime session on `threads` threads (every detector model)."""
    import onnxruntime as ort  # here, not at module level: the contract imports without it

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
