"""ONNX export of a trained autoencoder and the manifest that travels with it."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ecgcommon.model_contract.manifest import MANIFEST_FORMAT, sha256_file
from ecgcommon.windowing import WindowSpec

OPSET = 17  # ONNX opset of the exported graphs (legacy TorchScript exporter, LSTM op)


def export_onnx(model: torch.nn.Module, path: Path, n_points: int) -> None:
    """Export `model` (windows (n, L) -> error (n,), per_timestep (n, L)) with a dynamic batch."""
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, n_points)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["windows"],
            output_names=["error", "per_timestep"],
            dynamic_axes={"windows": {0: "n"}, "error": {0: "n"}, "per_timestep": {0: "n"}},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))


def parity(model: torch.nn.Module, path: Path, windows: np.ndarray) -> float:
    """Max abs difference between torch and onnxruntime outputs (errors and per-timestep)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(windows, dtype=np.float32)
    oe, op = sess.run(None, {"windows": x})
    with torch.no_grad():
        te, tp = model(torch.from_numpy(x))
    return float(max(np.abs(oe - te.numpy()).max(), np.abs(op - tp.numpy()).max()))


def git_commit(root: Path) -> str:
    """HEAD commit of the checkout ("+dirty" when tracked files differ), or "unknown"."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "models",
                "ecgcommon",
                "detector/scorer.py",
                "detector/anomaly.py",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def base_manifest(model_path: Path, spec: WindowSpec, architecture: dict[str, Any]) -> dict:
    """The manifest fields fixed by the model file itself."""
    return {
        "format": MANIFEST_FORMAT,
        "model_file": model_path.name,
        "model_sha256": sha256_file(model_path),
        "onnx_opset": OPSET,
        "inputs": {"windows": ["n", spec.n_points, "float32"]},
        "outputs": {"error": ["n", "float32"], "per_timestep": ["n", spec.n_points, "float32"]},
        "sampling_rate_hz": spec.fs,
        "window": spec.as_dict(),
        "normalisation": spec.normalisation,
        "architecture": architecture,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON (indented, sorted keys off so sections stay in a readable order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    tmp.replace(path)
