"""The alerting service end to end on a real broker: protocol messages in, alarms in the SQLite
store, on the websocket feed and on MQTT; malformed input counted and survived; restart without
duplicate alarms."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect

from alerting.config import AlertingConfig
from alerting.service import AlertingService
from alerting.store import AlarmStore
from ecgcommon.protocol import BeatResult
from tests.helpers import alerting as harness
from tests.helpers.alerting import (
    TOKEN,
    Publisher,
    beat,
    ecg_like,
    get_json,
    http,
    metric_value,
    wait_for,
)
from tests.helpers.mqtt import Subscriber
from tests.helpers.ports import free_port

FS = 360.0


@dataclass
class Ward:
    """A running alerting service of a fresh ward and a publisher speaking to it."""

    svc: AlertingService
    pub: Publisher
    name: str
    cfg: AlertingConfig


@pytest.fixture
def ward(broker, unique_ward: str, tmp_path: Path) -> Iterator[Ward]:
    cfg = harness.make_config(broker, unique_ward, tmp_path / "alarms.db")
    with harness.running_alerting(cfg) as svc:
        pub = Publisher(broker, unique_ward)
        try:
            yield Ward(svc, pub, unique_ward, cfg)
        finally:
            pub.close()


def regular_beats(
    ward: str, bed: str, t0: float, n: int, rr: float = 0.8, cls: str | None = None
) -> list[BeatResult]:
    """`n` beats every `rr` s from 0.2 s after `t0`, as the detector reports them."""
    return [
        beat(ward, bed, round((0.2 + i * rr) * FS), FS, t0, None if i == 0 else rr, cls=cls)
        for i in range(n)
    ]


def alarms_of(port: int, query: str, type_: str) -> list[dict]:
    """The API's alarms for `query` (e.g. "?bed=9&state=open") of one type."""
    return [a for a in get_json(port, "/api/alarms" + query)["alarms"] if a["type"] == type_]


def _ws_frames(port: int, frames: list[dict], stop: threading.Event) -> threading.Thread:
    """Collect websocket frames in the background until `stop` is set."""
    ws = connect(f"ws://127.0.0.1:{port}/ws?token={TOKEN}", open_timeout=5)

    def run() -> None:
        with ws:
            while not stop.is_set():
                try:
                    frames.append(json.loads(ws.recv(timeout=0.2)))
                except TimeoutError:
                    continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_tachycardia_beats_raise_an_alarm_everywhere(broker, ward: Ward) -> None:
    """Beats at 170 bpm raise an extreme tachycardia alarm: stored in SQLite, sent on the
    websocket (with the bed's moving waveform) and published on ecg/v1/{ward}/{bed}/alarms."""
    svc, pub = ward.svc, ward.pub
    published = Subscriber(broker, f"ecg/v1/{ward.name}/+/alarms")
    frames: list[dict] = []
    stop = threading.Event()
    reader = _ws_frames(svc.port, frames, stop)
    try:
        pub.status("7")
        t0 = time.time() - 6.0
        rr = 60.0 / 170.0
        pub.stream(
            "7", t0, ecg_like(int(6 * FS), FS, rr), regular_beats(ward.name, "7", t0, 16, rr)
        )

        def alarm_frames() -> list[dict]:
            return [f["alarm"] for f in frames if f["type"] == "alarm"]

        got = wait_for(lambda: [a for a in alarm_frames() if a["type"] == "extreme_tachy"])
        alarm = got[0]
        assert alarm["bed"] == "7" and alarm["priority"] == "high"
        assert alarm["state"] == "active"
        with AlarmStore(ward.cfg.db_path) as store:  # stored before it was broadcast
            stored = store.get(alarm["id"])
        assert stored is not None and stored.type.value == "extreme_tachy"
        published.wait_for(
            lambda: any(
                doc["alarm"]["id"] == alarm["id"] and doc["kind"] == "raised"
                for doc in (json.loads(m.payload) for m in published.messages)
            )
        )

        def waves() -> list[dict]:
            return [f["wave"]["7"] for f in frames if f["type"] == "batch" and "7" in f["wave"]]

        # all 6 s at 360 Hz arrive, decimated by 3 to 120 Hz, in order
        wait_for(lambda: sum(len(w["y"]) for w in waves()) == 6 * 120)
        starts = [w["i0"] for w in waves()]
        assert starts == sorted(starts) and starts[0] == 0
        assert waves()[0]["fs"] == 120.0
        bed = get_json(svc.port, "/api/beds/7")
        assert round(bed["hr_bpm"]) == 170
        assert bed["status"]["state"] == "online"
        assert metric_value(svc.port, "ecg_alerting_messages_total", kind="samples") == 60
        raised = metric_value(
            svc.port, "ecg_alarms_raised_total", type="extreme_tachy", priority="high"
        )
        assert raised == 1
    finally:
        stop.set()
        reader.join(5)
        published.close()


