"""VT and SVT run detectors on synthetic beat streams: thresholds, ends, artifact, bad input."""

from __future__ import annotations

import math

import numpy as np
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


# ---------------------------------------------------------------- early VT (before the verdict)
FS = 250.0


def paced(spans: list[tuple[float, float, str, float]]) -> list[RhythmBeat]:
    """Beats of `(start, end, class, rr_s)` spans, back to back from 1 s."""
    out: list[RhythmBeat] = []
    t = 1.0
    for start, end, cls, rr in spans:
        t = max(t, start)
        while t < end:
            out.append(RhythmBeat(len(out), t, rr, 60.0 / rr, cls, 0.0))
            t += rr
    return out


def waveform(
    stream: list[RhythmBeat],
    seconds: float,
    noise: tuple[float, float] | None = None,
    noise_sd: float = 1.0,
):
    """A one-lead ECG of the beats (narrow N, wide V complexes), strong noise over `noise`."""
    rng = np.random.default_rng(7)
    n = int(seconds * FS)
    t = np.arange(n) / FS
    x = 0.02 * rng.standard_normal(n)
    for b in stream:
        w, a = (0.04, 1.5) if b.cls == "V" else (0.012, 1.0)
        near = slice(max(0, int((b.t - 0.3) * FS)), int((b.t + 0.3) * FS))
        x[near] += a * np.exp(-0.5 * ((t[near] - b.t) / w) ** 2)
    if noise is not None:
        i0, i1 = int(noise[0] * FS), int(noise[1] * FS)
        x[i0:i1] += noise_sd * rng.standard_normal(i1 - i0)
    return x


def replay(x: np.ndarray, stream: list[RhythmBeat], chunk_s: float, lag_s: float = 0.4):
    """Samples in chunks, then the beats found `lag_s` before each chunk's end (as the engine
    does); the changes with the chunk end they came out at."""
    a = RhythmAnalyser()
    out: list[tuple[float, object]] = []
    m, k = int(round(chunk_s * FS)), 0
    for i in range(0, x.size, m):
        end = (i + m) / FS
        out += [(end, c) for c in a.feed_samples(x[i : i + m], FS, i / FS)]
        j = k
        while j < len(stream) and stream[j].t <= end - lag_s:
            j += 1
        out += [(end, c) for c in a.feed_beats(stream[k:j])]
        k = j
    return out


def vt_of(out) -> list:
    return [c for _, c in out if c.type == "vt"]


def test_episode_union_starts_with_the_first_and_ends_with_the_last() -> None:
    from detector.rhythms.events import EpisodeChange
    from detector.rhythms.runs import EpisodeUnion

    def ch(active: bool, t: float, who: str) -> list[EpisodeChange]:
        return [EpisodeChange("vt", active, t, {"who": who})]

    u = EpisodeUnion()
    assert u.merge("early", ch(True, 10.0, "e")) == ch(True, 10.0, "e")
    assert u.merge("deferred", ch(True, 9.0, "d")) == []  # already on
    assert u.merge("early", ch(False, 14.0, "e")) == []  # deferred still on
    assert u.merge("deferred", ch(False, 15.0, "d")) == ch(False, 15.0, "d")
    # the later detector seeing the same run again after the end: swallowed with its end
    assert u.merge("early", ch(True, 12.0, "e")) == []
    assert u.merge("early", ch(False, 15.5, "e")) == []
    # a new run after the end is a new episode
    assert u.merge("deferred", ch(True, 20.0, "d")) == ch(True, 20.0, "d")
    assert u.merge("deferred", ch(False, 22.0, "d")) == ch(False, 22.0, "d")


def test_a_regular_v_run_starts_vt_before_its_quality_verdict() -> None:
    """Wide fast V beats look like artifact to the quality index (mitdb 205): the early path
    starts VT from the fifth beat, before `noisy` is known and long before `defer_s`."""
    stream = paced([(0, 20, "N", 0.8), (20, 26, "V", 0.4), (26, 40, "N", 0.8)])
    out = replay(waveform(stream, 40.0), stream, 0.5)
    vt = vt_of(out)
    assert [c.active for c in vt] == [True, False]
    start = vt[0]
    v = [b for b in stream if b.cls == "V"]
    assert start.t == v[0].t and start.detail["detected_t"] == v[4].t
    assert "organised" not in start.detail and start.detail["beats"] == 5
    emitted = next(end for end, c in out if c is start)
    assert emitted <= v[4].t + 1.0  # the deferred path would need the windows to v[4].t + 2 s
    # the artifact verdict came, but the run had started before it was known
    assert any(c.type == "noisy" and c.active and c.t < vt[1].t for _, c in out)


