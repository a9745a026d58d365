"""Dashboard latency: a beat result published on a real broker -> the real alerting service ->
websocket -> the bed tile's heart rate in headless chromium. Latency = DOM change (browser
clock) minus publish time (the same machine's clock)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.alarms.live import alerting_service
from bench.alarms.timing import summary
from ecgcommon import protocol, topics
from tests.helpers.alerting import TOKEN
from tests.helpers.broker import Broker, Mosquitto
from tests.helpers.browser import chromium

_OBSERVE_JS = """(bed) => {
    window.__bench = [];
    const el = document.querySelector(`.tile[data-bed="${bed}"] .hr`);
    new MutationObserver(() => window.__bench.push([el.textContent, Date.now() / 1000]))
        .observe(el, {childList: true, characterData: true, subtree: true});
}"""
# functions, not expressions: the dashboard's CSP forbids the eval Playwright polls them with
_SEEN_JS = "(hr) => window.__bench.some(e => e[0] === hr)"
WARD, BED = "bench-ward", "7"
PAGE_TIMEOUT_MS = 15000


class BeatProbe:
    """Publishes one beat result at a time for the bed, each with a new heart rate."""

    def __init__(self, broker: Broker, ward: str, bed: str) -> None:
        self.ward, self.bed, self.sample = ward, bed, 0
        self.topic = topics.beats_topic(ward, bed)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-detector")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, hr: int) -> float:
        """A beat with heart rate `hr`; returns its publish time (wall clock)."""
        self.sample += 360
        # rr_s None (as after a gap): the tile then shows this beat's own heart rate, not an
        # average over beats, so each probe beat changes the page visibly
        beat = protocol.BeatResult(
            self.bed,
            self.sample,
            time.time(),
            None,
            float(hr),
            0.2,
            1.0,
            False,
            f"{self.ward}:{self.bed}:{self.sample}",
        )
        t = time.time()
        self.client.publish(self.topic, protocol.encode_beats([beat]), qos=1).wait_for_publish(5)
        return t

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _page_latencies(
    port: int, probe: BeatProbe, trials: int, rng: np.random.Generator
) -> list[float]:
    """Open the dashboard, then time `trials` probe beats to the tile's heart rate."""
    tile = f'.tile[data-bed="{probe.bed}"] .hr'
    latencies = []
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
        page.wait_for_function(
            "() => window.__ecg && window.__ecg.connected", timeout=PAGE_TIMEOUT_MS
        )
        probe.publish(60)
        page.wait_for_selector(tile, timeout=PAGE_TIMEOUT_MS)
        page.wait_for_function(
            f"() => document.querySelector('{tile}').textContent === '60'", timeout=PAGE_TIMEOUT_MS
        )
        page.evaluate(_OBSERVE_JS, probe.bed)
        for k in range(trials):
            hr = 61 + k % 50  # a new value each time, so each beat changes the page
            sent = probe.publish(hr)
            page.wait_for_function(_SEEN_JS, arg=str(hr), timeout=10000)
            seen = [e[1] for e in page.evaluate("() => window.__bench") if e[0] == str(hr)]
            latencies.append(seen[0] - sent)
            page.evaluate("() => { window.__bench.length = 0; }")
            page.wait_for_timeout(int(rng.uniform(100, 500)))  # random batch phase
    return latencies


def measure_dashboard_latency(trials: int = 20, seed: int = 7) -> dict[str, Any]:
    """Beat result on the bus to its heart rate in the page (module doc), `trials` times."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        with alerting_service(broker, WARD, Path(tmp)) as service:
            assert service.port is not None
            probe = BeatProbe(broker, WARD, BED)
            try:
                latencies = _page_latencies(service.port, probe, trials, rng)
            finally:
                probe.close()
            batch_s = service.config.batch_s
    return summary(latencies) | {
        "trials": trials,
        "batch_s": batch_s,
        "path": "mqtt -> alerting service -> websocket -> chromium DOM",
    }