def test_malformed_messages_are_counted_and_the_service_carries_on(
    broker, unique_ward, tmp_path: Path
) -> None:
    cfg = harness.make_config(broker, unique_ward, tmp_path / "alarms.db", max_beds=2)
    with harness.running_alerting(cfg) as svc:
        pub = Publisher(broker, unique_ward)
        try:
            pub.status("1")
            pub.status("2")
            pub.status("3")  # a third bed is one too many here
            pub.raw("1", "samples", b"XXXX not a frame")
            pub.raw("1", "beats", b"{not json")
            pub.raw("1", "events", b'{"bed": "1", "type": "lead_off"}')  # no t
            pub.raw("1", "status", b'{"state": "sleeping"}')
            pub.raw(
                "1",
                "beats",
                json.dumps(
                    {
                        "beats": [
                            {
                                "bed": "9",
                                "beat_id": "x",
                                "sample": 1,
                                "t": time.time(),
                                "rr_s": None,
                                "hr_bpm": None,
                                "score": 0.1,
                                "threshold": 1.0,
                                "anomalous": False,
                            }
                        ]
                    }
                ).encode(),
            )
            # ... and a good message after them still raises its alarm
            pub.event("2", "lead_off", True, time.time())
            alarms = wait_for(lambda: get_json(svc.port, "/api/alarms?bed=2&state=open")["alarms"])
            assert [a["type"] for a in alarms] == ["lead_off"]
            assert alarms[0]["priority"] == "technical"
            name = "ecg_alerting_dropped_messages_total"
            assert metric_value(svc.port, name, reason="bad_magic") == 1
            assert metric_value(svc.port, name, reason="bad_json") == 1
            assert metric_value(svc.port, name, reason="bad_t") == 1
            assert metric_value(svc.port, name, reason="bad_state") == 1
            assert metric_value(svc.port, name, reason="bed_mismatch") == 1
            assert metric_value(svc.port, name, reason="too_many_beds") == 1
            assert [b["bed"] for b in get_json(svc.port, "/api/beds")["beds"]] == ["1", "2"]
            health = get_json(svc.port, "/healthz", token=None)
            assert health["status"] == "ok" and health["mqtt_connected"] is True
        finally:
            pub.close()


def test_restart_restores_open_alarms_without_duplicates(
    broker, unique_ward, tmp_path: Path
) -> None:
    cfg = harness.make_config(broker, unique_ward, tmp_path / "alarms.db")
    t = time.time()
    with harness.running_alerting(cfg) as svc:
        pub = Publisher(broker, unique_ward)
        pub.event("12", "lead_off", True, t)
        first = wait_for(lambda: get_json(svc.port, "/api/alarms?bed=12&state=open")["alarms"])
        pub.close()
    assert len(first) == 1
    with harness.running_alerting(cfg) as svc:
        restored = get_json(svc.port, "/api/alarms?bed=12&state=open")["alarms"]
        assert [a["id"] for a in restored] == [first[0]["id"]]
        beds = get_json(svc.port, "/api/beds")["beds"]
        assert beds[0]["alarm"]["id"] == first[0]["id"]
        pub = Publisher(broker, unique_ward)
        try:
            pub.event("12", "lead_off", True, t + 5)  # the same condition, seen again
            pub.event("12", "lead_off", False, t + 8)  # then the lead is back
            ended = wait_for(
                lambda: [
                    a
                    for a in get_json(svc.port, "/api/alarms?bed=12")["alarms"]
                    if a["state"] == "ended"
                ]
            )
        finally:
            pub.close()
        assert [a["id"] for a in ended] == [first[0]["id"]]
        assert get_json(svc.port, "/api/alarms?bed=12&state=open")["alarms"] == []
    with AlarmStore(cfg.db_path) as store:
        assert store.count() == 1


