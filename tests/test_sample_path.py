"""The sample path's shortcuts give exactly what the plain numpy calls they replace give, and
its per-bed buffers stay the size the memory budget assumes."""

from __future__ import annotations

import numpy as np
import pytest

from detector.pipeline import Pipeline
from detector.qrs_input import all_finite
from detector.rhythms.analyser import RhythmAnalyser
from detector.rhythms.vf_features import _rfft
from ecgcommon.protocol import MISSING_SAMPLE, SampleChunk

FS = 360.0


@pytest.mark.parametrize(
    "x",
    [
        np.zeros(0),
        np.linspace(-3.0, 3.0, 360),
        np.array([1.0, np.nan, 2.0]),
        np.array([np.inf, 1.0]),
        np.array([-np.inf, np.inf]),
        np.full(10, 1e308),  # a finite chunk whose sum overflows
        np.array([[1.0, 2.0], [3.0, np.nan]]),
    ],
)
def test_all_finite_is_isfinite_all(x: np.ndarray) -> None:
    assert all_finite(x) == bool(np.isfinite(x).all())


@pytest.mark.parametrize("n, nfft", [(400, 512), (480, 512), (1000, 1024), (1024, 1024)])
def test_rfft_is_numpys_bit_for_bit(n: int, nfft: int) -> None:
    x = np.random.default_rng(n).standard_normal(n)
    want = np.fft.rfft(x, nfft)
    got = _rfft(x, nfft)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.float64), want.view(np.float64))


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.float64])
def test_physical_is_astype_over_gain_with_missing_as_nan(dtype: type) -> None:
    raw = np.random.default_rng(1).integers(-3000, 3000, size=(360, 2)).astype(dtype)
    if dtype is not np.float64:
        raw[5, 1] = MISSING_SAMPLE
    chunk = SampleChunk(0, 0, 0.0, FS, 200.0, "mV", ("MLII", "V1"), raw)
    want = raw.astype(np.float64) / 200.0
    if dtype is not np.float64:
        want[raw == MISSING_SAMPLE] = np.nan
    got = chunk.physical()
    assert got.dtype == np.float64
    assert np.array_equal(got, want, equal_nan=True)
    assert np.isnan(got).sum() == (0 if dtype is np.float64 else 1)


def test_per_bed_buffers_stay_small_over_a_minute_of_one_second_chunks() -> None:
    """The sizes bench.detector_mem measures: 2048 raw samples, a band-passed QRS buffer of
    refractory + search span (not the MWI's learning history), a decimated store with a
    quarter of spare room; none of them grows over time."""
    t = np.arange(int(60 * FS)) / FS
    x = np.stack([np.sin(2 * np.pi * 1.2 * t) ** 15, 0.5 * np.sin(2 * np.pi * 1.2 * t)], axis=1)
    raw = np.round(x * 200).astype(np.int16)
    pipe, rhythms = Pipeline(), RhythmAnalyser()
    beats = 0
    for k in range(0, raw.shape[0], int(FS)):
        chunk = SampleChunk(k // 360, k, k / FS, FS, 200.0, "mV", ("MLII", "V1"), raw[k : k + 360])
        out = pipe.feed(chunk)
        beats += len(out.beats)
        assert out.signal is not None
        rhythms.feed_samples(out.signal, FS, out.signal_t0, out.restart, chunk.leads)
    assert beats >= 60  # 72 bpm: the detector ran on a real rhythm
    assert pipe.buf._data.size == 2048
    assert pipe.qrs is not None and pipe.qrs._bp.size < pipe.qrs._mwi.size // 2
    assert rhythms.dec is not None
    assert rhythms.dec._store.shape[1] < 1.5 * rhythms.dec.keep
