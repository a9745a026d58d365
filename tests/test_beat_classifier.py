"""Beat classes: batch invariance, bad input, ONNX/PyTorch parity, manifest checks, real PVCs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.anomaly import AnomalyConfig
from detector.classifier import (
    FEATURES,
    MANIFEST_FILE,
    MODEL_FILE,
    BeatClassifier,
    PatientClasses,
    beat_features,
    grid_beats,
)
from detector.engine import DetectorEngine
from detector.metrics import DetectorMetrics
from detector.pipeline import Pipeline
from detector.scorer import DEFAULT_MODEL_DIR, ModelMismatchError, OnnxScorer, sha256_file
from ecgcommon.aami import aami_labels, beat_mask
from ecgcommon.records import load_record
from models.classify_data import match


@pytest.fixture(scope="module")
def classifier() -> BeatClassifier:
    return BeatClassifier()


@pytest.fixture(scope="module")
def engine(classifier: BeatClassifier) -> DetectorEngine:
    scorer = OnnxScorer()
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    return DetectorEngine(
        scorer,
        anomaly,
        anomaly.threshold("icu"),
        DetectorMetrics(CollectorRegistry()),
        classifier=classifier,
    )


@pytest.fixture(scope="module")
def snippet(data_dir: Path) -> dict[str, object]:
    """Two real records' first 90 s through the live pipeline and scorer."""
    out: dict[str, object] = {}
    scorer = OnnxScorer()
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    from detector.anomaly import PatientAdapter
    from detector.pipeline import windows_of

    for name in ("119", "233"):
        rec = load_record(name, data_dir)
        x = rec.lead(0)[: int(90 * rec.fs)]
        beats = Pipeline().feed_signal(x, rec.fs).beats
        windows = windows_of(beats)
        errors, _ = scorer.score(windows)
        adapter = PatientAdapter(anomaly)
        refs, scores = [], []
        for b, e, w in zip(beats, errors.tolist(), windows, strict=True):
            refs.append(adapter.reference())
            scores.append(adapter.process(e, b.rhythm, w))
        out[name] = (beats, errors.astype(np.float64), np.array(refs), np.array(scores))
    return out


def test_features_do_not_depend_on_batching(snippet: dict[str, object]) -> None:
    (b1, e1, r1, s1), (b2, e2, r2, s2) = snippet["119"], snippet["233"]
    whole1 = beat_features([PatientClasses()] * len(b1), b1, e1, r1, s1)
    whole2 = beat_features([PatientClasses()] * len(b2), b2, e2, r2, s2)
    # the two beds interleaved, in uneven micro-batches
    st1, st2 = PatientClasses(), PatientClasses()
    order = sorted(
        [(b.t, 0, i) for i, b in enumerate(b1)] + [(b.t, 1, i) for i, b in enumerate(b2)]
    )
    got = {0: np.zeros_like(whole1), 1: np.zeros_like(whole2)}
    rng = np.random.default_rng(1)
    pos = 0
    while pos < len(order):
        part = order[pos : pos + int(rng.integers(1, 40))]
        pos += len(part)
        src = {0: (b1, e1, r1, s1, st1), 1: (b2, e2, r2, s2, st2)}
        states = [src[k][4] for _, k, _ in part]
        beats = [src[k][0][i] for _, k, i in part]
        f = beat_features(
            states,
            beats,
            np.array([src[k][1][i] for _, k, i in part]),
            np.array([src[k][2][i] for _, k, i in part]),
            np.array([src[k][3][i] for _, k, i in part]),
        )
        for row, (_, k, i) in zip(f, part, strict=True):
            got[k][i] = row
    np.testing.assert_array_equal(got[0], whole1)
    np.testing.assert_array_equal(got[1], whole2)
    assert whole1.shape == (len(b1), len(FEATURES)) and np.isfinite(whole1).all()


