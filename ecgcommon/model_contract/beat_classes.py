"""The beat classifier's contract: its artifact files, features, grid and manifest checks.

`models/classify.py` trains on `FEATURES` (computed by `detector.classifier.beat_features`)
and writes `beat_classes.onnx` with its manifest; `detector.classifier.BeatClassifier`
refuses a manifest whose format, sha256, feature list, grid, classes, normalisation or decision
offsets disagree with this code. Standard library and numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ecgcommon.model_contract.manifest import ModelMismatchError, check_artifact
from ecgcommon.model_contract.manifest import load_manifest as _load_manifest

MODEL_FILE = "beat_classes.onnx"
MANIFEST_FILE = "beat_classes.manifest.json"
MANIFEST_FORMAT = 1
GRID_HZ = 200.0  # the morphology grid (s and mV, whatever the device rate)

FEATURES = (
    "qrs_width_s",  # QRS width of the beat (s)
    "template_width_s",  # the same of the patient's template
    "width_diff_s",  # beat minus template
    "qrs_decorr",  # log(1 - r + 0.01), QRS of the beat vs the template's
    "st_decorr",  # the same over the ST-T part
    "p_decorr",  # the same over the P region (-0.24..-0.10 s)
    "log_amp_ratio",  # log peak-to-peak QRS amplitude ratio beat / template
    "log_area_ratio",  # log mean |QRS| ratio
    "log_slope_ratio",  # log steepest-slope ratio (mV/s)
    "projection",  # least-squares gain of the beat's QRS on the template's (< 0: inverted)
    "log_residual",  # log normalised squared residual of the QRS after that projection
    "log_st_amp_ratio",  # log ST-T peak-to-peak ratio
    "log_p_energy_ratio",  # log P-region std ratio
    "slope_decorr",  # log(1 - r + 0.01) of the QRS slopes (derivative): P and T waves count less
    "log_slope_residual",  # log normalised residual of the QRS slope after projection
    "prev_qrs_decorr",  # qrs_decorr of the bed's previous beat
    "rel_qrs_decorr",  # qrs_decorr minus the bed's running median of it (last RELATIVE_HISTORY)
    "rel_log_residual",  # the same for log_residual
    "rel_slope_decorr",  # the same for slope_decorr
    "rel_log_error",  # autoencoder log error minus the patient's running median
    "log_error",  # autoencoder log error
    "score_logit",  # logit of the anomaly score
    "rr_ratio",  # pre-RR / local RR (causal)
    "prev_ratio",  # previous RR / local RR
    "short_ratio",  # pre-RR / median of the last 8 RR
    "rr_step",  # log(pre-RR / previous RR)
    "irregularity",  # median |successive RR difference| / mean RR over the last 16 RR
    "prematurity_z",  # (1 - rr_ratio) / (irregularity + 0.02): early beyond the usual jitter
    "long_ratio",  # pre-RR / 90th percentile of the bed's last 64 RR (detector.long_rhythm)
)


def load_manifest(model_dir: Path) -> dict[str, Any]:
    """The classifier manifest of a model folder (ModelMismatchError when missing/unreadable)."""
    return _load_manifest(model_dir, MANIFEST_FILE)


def check_manifest(manifest: Mapping[str, Any], model_path: Path) -> None:
    """Raise ModelMismatchError naming the first field where model, manifest and code disagree."""
    check_artifact(manifest, model_path, MANIFEST_FORMAT)
    if list(manifest.get("features", [])) != list(FEATURES):
        raise ModelMismatchError(f"features mismatch: manifest {manifest.get('features')!r}")
    if manifest.get("grid_hz") != GRID_HZ:
        raise ModelMismatchError(f"grid_hz mismatch: manifest {manifest.get('grid_hz')!r}")
    classes = manifest.get("classes")
    if not isinstance(classes, list) or not classes or not set(classes) <= set("NSVFQ"):
        raise ModelMismatchError(f"classes must be AAMI letters, got {classes!r}")
    norm = manifest.get("normalisation")
    if not isinstance(norm, Mapping):
        raise ModelMismatchError("manifest has no 'normalisation' object")
    for key in ("mean", "scale"):
        vals = norm.get(key)
        if not isinstance(vals, list) or len(vals) != len(FEATURES):
            raise ModelMismatchError(f"normalisation {key!r} must hold {len(FEATURES)} numbers")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            raise ModelMismatchError(f"normalisation {key!r} holds non-finite values")
    if any(v <= 0 for v in norm["scale"]):
        raise ModelMismatchError("normalisation 'scale' must be > 0")
    offsets = manifest.get("decision", {}).get("log_offsets")
    if not isinstance(offsets, Mapping) or set(offsets) != set(classes):
        raise ModelMismatchError(f"decision log_offsets must name every class, got {offsets!r}")
