"""OnnxScorer on the committed artifacts: parity with PyTorch, manifest checks, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecgcommon.model_contract.manifest import (
    DEFAULT_MODEL_DIR,
    MANIFEST_FILE,
    MODEL_FILE,
    ModelMismatchError,
    sha256_file,
)
from ecgcommon.model_contract.scorer import OnnxScorer
from ecgcommon.windowing import WINDOW
from models.dataset import load_beats


@pytest.fixture(scope="module")
def scorer() -> OnnxScorer:
    return OnnxScorer()


@pytest.fixture(scope="module")
def windows(data_dir) -> np.ndarray:
    beats = load_beats(["100", "208"], data_dir)
    rng = np.random.default_rng(0)
    return beats.windows[rng.choice(len(beats), 512, replace=False)]


def test_scores_real_windows(scorer: OnnxScorer, windows: np.ndarray) -> None:
    err, per_t = scorer.score(windows)
    assert err.shape == (len(windows),) and per_t.shape == windows.shape
    assert err.dtype == np.float32 and np.all(err >= 0)
    np.testing.assert_allclose(per_t.mean(axis=1), err, rtol=1e-5)
    # batch composition does not change a beat's score
    one, _ = scorer.score(windows[7:8])
    assert abs(float(one[0]) - float(err[7])) <= 1e-5


def test_onnx_matches_pytorch(scorer: OnnxScorer, windows: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    from models.nets import LSTMAutoencoder

    man = scorer.manifest
    state_path = DEFAULT_MODEL_DIR / man["torch_state_file"]
    assert sha256_file(state_path) == man["torch_state_sha256"]
    arch = man["architecture"]
    model = LSTMAutoencoder(arch["hidden"], arch["latent"], mode="repeat")
    model.load_state_dict(torch.load(state_path, weights_only=True))
    model.eval()
    with torch.no_grad():
        te, tp = model(torch.from_numpy(windows))
    oe, op = scorer.score(windows)
    assert float(np.abs(oe - te.numpy()).max()) <= 1e-4
    assert float(np.abs(op - tp.numpy()).max()) <= 1e-4


def test_manifest_records_what_the_issue_asks(scorer: OnnxScorer) -> None:
    m = scorer.manifest
    assert m["sampling_rate_hz"] == WINDOW.fs and m["window"]["n_points"] == WINDOW.n_points
    assert m["model_sha256"] == sha256_file(DEFAULT_MODEL_DIR / MODEL_FILE)
    assert set(m["thresholds"]) == {"icu", "screening"}
    assert m["thresholds"]["icu"]["threshold"] < m["thresholds"]["screening"]["threshold"]
    assert m["onnx_opset"] >= 13 and m["git_commit"] and m["data_sha256"]
    assert set(m["training_records"]).isdisjoint({"100", "103", "105", "232"})  # no DS2
    assert "ds1_calibration" in m["metrics"] and m["anomaly"]["uses_next_rr"] is False


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    for name in (MODEL_FILE, MANIFEST_FILE):
        shutil.copy(DEFAULT_MODEL_DIR / name, tmp_path / name)
    return tmp_path


def _edit(folder: Path, **changes) -> None:
    path = folder / MANIFEST_FILE
    m = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "window_n_points":
            m["window"]["n_points"] = value
        else:
            m[key] = value
    path.write_text(json.dumps(m))


def test_copy_loads(model_copy: Path) -> None:
    assert OnnxScorer(model_copy).manifest["model_file"] == MODEL_FILE


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model_sha256": "0" * 64}, "model_sha256"),
        ({"sampling_rate_hz": 360.0}, "sampling_rate_hz"),
        ({"window_n_points": 187}, "n_points"),
        ({"format": 99}, "format"),
    ],
)
def test_refuses_a_mismatched_manifest(model_copy: Path, change, reason) -> None:
    _edit(model_copy, **change)
    with pytest.raises(ModelMismatchError, match=reason):
        OnnxScorer(model_copy)


def test_refuses_a_modified_model_file(model_copy: Path) -> None:
    with open(model_copy / MODEL_FILE, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelMismatchError, match="model_sha256"):
        OnnxScorer(model_copy)


def test_refuses_a_missing_manifest(model_copy: Path) -> None:
    (model_copy / MANIFEST_FILE).unlink()
    with pytest.raises(ModelMismatchError, match="not found"):
        OnnxScorer(model_copy)


def test_bad_input_gives_clear_errors(scorer: OnnxScorer, windows: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"shape \(n, 64\)"):
        scorer.score(windows[:, :50])
    with pytest.raises(ValueError, match="shape"):
        scorer.score(windows[0])
    with pytest.raises(TypeError, match="float32"):
        scorer.score(windows.astype(np.float64))
    with pytest.raises(TypeError, match="numpy array"):
        scorer.score(windows.tolist())
    bad = windows[:4].copy()
    bad[2, 10] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf in rows \[2\]"):
        scorer.score(bad)
    err, per_t = scorer.score(windows[:0])
    assert err.shape == (0,) and per_t.shape == (0, WINDOW.n_points)