def test_features_are_rate_independent(snippet: dict[str, object]) -> None:
    """The same beat at another device rate gives nearly the same grid beat (mV, seconds)."""
    beats = snippet["119"][0][:20]
    g360 = grid_beats(beats)
    resampled = []
    for b in beats:
        t = (np.arange(b.segment.size) - b.pre) / b.fs
        fs2 = 500.0
        pre2, post2 = int(np.ceil(0.24 * fs2)), int(np.ceil(0.39 * fs2))
        t2 = np.arange(-pre2, post2 + 1) / fs2
        resampled.append(replace(b, segment=np.interp(t2, t, b.segment), fs=fs2, pre=pre2))
    g500 = grid_beats(resampled)
    assert float(np.abs(g500 - g360).max()) < 0.05  # mV


def test_bad_input_raises_clear_errors(snippet: dict[str, object]) -> None:
    beats, e, r, s = snippet["119"]
    st = PatientClasses()
    assert beat_features([], [], np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0, len(FEATURES))
    with pytest.raises(ValueError, match="states"):
        beat_features([st], beats[:2], e[:2], r[:2], s[:2])
    with pytest.raises(ValueError, match="errors must have shape"):
        beat_features([st] * 2, beats[:2], e[:3], r[:2], s[:2])
    with pytest.raises(ValueError, match="scores hold NaN"):
        beat_features([st] * 2, beats[:2], e[:2], r[:2], np.array([0.1, np.nan]))
    nan_beat = replace(beats[0], segment=np.full_like(beats[0].segment, np.nan))
    with pytest.raises(ValueError, match="NaN"):
        beat_features([st], [nan_beat], e[:1], r[:1], s[:1])
    short = replace(beats[0], segment=beats[0].segment[:10])
    with pytest.raises(ValueError, match="do not span"):
        beat_features([st], [short], e[:1], r[:1], s[:1])
    assert st.n_template == 0  # nothing was learnt from refused input
    clf = BeatClassifier()
    with pytest.raises(ValueError, match="shape"):
        clf.probabilities(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        clf.probabilities(np.full((1, len(FEATURES)), np.nan, np.float32))
    assert clf.predict(np.zeros((0, len(FEATURES)), np.float32)) == []


def test_engine_survives_a_refused_batch(engine: DetectorEngine, snippet) -> None:
    beats, e, r, s = snippet["119"]
    bad = replace(beats[0], segment=np.full_like(beats[0].segment, np.inf))
    before = engine.metrics.bad_messages.labels("unclassifiable")._value.get()
    scores, classes = engine._classify(
        [engine._bed("w", "x", 0.0).adapter] * 1,
        [PatientClasses()],
        [bad],
        e[:1].astype(np.float32),
        np.zeros((1, 64), np.float32),
    )
    assert classes == [None] and len(scores) == 1
    assert engine.metrics.bad_messages.labels("unclassifiable")._value.get() == before + 1


def test_onnx_matches_pytorch(classifier: BeatClassifier, snippet) -> None:
    torch = pytest.importorskip("torch")
    from models.classify import Ensemble, predict_proba

    man = classifier.manifest
    state = DEFAULT_MODEL_DIR / man["torch_state_file"]
    assert sha256_file(state) == man["torch_state_sha256"]
    net = Ensemble(len(FEATURES), man["net"]["hidden"], man["net"].get("ensemble", 1))
    net.load_state_dict(torch.load(state, weights_only=True))
    net.eval()
    feats = np.concatenate(
        [beat_features([PatientClasses()] * len(b), b, e, r, s) for b, e, r, s in snippet.values()]
    )
    mean, scale = (np.asarray(man["normalisation"][k]) for k in ("mean", "scale"))
    ref = predict_proba(net, mean, scale, feats.astype(np.float64))
    got = classifier.probabilities(feats)
    assert float(np.abs(got - ref).max()) <= 1e-4


def _copy(tmp_path: Path) -> Path:
    for f in (MODEL_FILE, MANIFEST_FILE):
        shutil.copy(DEFAULT_MODEL_DIR / f, tmp_path / f)
    return tmp_path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(model_sha256="0" * 64), "model_sha256"),
        (lambda m: m.update(features=m["features"][::-1]), "features"),
        (lambda m: m.update(format=99), "format"),
        (lambda m: m.update(grid_hz=100.0), "grid_hz"),
        (lambda m: m["normalisation"].update(scale=[0.0] * len(FEATURES)), "scale"),
        (lambda m: m.update(classes=["N", "X"]), "classes"),
    ],
)
def test_mismatching_manifest_is_refused(tmp_path: Path, change, message: str) -> None:
    d = _copy(tmp_path)
    man = json.loads((d / MANIFEST_FILE).read_text())
    change(man)
    (d / MANIFEST_FILE).write_text(json.dumps(man))
    with pytest.raises(ModelMismatchError, match=message):
        BeatClassifier(d)


