"""End to end: streamer -> mosquitto -> detector, as separate processes, at 60x speed.

Three records x 5 minutes. The beats that come back over MQTT must match the reference
annotations as well as the same QRSDetector fed the same samples offline (within 0.2 %), and
ventricular (V) beats must raise anomaly events.
"""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import wfdb.processing as wp

from detector.qrs import QRSDetector
from ecgcommon.aami import aami_class
from ecgcommon.records import load_record
from streamer.core import Source
from tests.helpers.broker import Broker
from tests.helpers.mqtt import WardListener
from tests.helpers.ports import free_port
from tests.helpers.procs import ROOT, alive, service_argv, service_env
from tests.helpers.waits import wait_until

RECORDS = ("100", "119", "208")  # bed 01, 02, 03 (stride 0: each from its start)
DURATION_S = 300
SPEED = 60
FS = 360.0
MATCH = round(0.15 * FS)  # the offline evaluation's matching window (detector.evaluate_qrs)


def _score(ref: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    cmp = wp.compare_annotations(ref, np.asarray(test, dtype=np.int64), MATCH)
    return cmp.tp / (cmp.tp + cmp.fn), cmp.tp / (cmp.tp + cmp.fp)


@pytest.mark.slow
def test_streamer_broker_detector(broker: Broker, unique_ward: str, data_dir: Path) -> None:
    sub = WardListener(broker, unique_ward)
    http_port = free_port()
    detector = subprocess.Popen(
        service_argv(
            "detector",
            broker,
            unique_ward,
            *("--http-host", "127.0.0.1", "--http-port", str(http_port)),
            *("--qos-in", "1", "--qos-beats", "1"),
        ),
        cwd=ROOT,
        env=service_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    metrics_url = f"http://127.0.0.1:{http_port}/metrics"

    def published_events() -> float:
        """What the detector says it has published (its /metrics)."""
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            lines = resp.read().decode().splitlines()
        prefix = "ecg_detector_events_total{"
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(prefix))

    try:
        wait_until(
            lambda: published_events() >= 0,
            60,
            "the detector's /metrics",
            check=alive(detector, lambda: detector.stdout.read().decode()),
            ignore=(OSError,),
        )
        streamer = subprocess.run(
            service_argv(
                "streamer",
                broker,
                unique_ward,
                *("--records", *RECORDS, "--beds", str(len(RECORDS)), "--stride-s", "0"),
                *("--duration-s", str(DURATION_S), "--speed", str(SPEED), "--qos", "1"),
                *("--data-dir", str(data_dir), "--http-port", "0"),
            ),
            cwd=ROOT,
            env=service_env(),
            capture_output=True,
            timeout=120,
        )
        assert streamer.returncode == 0, streamer.stdout.decode() + streamer.stderr.decode()

        def settled() -> bool:
            return all(
                (b := sub.beats_of(bed)) and b[-1].sample > (DURATION_S - 3) * FS
                for bed in ("01", "02", "03")
            )

        def caught_up() -> bool:  # read ours first: then every event counted there is here
            ours = len(sub.events)
            return settled() and ours >= published_events()

        sub.wait_for(settled, 60, "the last beats of every bed")
        wait_until(caught_up, 30, "every event the detector published")
        assert settled(), {b: len(sub.beats_of(b)) for b in ("01", "02", "03")}
    finally:
        detector.send_signal(signal.SIGTERM)
        out, _ = detector.communicate(timeout=20)
        sub.close()
    assert detector.returncode == 0, out.decode()[-3000:]
    beats = {bed: sub.beats_of(bed) for bed in ("01", "02", "03")}
    events = sub.events

    end = (DURATION_S - 1) * FS  # the last second: windows still incomplete when streams end
    total_anomalies_on_v = total_v = 0
    for bed, name in zip(("01", "02", "03"), RECORDS, strict=True):
        rec = load_record(name, data_dir, sampto=int(DURATION_S * FS))
        src = Source.from_record(rec)
        x = src.raw[:, 0] / src.gain  # exactly the samples the streamer sent, in mV
        is_beat = np.array([aami_class(s) is not None for s in rec.ann_symbols])
        ref = rec.ann_samples[is_beat & (rec.ann_samples < end)]
        offline = QRSDetector(FS).feed(x)
        live = np.array([b.sample for b in beats[bed]])
        assert len(set(live.tolist())) == len(live), "no beat published twice"
        se_off, ppv_off = _score(ref, offline[offline < end])
        se_live, ppv_live = _score(ref, live[live < end])
        print(
            f"record {name}: offline Se {se_off:.4f} +P {ppv_off:.4f} | "
            f"MQTT Se {se_live:.4f} +P {ppv_live:.4f} ({len(live)} beats)"
        )
        assert abs(se_live - se_off) <= 0.002 and abs(ppv_live - ppv_off) <= 0.002
        # V beats give anomaly events
        flagged = np.array(
            sorted(e.detail["sample"] for e in events if e.bed == bed and e.type == "anomaly")
        )
        v_ref = rec.ann_samples[
            (np.array([aami_class(s) == "V" for s in rec.ann_symbols])) & (rec.ann_samples < end)
        ]
        if len(v_ref):
            hit = sum(bool(len(flagged)) and np.abs(flagged - v).min() <= MATCH for v in v_ref)
            total_anomalies_on_v += hit
            total_v += len(v_ref)
            print(
                f"record {name}: {hit}/{len(v_ref)} V beats raised an anomaly event, "
                f"{len(flagged)} anomaly events in all"
            )
    assert total_v > 50
    assert total_anomalies_on_v / total_v >= 0.5
