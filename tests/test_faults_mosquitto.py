"""Faults on the default Mosquitto path, on real components (docs/faults.md): a real Mosquitto,
the real detector, alerting and streamer as subprocesses (`python -m ...`), killed and restarted
as an operator or a crash would. Faults are facts, never arrhythmias: a dead or hung detector is
`signal_lost`, never asystole or pause; a restarted alerting service raises the alarm whose cause
fell in its outage; a dead broker makes /healthz unhealthy and the dashboard OFFLINE."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.helpers.alerting import TOKEN, Publisher, beat, get_json, metric_value, wait_for
from tests.helpers.chain import RECORDS, Chain

FS = 360.0
pytestmark = pytest.mark.slow


@pytest.fixture
def chain(tmp_path: Path, unique_ward: str) -> Iterator[Chain]:
    c = Chain(tmp_path, unique_ward)
    try:
        yield c
    finally:
        c.close()


def _beds() -> list[str]:
    return [f"{i + 1:02d}" for i in range(len(RECORDS))]  # the streamer's bed names


def _ward_running(chain: Chain, data_dir: Path) -> None:
    """Alerting, detector and the streamer's beds, until every bed has 5 beats at alerting."""
    chain.start_alerting()
    chain.start_detector()
    chain.wait_healthy(chain.alerting_port)
    chain.wait_healthy(chain.detector_port)
    chain.start_streamer(data_dir)
    try:
        for bed in _beds():
            wait_for(lambda b=bed: chain.beats_seen(b) >= 5, timeout=60, every=0.2)
    except AssertionError as exc:
        logs = "\n".join(f"--- {n}\n{chain.log(n)}" for n in ("streamer", "detector", "alerting"))
        raise AssertionError(f"{exc}\n{logs}") from None


def _beats_after(chain: Chain, counts: dict[str, float], more: int, timeout: float) -> None:
    """Wait until every bed has `more` beats beyond `counts` (the new detector analyses it)."""
    for bed in _beds():
        wait_for(lambda b=bed: chain.beats_seen(b) >= counts[b] + more, timeout=timeout, every=0.2)


def _no_false_gap_alarms(chain: Chain) -> None:
    found = [a for a in chain.alarms() if a["type"] in ("asystole", "pause")]
    assert found == [], json.dumps(found, indent=1) + chain.log("alerting")


def test_detector_kill_9_and_restart_is_signal_lost_never_asystole_or_pause(
    chain: Chain, data_dir: Path
) -> None:
    """kill -9 the detector mid-stream and start it again once the outage is reported (the
    ward's policy, real records at 1x): the outage is a technical alarm, the new detector stream
    is a hole that the alerting side sees (ecg_alerting_analysis_holes_total), and no bed gets
    asystole or pause. (A restart quicker than the 3 s stall is a hole with no alarm: the
    restart waits for the alarm so that the outage is longer than that on any machine.)"""
    _ward_running(chain, data_dir)
    chain.kill("detector")
    counts = {bed: chain.beats_seen(bed) for bed in _beds()}
    wait_for(
        lambda: (
            {a["bed"] for a in chain.alarms(priority="technical") if a["type"] == "signal_lost"}
            == set(_beds())
        ),
        timeout=15,
        every=0.1,
    )
    chain.start_detector()
    # 12 beats (~10 s at these rates) after the new detector's first: a false asystole or
    # pause measured across the outage would have been raised at its first beat or watermark
    _beats_after(chain, counts, 12, timeout=90)
    holes = metric_value(chain.alerting_port, "ecg_alerting_analysis_holes_total")
    assert holes >= len(RECORDS), chain.log("alerting")
    _no_false_gap_alarms(chain)
    lost = {a["bed"] for a in chain.alarms(priority="technical") if a["type"] == "signal_lost"}
    assert lost == set(_beds()), "the detector outage (> 3 s) must be reported on every bed"
    # ... and it ends once the new detector analyses the bed again
    wait_for(
        lambda: not [a for a in chain.alarms(state="open") if a["type"] == "signal_lost"],
        timeout=30,
        every=0.2,
    )


