"""The detector's autoencoder scorer: `OnnxScorer`, windows in, reconstruction errors out.

The scorer and the manifest it checks are the model contract, shared with `models/`, so they
live in `ecgcommon.model_contract` (`scorer.py`, `manifest.py`); this module keeps the names the
detector, benches and tests import. onnxruntime only: the detector never imports torch.
"""

from __future__ import annotations

from ecgcommon.model_contract.manifest import (
    DEFAULT_MODEL_DIR,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MODEL_FILE,
    ModelMismatchError,
    check_manifest,
    load_manifest,
    sha256_file,
)
from ecgcommon.model_contract.scorer import MAX_BATCH, OnnxScorer, open_session

__all__ = [
    "DEFAULT_MODEL_DIR",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "MAX_BATCH",
    "MODEL_FILE",
    "ModelMismatchError",
    "OnnxScorer",
    "check_manifest",
    "load_manifest",
    "open_session",
    "sha256_file",
]
