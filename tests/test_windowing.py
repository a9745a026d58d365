"""Beat windowing: live ring-buffer slices and offline records give identical windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgcommon.records import load_record
from ecgcommon.windowing import WINDOW, WindowSpec, beat_windows


@pytest.fixture(scope="module")
def rec100(data_dir):
    return load_record("100", data_dir, sampto=360 * 60)


def test_shape_dtype_and_zscore(rec100) -> None:
    sig = rec100.lead(0)
    peaks = rec100.ann_samples[(rec100.ann_samples > 200) & (rec100.ann_samples < sig.size - 200)]
    w = beat_windows(sig, peaks, rec100.fs)
    assert w.shape == (peaks.size, WINDOW.n_points) and w.dtype == np.float32
    np.testing.assert_allclose(w.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(w.std(axis=1), 1.0, atol=1e-4)
    # the R-peak sits at point pre_points: it is the window's largest point for MIT-BIH 100
    assert np.mean(np.argmax(w, axis=1) == WINDOW.pre_points) > 0.9


@settings(max_examples=40, deadline=None)
@given(
    peak=st.integers(min_value=200, max_value=360 * 60 - 200),
    extra_before=st.integers(min_value=0, max_value=500),
    extra_after=st.integers(min_value=0, max_value=500),
    fs=st.sampled_from([360.0, 250.0, 128.0, 500.0, 100.0]),
)
def test_ring_buffer_slice_gives_identical_window(rec100, peak, extra_before, extra_after, fs):
    """A live buffer holding just pre_samples before and post_samples after gives the same bits."""
    sig = rec100.lead(0)
    full = beat_windows(sig, np.array([peak]), fs)
    lo = max(0, peak - WINDOW.pre_samples(fs) - extra_before)
    hi = min(sig.size, peak + WINDOW.post_samples(fs) + 1 + extra_after)
    part = beat_windows(sig[lo:hi], np.array([peak - lo]), fs)
    assert np.array_equal(full, part)


def test_minimal_buffer_is_enough(rec100) -> None:
    sig, fs, peak = rec100.lead(0), rec100.fs, 5000
    pre, post = WINDOW.pre_samples(fs), WINDOW.post_samples(fs)
    part = sig[peak - pre : peak + post + 1]
    assert np.array_equal(
        beat_windows(part, np.array([pre]), fs), beat_windows(sig, np.array([peak]), fs)
    )


def test_resampling_matches_a_sine_at_any_rate() -> None:
    """Windows of the same analog signal sampled at different rates agree closely."""

    def sig(fs: float) -> np.ndarray:
        t = np.arange(int(10 * fs)) / fs
        return np.sin(2 * np.pi * 1.3 * t) + 0.3 * np.sin(2 * np.pi * 3.1 * t)

    ref = beat_windows(sig(1000.0), np.array([5000]), 1000.0)
    for fs in (250.0, 360.0, 500.0):
        w = beat_windows(sig(fs), np.array([int(5 * fs)]), fs)
        np.testing.assert_allclose(w, ref, atol=0.01)


def test_edges_are_padded_with_the_edge_sample() -> None:
    x = np.arange(100, dtype=float)
    w_start = beat_windows(x, np.array([0]), 100.0)
    # before the first sample the window repeats x[0]: its first pre_points values are equal
    assert np.all(w_start[0, : WINDOW.pre_points + 1] == w_start[0, 0])
    w_end = beat_windows(x, np.array([99]), 100.0)
    assert np.all(w_end[0, WINDOW.pre_points :] == w_end[0, -1])


def test_flat_window_is_zeros_and_nan_propagates() -> None:
    x = np.full(1000, 2.5)
    assert np.all(beat_windows(x, np.array([500]), 360.0) == 0.0)
    x[500] = np.nan
    w = beat_windows(x, np.array([500, 100, 900]), 360.0)
    assert np.isnan(w[0]).any() and np.isfinite(w[1:]).all()


def test_minmax_spec_and_empty_peaks() -> None:
    spec = WindowSpec(pre_s=0.25, post_s=97 / 360, fs=360.0, normalisation="minmax")
    assert spec.n_points == 187
    w = beat_windows(np.sin(np.arange(2000) / 30.0), np.array([1000]), 360.0, spec)
    assert w.min() == 0.0 and w.max() == pytest.approx(1.0)
    assert beat_windows(np.zeros(10), np.array([], dtype=np.int64), 360.0).shape == (0, 64)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pre_s": -1.0}, "pre_s"),
        ({"post_s": 0.0}, "post_s"),
        ({"fs": float("nan")}, "fs"),
        ({"normalisation": "l2"}, "normalisation"),
    ],
)
def test_spec_validation_names_the_field(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        WindowSpec(**kwargs)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="1-D"):
        beat_windows(np.zeros((10, 2)), np.array([5]), 360.0)
    with pytest.raises(ValueError, match="integer"):
        beat_windows(np.zeros(10), np.array([5.0]), 360.0)
    with pytest.raises(ValueError, match="fs"):
        beat_windows(np.zeros(10), np.array([5]), 0.0)