def test_detector_down_3_s_is_signal_lost_not_asystole(chain: Chain, data_dir: Path) -> None:
    """A detector that stops for 3 s (hung: SIGSTOP, then SIGCONT): signal_lost on every bed
    before the 4 s asystole criterion could fire, and no asystole or pause afterwards."""
    _ward_running(chain, data_dir)
    chain.kill("detector", signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        lost = wait_for(
            lambda: (
                {a["bed"] for a in chain.alarms(priority="technical") if a["type"] == "signal_lost"}
                == set(_beds())
            ),
            timeout=10,
            every=0.1,
        )
        assert lost
        health = get_json(chain.alerting_port, "/healthz", token=None)
        assert health["beds_not_analysed"] == len(RECORDS) and health["status"] == "ok"
        assert time.monotonic() - t_stop < 4.0 + 1.0  # raised within ~3 s of samples
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t_stop)))  # the outage itself
    finally:
        chain.kill("detector", signal.SIGCONT)
    counts = {bed: chain.beats_seen(bed) for bed in _beds()}
    _beats_after(chain, counts, 10, timeout=60)
    _no_false_gap_alarms(chain)
    wait_for(
        lambda: not [a for a in chain.alarms(state="open") if a["type"] == "signal_lost"],
        timeout=30,
        every=0.2,
    )


def test_alerting_kill_9_and_restart_raises_the_alarm_whose_cause_fell_in_the_outage(
    chain: Chain,
) -> None:
    """Alerting is killed (-9); while it is down, the detector's beats (QoS 1, as the detector
    publishes them) show an extreme tachycardia. Restarted, it gets them from its persistent
    session and raises the alarm, with the signal time of the beats in the outage."""
    chain.start_alerting()
    chain.wait_healthy(chain.alerting_port)
    pub = Publisher(chain.broker, chain.ward)
    try:
        t0 = time.time() - 20.0
        normal = [
            beat(
                chain.ward,
                "4",
                round((0.3 + i * 0.8) * FS),
                FS,
                t0,
                None if i == 0 else 0.8,
                cls="N",
            )
            for i in range(10)
        ]
        pub.beats("4", normal)
        wait_for(lambda: chain.beats_seen("4") == 10, timeout=20)
        assert chain.alarms() == []
        chain.kill("alerting")
        rr = 60.0 / 175.0
        t1 = normal[-1].t + rr
        fast = [
            beat(chain.ward, "4", round((t1 - t0 + i * rr) * FS), FS, t0, rr, cls="N")
            for i in range(12)
        ]
        pub.beats("4", fast)  # QoS 1, while alerting is down
        # bed 5: beats 80 s old by the restart (a long outage), older than live data may be
        t5 = time.time() - 80.0
        old = [
            beat(
                chain.ward, "5", round((0.3 + i * rr) * FS), FS, t5, None if i == 0 else rr, cls="N"
            )
            for i in range(12)
        ]
        pub.beats("5", old)
        chain.start_alerting()
        chain.wait_healthy(chain.alerting_port)
        raised = wait_for(
            lambda: [a for a in chain.alarms() if a["type"] == "extreme_tachy" and a["bed"] == "4"],
            timeout=20,
        )
        assert len(raised) == 1
        assert t1 <= raised[0]["started_at"] <= fast[-1].t  # its cause fell in the outage
        assert chain.beats_seen("4") == 12  # the replayed beats, each once
        late = wait_for(lambda: [a for a in chain.alarms() if a["bed"] == "5"], timeout=10)
        assert [a["type"] for a in late] == ["extreme_tachy"]  # no clock_skew for the backlog
        assert old[0].t <= late[0]["started_at"] <= old[-1].t
    finally:
        pub.close()