def test_no_early_vt_while_artifact_is_known() -> None:
    """In known artifact only the deferred path's organised start (8 regular beats whose
    complexes repeat) can start VT; an irregular V run there starts nothing, nor a regular one
    whose complexes the noise has made unlike each other."""
    regular = paced([(0, 40, "N", 0.8), (44, 50, "V", 0.4), (50, 60, "N", 0.8)])
    out = replay(waveform(regular, 60.0, noise=(40.0, 52.0), noise_sd=0.5), regular, 0.5)
    vt = vt_of(out)
    assert [c.active for c in vt] == [True, False]
    assert vt[0].detail.get("organised") is True and vt[0].detail["beats"] == 8
    assert vt_of(replay(waveform(regular, 60.0, noise=(40.0, 52.0)), regular, 0.5)) == []
    jitter = (0.0, 0.12, -0.1, 0.15, 0.0, -0.12, 0.1)
    v = [b for b in regular if b.cls == "V"]
    shaken = {b.sample: b.t + jitter[i % len(jitter)] for i, b in enumerate(v)}
    irregular = [
        RhythmBeat(b.sample, shaken.get(b.sample, b.t), b.rr_s, b.hr_bpm, b.cls) for b in regular
    ]
    out = replay(waveform(regular, 60.0, noise=(40.0, 52.0), noise_sd=0.5), irregular, 0.5)
    assert vt_of(out) == []


@pytest.mark.parametrize("chunk_s", [0.1, 0.5, 2.0])
def test_early_and_deferred_vt_are_the_same_for_any_chunking(chunk_s: float) -> None:
    stream = paced(
        [(0, 20, "N", 0.8), (20, 26, "V", 0.4), (26, 44, "N", 0.8), (44, 50, "V", 0.4)]
        + [(50, 60, "N", 0.8)]
    )
    x = waveform(stream, 60.0, noise=(40.0, 52.0), noise_sd=0.5)
    ref = replay(x, stream, 0.25)
    got = replay(x, stream, chunk_s)
    assert vt_of(got) == vt_of(ref)
    assert sorted((c.type, c.t, c.active) for _, c in got) == sorted(
        (c.type, c.t, c.active) for _, c in ref
    )
    assert [c.active for c in vt_of(ref)] == [True, False, True, False]


# ---------------------------------------------------------------- alike complexes (shapes)
def bumpy(stream: list[RhythmBeat], seconds: float) -> np.ndarray:
    """As `waveform`, but every V beat is a different bump (what motion artifact makes the beat
    finder see): a random mix of wide and narrow, up- and down-going waves."""
    x = waveform([b for b in stream if b.cls != "V"], seconds)
    rng = np.random.default_rng(11)
    t = np.arange(x.size) / FS
    for b in stream:
        if b.cls != "V":
            continue
        near = slice(max(0, int((b.t - 0.3) * FS)), int((b.t + 0.3) * FS))
        for _ in range(3):
            at, w, a = rng.uniform(-0.1, 0.1), rng.uniform(0.01, 0.06), rng.uniform(-1.5, 1.5)
            x[near] += a * np.exp(-0.5 * ((t[near] - b.t - at) / w) ** 2)
    return x


@pytest.mark.parametrize("chunk_s", [0.1, 0.5, 2.0])
def test_a_v_run_of_unlike_complexes_is_no_vt(chunk_s: float) -> None:
    """Beats that artifact makes are each unlike the next; real VT repeats one complex. The
    same regular run starts VT when its complexes are alike and nothing when they are not,
    on either path and for any chunking."""
    stream = paced([(0, 20, "N", 0.8), (20, 26, "V", 0.4), (26, 40, "N", 0.8)])
    assert [c.active for c in vt_of(replay(waveform(stream, 40.0), stream, chunk_s))] == [
        True,
        False,
    ]
    assert vt_of(replay(bumpy(stream, 40.0), stream, chunk_s)) == []


