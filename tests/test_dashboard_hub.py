"""The sans-I/O ward hub behind the dashboard: chunk-size independent decimation, gaps kept
visible, bounded state over long runs, and bounded client queues that drop waveforms, not
alarms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.hub import Decimator, SampleRing, WardHub

FS = 360.0


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 200), min_size=1, max_size=60),
    fs=st.sampled_from([125.0, 250.0, 360.0, 500.0, 1000.0]),
)
def test_decimation_does_not_depend_on_chunk_size(sizes: list[int], fs: float) -> None:
    x = np.random.default_rng(len(sizes)).normal(size=sum(sizes))
    whole = Decimator(fs, 120.0).feed(x)
    d = Decimator(fs, 120.0)
    parts, pos = [], 0
    for n in sizes:
        parts.append(d.feed(x[pos : pos + n]))
        pos += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert d.fs_out == pytest.approx(fs / max(1, round(fs / 120.0)))


def test_ring_keeps_the_newest_samples_by_absolute_index() -> None:
    ring = SampleRing(10)
    ring.extend(np.arange(7.0))
    ring.extend(np.arange(7.0, 25.0))
    assert (ring.start, ring.end) == (15, 25)
    np.testing.assert_array_equal(ring.get(12, 18), [15.0, 16.0, 17.0])
    np.testing.assert_array_equal(ring.get(0, 100), np.arange(15.0, 25.0))


def _frames(sub) -> list[dict]:
    return [json.loads(t) for t in sub.drain()]


def test_a_lost_chunk_shows_as_a_gap_and_the_feed_resumes() -> None:
    hub = WardHub("w")
    sub = hub.subscribe()
    hub.on_samples("1", FS, 0, np.ones(36), t0=1000.0)
    hub.on_samples("1", FS, 72, np.ones(36), t0=1000.2)  # chunk 36..71 lost
    hub.flush(1.0)
    hello, batch = _frames(sub)
    assert hello["type"] == "hello" and hello["beds"] == []
    wave = batch["wave"]["1"]
    assert wave["i0"] == 0 and wave["fs"] == 120.0
    assert wave["y"] == [1.0] * 12 + [None] * 12 + [1.0] * 12
    assert batch["vitals"]["1"]["t"] == pytest.approx(1000.3)


def test_state_stays_bounded_over_an_hour() -> None:
    hub = WardHub("w", recent_beats=50, detail_beats=5)
    sub = hub.subscribe()
    for k in range(36_000):  # one hour of 0.1 s chunks
        hub.on_samples("1", FS, k * 36, np.zeros(36), t0=k * 0.1)
        if k % 8 == 0:
            hub.on_beat(
                "1",
                beat_id=f"w:1:{k}",
                sample=k * 36,
                t=k * 0.1,
                score=2.0,
                threshold=1.0,
                anomalous=True,
                hr_bpm=75.0,
                errors=[0.1] * 64,
            )
        if k % 2 == 0:
            hub.flush(k * 0.1)
            if k % 1000 == 0:
                sub.drain()  # a client that reads now and then
    st_ = hub._beds["1"]
    assert st_.raw is not None and st_.raw.capacity == 30 * 360
    assert st_.wave is not None and st_.wave.capacity == 10 * 120
    assert len(st_.beats) == 50 and len(st_.details) == 5
    assert len(sub) <= hub.settings.client_queue
    assert len(json.dumps(hub.snapshot())) < 200_000


def test_a_slow_client_loses_old_waveforms_never_alarms() -> None:
    hub = WardHub("w", client_queue=8)
    slow = hub.subscribe()
    fast = hub.subscribe()
    alarm = {"id": "a1", "bed": "1", "priority": "high", "state": "active", "type": "asystole"}
    for k in range(100):
        hub.on_samples("1", FS, k * 36, np.zeros(36))
        hub.flush(float(k))
        if k == 10:
            hub.on_alarm(alarm)
        if k % 5 == 0:
            fast.drain()
    frames = _frames(slow)
    assert len(frames) <= 8
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["hello", "alarm"]  # kept although older than every waveform frame
    assert kinds.count("batch") == len(frames) - 2
    assert frames[-1]["t"] == 99.0  # the newest waveforms are the ones kept
    assert slow.dropped == 1 + 100 + 1 - len(frames)  # hello, batches, alarm
    assert not slow.overflowed


def test_a_client_that_never_reads_is_cut_off() -> None:
    hub = WardHub("w", client_queue=2)
    sub = hub.subscribe()
    for k in range(40):
        hub.on_alarm({"id": f"a{k}", "bed": "1", "priority": "high", "state": "active"})
    assert sub.overflowed


def test_alarms_shown_per_bed_until_they_end() -> None:
    hub = WardHub("w")
    hub.on_alarm(
        {"id": "t", "bed": "1", "priority": "technical", "state": "active", "started_at": 5.0}
    )
    hub.on_alarm({"id": "h", "bed": "1", "priority": "high", "state": "active", "started_at": 1.0})
    assert hub.beds()[0]["alarm"]["id"] == "h" and hub.beds()[0]["n_alarms"] == 2
    hub.on_alarm({"id": "h", "bed": "1", "priority": "high", "state": "ended"})
    assert hub.beds()[0]["alarm"]["id"] == "t"
    assert hub.bed_summary("1")["alarms"] == [
        {"id": "t", "bed": "1", "priority": "technical", "state": "active", "started_at": 5.0}
    ]
    assert hub.bed_summary("nope") is None and hub.beat_detail("1", "x") is None


def test_heart_rate_is_a_short_average_and_goes_blank_in_asystole() -> None:
    hub = WardHub("w")
    rrs = [None, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    t = 100.0
    for i, rr in enumerate(rrs):
        t += rr or 0.0
        hub.on_beat(
            "1",
            beat_id=str(i),
            sample=i,
            t=t,
            score=0.1,
            threshold=1.0,
            anomalous=False,
            rr_s=rr,
            hr_bpm=None if rr is None else 60 / rr,
        )
        hub.on_samples("1", FS, round((t - 100.0) * FS), np.zeros(1), t0=t)
        if i == 3:
            assert hub.beds()[0]["hr_bpm"] == pytest.approx(60 / ((1 + 1 + 0.5) / 3), abs=0.1)
    assert hub.beds()[0]["hr_bpm"] == 120.0  # mean of the last four RR intervals
    # samples keep coming but no beat: after 6 s the rate is no longer shown
    start = hub._beds["1"].raw.end
    hub.on_samples("1", FS, start, np.zeros(int(5 * FS)), t0=t + 0.01)
    assert hub.beds()[0]["hr_bpm"] == 120.0
    hub.on_samples("1", FS, start + int(5 * FS), np.zeros(int(2 * FS)), t0=t + 5.01)
    assert hub.beds()[0]["hr_bpm"] is None


def _beats(hub: WardHub, n: int, rr: float, t: float, cls: str | None = "N") -> float:
    for _ in range(n):
        t += rr
        hub.on_beat(
            "1",
            beat_id=f"b{t:.3f}",
            sample=round(t * FS),
            t=t,
            score=0.1,
            threshold=1.0,
            anomalous=False,
            rr_s=rr,
            hr_bpm=60 / rr,
            cls=cls,
        )
    hub.on_samples("1", FS, round(t * FS), np.zeros(1), t0=t)
    return t


def test_rhythm_label_follows_episodes_technical_conditions_and_rate() -> None:
    hub = WardHub("w")
    sub = hub.subscribe()
    assert hub.beds() == [] and _frames(sub)[0]["type"] == "hello"
    t = _beats(hub, 6, 0.8, 100.0)
    assert hub.beds()[0]["rhythm"] == "SR 75"
    t = _beats(hub, 6, 1.2, t)
    assert hub.beds()[0]["rhythm"] == "SB 50"
    hub.on_episode("1", "afib", True, t, {"hr_bpm": 118.0, "beats": 12})
    t = _beats(hub, 6, 60 / 118, t)
    assert hub.beds()[0]["rhythm"] == "AFIB 118"
    hub.on_episode("1", "vt", True, t, {"hr_bpm": 180.0})
    assert hub.beds()[0]["rhythm"] == "VT"
    hub.on_status("1", noisy=True)
    assert hub.beds()[0]["rhythm"] == "ARTIFACT"  # analysis suspended: no rhythm call
    hub.on_episode("1", "vf", True, t, {})
    assert hub.beds()[0]["rhythm"] == "VF"  # VF is called through artifact
    hub.on_episode("1", "vf", False, t + 5, {})
    hub.on_episode("1", "vt", False, t + 5, {})
    hub.on_status("1", noisy=False)
    assert hub.beds()[0]["rhythm"] == "AFIB 118"
    hub.on_episode("1", "afib", False, t + 5, {})
    hub.on_episode("1", "svt", True, t + 5, {})
    t = _beats(hub, 6, 0.375, t + 5)
    assert hub.beds()[0]["rhythm"] == "SVT 160"
    hub.on_episode("1", "svt", False, t, {})
    hub.on_alarm(
        {
            "id": "as",
            "bed": "1",
            "priority": "high",
            "state": "active",
            "type": "asystole",
            "started_at": t + 4,
        }
    )
    assert hub.beds()[0]["rhythm"] == "ASYS"
    hub.on_alarm(
        {
            "id": "as",
            "bed": "1",
            "priority": "high",
            "state": "latched",
            "type": "asystole",
            "started_at": t + 4,
        }
    )
    assert hub.beds()[0]["rhythm"] == "ST 160"
    hub.on_status("1", lead_ok=False)
    assert hub.beds()[0]["rhythm"] is None  # nothing to analyse
    hub.on_episode("1", "bogus", True, t, {})  # unknown types are ignored
    # the label goes out with the ward state over the websocket
    hub.flush(t)
    frames = _frames(sub)
    batch = [f for f in frames if f["type"] == "batch"][-1]
    assert "rhythm" in batch["vitals"]["1"]
    assert hub.snapshot()["beds"][0]["rhythm"] is None


def test_beats_carry_their_class_into_the_list_and_the_detail() -> None:
    hub = WardHub("w")
    hub.on_samples("1", FS, 0, np.zeros(int(10 * FS)), t0=100.0)
    for i, cls in enumerate(["N", "V", "S", "F", "Q", None, "bogus"]):
        hub.on_beat(
            "1",
            beat_id=f"b{i}",
            sample=int((i + 1) * FS),
            t=101.0 + i,
            score=0.2,
            threshold=1.0,
            anomalous=False,
            rr_s=1.0,
            hr_bpm=60.0,
            cls=cls,
        )
    beats = hub.bed_summary("1")["beats"]
    assert [(b["cls"], b["class_name"]) for b in beats] == [
        ("N", "normal"),
        ("V", "PVC"),
        ("S", "PAC"),
        ("F", "fusion"),
        ("Q", "unclassified"),
        (None, "unknown"),
        (None, "unknown"),
    ]
    detail = hub.beat_detail("1", "b1")
    assert detail["cls"] == "V" and detail["class_name"] == "PVC" and "signal" in detail
    assert list(hub._beds["1"].details) == ["b1", "b2", "b3"]  # ectopic beats are kept
