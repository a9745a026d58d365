"""Beat re-timing for the AF detector: paced 102 with a jumping fiducial point, a synthetic
double-peaked complex through the analyser, chunking, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import wfdb

from detector.rhythms import RhythmAnalyser, RhythmBeat
from detector.rhythms.atrial import AlignConfig, BeatAligner
from detector.rhythms.stream import decimate
from ecgcommon.records import load_record
from tests.helpers.rhythm import DATA

FS = 360.0
T0 = 1000.0


def _irregular_share(rr: np.ndarray) -> float:
    """Share of successive RR differences above 10 % of the pair's mean (af.py's measure)."""
    d = np.abs(np.diff(rr)) > 0.1 * 0.5 * (rr[1:] + rr[:-1])
    return float(d.mean())


def _aligned_rr(aligner: BeatAligner, beats: list[RhythmBeat]) -> np.ndarray:
    return np.array([r for b in beats if (r := aligner.beat(b).rr) is not None])


def _jumping(t_ref: np.ndarray, cls: str = "N") -> list[RhythmBeat]:
    """Beats at the reference times, the fiducial falling 33 ms before, 32 ms or 97 ms after
    at random (what the beat finder does on 102's paced beats)."""
    rng = np.random.default_rng(1)
    t = t_ref + rng.choice([-0.033, 0.032, 0.097], t_ref.size)
    return [
        RhythmBeat(i, float(t[i]), float(t[i] - t[i - 1]) if i else None, None, cls)
        for i in range(t.size)
    ]


def test_paced_102_beats_with_a_jumping_fiducial_get_regular_intervals() -> None:
    rec = load_record("102", DATA / "mitdb")
    n = int(100 * rec.fs)  # paced rhythm to 81 s
    y, _, fs = decimate(rec.signal[:n, :1], rec.fs)
    ann = wfdb.rdann(str(DATA / "mitdb" / "102"), "atr", sampto=n)
    t_ref = np.array([s / rec.fs for s, c in zip(ann.sample, ann.symbol, strict=True) if c == "/"])
    t_ref = t_ref[(t_ref > 2.0) & (t_ref < 80.0)]
    beats = _jumping(t_ref)
    raw = np.array([b.rr for b in beats[1:]])
    aligner = BeatAligner(fs, 0.0, AlignConfig(keep_s=110.0))
    aligner.feed(y[:, 0])
    rr = _aligned_rr(aligner, beats)
    assert _irregular_share(raw) > 0.4  # AF-like beat to beat
    assert _irregular_share(rr[10:]) < 0.05  # the paced rhythm it is
    assert np.percentile(np.abs(rr[10:] - np.diff(t_ref)[10:]), 90) < 0.015  # on the reference


def _double_peaked(rr_s: float, n_beats: int) -> tuple[np.ndarray, np.ndarray]:
    """(samples, beat times) of a regular rhythm of wide complexes with two equal peaks
    130 ms apart (the beat finder's fiducial may fall on either)."""
    t = np.arange(int((n_beats + 2) * rr_s * FS)) / FS
    beats = 1.0 + rr_s * np.arange(n_beats)
    x = np.zeros_like(t)
    for b in beats:
        for dt, a in ((0.0, 1.0), (0.13, -0.9), (0.3, 0.25)):
            x += a * np.exp(-0.5 * ((t - b - dt) / 0.015) ** 2)
    return x, beats


def _analyse(x: np.ndarray, beats: list[RhythmBeat], chunk: int) -> list:
    """Samples in chunks of `chunk`, each beat fed once the samples 3 s after it are in."""
    a, out, k = RhythmAnalyser(), [], 0
    for i in range(0, x.size, chunk):
        out += a.feed_samples(x[i : i + chunk, None], FS, T0 if i == 0 else T0 + i / FS)
        now = T0 + (i + chunk) / FS
        while k < len(beats) and beats[k].t <= now - 3.0:
            out += a.feed_beats([beats[k]])
            k += 1
    return [(c.type, c.active, round(c.t, 6)) for c in out if c.type == "afib"]


def test_analyser_calls_no_af_on_a_jumping_fiducial_when_it_has_the_waveform() -> None:
    x, t_ref = _double_peaked(0.6, 200)
    beats = [RhythmBeat(b.sample, b.t + T0, b.rr_s, None, "N") for b in _jumping(t_ref)]
    no_wave = RhythmAnalyser().feed_beats(beats)
    assert [c.active for c in no_wave if c.type == "afib"][:1] == [True]  # RR alone: AF
    assert _analyse(x, beats, 360) == []


@pytest.mark.parametrize("chunk", [1, 37, 1000, 1200])  # 1200: 10 s, the wire's longest
def test_aligned_intervals_do_not_depend_on_the_chunking(chunk: int) -> None:
    x, t_ref = _double_peaked(0.8, 60)
    y, _, fs = decimate(x[:, None], FS)
    beats = _jumping(t_ref)
    whole = BeatAligner(fs, 0.0, AlignConfig(keep_s=60.0))
    whole.feed(y[:, 0])
    want = [whole.beat(b).rr_s for b in beats]
    a = BeatAligner(fs, 0.0)
    got, k = [], 0
    for i in range(0, y.shape[0], chunk):
        a.feed(y[i : i + chunk, 0])
        while k < len(beats) and beats[k].t + 1.0 <= (i + chunk) / fs:
            got.append(a.beat(beats[k]).rr_s)
            k += 1
    assert len(got) == len(beats)
    assert np.allclose(np.array(got, float), np.array(want, float), equal_nan=True)
    assert _irregular_share(np.array(got[5:], float)) == 0.0


def test_bad_input_keeps_the_beat_finders_times() -> None:
    a = BeatAligner(120.0, 0.0)
    a.feed(np.full(600, np.nan))  # non-finite samples read as 0: nothing to match
    a.feed(np.array([np.inf, -np.inf, 1.0]))
    for t in (1.0, 2.0, 3.0):
        b = RhythmBeat(0, t, 1.0, 60.0, "N")
        assert a.beat(b) == b
    assert a.align(-50.0, "N") == -50.0  # before the buffer
    assert a.align(99.0, "N") == 99.0  # samples not yet in
    assert a.align(math.nan, "N") != a.align(math.nan, "N")  # NaN in, NaN out
    with pytest.raises(ValueError, match="max_shift_s"):
        AlignConfig(max_shift_s=-1.0)
    with pytest.raises(ValueError, match="min_corr"):
        AlignConfig(min_corr=1.5)
    with pytest.raises(ValueError, match="fs"):
        BeatAligner(0.0, 0.0)


def _mixed(n_beats: int, rr_s: float = 0.8) -> tuple[np.ndarray, list[RhythmBeat]]:
    """(samples, beats) of narrow complexes with every fourth beat wide and inverted (a PVC);
    the classifier called every third beat V, the wide ones included or not."""
    t = np.arange(int((n_beats + 2) * rr_s * FS)) / FS
    x = np.zeros_like(t)
    beats: list[RhythmBeat] = []
    for i in range(n_beats):
        b = 1.0 + rr_s * i
        wide = i % 4 == 3
        for dt, a, w in ((0.0, -0.8, 0.04), (0.12, 0.5, 0.05)) if wide else ((0.0, 1.0, 0.012),):
            x += a * np.exp(-0.5 * ((t - b - dt) / w) ** 2)
        cls = "V" if wide or i % 3 == 2 else "N"
        beats.append(RhythmBeat(i, b, rr_s if i else None, None, cls))
    return x, beats


def test_v_beats_with_the_beds_own_complex_count_as_conducted() -> None:
    x, beats = _mixed(40)
    y, _, fs = decimate(x[:, None], FS)
    aligner = BeatAligner(fs, 0.0, AlignConfig(keep_s=60.0))
    aligner.feed(y[:, 0])
    out = [aligner.beat(b) for b in beats]
    for i, (b, o) in enumerate(zip(beats, out, strict=True)):
        if i < 2 or b.cls == "N":
            continue
        assert o.cls == ("V" if i % 4 == 3 else "S"), i  # wide: V; narrow called V: S
    off = BeatAligner(fs, 0.0, AlignConfig(keep_s=60.0, conducted_corr=1.0))
    off.feed(y[:, 0])
    assert [off.beat(b).cls for b in beats] == [b.cls for b in beats]
    with pytest.raises(ValueError, match="conducted_corr"):
        AlignConfig(conducted_corr=1.5)
