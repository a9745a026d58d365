"""The alerting HTTP API and websocket feed over real loopback sockets: token enforcement, alarm
filters, acknowledgement (through the policy, into the store, onto the feed), beat detail with
per-timestep errors, and ECG uploads scored by the real detector's HTTP server."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import wfdb
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from alerting.service import AlertingService
from alerting.store import AlarmStore
from detector.service import DetectorService
from ecgcommon.aami import aami_class
from ecgcommon.records import load_record
from ecgcommon.windowing import WINDOW
from tests.helpers import alerting as harness
from tests.helpers.alerting import TOKEN, get_json, http, metric_value
from tests.helpers.detector import detector_config, running_detector

FS = 360.0


@pytest.fixture(scope="module")
def detector(broker) -> Iterator[DetectorService]:
    """The real detector (ONNX model, HTTP /v1/score) on a free port."""
    with running_detector(detector_config(broker)) as svc:
        yield svc


@pytest.fixture(scope="module")
def scoring(broker, detector, tmp_path_factory) -> Iterator[AlertingService]:
    """An alerting service whose uploads go to the real detector."""
    cfg = harness.make_config(
        broker,
        f"up-{uuid.uuid4().hex[:8]}",
        tmp_path_factory.mktemp("up") / "a.db",
        detector_url=f"http://127.0.0.1:{detector.http_port}",
        detector_token=detector.token,
    )
    with harness.running_alerting(cfg) as svc:
        yield svc


@pytest.fixture(scope="module")
def api(broker, tmp_path_factory) -> Iterator[tuple[AlertingService, str]]:
    """One alerting service for the module, seeded with alarms on beds a1 (lead off, then
    restored: ended), a2 (extreme tachycardia: high) and a3 (lead off: technical, open)."""
    ward = f"api-{uuid.uuid4().hex[:8]}"
    db = tmp_path_factory.mktemp("api") / "alarms.db"
    with harness.running_alerting(harness.make_config(broker, ward, db)) as svc:
        pub = harness.Publisher(broker, ward)
        now = time.time()
        t0 = now - 8.0
        rr = 60.0 / 170.0
        y = harness.ecg_like(int(8 * FS), FS, rr)
        errors = list(np.linspace(0.1, 0.9, WINDOW.n_points))
        beats = [
            harness.beat(
                ward,
                "a2",
                round((0.2 + i * rr) * FS),
                FS,
                t0,
                None if i == 0 else rr,
                score=1.5 if i == 12 else 0.3,
                errors=errors if i == 12 else None,
            )
            for i in range(20)
        ]
        pub.stream("a2", t0, y, beats)
        pub.event("a1", "lead_off", True, now - 5)
        pub.event("a1", "lead_off", False, now - 4)
        pub.event("a3", "lead_off", True, now - 3)
        harness.wait_for(lambda: len(get_json(svc.port, "/api/alarms")["alarms"]) == 3)
        pub.close()
        yield svc, ward


def _alarms(port: int, query: str = "") -> list[dict]:
    return get_json(port, "/api/alarms" + query)["alarms"]


def test_token_is_required(api) -> None:
    svc, _ = api
    for path in ("/api/alarms", "/api/beds", "/api/beds/a2", "/"):
        assert http(svc.port, path, token=None)[0] == 401, path
        assert http(svc.port, path, token="wrong-token-xyz")[0] == 401, path
    status, headers, _ = http(svc.port, "/api/alarms", token=None)
    assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    # ?token= is for the page and the websocket only, not for the API
    assert http(svc.port, f"/api/alarms?token={TOKEN}", token=None)[0] == 401
    assert http(svc.port, "/", token=TOKEN)[0] == 200
    assert http(svc.port, "/healthz", token=None)[0] == 200
    assert http(svc.port, "/metrics", token=None)[0] == 401  # per-bed heart rates: guarded
    assert http(svc.port, "/metrics")[0] == 200
    with pytest.raises(InvalidStatus) as err:
        connect(f"ws://127.0.0.1:{svc.port}/ws", open_timeout=5)
    assert err.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        connect(f"ws://127.0.0.1:{svc.port}/ws?token=nope-nope-nope", open_timeout=5)
    assert metric_value(svc.port, "ecg_alerting_auth_failures_total") >= 11


def test_alarm_filters(api) -> None:
    svc, _ = api
    everything = _alarms(svc.port)
    assert sorted(a["type"] for a in everything) == ["extreme_tachy", "lead_off", "lead_off"]
    assert [a["started_at"] for a in everything] == sorted(
        (a["started_at"] for a in everything), reverse=True
    )
    assert [a["bed"] for a in _alarms(svc.port, "?priority=high")] == ["a2"]
    assert {a["bed"] for a in _alarms(svc.port, "?priority=technical")} == {"a1", "a3"}
    assert [a["bed"] for a in _alarms(svc.port, "?bed=a1")] == ["a1"]
    assert [a["bed"] for a in _alarms(svc.port, "?state=ended")] == ["a1"]
    assert {a["bed"] for a in _alarms(svc.port, "?state=open")} == {"a2", "a3"}
    assert _alarms(svc.port, f"?since={time.time() + 60}") == []
    assert len(_alarms(svc.port, "?limit=1")) == 1
    one = get_json(svc.port, f"/api/alarms/{everything[0]['id']}")
    assert one == everything[0]
    for query, word in [
        ("?priority=urgent", "priority"),
        ("?state=sleeping", "state"),
        ("?since=yesterday", "since"),
        ("?limit=0", "limit"),
        ("?limit=ten", "limit"),
    ]:
        status, _, body = http(svc.port, "/api/alarms" + query)
        assert status == 400 and word in json.loads(body)["error"], query
    assert http(svc.port, "/api/alarms/nope")[0] == 404


def test_acknowledge_goes_through_policy_store_and_feed(api) -> None:
    svc, _ = api
    (tachy,) = _alarms(svc.port, "?priority=high")
    with connect(f"ws://127.0.0.1:{svc.port}/ws?token={TOKEN}", open_timeout=5) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello["type"] == "hello"
        assert tachy["id"] in {a["id"] for a in hello["alarms"]}
        status, _, body = http(
            svc.port,
            f"/api/alarms/{tachy['id']}/ack",
            method="POST",
            body=b'{"by": "nurse kim"}',
            headers={"Content-Type": "application/json"},
        )
        assert status == 200, body
        with AlarmStore(svc.config.db_path) as store:  # durable before the 200 was sent
            in_store = store.get(tachy["id"])
            assert in_store is not None and in_store.acknowledged_by == "nurse kim"
        acked = json.loads(body)["alarm"]
        assert acked["state"] == "acknowledged" and acked["acknowledged_by"] == "nurse kim"

        def ack_frame() -> dict | None:
            while True:
                frame = json.loads(ws.recv(timeout=5))
                if frame["type"] == "alarm" and frame["alarm"]["id"] == tachy["id"]:
                    return frame

        frame = ack_frame()
        assert frame["alarm"]["state"] == "acknowledged"
        assert frame["bed"]["alarm"]["acknowledged_by"] == "nurse kim"
    with AlarmStore(svc.config.db_path) as store:
        assert store.get(tachy["id"]).state.value == "acknowledged"
        assert [a["by"] for a in store.acknowledgements(tachy["id"])] == ["nurse kim"]
    # acknowledging again is harmless; unknown and ended alarms are refused
    assert http(svc.port, f"/api/alarms/{tachy['id']}/ack", method="POST")[0] == 200
    assert http(svc.port, "/api/alarms/a0000/ack", method="POST")[0] == 404
    (ended,) = _alarms(svc.port, "?state=ended")
    status, _, body = http(svc.port, f"/api/alarms/{ended['id']}/ack", method="POST")
    assert status == 409 and "already ended" in json.loads(body)["error"]
    status, _, body = http(svc.port, f"/api/alarms/{tachy['id']}/ack", method="POST", body=b"[1,2")
    assert status == 400
    assert (
        metric_value(svc.port, "ecg_alarm_changes_total", kind="acknowledged", priority="high") == 1
    )


def test_beds_and_beat_detail_with_per_timestep_error(api) -> None:
    svc, ward = api
    beds = get_json(svc.port, "/api/beds")
    assert beds["ward"] == ward
    assert {b["bed"] for b in beds["beds"]} == {"a1", "a2", "a3"}
    a2 = get_json(svc.port, "/api/beds/a2")
    assert round(a2["hr_bpm"]) == 170 and len(a2["beats"]) == 20
    anomalous = [b for b in a2["beats"] if b["anomalous"]]
    assert len(anomalous) == 1
    detail = get_json(svc.port, f"/api/beds/a2/beats/{anomalous[0]['beat_id']}")
    assert detail["errors"] == pytest.approx(list(np.linspace(0.1, 0.9, WINDOW.n_points)), abs=1e-4)
    assert detail["window"]["n_points"] == WINDOW.n_points
    sig = detail["signal"]
    assert sig["fs"] == FS
    assert sig["start"] <= detail["sample"] < sig["start"] + len(sig["y"])
    # a normal beat has no per-timestep error but still its signal
    normal = get_json(svc.port, f"/api/beds/a2/beats/{a2['beats'][5]['beat_id']}")
    assert normal["errors"] == [] and normal["signal"]["y"]
    assert http(svc.port, "/api/beds/a2/beats/nope")[0] == 404
    assert http(svc.port, "/api/beds/zz")[0] == 404


def _post_files(
    port: int, files: list[tuple[str, bytes]], data: dict | None = None
) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/api/score",
        headers={"Authorization": f"Bearer {TOKEN}"},
        files=[("file", (name, io.BytesIO(content))) for name, content in files],
        data=data or {},
        timeout=60,
    )


def test_upload_csv_is_scored_by_the_detector(scoring, data_dir: Path) -> None:
    svc = scoring
    rec = load_record("119", data_dir, sampto=int(FS * 30))
    csv = "time_s,MLII\n" + "\n".join(f"{i / FS:.4f},{v:.3f}" for i, v in enumerate(rec.lead(0)))
    resp = _post_files(svc.port, [("119.csv", csv.encode())], {"fs": "360"})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    truth = [
        s
        for s, sym in zip(rec.ann_samples, rec.ann_symbols, strict=True)
        if aami_class(sym) is not None
    ]
    assert abs(doc["summary"]["n_beats"] - len(truth)) <= 3
    assert doc["fs"] == FS and doc["lead"] == "MLII" and doc["duration_s"] == 30.0
    assert all(len(b["errors"]) == WINDOW.n_points for b in doc["beats"])
    assert doc["summary"]["n_anomalous"] == sum(b["anomalous"] for b in doc["beats"])
    assert len(doc["signal"]["y"]) == int(FS * 30) // doc["signal"]["factor"]
    assert metric_value(svc.port, "ecg_alerting_uploads_total", outcome="ok") >= 1


def test_upload_wfdb_record(scoring, data_dir: Path, tmp_path: Path) -> None:
    svc = scoring
    rec = load_record("100", data_dir, annotations=False, sampto=int(FS * 20))
    wfdb.wrsamp(
        "up100",
        fs=FS,
        units=["mV", "mV"],
        sig_name=["MLII", "V5"],
        p_signal=rec.signal,
        fmt=["212", "212"],
        write_dir=str(tmp_path),
    )
    files = [(n, (tmp_path / n).read_bytes()) for n in ("up100.hea", "up100.dat")]
    resp = _post_files(svc.port, files, {"lead": "V5"})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["kind"] == "wfdb" and doc["lead"] == "V5" and doc["leads"] == ["MLII", "V5"]
    assert 20 <= doc["summary"]["n_beats"] <= 30


@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        ([("a.csv", b"0.1\n0.2\n")], {}, "sampling rate is missing"),
        ([("a.csv", b"mv\n0.1\nabc\n")], {"fs": "360"}, "line 3: 'abc' in column 'mv'"),
        ([("a.dat", b"\x00\x00")], {}, "needs its .hea header"),
        ([("a.pdf", b"%PDF-1.4")], {"fs": "360"}, "unsupported file type '.pdf'"),
        ([("a.csv", b"0.1\n" * 100)], {"fs": "360"}, "at least 3 s"),
    ],
)
def test_bad_uploads_get_a_clear_error(scoring, files, data, message) -> None:
    svc = scoring
    resp = _post_files(svc.port, files, data)
    assert resp.status_code == 400
    assert message in resp.json()["error"]


def test_upload_needs_multipart_and_the_token(scoring) -> None:
    svc = scoring
    as_json = {"Content-Type": "application/json"}
    sent = b'{"fs": 360}'
    status, _, body = http(svc.port, "/api/score", method="POST", body=sent, headers=as_json)
    assert status == 400 and "multipart/form-data" in json.loads(body)["error"]
    resp = httpx.post(
        f"http://127.0.0.1:{svc.port}/api/score", files=[("file", ("a.csv", b"0.1"))], timeout=10
    )
    assert resp.status_code == 401


def test_upload_when_the_detector_is_down(broker, tmp_path: Path, data_dir: Path) -> None:
    ward = f"down-{uuid.uuid4().hex[:8]}"
    cfg = harness.make_config(broker, ward, tmp_path / "a.db", detector_url="http://127.0.0.1:9")
    rec = load_record("100", data_dir, annotations=False, sampto=int(FS * 5))
    csv = "\n".join(f"{v:.3f}" for v in rec.lead(0)).encode()
    with harness.running_alerting(cfg) as svc:
        resp = _post_files(svc.port, [("a.csv", csv)], {"fs": "360"})
    assert resp.status_code == 502
    assert "cannot be reached" in resp.json()["error"]


def test_pdf_report_of_a_bed(api) -> None:
    svc, _ = api
    status, headers, body = http(svc.port, f"/api/beds/a2/report.pdf?token={TOKEN}", token=None)
    assert status == 200, body[:200]
    assert headers["content-type"] == "application/pdf"
    assert body.startswith(b"%PDF") and body.rstrip().endswith(b"%%EOF")
    assert body.count(b"/Type /Page\n") + body.count(b"/Type /Page ") >= 2  # summary + alarm
    assert http(svc.port, "/api/beds/zz/report.pdf")[0] == 404
    assert http(svc.port, "/api/beds/a2/report.pdf", token=None)[0] == 401


def test_metrics_of_the_feed(api) -> None:
    svc, _ = api
    with connect(f"ws://127.0.0.1:{svc.port}/ws?token={TOKEN}", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"
        assert metric_value(svc.port, "ecg_alerting_websocket_clients") == 1
    harness.wait_for(lambda: metric_value(svc.port, "ecg_alerting_websocket_clients") == 0)
    assert metric_value(svc.port, "ecg_alerting_messages_total", kind="events") == 3
    assert metric_value(svc.port, "ecg_alarms_active", priority="technical") == 1
