"""The dashboard in a real headless Chromium never shows stale LIVE values (docs/faults.md): when
the broker dies (kill -9) the alerting service's websocket heartbeat says the bus is down and the
page shows OFFLINE within 5 s, with no bed's heart rate left on screen; when the alerting service
hangs (SIGSTOP), the missing heartbeat does the same; LIVE again once the fault is gone."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.helpers.alerting import TOKEN, WardFeeder
from tests.helpers.chain import Chain

pytestmark = pytest.mark.slow

LIVE = """() => window.__ecg.live && document.querySelector('#conn').textContent === 'LIVE'
  && document.querySelector('#offline-banner').hidden
  && /^[0-9]+$/.test(document.querySelector('.vitals .hr').textContent)"""
OFFLINE = """() => !window.__ecg.live && document.querySelector('#conn').textContent === 'OFFLINE'
  && !document.querySelector('#offline-banner').hidden
  && [...document.querySelectorAll('.vitals .hr')].every((e) => !/[0-9]/.test(e.textContent))"""


def _offline_within(page: Page, seconds: float) -> float:
    t0 = time.monotonic()
    page.wait_for_function(OFFLINE, timeout=seconds * 1000, polling=100)
    return time.monotonic() - t0


def test_offline_banner_on_broker_loss_and_on_a_hung_alerting_service(
    browser: Browser, tmp_path: Path, unique_ward: str
) -> None:
    chain = Chain(tmp_path, unique_ward)
    feeder = None
    try:
        chain.start_alerting()
        chain.wait_healthy(chain.alerting_port)
        feeder = WardFeeder(chain.broker, unique_ward, {"1": (72.0, 0)}).start()
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"http://127.0.0.1:{chain.alerting_port}/?token={TOKEN}")
        page.wait_for_function(LIVE, timeout=20_000, polling=100)

        feeder.stop()
        chain.kill("mosquitto")
        took = _offline_within(page, 5.0)
        assert "message bus" in page.inner_text("#offline-banner")
        page.screenshot(path="/tmp/ecg_dashboard_offline.png")
        assert took < 5.0

        chain.start_broker()  # back: alerting reconnects within its capped backoff
        feeder = WardFeeder(chain.broker, unique_ward, {"1": (72.0, 0)}).start()
        page.wait_for_function(LIVE, timeout=15_000, polling=100)

        chain.kill("alerting", signal.SIGSTOP)  # hung: the websocket stays open, silent
        try:
            took = _offline_within(page, 5.0)
            assert "no heartbeat" in page.inner_text("#offline-banner")
        finally:
            chain.kill("alerting", signal.SIGCONT)
        assert took < 5.0
        page.wait_for_function(LIVE, timeout=15_000, polling=100)
        assert errors == []
    finally:
        if feeder is not None:
            feeder.stop()
        chain.close()
