"""VT and SVT run detectors on synthetic beat streams: thresholds, ends, artifact, bad input."""

from __future__ import annotations

import math

import pytest

from detector.rhythms import RhythmAnalyser, RhythmBeat
from detector.rhythms.runs import RunConfig, SVTDetector, VTDetector


def beats(classes: str, rate_bpm: float, t0: float = 100.0, start: int = 0) -> list[RhythmBeat]:
    """Beats of the given classes ("NNVVVVV...") at a steady rate."""
    rr = 60.0 / rate_bpm
    return [RhythmBeat(start + i, t0 + i * rr, rr, rate_bpm, c, 0.0) for i, c in enumerate(classes)]


def run(det, stream, noisy=False):
    out = []
    for b in stream:
        out += det.feed(b, noisy)
    return out


def test_five_v_beats_at_150_bpm_are_vt_from_the_first_v() -> None:
    stream = beats("NNNN" + "V" * 8 + "NNN", 150.0)
    out = run(VTDetector(), stream)
    assert [(c.type, c.active) for c in out] == [("vt", True), ("vt", False)]
    assert out[0].t == stream[4].t and out[0].detail["onset_t"] == stream[4].t
    assert out[0].detail["beats"] == 5 and out[0].detail["hr_bpm"] == pytest.approx(150.0)
    assert out[1].t == stream[11].t and out[1].detail["beats"] == 8


def test_four_v_beats_or_a_slow_run_is_not_vt() -> None:
    assert run(VTDetector(), beats("NN" + "VVVV" + "NN", 150.0)) == []
    assert run(VTDetector(), beats("NN" + "V" * 10 + "NN", 90.0)) == []  # idioventricular


def test_a_run_that_slows_down_ends() -> None:
    fast = beats("V" * 6, 150.0)
    slow = beats("V" * 6, 60.0, t0=fast[-1].t + 1.0, start=6)
    out = run(VTDetector(), fast + slow)
    assert [c.active for c in out] == [True, False]


def test_svt_is_a_run_of_s_beats_and_never_vt() -> None:
    stream = beats("NN" + "S" * 12 + "N", 160.0)
    assert run(VTDetector(), stream) == []
    out = run(SVTDetector(), stream)
    assert [(c.type, c.active) for c in out] == [("svt", True), ("svt", False)]
    assert out[0].t == stream[2].t


def test_no_run_starts_in_artifact_but_a_running_one_continues() -> None:
    stream = beats("V" * 10, 150.0)
    # the V beats artifact makes are irregular: nothing starts
    jitter = [0.0, 0.12, -0.1, 0.15, 0.0, -0.12, 0.1, 0.0, 0.14, -0.1]
    shaken = [
        RhythmBeat(b.sample, b.t + j, b.rr_s, b.hr_bpm, b.cls)
        for b, j in zip(stream, jitter, strict=True)
    ]
    assert run(VTDetector(), shaken, noisy=True) == []
    assert run(SVTDetector(), beats("S" * 10, 150.0), noisy=True) == []
    det = VTDetector()
    out = run(det, stream[:6]) + run(det, stream[6:], noisy=True)
    assert [c.active for c in out] == [True]


def test_an_organised_v_run_starts_in_artifact_after_more_beats() -> None:
    """Slow VT looks like artifact to the quality index (mitdb 223): a regular run of
    `organised_beats` V beats starts VT there, marked organised; alternans timing is regular."""
    stream = beats("V" * 12, 110.0)
    alt = [
        RhythmBeat(b.sample, b.t + (0.08 if i % 2 else 0.0), b.rr_s, b.hr_bpm, b.cls)
        for i, b in enumerate(stream)
    ]
    for s in (stream, alt):
        out = run(VTDetector(), s, noisy=True)
        assert [c.active for c in out] == [True]
        assert out[0].detail["organised"] is True and out[0].detail["beats"] == 8
        assert out[0].t == s[0].t
    assert run(VTDetector(), stream[:7], noisy=True) == []
    with pytest.raises(ValueError, match="organised"):
        RunConfig("vt", ("V",), organised_beats=2)


def test_bad_beats_are_ignored() -> None:
    det = VTDetector()
    good = beats("V" * 5, 150.0)
    bad = [
        RhythmBeat(0, math.nan, 0.4, 150.0, "V"),
        RhythmBeat(0, math.inf, 0.4, 150.0, "V"),
        RhythmBeat(1, good[2].t - 0.01, 0.4, 150.0, "V"),  # out of order: dropped
    ]
    out = []
    for i, b in enumerate(good):
        out += det.feed(b)
        if i == 2:
            for x in bad:
                out += det.feed(x)
    assert [c.active for c in out] == [True]
    assert run(VTDetector(), beats("?" * 10, 150.0)) == []  # unknown class: no run
    assert (
        run(VTDetector(), [RhythmBeat(i, 100 + i * 0.4, None, None, None) for i in range(9)]) == []
    )
    with pytest.raises(ValueError, match="min_beats"):
        RunConfig("vt", ("V",), min_beats=1)
    with pytest.raises(ValueError, match="min_rate_bpm"):
        RunConfig("vt", ("V",), min_rate_bpm=math.nan)


@pytest.mark.parametrize("group", [1, 3, 7, 50])
def test_same_episodes_however_the_beats_are_grouped(group: int) -> None:
    stream = beats("NNN" + "V" * 7 + "NNNN" + "S" * 6 + "N" + "V" * 3 + "N", 140.0)
    whole = RhythmAnalyser().feed_beats(stream)
    a = RhythmAnalyser()
    parts = []
    for i in range(0, len(stream), group):
        parts += a.feed_beats(stream[i : i + group])
    assert parts == whole
    assert [(c.type, c.active) for c in whole] == [
        ("vt", True),
        ("vt", False),
        ("svt", True),
        ("svt", False),
    ]