def test_missing_or_corrupt_artifacts_are_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelMismatchError, match="unreadable"):
        BeatClassifier(d)
    (d / MANIFEST_FILE).unlink()
    with pytest.raises(ModelMismatchError, match="not found"):
        BeatClassifier(d)


@pytest.mark.slow
def test_pvcs_of_a_ds2_record_are_classified_v(engine: DetectorEngine, data_dir: Path) -> None:
    """DS2 record 233 (never seen in training), first 5 minutes: many PVCs, against the labels."""
    rec = load_record("233", data_dir)
    n = int(300 * rec.fs)
    out = engine.score_signal(rec.lead(0)[:n], rec.fs)
    assert all(b["cls"] in ("N", "S", "V", "F") for b in out)
    m = beat_mask(rec.ann_symbols) & (rec.ann_samples < n - int(0.5 * rec.fs))
    ref, labels = rec.ann_samples[m], aami_labels(rec.ann_symbols[m])
    det = np.array([b["sample"] for b in out])
    det_match, _ = match(ref, det, round(0.15 * rec.fs))
    called_v = np.array([b["cls"] == "V" for b in out])
    is_v = np.where(det_match >= 0, labels[np.maximum(det_match, 0)] == "V", False)
    n_v = int((labels == "V").sum())
    assert n_v > 100
    recall = float((called_v & is_v).sum()) / n_v
    precision = float((called_v & is_v).sum()) / max(1, int(called_v.sum()))
    assert recall >= 0.6, recall
    assert precision >= 0.9, precision


def test_premature_beats_stay_out_of_the_template() -> None:
    """Premature beats (most S and V beats) are not learnt, unless 8 come in a row."""
    from detector.classifier import GRID_OFFSETS_S, LEARN_FORCE_AFTER

    t = GRID_OFFSETS_S
    normal = np.exp(-0.5 * (t / 0.012) ** 2) + 0.2 * np.exp(-0.5 * ((t - 0.25) / 0.04) ** 2)
    wide = -0.8 * np.exp(-0.5 * (t / 0.045) ** 2)
    st = PatientClasses()
    for _ in range(40):
        assert st.learn_one(normal, 1.0, 0.8, True)
    # bigeminy: a premature wide beat, then an on-time normal one
    learnt = [
        st.learn_one(wide, 0.6, 0.48, True)
        for _ in range(30)
        if st.learn_one(normal, 1.2, 1.0, True)
    ]
    assert not any(learnt)
    tpl = st.template()
    assert tpl is not None and np.corrcoef(tpl, normal)[0, 1] > 0.999
    # a sustained early rhythm is learnt after LEARN_FORCE_AFTER beats kept out
    assert st.learn_one(normal, 1.0, 0.8, True)
    run = [st.learn_one(wide, 0.6, 0.48, True) for _ in range(LEARN_FORCE_AFTER + 1)]
    assert run == [False] * LEARN_FORCE_AFTER + [True]
