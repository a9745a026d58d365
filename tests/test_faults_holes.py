"""A hole in a bed's analysis is no arrhythmia (docs/faults.md): beats messages carry
`analysed_from`, where the detector's unbroken analysis of the bed began; the real alerting
service on a real broker restarts the bed's pause and asystole clocks there instead of measuring
the outage as a pause. A beats message without it (an older detector) is measured as before."""

from __future__ import annotations

import time
from pathlib import Path

from ecgcommon import protocol
from tests.helpers.alerting import (
    Publisher,
    beat,
    ecg_like,
    get_json,
    make_config,
    metric_value,
    running_alerting,
    wait_for,
)

FS = 360.0
RR = 0.8


def _send(
    pub: Publisher, bed: str, beats: list[protocol.BeatResult], since: float | None = None
) -> None:
    pub.raw(bed, "beats", protocol.encode_beats(beats, analysed_from=since))


def test_a_new_detector_stream_after_a_hole_is_no_pause(
    broker, unique_ward, tmp_path: Path
) -> None:
    cfg = make_config(broker, unique_ward, tmp_path / "alarms.db")
    with running_alerting(cfg) as svc:
        pub = Publisher(broker, unique_ward)
        try:
            t0 = time.time() - 30.0
            for bed in ("8", "9"):
                first = [
                    beat(
                        unique_ward,
                        bed,
                        round((0.2 + i * RR) * FS),
                        FS,
                        t0,
                        None if i else RR,
                        cls="N",
                    )
                    for i in range(8)
                ]
                _send(pub, bed, first, since=t0)
                # 3.2 s without a beat (> the 2.5 s pause): on bed 8 the detector says its
                # analysis only began again 2.9 s after the last beat (a restart, lost samples)
                s1 = first[-1].sample + round(3.2 * FS)
                second = [
                    beat(
                        unique_ward,
                        bed,
                        s1 + round(i * RR * FS),
                        FS,
                        t0,
                        None if i == 0 else RR,
                        cls="N",
                    )
                    for i in range(6)
                ]
                _send(pub, bed, second, since=first[-1].t + 2.9 if bed == "8" else None)
            wait_for(lambda: metric_value(svc.port, "ecg_bed_beats_total", bed="9") == 14)
            wait_for(lambda: metric_value(svc.port, "ecg_bed_beats_total", bed="8") == 14)
            alarms = get_json(svc.port, "/api/alarms?limit=100")["alarms"]
            # bed 9 (no analysed_from) measures the hole: the test can tell the two apart
            assert [a["type"] for a in alarms if a["bed"] == "9"] == ["pause"]
            assert [a for a in alarms if a["bed"] == "8"] == []
            assert metric_value(svc.port, "ecg_alerting_analysis_holes_total") == 1
        finally:
            pub.close()


def test_analysed_from_never_moves_the_clock_past_the_message(
    broker, unique_ward, tmp_path: Path
) -> None:
    """A corrupt `analysed_from` an hour ahead cannot hold the asystole clock off for an hour:
    it is bounded by the message's own (clock-checked) times, so the asystole after the last
    beat still fires 4 s after it."""
    cfg = make_config(broker, unique_ward, tmp_path / "alarms.db")
    with running_alerting(cfg) as svc:
        pub = Publisher(broker, unique_ward)
        try:
            t0 = time.time() - 30.0
            beats = [
                beat(
                    unique_ward, "5", round((0.2 + i * RR) * FS), FS, t0, None if i else RR, cls="N"
                )
                for i in range(6)
            ]
            _send(pub, "5", beats[:3], since=t0)
            _send(pub, "5", beats[3:], since=t0 + 3600.0)  # forged: an hour ahead
            until = beats[-1].t + 5.0
            pub.raw("5", "beats", protocol.encode_beats([], analysed_until=until))
            got = wait_for(
                lambda: [
                    a
                    for a in get_json(svc.port, "/api/alarms")["alarms"]
                    if a["type"] == "asystole"
                ]
            )
            assert abs(got[0]["started_at"] - (beats[-1].t + 4.0)) < 0.01
        finally:
            pub.close()


def test_a_short_gap_in_the_samples_is_no_stall_but_a_dead_detector_after_it_is(
    broker, unique_ward, tmp_path: Path
) -> None:
    """Samples missing for 1 s, then 2.5 s while the detector re-learns (no beat, no
    watermark): no `signal_lost`. The same gap followed by 6 s without analysis: `signal_lost`
    (the re-learning allowance is 2 s, then the 3 s stall applies)."""
    cfg = make_config(broker, unique_ward, tmp_path / "alarms.db")
    with running_alerting(cfg) as svc:
        pub = Publisher(broker, unique_ward)
        try:
            t0 = time.time() - 40.0
            for bed, silent_s in (("3", 2.5), ("4", 6.0)):
                y = ecg_like(int(4 * FS), FS, RR)
                beats = [
                    beat(unique_ward, bed, round((0.2 + i * RR) * FS), FS, t0, None if i else RR)
                    for i in range(5)
                ]
                pub.stream(bed, t0, y, beats, watermark=True)
                start = int(5 * FS)  # 1 s of samples never arrive
                for k in range(start, start + int(silent_s * FS), 36):
                    pub.samples(bed, k, t0 + k / FS, ecg_like(36, FS, RR, start=k))
            lost = wait_for(
                lambda: [
                    a
                    for a in get_json(svc.port, "/api/alarms")["alarms"]
                    if a["type"] == "signal_lost"
                ]
            )
            assert [a["bed"] for a in lost] == ["4"]
            wait_for(
                lambda: (
                    metric_value(svc.port, "ecg_alerting_messages_total", kind="samples")
                    >= 2 * 40 + int(8.5 * FS / 36)
                )
            )
            alarms = get_json(svc.port, "/api/alarms?bed=3")["alarms"]
            assert alarms == []
        finally:
            pub.close()
