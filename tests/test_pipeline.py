"""Per-bed pipeline: chunk-size independence, gaps, duplicates, late chunks, lead loss, rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from detector.errors import MissingLead, UnsupportedRate
from detector.integrity import ACCEPT, DROP, RESET, IntegrityTracker
from detector.pipeline import Pipeline, windows_of
from detector.qrs import QRSDetector
from detector.signal_buffer import SignalBuffer
from ecgcommon.protocol import SampleChunk
from ecgcommon.records import load_record
from ecgcommon.windowing import beat_windows


@pytest.fixture(scope="module")
def mv(data_dir: Path) -> np.ndarray:
    """Two minutes of record 100, MLII, in mV."""
    return load_record("100", data_dir, sampto=360 * 120).lead(0)


def chunks(
    x: np.ndarray, fs: float, n: int, t0: float = 1000.0, gain: float = 200.0
) -> list[SampleChunk]:
    raw = np.rint(x * gain).astype(np.int16)
    return [
        SampleChunk(k, i, t0 + i / fs, fs, gain, "mV", ("MLII",), raw[i : i + n, None])
        for k, i in enumerate(range(0, len(raw), n))
    ]


def run(pipe: Pipeline, cs: list[SampleChunk]) -> tuple[list, list]:
    beats, events = [], []
    for c in cs:
        out = pipe.feed(c)
        beats += out.beats
        events += out.events
    return beats, events


def test_same_beats_whatever_the_chunk_size(mv: np.ndarray) -> None:
    x = np.rint(mv * 200) / 200
    reference = QRSDetector(360.0).feed(x)
    results = []
    for n in (36, 180, 360, 1000):
        beats, events = run(Pipeline(), chunks(mv, 360.0, n))
        assert events == []
        results.append(beats)
        samples = [b.sample for b in beats]
        # every R-peak the detector confirms gets a window, except one too close to the end
        assert samples == reference[: len(samples)].tolist() and len(samples) >= len(reference) - 1
    for other in results[1:]:
        assert [b.sample for b in other] == [b.sample for b in results[0]]
        np.testing.assert_array_equal(windows_of(other), windows_of(results[0]))
    # batched windows across beats are exactly the windows of the whole signal
    peaks = np.array([b.sample for b in results[0]])
    np.testing.assert_array_equal(windows_of(results[0]), beat_windows(x, peaks, 360.0))
    b = results[0][10]
    assert b.rr_s == pytest.approx((b.sample - results[0][9].sample) / 360)
    assert b.hr_bpm == pytest.approx(60 / b.rr_s)
    assert b.t == pytest.approx(1000.0 + b.sample / 360)
    assert results[0][0].rr_s is None and results[0][0].hr_bpm is None


def test_gap_is_nan_filled_and_indices_stay_aligned(mv: np.ndarray) -> None:
    cs = chunks(mv, 360.0, 180)
    full, _ = run(Pipeline(), cs)
    holed = cs[:100] + cs[104:]  # 2 s missing
    beats, events = run(Pipeline(), holed)
    gaps = [e for e in events if e.type == "gap"]
    assert len(gaps) == 1
    assert gaps[0].detail["missing_chunks"] == 4 and gaps[0].detail["missing_samples"] == 720
    lost = set(range(100 * 180, 104 * 180))
    full_after = [b.sample for b in full if b.sample > 106 * 180]
    got_after = [b.sample for b in beats if b.sample > 106 * 180]
    assert got_after == full_after  # same device indices after the gap
    assert not any(b.sample in lost for b in beats)


def test_duplicates_and_late_chunks_are_dropped_and_reported(mv: np.ndarray) -> None:
    cs = chunks(mv, 360.0, 180)
    full, _ = run(Pipeline(), cs[:40])
    stream = cs[:10] + [cs[9]] + cs[10:20] + cs[21:30] + [cs[20]] + cs[30:40]
    beats, events = run(Pipeline(), stream)
    kinds = [e.type for e in events]
    assert kinds == ["duplicate", "gap", "out_of_order"]
    assert events[0].detail == {"seq": 9}
    assert events[2].detail["seq"] == 20
    # beats away from the lost chunk (QRS re-learns for 2 s after it) are all still there
    expected = {b.sample for b in full if b.sample < 20 * 180 - 144 or b.sample >= 24 * 180}
    assert expected <= {b.sample for b in beats} | {full[-1].sample}


def test_restart_and_long_gap_start_a_fresh_stream(mv: np.ndarray) -> None:
    cs = chunks(mv, 360.0, 360)
    pipe = Pipeline(max_fill_s=5.0)
    run(pipe, cs[:20])
    far = cs[40]  # 20 s later: longer than max_fill_s
    out = pipe.feed(far)
    assert [e.type for e in out.events] == ["gap"] and out.events[0].detail["restart"]
    out = pipe.feed(cs[0])  # device restarted its counters
    assert out.events[0].detail["restart"] and out.accepted


def test_flat_lead_gives_lead_off_then_restored(mv: np.ndarray) -> None:
    x = mv.copy()
    x[360 * 30 : 360 * 40] = 0.0  # 10 s disconnected
    beats, events = run(Pipeline(), chunks(x, 360.0, 180))
    lead = [(e.type, e.active) for e in events]
    assert lead == [("lead_off", True), ("lead_off", False)]
    assert 30 <= events[0].t - 1000.0 <= 32 and 40 <= events[1].t - 1000.0 <= 43
    assert not any(360 * 31 <= b.sample < 360 * 40 for b in beats)


def test_other_rates_run_at_the_device_rate(mv: np.ndarray) -> None:
    base, _ = run(Pipeline(), chunks(mv, 360.0, 180))
    x250 = resample_poly(mv, 25, 36)
    beats, _ = run(Pipeline(), chunks(x250, 250.0, 125))
    assert abs(len(beats) - len(base)) <= 1
    t360 = np.array([b.t for b in base])
    t250 = np.array([b.t for b in beats])
    near = np.abs(t250[:, None] - t360[None, :]).min(axis=1)
    assert np.median(near) < 0.01  # same beats, within a few ms
    assert beats[5].window.shape == base[5].window.shape  # the model grid, whatever the rate


def test_pipeline_rejects_rates_outside_range() -> None:
    c = SampleChunk(0, 0, 0.0, 50.0, 1.0, "mV", ("I",), np.zeros((50, 1)))
    with pytest.raises(ValueError, match="fs"):
        Pipeline().feed(c)
    with pytest.raises(UnsupportedRate) as info:  # typed: callers never match the message
        Pipeline().feed(c)
    assert info.value.reason == "unsupported_fs"


def test_pipeline_rejects_a_chunk_without_its_lead() -> None:
    c = SampleChunk(0, 0, 0.0, 360.0, 1.0, "mV", ("I", "II"), np.zeros((36, 2)))
    with pytest.raises(MissingLead) as info:
        Pipeline(lead=2).feed(c)
    assert info.value.reason == "bad_leads" and isinstance(info.value, ValueError)
    assert Pipeline(lead=1).feed(c).accepted


def test_signal_buffer_keeps_absolute_indices_across_moves_and_growth() -> None:
    rng = np.random.default_rng(0)
    buf = SignalBuffer(4)
    whole = rng.normal(size=5000)
    i = 0
    while i < whole.size:
        n = int(rng.integers(0, 300))
        buf.append(whole[i : i + n])
        i = min(whole.size, i + n)
        buf.drop(max(0, len(buf) - int(rng.integers(1, 500))))
        assert buf.end == i
        np.testing.assert_array_equal(buf.view(), whole[buf.start : buf.end])
    assert len(buf) > 0
    with pytest.raises(ValueError, match="drop"):
        buf.drop(len(buf) + 1)


def test_integrity_tracker_verdicts() -> None:
    t = IntegrityTracker(max_fill=1000)
    assert t.check(5, 500, 100).action == RESET
    assert t.check(6, 600, 100).action == ACCEPT
    v = t.check(8, 800, 100)
    assert v.action == ACCEPT and v.fill == 100 and v.events[0][0] == "gap"
    assert t.check(8, 800, 100).events[0][0] == "duplicate"
    late = t.check(7, 700, 100)
    assert late.action == DROP and late.events[0][0] == "out_of_order"
    assert t.check(7, 700, 100).events[0][0] == "duplicate"  # now it has been seen
    overlap = t.check(9, 850, 100)
    assert overlap.action == ACCEPT and overlap.skip == 50 and overlap.events == ()
    assert t.check(20, 5000, 100).action == RESET  # too long to fill


def test_rate_change_restarts_the_stream(mv: np.ndarray) -> None:
    pipe = Pipeline()
    before, _ = run(pipe, chunks(mv[: 360 * 20], 360.0, 180))
    x250 = resample_poly(mv[360 * 20 : 360 * 60], 25, 36)
    after, events = run(pipe, chunks(x250, 250.0, 125, t0=1020.0))
    assert events == [] and pipe.fs == 250.0
    assert len(after) >= 40 and after[0].t > before[-1].t


@pytest.mark.parametrize("n", [1, 36, 180])
def test_no_beat_comes_after_the_watermark_has_passed_it(mv: np.ndarray, n: int) -> None:
    """`analysed_until` is a promise (asystole is judged on it): no later beat lies before it;
    it rises steadily while the lead is good and is withheld while the lead is flat."""
    x = mv[: 360 * 40].copy()
    x[360 * 20 : 360 * 26] = 0.0  # a flat lead for 6 s
    pipe, mark, marks = Pipeline(), -np.inf, []
    for c in chunks(x, 360.0, n):
        out = pipe.feed(c)
        for b in out.beats:
            assert b.t >= mark, f"beat at {b.t} after watermark {mark}"
        if out.analysed_until is not None:
            assert out.analysed_until >= mark
            mark = out.analysed_until
            marks.append((c.t0, mark))
    # while the lead is flat (after the detector's 1 s flat-lead test) no promise is made
    assert not [m for t, m in marks if 1000.0 + 22 <= t <= 1000.0 + 26]
    # with a good lead the watermark trails the samples by about the QRS decision delay
    t_last, m_last = marks[-1]
    assert 0.0 < t_last + n / 360.0 - m_last <= 0.5