@pytest.mark.parametrize("chunk_s", [0.1, 0.5, 2.0])
def test_a_run_alike_on_one_lead_only_is_no_vt(chunk_s: float) -> None:
    """One ventricular focus repeats its complex on every lead; electrode-motion artifact is
    each electrode's own (nstdb `em` on 118 at 1260 s repeated on MLII only). A regular V run
    alike on lead 0 starts VT when lead 1 repeats too, nothing when lead 1's complexes are
    unlike bumps, and is judged on lead 0 alone when lead 1 has no valid samples."""
    stream = paced([(0, 20, "N", 0.8), (20, 26, "V", 0.4), (26, 40, "N", 0.8)])
    alike = waveform(stream, 40.0)
    both = np.stack([alike, 0.7 * alike], axis=1)
    assert [c.active for c in vt_of(replay(both, stream, chunk_s))] == [True, False]
    one = np.stack([alike, bumpy(stream, 40.0)], axis=1)
    assert vt_of(replay(one, stream, chunk_s)) == []
    lost = np.stack([alike, np.full(alike.size, np.nan)], axis=1)
    assert [c.active for c in vt_of(replay(lost, stream, chunk_s))] == [True, False]


def test_shapes_correlation_and_cut() -> None:
    from detector.rhythms.shapes import (
        ShapeBook,
        ShapeConfig,
        best_correlation,
        cut_leads,
        run_consistency,
    )
    from detector.rhythms.stream import Decimated

    t = np.arange(61) / 100.0
    a = np.exp(-0.5 * ((t - 0.30) / 0.03) ** 2)
    shifted = np.exp(-0.5 * ((t - 0.32) / 0.03) ** 2)  # 2 samples later: within the lag
    assert best_correlation(a, shifted, 3) > 0.99
    assert best_correlation(a, -shifted, 3) < 0
    assert math.isnan(best_correlation(a, np.zeros_like(a), 3))  # flat: no verdict
    assert math.isnan(run_consistency([a], 3))
    assert run_consistency([a, shifted, a, -a], 3) > 0.99  # one odd complex: the median holds
    assert run_consistency([a, -a, a, -a], 3) > 0.99  # alternating: every other one alike
    b = -(t - 0.30) * a  # biphasic, unlike a
    assert run_consistency([a, -a, b, -b], 1) < 0.5
    # (lead, sample) complexes: alike on lead 0, opposite on lead 1: the mean of +1 and -1
    two = [np.stack([a, s]) for s in (a, -a, a, -a)]
    assert abs(run_consistency([np.stack([a, a]), np.stack([a, -a])], 3)) < 1e-9
    assert run_consistency(two, 3) > 0.99  # every other one alike on both leads
    assert best_correlation(np.stack([a, a]), np.stack([a, np.zeros_like(a)]), 3) > 0.99
    with pytest.raises(ValueError, match="min_corr"):
        ShapeConfig(min_corr=1.0)
    with pytest.raises(ValueError, match="half_s"):
        ShapeConfig(half_s=-0.1)
    dec = Decimated(250.0, 2, keep_s=2.0)
    x = np.ones((500, 2))
    x[200:260, 1] = np.nan  # lead 1 lost around 1 s
    dec.feed(x)
    got = cut_leads(dec, int(1.0 * dec.fs), ShapeConfig())
    assert got is not None and got.shape[0] == 2
    assert np.isfinite(got[0]).all() and np.isnan(got[1]).all()
    assert cut_leads(dec, 2, ShapeConfig()) is None  # reaches before the stream
    assert cut_leads(dec, dec.seen - 1, ShapeConfig()) is None  # reaches past the newest sample
    book = ShapeBook(size=2)
    for t in (1.0, 2.0, 2.0, 3.0):
        book.put(t, np.full(3, t))
    assert book.get(1.0) is None and book.get(2.0) is not None and len(book.by_t) == 2