def test_python_m_alerting_serves_and_stops_cleanly_on_sigterm(
    broker, unique_ward, tmp_path: Path
) -> None:
    """The real entry point: configured from the environment, healthy once connected, a clean
    exit (code 0) on SIGTERM; a bad configuration exits 2 with the field named."""
    port = free_port()
    env = dict(
        os.environ,
        MQTT_HOST=broker.host,
        MQTT_PORT=str(broker.port),
        ECG_WARD=unique_ward,
        ALERTING_PORT=str(port),
        ALERTING_TOKEN=TOKEN,
        ALERTING_DB=str(tmp_path / "a.db"),
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "alerting"],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def healthy() -> bool:
            try:
                return http(port, "/healthz", token=None)[0] == 200
            except OSError:
                return False

        wait_for(healthy, timeout=20)
        assert http(port, "/api/beds")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run(
        [sys.executable, "-m", "alerting", "--mqtt-port", "0"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "mqtt_port" in bad.stderr


def test_asystole_only_once_the_detector_analyses_the_bed(ward: Ward) -> None:
    """Samples with no beat at all (detector not analysing yet) raise nothing; beats that stop
    while samples keep coming raise asystole."""
    svc, pub = ward.svc, ward.pub
    t0 = time.time() - 30.0
    pub.stream("5", t0, ecg_like(int(8 * FS), FS, 0.8), [])
    wait_for(lambda: metric_value(svc.port, "ecg_alerting_messages_total", kind="samples") == 80)
    assert get_json(svc.port, "/api/alarms?bed=5")["alarms"] == []
    # beats for 3 s, then none for 9 s while the samples go on
    t1 = t0 + 10.0
    y = ecg_like(int(12 * FS), FS, 0.8)
    y[int(3 * FS) :] = 0.02
    beats = regular_beats(ward.name, "5", t1, 4)
    pub.stream("5", t1, y, beats, watermark=True)
    alarms = wait_for(lambda: alarms_of(svc.port, "?bed=5&priority=high", "asystole"))
    assert alarms[0]["started_at"] == pytest.approx(beats[-1].t + 4.0, abs=0.01)


def test_a_detector_that_stops_analysing_is_a_technical_alarm_not_asystole(ward: Ward) -> None:
    """Beats and watermarks stop while samples go on: the detector is gone, so asystole can no
    longer be detected; the ward is told so (signal lost), and no asystole is claimed."""
    svc, pub = ward.svc, ward.pub
    t0 = time.time() - 30.0
    y = ecg_like(int(4 * FS), FS, 0.8)
    pub.stream("6", t0, y, regular_beats(ward.name, "6", t0, 4), watermark=True)
    # the samples go on for 12 s, nothing comes back from the detector
    for k in range(int(4 * FS), int(16 * FS), 360):
        pub.samples("6", k, t0 + k / FS, ecg_like(360, FS, 0.8, start=k))
    lost = wait_for(lambda: alarms_of(svc.port, "?bed=6", "signal_lost"))
    assert "detector" in json.dumps(lost[0]["evidence"])
    assert not alarms_of(svc.port, "?bed=6&priority=high", "asystole")


def test_vf_alarms_through_artifact_and_each_vf_in_it_is_announced(ward: Ward) -> None:
    """cudb cu03/cu31 end to end: `noisy` and `vf` in either order give a VFIB alarm; a VF that
    ends inside the artifact latches its alarm (it was left open, so the next VF was no new
    announcement), and the next VF sounds again."""
    svc, pub = ward.svc, ward.pub
    t0 = time.time() - 30.0
    y = ecg_like(int(10 * FS), FS, 0.8)
    pub.stream("9", t0, y, regular_beats(ward.name, "9", t0, 12, cls="N"), watermark=True)

    def vfib() -> list[dict]:
        return alarms_of(svc.port, "?bed=9&state=open", "vfib")

    pub.event("9", "noisy", True, t0 + 9.6, {"lead": "MLII", "sqi": 0.1})
    pub.event("9", "vf", True, t0 + 10.0, {"onset_t": t0 + 9.0})
    (vf,) = wait_for(vfib)
    assert vf["state"] == "active"
    pub.event("9", "vf", False, t0 + 14.0)  # ends inside the artifact
    wait_for(lambda: [a for a in vfib() if a["state"] == "latched"])
    pub.event("9", "vf", True, t0 + 16.0, {"onset_t": t0 + 15.0})
    again = wait_for(lambda: [a for a in vfib() if a["state"] == "active"])
    assert again[0]["id"] == vf["id"] and again[0]["evidence"]["occurrences"] == 2
    types = {a["type"] for a in get_json(svc.port, "/api/alarms?bed=9&state=open")["alarms"]}
    assert types == {"vfib", "noisy"}


def test_rhythm_episodes_over_the_broker_raise_named_alarms_and_label_the_bed(ward: Ward) -> None:
    """The detector's `vf` and `afib` events: a VFIB alarm (high, its evidence the detector's
    detail) replacing the asystole its silence gave, an AFIB alarm, and the bed's rhythm label;
    a malformed episode event is counted and dropped."""
    svc, pub = ward.svc, ward.pub
    t0 = time.time() - 20.0
    y = ecg_like(int(10 * FS), FS, 0.8)
    beats = regular_beats(ward.name, "8", t0, 5, cls="N")
    pub.stream("8", t0, y, beats, watermark=True)  # beats stop at 3.4 s: asystole
    wait_for(lambda: alarms_of(svc.port, "?bed=8&state=open", "asystole"))
    detail = {"hr_bpm": None, "beats": None, "onset_t": t0 + 3.5, "lead": "MLII"}
    pub.event("8", "vf", True, t0 + 9.0, detail)
    vf = wait_for(lambda: alarms_of(svc.port, "?bed=8&state=open", "vfib"))[0]
    assert vf["priority"] == "high" and vf["label"] == "VFIB"
    assert vf["evidence"]["lead"] == "MLII" and vf["evidence"]["source"] == "episode"
    assert [a["type"] for a in get_json(svc.port, "/api/alarms?bed=8&state=open")["alarms"]] == [
        "vfib"
    ], "the asystole gave way to the VF that explains it"
    assert get_json(svc.port, "/api/beds/8")["rhythm"] == "VF"
    pub.event("8", "vf", False, t0 + 12.0)
    pub.event("8", "afib", True, t0 + 12.5, {"hr_bpm": 96.0, "beats": 10})
    wait_for(lambda: get_json(svc.port, "/api/beds/8")["rhythm"] == "AFIB")  # no rate
    af = wait_for(lambda: alarms_of(svc.port, "?bed=8", "afib"))[0]
    assert af["priority"] == "medium" and af["label"] == "AFIB"
    # an episode is found after the fact: its onset may lie a minute back
    onset = time.time() - 60.0
    pub.event("8", "vt", True, onset, {"hr_bpm": 150.0, "beats": 5})
    vt = wait_for(lambda: alarms_of(svc.port, "?bed=8", "vtach"))[0]
    assert vt["started_at"] == pytest.approx(onset, abs=1e-3)
    # a malformed episode event (detail not an object) is counted and dropped
    bad = {"bed": "8", "type": "vt", "active": True, "t": t0 + 13, "detail": ["x"]}
    pub.raw("8", "events", json.dumps(bad).encode())
    name = "ecg_alerting_dropped_messages_total"
    wait_for(lambda: metric_value(svc.port, name, reason="bad_detail") == 1)
    assert get_json(svc.port, "/api/beds/8")["rhythm"] == "VT"
