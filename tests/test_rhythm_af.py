"""AF detector: an AF stretch of MIT-BIH 201 (DS1), sinus with ectopy, chunking, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.rhythms import RhythmAnalyser, RhythmBeat
from detector.rhythms.af import AFConfig, AFDetector
from detector.rhythms.af_design import reference
from tests.helpers.rhythm import DATA


@pytest.fixture(scope="module")
def rec201():
    return reference("201", DATA / "mitdb")


def run(beats, det=None):
    det = det or AFDetector()
    out = []
    for b in beats:
        out += det.feed(b)
    return out


def test_af_onset_in_201_is_found_near_the_annotation(rec201) -> None:
    beats, spans, _ = rec201
    onset = spans[2][0]  # the third (AFIB of 201 (1597 s), after 18 min of sinus rhythm
    stretch = [b for b in beats if onset - 240 <= b.t <= onset + 60]
    out = run(stretch)
    starts = [c for c in out if c.active]
    assert len(starts) == 1
    # the 11 s before the annotated onset hold an (SVTA run and atrial premature beats, as
    # irregular as AF by RR alone: the change point may fall among them
    assert onset - 20.0 <= starts[0].t <= onset + 10.0, (starts[0].t, onset)
    assert starts[0].detail["hr_bpm"] > 60
    assert starts[0].detail["beats"] >= AFConfig().window_beats


def test_no_af_in_sinus_rhythm_of_201(rec201) -> None:
    beats, spans, _ = rec201
    # 201 between its second and third AF: sinus rhythm with S, V and aberrant beats
    sinus = [b for b in beats if spans[1][1] + 90 <= b.t <= spans[2][0] - 5]
    assert len(sinus) > 100
    assert run(sinus) == []


def test_sinus_rhythm_with_frequent_ectopy_is_not_af() -> None:
    rng = np.random.default_rng(3)
    beats: list[RhythmBeat] = []
    t = 100.0
    for i in range(400):
        cls = "V" if i % 3 == 2 else ("S" if i % 7 == 0 else "N")  # trigeminy + PACs
        rr = 0.8 * (0.6 if cls != "N" else 1.0) * (1 + 0.02 * rng.standard_normal())
        if i and beats[-1].cls == "V":
            rr = 1.2  # compensatory pause
        t += rr
        beats.append(RhythmBeat(i, t, rr, 60 / rr, cls))
    assert run(beats) == []


def test_irregular_rr_is_af_and_regular_rr_ends_it() -> None:
    rng = np.random.default_rng(4)
    beats, t = [], 100.0
    for i in range(300):
        rr = rng.uniform(0.4, 1.0) if i < 150 else 0.8
        t += rr
        beats.append(RhythmBeat(i, t, rr, 60 / rr, "N"))
    out = run(beats)
    assert [c.active for c in out] == [True, False]
    assert out[0].t < beats[60].t
    assert beats[140].t <= out[1].t <= beats[190].t


@pytest.mark.parametrize("group", [1, 5, 64])
def test_same_episodes_however_the_beats_are_grouped(rec201, group: int) -> None:
    beats, spans, _ = rec201
    stretch = [b for b in beats if spans[1][0] - 120 <= b.t <= spans[1][0] + 120]
    whole = RhythmAnalyser().feed_beats(stretch)
    a = RhythmAnalyser()
    parts = []
    for i in range(0, len(stretch), group):
        parts += a.feed_beats(stretch[i : i + group])
    assert parts == whole and any(c.type == "afib" for c in whole)


def test_bad_input() -> None:
    det = AFDetector()
    junk = [
        RhythmBeat(0, math.nan, 0.5, 120, "N"),
        RhythmBeat(1, 10.0, math.nan, None, "N"),
        RhythmBeat(2, 11.0, -1.0, None, "N"),
        RhythmBeat(3, 12.0, 1e9, None, "N"),
        RhythmBeat(4, 11.5, 0.5, 120, "N"),  # out of order
    ]
    assert run(junk, det) == []
    with pytest.raises(ValueError, match="window_beats"):
        AFConfig(window_beats=4)
    with pytest.raises(ValueError, match="irregular_on"):
        AFConfig(irregular_on=math.inf)
    with pytest.raises(ValueError, match="span_off"):
        AFConfig(span_off=0.9)


def _beats(rr: np.ndarray, cls: str = "N", t0: float = 100.0) -> list[RhythmBeat]:
    t = t0 + np.cumsum(rr)
    return [RhythmBeat(i, float(t[i]), float(r), 60 / r, cls) for i, r in enumerate(rr)]


def test_jittery_beat_times_on_a_regular_rhythm_are_not_af() -> None:
    # a regular 75 bpm rhythm whose beat times wobble by up to 0.1 s (a fiducial point that
    # jumps between pacing spike and QRS): successive RR differ a lot, two-beat spans do not
    rng = np.random.default_rng(5)
    t = 100.0 + 0.8 * np.arange(400) + rng.uniform(-0.1, 0.1, 400)
    det, out, most = AFDetector(), [], 0.0
    for i in range(1, 400):
        out += det.feed(RhythmBeat(i, float(t[i]), float(t[i] - t[i - 1]), None, "N"))
        most = max(most, det.n_irr / max(1, det.n_diff))
    assert out == []
    assert most >= AFConfig().irregular_on  # beat to beat it looked irregular


def test_af_in_noisy_signal_counts_but_not_in_vf() -> None:
    rr = np.random.default_rng(6).uniform(0.4, 1.0, 200)
    found = []
    for in_vf in (False, True):
        det = AFDetector()
        found.append([c.active for b in _beats(rr) for c in det.feed(b, True, in_vf=in_vf)])
    assert found == [[True], []]
    assert [c.active for c in run(_beats(rr), AFDetector(AFConfig(noisy_beats=False)))] == [True]
    det = AFDetector(AFConfig(noisy_beats=False))
    assert [c for b in _beats(rr) for c in det.feed(b, True)] == []


def test_s_beats_start_no_af_but_carry_an_episode() -> None:
    rr = np.random.default_rng(7).uniform(0.4, 1.0, 300)
    assert run(_beats(rr, "S")) == []
    beats = _beats(rr[:100]) + _beats(rr[100:], "S", t0=100.0 + float(rr[:100].sum()))
    out = run(beats)
    assert [c.active for c in out] == [True]  # still open at the end
    assert abs(out[0].t - beats[0].t) < 5.0


def _covered(beats: list[RhythmBeat], det: AFDetector) -> float:
    """Share of the beats' time span inside AF episodes."""
    total, start = 0.0, None
    for c in run(beats, det):
        if c.active:
            start = c.t
        elif start is not None:
            total, start = total + c.t - start, None
    if start is not None:
        total += beats[-1].t - start
    return total / (beats[-1].t - beats[0].t)


def test_fast_af_with_small_changes_is_af_but_sinus_tachycardia_is_not() -> None:
    # AF at 130 bpm: independent intervals, CV 0.09, most successive changes under 10 % of the
    # RR but over the rate-scaled share (10 % x 0.46 s / 0.8 s); sinus tachycardia at the same
    # rate changes by ~1 % beat to beat and drifts slowly
    rng = np.random.default_rng(8)
    fast_af = _beats(0.46 * (1 + 0.09 * rng.standard_normal(300)))
    sinus = 0.46 * (1 + 0.01 * rng.standard_normal(300) + 0.03 * np.sin(np.arange(300) / 15))
    assert _covered(fast_af, AFDetector()) > 0.9
    assert _covered(fast_af, AFDetector(AFConfig(rate_rr_s=1e-3))) < 0.2  # unscaled: missed
    assert run(_beats(sinus)) == []
