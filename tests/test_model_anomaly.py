"""Patient adaptation: causal, label-free, same offline and live, thresholds from the manifest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ecgcommon.model_contract.adapter import (
    AnomalyConfig,
    PatientAdapter,
    RunningMedian,
    process_many,
    record_scores,
)
from ecgcommon.model_contract.features import FEATURES, rhythm_from_row
from ecgcommon.model_contract.scorer import OnnxScorer
from ecgcommon.rhythm import NEUTRAL, RRTracker
from models.dataset import load_beats


@pytest.fixture(scope="module")
def config() -> AnomalyConfig:
    return AnomalyConfig.from_manifest(OnnxScorer().manifest)


@pytest.fixture(scope="module")
def record208(data_dir):
    beats = load_beats(["208"], data_dir)
    err, _ = OnnxScorer().score(beats.windows)
    return beats, err


def test_config_round_trips_and_validates(config: AnomalyConfig) -> None:
    again = AnomalyConfig.from_manifest(
        {
            "anomaly": config.as_dict(),
            "thresholds": {k: {"threshold": v} for k, v in config.thresholds.items()},
        }
    )
    assert again == config
    with pytest.raises(ValueError, match="weights"):
        AnomalyConfig((1.0,), 0.0, config.mean, config.scale, 0.0, 0.0, 0.0)
    with pytest.raises(KeyError, match="nope"):
        config.threshold("nope")


def test_scores_are_causal(config: AnomalyConfig, record208) -> None:
    beats, err = record208
    full = record_scores(err, beats.rhythm, beats.windows, config)
    head = record_scores(err[:300], beats.rhythm[:300], beats.windows[:300], config)
    assert np.array_equal(full[:300], head)


def test_live_path_equals_offline_path(config: AnomalyConfig, record208, data_dir) -> None:
    """RRTracker + PatientAdapter.process beat by beat == the evaluation's offline scores."""
    beats, err = record208
    tracker, adapter = RRTracker(), PatientAdapter(config)
    live = [
        adapter.process(float(e), tracker.update(int(p), 360.0), w)
        for e, p, w in zip(err, beats.peaks, beats.windows, strict=True)
    ]
    offline = record_scores(err, beats.rhythm, beats.windows, config)
    np.testing.assert_allclose(live, offline, rtol=0, atol=1e-12)


def test_batch_path_equals_beat_by_beat(config: AnomalyConfig, record208) -> None:
    """process_many over batches mixing three patients (several beats of one patient in a
    batch, first beats with no template yet) == reference() then process() beat by beat."""
    beats, err = record208
    n = 900
    rhythms = [rhythm_from_row(r) for r in beats.rhythm[:n]]
    owner = np.random.default_rng(7).integers(0, 3, n)
    one, many = (
        [PatientAdapter(config) for _ in range(3)],
        [PatientAdapter(config) for _ in range(3)],
    )
    want = [
        (one[k].reference(), one[k].process(float(err[i]), rhythms[i], beats.windows[i]))
        for i, k in enumerate(owner.tolist())
    ]
    got: list[tuple[float, float]] = []
    bounds = [0, 1, 2, 5, 40, 41, 300, 613, n]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        refs, scores = process_many(
            [many[k] for k in owner[a:b].tolist()],
            err[a:b].tolist(),
            rhythms[a:b],
            beats.windows[a:b],
        )
        got.extend(zip(refs, scores, strict=True))
    assert got == want  # bit for bit
    bad = beats.windows[:2].copy()
    bad[1, 3] = np.nan
    fresh = PatientAdapter(config)
    with pytest.raises(ValueError, match="NaN"):
        process_many([fresh, fresh], [0.1, 0.1], rhythms[:2], bad)
    with pytest.raises(ValueError, match="reconstruction error"):
        process_many([fresh, fresh], [0.1, -1.0], rhythms[:2], beats.windows[:2])
    assert fresh.n_seen == 0  # refused before learning the first beat


def test_ventricular_beats_score_higher(config: AnomalyConfig, record208) -> None:
    beats, err = record208
    s = record_scores(err, beats.rhythm, beats.windows, config)
    assert np.median(s[beats.labels == "V"]) > np.percentile(s[beats.labels == "N"], 90)
    adapter = PatientAdapter(config)
    assert adapter.is_anomalous(1.0, "icu") and not adapter.is_anomalous(0.0, "screening")


def test_template_shape_features_separate_ventricular_beats(
    config: AnomalyConfig, record208
) -> None:
    """On MIT-BIH 208, V beats have a slower QRS and a QRS less correlated with the template."""
    beats, err = record208
    adapter = PatientAdapter(config)
    assert adapter.template_features(beats.windows[0])[2:] == (0.0, config.prior_log_decorr)
    shape = []
    for e, r, w in zip(err, beats.rhythm, beats.windows, strict=True):
        shape.append(adapter.template_features(w))
        adapter.learn_one(float(e), rhythm_from_row(r), w)
    slope, decorr = np.array(shape)[:, 2], np.array(shape)[:, 3]
    v, n = beats.labels == "V", beats.labels == "N"
    assert np.median(slope[v]) < np.percentile(slope[n], 10)
    assert np.median(decorr[v]) > np.percentile(decorr[n], 90)


def test_patient_reference_adapts_without_labels(config: AnomalyConfig) -> None:
    """A patient whose every beat reconstructs badly stops scoring high after warm-up."""
    rng = np.random.default_rng(0)
    window = rng.standard_normal(64).astype(np.float32)
    adapter = PatientAdapter(config)
    first = adapter.process(0.8, NEUTRAL, window)
    for _ in range(200):
        last = adapter.process(0.8, NEUTRAL, window)
    assert last < first


def test_bad_beats_are_refused(config: AnomalyConfig) -> None:
    adapter = PatientAdapter(config)
    w = np.zeros(64, np.float32)
    for bad in (math.nan, -1.0, math.inf):
        with pytest.raises(ValueError, match="reconstruction error"):
            adapter.process(bad, NEUTRAL, w)
    adapter.process(0.1, NEUTRAL, w)
    with pytest.raises(ValueError, match="window"):
        adapter.process(0.1, NEUTRAL, np.zeros(10))
    w2 = w.copy()
    w2[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        adapter.process(0.1, NEUTRAL, w2)
    assert len(FEATURES) == len(config.weights)


def test_running_median_matches_numpy() -> None:
    rng = np.random.default_rng(4)
    values = rng.standard_normal(500)
    rm = RunningMedian(37)
    for i, v in enumerate(values):
        rm.add(float(v))
        assert rm.median() == pytest.approx(float(np.median(values[max(0, i - 36) : i + 1])))
