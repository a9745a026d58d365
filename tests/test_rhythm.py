"""Causal RR features: prematurity, neutral start, offline == live, rate independence."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from ecgcommon.rhythm import NEUTRAL, RRTracker, heart_rate_bpm, rhythm_features


def test_premature_beat_and_compensatory_pause() -> None:
    fs = 360.0
    peaks = list(np.arange(0, 20 * 360, 360))  # 60 bpm
    peaks.append(peaks[-1] + 180)  # premature by half
    peaks.append(peaks[-2] + 2 * 360)  # compensatory pause
    peaks.append(peaks[-1] + 360)
    tracker = RRTracker()
    feats = [tracker.update(p, fs) for p in peaks]
    assert feats[0] == NEUTRAL and not feats[1].valid
    assert feats[10].rr_ratio == pytest.approx(1.0) and feats[10].valid
    early, pause, after = feats[-3], feats[-2], feats[-1]
    assert early.rr_ratio == pytest.approx(0.5) and early.short_ratio == pytest.approx(0.5)
    assert pause.rr_ratio == pytest.approx(1.5, rel=0.05)
    assert pause.prev_ratio < 0.6  # the beat before the pause was early
    assert after.prev_ratio > 1.4


def test_causal_features_do_not_change_with_future_beats() -> None:
    rng = np.random.default_rng(1)
    peaks = np.cumsum(rng.integers(200, 500, size=300))
    full = rhythm_features(peaks, 360.0)
    head = rhythm_features(peaks[:150], 360.0)
    assert np.array_equal(full[:150], head)


def test_offline_helper_is_the_live_tracker() -> None:
    peaks = np.cumsum(np.random.default_rng(2).integers(250, 400, size=100))
    tracker = RRTracker()
    live = np.array([tracker.update(int(p), 250.0).as_array() for p in peaks])
    assert np.array_equal(live, rhythm_features(peaks, 250.0))


def test_same_times_at_another_rate_give_the_same_features() -> None:
    times = np.cumsum(np.random.default_rng(3).uniform(0.5, 1.2, size=80))
    a = rhythm_features(np.round(times * 1000).astype(np.int64), 1000.0)
    b = rhythm_features(np.round(times * 4000).astype(np.int64), 4000.0)
    np.testing.assert_allclose(a, b, rtol=2e-3)


def test_bad_input_and_reset() -> None:
    t = RRTracker()
    t.update(100, 360.0)
    with pytest.raises(ValueError, match="increase"):
        t.update(100, 360.0)
    with pytest.raises(ValueError, match="fs"):
        t.update(200, -1.0)
    with pytest.raises(ValueError, match="history"):
        RRTracker(history=1)
    t.reset()
    assert t.update(50, 360.0) == NEUTRAL


def test_heart_rate_is_60_over_the_mean_rr() -> None:
    assert heart_rate_bpm([1.0]) == 60.0
    # 60 / mean(0.5, 1.0) = 80 bpm, not the mean of the instantaneous rates (90 bpm)
    assert heart_rate_bpm(deque([0.5, 1.0], maxlen=4)) == pytest.approx(80.0)
    with pytest.raises(ValueError, match="RR"):
        heart_rate_bpm([])
