"""The dashboard does not leak: a ward streamed at several times real time, with alarms coming
and going, leaves the page's DOM node count, event listeners and JS heap (after garbage
collection) flat. Real Chromium via Playwright, measured over the DevTools protocol.

Defaults to a 20 s run (~1.5 min of signal per bed at 4x); `ECG_SOAK_S=3600` runs an hour and
prints the same figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.helpers.alerting import TOKEN, WardFeeder, make_config, running_alerting, wait_for

RING_S = 12.0  # seconds of signal the page keeps per bed (alerting/dashboard/app.js)
SOAK_S = float(os.environ.get("ECG_SOAK_S", "20"))
SPEED = 4.0
BEDS = {
    "1": (72.0, 0),
    "2": (90.0, 4),
    "3": (110.0, 0),
    "4": (65.0, 0),
    "5": (58.0, 0),
    "6": (130.0, 0),
}


def _metrics(cdp) -> dict[str, float]:
    cdp.send("HeapProfiler.collectGarbage")
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


@pytest.mark.slow
def test_dashboard_memory_stays_flat(browser: Browser, broker, unique_ward, tmp_path: Path) -> None:
    # 4x replay: the feeder's device clock runs ahead of the wall clock by design, so the
    # clock-skew check (it would drop every sample after ~3 s) is off, as for `make ward SPEED>1`.
    cfg = make_config(broker, unique_ward, tmp_path / "alarms.db", batch_s=0.15, max_clock_skew_s=0)
    with running_alerting(cfg) as svc:
        feeder = WardFeeder(broker, unique_ward, BEDS, speed=SPEED, lead_toggle=("4", 3.0)).start()
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{svc.port}/?token={TOKEN}")
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.wait_for_function(
                f"() => document.querySelectorAll('.tile').length === {len(BEDS)}"
            )
            # warm-up: every bed's ring filled (app.js keeps RING_S = 12 s of signal; the
            # feeder has sent more than that) and the alarm list populated
            wait_for(lambda: feeder.sent / feeder.fs > RING_S + 2, timeout=30)
            page.wait_for_function("() => document.querySelectorAll('#alarm-list li').length > 0")
            start = _metrics(cdp)
            stats0 = page.evaluate("({...window.__ecg})")
            page.wait_for_timeout(SOAK_S * 1000)  # the soak itself: wall time is the test
            end = _metrics(cdp)
            stats1 = page.evaluate("({...window.__ecg})")
            alarms = len(svc.store.query(bed="4", limit=1000))
            page.close()
        finally:
            feeder.stop()
    figures = {
        "soak_s": SOAK_S,
        "speed": SPEED,
        "beds": len(BEDS),
        "signal_s_per_bed": feeder.sent / feeder.fs,
        "lead_off_alarms": alarms,
        "frames_per_s": (stats1["framesDrawn"] - stats0["framesDrawn"]) / SOAK_S,
        "ws_frames_per_s": (stats1["wsFrames"] - stats0["wsFrames"]) / SOAK_S,
        "nodes": [start["Nodes"], end["Nodes"]],
        "listeners": [start["JSEventListeners"], end["JSEventListeners"]],
        "heap_mb": [start["JSHeapUsedSize"] / 2**20, end["JSHeapUsedSize"] / 2**20],
    }
    print("dashboard soak:", json.dumps(figures))
    assert errors == []
    assert alarms >= 3  # alarms kept coming and going during the run
    assert stats1["samplesIn"] > stats0["samplesIn"]
    # A few alarm rows (about 8 nodes and 2 listeners each) may differ between the two moments;
    # a leak per frame or per message would add thousands of nodes over the run.
    assert end["Nodes"] <= start["Nodes"] + 80
    assert end["JSEventListeners"] <= start["JSEventListeners"] + 20
    assert end["JSHeapUsedSize"] <= start["JSHeapUsedSize"] + 4 * 2**20
