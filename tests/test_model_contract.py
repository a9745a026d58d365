"""The model contract in `ecgcommon.model_contract`: its files, its manifest checks and the
beat-data files through which `models/` reads what the detector found (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgcommon.model_contract.adapter import AnomalyConfig
from ecgcommon.model_contract.beat_data import RecordBeats, match, reference_beats
from ecgcommon.model_contract.manifest import DEFAULT_MODEL_DIR, MANIFEST_FILE


def _record(n: int, features: bool) -> RecordBeats:
    rng = np.random.default_rng(0)
    return RecordBeats(
        "x",
        360.0,
        86,
        samples=np.arange(n, dtype=np.int64) * 300,
        segments=rng.normal(size=(n, 227)),
        rhythm=np.column_stack([rng.random((n, 4)), np.ones(n)]),
        errors=rng.random(n),
        refs=rng.random(n),
        scores=rng.random(n),
        labels=np.array(["N", "V", ""] * (n // 3), dtype="<U1"),
        ref_samples=np.arange(n, dtype=np.int64) * 300 + 2,
        ref_labels=np.array(["N", "V", "S"] * (n // 3), dtype="<U1"),
        ref_matched=np.ones(n, dtype=bool),
        feature_rows=rng.normal(size=(n, 28)) if features else None,
    )


@pytest.mark.parametrize("features", [True, False])
def test_beat_data_files_round_trip(tmp_path: Path, features: bool) -> None:
    rb = _record(9, features)
    rb.save(tmp_path / "x.npz")
    back = RecordBeats.load(tmp_path / "x.npz", "x")
    assert (back.name, back.fs, back.pre) == ("x", 360.0, 86)
    for k in ("samples", "segments", "rhythm", "errors", "labels", "ref_labels", "ref_matched"):
        a, b = getattr(rb, k), getattr(back, k)
        assert a.dtype == b.dtype and np.array_equal(a, b), k
    if features:
        assert np.array_equal(back.features(), rb.features())
    else:
        with pytest.raises(ValueError, match="no features"):
            back.features()
    assert not list(tmp_path.glob("*.tmp.npz"))  # written atomically


def test_matching_is_one_to_one_nearest_first() -> None:
    ref = np.array([100, 200, 300], dtype=np.int64)
    det = np.array([98, 104, 260, 500], dtype=np.int64)
    det_match, used = match(ref, det, window=20)
    assert det_match.tolist() == [0, -1, -1, -1]  # 98 is nearer 100 than 104 is
    assert used.tolist() == [True, False, False]


def test_reference_beats_keep_beats_in_time_order() -> None:
    ref, labels = reference_beats(np.array([30, 10, 20, 40]), np.array(["V", "N", "+", "A"]))
    assert ref.tolist() == [10, 30, 40] and labels.tolist() == ["N", "V", "S"]


def test_the_committed_manifest_satisfies_the_contract() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / MANIFEST_FILE).read_text())
    config = AnomalyConfig.from_manifest(manifest)
    assert config.threshold("icu") > 0
    manifest["thresholds"] = ["not", "an", "object"]
    with pytest.raises(ValueError, match="thresholds"):
        AnomalyConfig.from_manifest(manifest)


def test_the_old_detector_names_are_the_contract() -> None:
    import detector.anomaly
    import detector.scorer
    from ecgcommon.model_contract import adapter, scorer

    assert detector.anomaly.PatientAdapter is adapter.PatientAdapter
    assert detector.scorer.OnnxScorer is scorer.OnnxScorer


@pytest.mark.slow
def test_models_read_the_detector_output_unchanged(data_dir: Path) -> None:
    """The file boundary loses nothing: the subprocess's data equal the in-process run."""
    from detector.offline import load_records as in_process
    from models.classify_data import load_records

    (got,) = load_records(["119"], data_dir, cache=False)
    (want,) = in_process(["119"], data_dir)
    assert len(got.samples) > 1500 and set(got.labels.tolist()) >= {"N", "V"}
    assert np.array_equal(got.features(), want.features(), equal_nan=True)
    assert np.array_equal(got.scores, want.scores) and np.array_equal(got.labels, want.labels)