def test_broker_kill_makes_healthz_unhealthy_and_the_feed_offline_within_5_s(
    chain: Chain,
) -> None:
    """kill -9 Mosquitto: the detector's and alerting's /healthz go unhealthy (503) and the
    dashboard's websocket heartbeat says the bus is down, within 5 s; when the broker is back,
    both reconnect within the capped backoff (a few seconds)."""
    chain.start_alerting()
    chain.start_detector()
    chain.wait_healthy(chain.alerting_port)
    chain.wait_healthy(chain.detector_port)
    ws = connect(f"ws://127.0.0.1:{chain.alerting_port}/ws?token={TOKEN}", open_timeout=5)
    with ws:

        def heartbeat(timeout: float) -> dict:
            deadline = time.monotonic() + timeout
            while True:
                frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                if frame["type"] == "heartbeat":
                    return frame

        assert heartbeat(3.0)["bus_connected"] is True
        chain.kill("mosquitto")
        t_kill = time.monotonic()
        while heartbeat(3.0)["bus_connected"]:
            assert time.monotonic() - t_kill < 5.0, "heartbeats still say the bus is up"
        assert time.monotonic() - t_kill < 5.0
        wait_for(
            lambda: chain.healthz(chain.alerting_port) == 503,
            timeout=5 - (time.monotonic() - t_kill),
            every=0.1,
        )
        wait_for(
            lambda: chain.healthz(chain.detector_port) == 503,
            timeout=5.5 - (time.monotonic() - t_kill),
            every=0.1,
        )
        time.sleep(3.0)  # the broker stays down a while: backoff grows, but it is capped
        chain.start_broker()
        t_back = time.monotonic()
        chain.wait_healthy(chain.alerting_port, timeout=10)
        chain.wait_healthy(chain.detector_port, timeout=10)
        assert time.monotonic() - t_back < 6.0
        while not heartbeat(3.0)["bus_connected"]:
            pass


def test_a_restored_alarm_whose_cause_goes_on_is_not_ended_at_the_restore_grace(
    chain: Chain,
) -> None:
    """A tachycardia alarm is open when alerting is killed (-9); the tachycardia goes on for
    18 s of signal while it is down. Restarted, the alarm is restored, and the replayed beats
    (their signal time more than the 15 s restore grace before the receiver's clock) re-confirm
    it: it is neither ended at the restore grace nor raised twice."""
    chain.start_alerting()
    chain.wait_healthy(chain.alerting_port)
    pub = Publisher(chain.broker, chain.ward)
    rr = 60.0 / 130.0  # above the 120 bpm limit: a medium alarm after 10 s, not latching
    t0 = time.time() - 38.0  # all within the receiver's lateness bound (ecgcommon.limits)
    beats = [
        beat(chain.ward, "6", round((0.3 + i * rr) * FS), FS, t0, None if i == 0 else rr, cls="N")
        for i in range(int(36.0 / rr))
    ]
    before = [b for b in beats if b.t < t0 + 18.0]
    during = beats[len(before) :]
    try:
        pub.beats("6", before)
        (tachy,) = wait_for(lambda: [a for a in chain.alarms() if a["type"] == "tachy"], timeout=20)
        chain.kill("alerting")
        for k in range(0, len(during), 10):  # as the detector sends them: a few per message
            pub.beats("6", during[k : k + 10])
        chain.start_alerting()
        chain.wait_healthy(chain.alerting_port)
        wait_for(lambda: chain.beats_seen("6") == len(during), timeout=20)
        # a few wall-clock ticks (1 s) after the replay: the restored alarm is still open
        ticks = time.monotonic() + 3.0
        while time.monotonic() < ticks:
            found = [a for a in chain.alarms() if a["type"] == "tachy"]
            assert [(a["id"], a["state"]) for a in found] == [(tachy["id"], "active")], found
            time.sleep(0.25)  # watched over wall-clock ticks: staying open is what is tested
    finally:
        pub.close()


def test_broker_kill_and_return_raises_no_false_asystole_or_pause(
    chain: Chain, data_dir: Path
) -> None:
    """kill -9 Mosquitto for a few seconds mid-stream (real records at 1x), then start it
    again: the samples lost meanwhile are a hole in every bed's analysis, never a pause or an
    asystole once everything has reconnected."""
    _ward_running(chain, data_dir)
    chain.kill("mosquitto")
    wait_for(lambda: chain.healthz(chain.alerting_port) == 503, timeout=5, every=0.1)
    time.sleep(4.0)  # the outage itself: longer than the 2.5 s pause criterion
    counts = {bed: chain.beats_seen(bed) for bed in _beds()}
    chain.start_broker()
    _beats_after(chain, counts, 12, timeout=60)
    _no_false_gap_alarms(chain)
    holes = metric_value(chain.alerting_port, "ecg_alerting_analysis_holes_total")
    assert holes >= len(RECORDS), chain.log("alerting")
