"""The live ward dashboard in a real headless Chromium (Debian's, driven by Playwright) against the
real alerting service fed over a real broker: the page loads, the waveforms move, an alarm
appears and is acknowledged (the ack reaches the store), the bed detail draws the explainability
view. Screenshots go to /tmp for a human to look at."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from alerting.service import AlertingService
from alerting.store import AlarmStore
from ecgcommon.records import load_record
from tests.helpers.alerting import (
    TOKEN,
    WardFeeder,
    get_json,
    http,
    make_config,
    running_alerting,
    wait_for,
)
from tests.helpers.detector import detector_config, running_detector

SHOTS = Path("/tmp")
pytestmark = pytest.mark.slow  # a real Chromium: seconds per test
# bed -> (heart rate bpm, every n-th beat anomalous; 0 = none)
BEDS = {"1": (72.0, 0), "2": (80.0, 4), "3": (170.0, 0), "4": (60.0, 0)}


@pytest.fixture
def ward(broker, unique_ward, tmp_path: Path) -> Iterator[tuple[AlertingService, WardFeeder]]:
    cfg = make_config(broker, unique_ward, tmp_path / "alarms.db", batch_s=0.15)
    with running_alerting(cfg) as svc:
        feeder = WardFeeder(broker, unique_ward, BEDS).start()
        try:
            yield svc, feeder
        finally:
            feeder.stop()


def _open(browser: Browser, port: int) -> Page:
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    resp = page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
    assert resp is not None and resp.status == 200
    return page


def _canvas_png(page: Page, bed: str) -> bytes:
    url = page.eval_on_selector(f'.tile[data-bed="{bed}"] canvas.wave', "c => c.toDataURL()")
    return base64.b64decode(url.split(",", 1)[1])


def test_page_and_feed_need_the_token(browser: Browser, ward) -> None:
    svc, _ = ward
    page = browser.new_page()
    resp = page.goto(f"http://127.0.0.1:{svc.port}/")
    assert resp is not None and resp.status == 401
    resp = page.goto(f"http://127.0.0.1:{svc.port}/?token=wrong-token-123")
    assert resp is not None and resp.status == 401
    page.close()


def test_waveforms_move_and_an_alarm_is_acknowledged(browser: Browser, ward) -> None:
    svc, feeder = ward
    page = _open(browser, svc.port)
    page.wait_for_function("() => window.__ecg && window.__ecg.connected")
    page.wait_for_function("() => document.querySelectorAll('.tile').length === 4")
    # the token left the address bar once read
    assert "token" not in page.url
    # waveforms move: frames are drawn and the canvas pixels change as samples arrive
    page.wait_for_function("() => window.__ecg.framesDrawn > 20 && window.__ecg.samplesIn > 500")
    before = _canvas_png(page, "1")
    drawn = page.evaluate("window.__ecg.framesDrawn")
    wait_for(lambda: _canvas_png(page, "1") != before)  # the next samples drawn
    assert _canvas_png(page, "1") != before
    assert page.evaluate("window.__ecg.framesDrawn") > drawn
    # heart rate numbers
    page.wait_for_function(
        "() => document.querySelector('.tile[data-bed=\"1\"] .hr').textContent === '72'"
    )

    # bed 3 runs at 170 bpm: an extreme tachycardia alarm appears, coloured high (red)
    item = page.wait_for_selector("#alarm-list li.p-high", timeout=15000)
    assert "EXTREME TACHY" in item.inner_text()
    banner = page.locator('.tile[data-bed="3"] .alarm-banner')
    assert "EXTREME TACHY" in banner.inner_text()
    assert "bg-high" in (banner.get_attribute("class") or "")
    alarm_id = item.get_attribute("data-id")
    page.screenshot(path=str(SHOTS / "ecg_dashboard.png"))

    # acknowledge it with a click: the page updates and the store has the acknowledgement
    item.query_selector("button.ack").click()
    page.wait_for_selector(f'#alarm-list li.acked[data-id="{alarm_id}"]')
    assert "(ACK)" in banner.inner_text()
    with AlarmStore(svc.config.db_path) as store:
        stored = store.get(alarm_id)
        acks = store.acknowledgements(alarm_id)
    assert stored is not None and stored.state.value == "acknowledged"
    assert [a["by"] for a in acks] == ["dashboard"]

    # a lead comes off on bed 4: technical alarm (cyan), no heart rate shown
    feeder.pub.event("4", "lead_off", True, feeder.t0 + feeder.sent / feeder.fs)
    page.wait_for_function(
        "() => document.querySelector('.tile[data-bed=\"4\"] .lead-state').textContent"
        " === 'LEAD OFF'"
    )
    assert page.inner_text('.tile[data-bed="4"] .hr') == "---"
    tech = page.wait_for_selector("#alarm-list li.p-technical")
    assert "LEAD OFF" in tech.inner_text()
    colour = page.eval_on_selector(
        "#alarm-list li.p-technical .bar", "el => getComputedStyle(el).backgroundColor"
    )
    assert colour == "rgb(0, 200, 224)"
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


def test_bed_detail_shows_the_explainability_view(browser: Browser, ward) -> None:
    svc, _ = ward
    page = _open(browser, svc.port)
    page.wait_for_function("() => document.querySelectorAll('.tile').length === 4")
    # wait until bed 2 has had an anomalous beat, then open its detail
    wait_for(lambda: any(b["cls"] == "V" for b in get_json(svc.port, "/api/beds/2")["beats"]))
    page.click('.tile[data-bed="2"]')
    page.wait_for_selector("#beat-list li.anomalous.selected", timeout=10000)
    page.wait_for_function(
        "() => document.querySelector('#explain-info').textContent.includes('ANOM')"
    )
    # the beat is drawn in the error colours: crimson where the error peaks, cyan elsewhere
    colours = page.evaluate("""() => {
        const c = document.getElementById('explain-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let crimson = 0, cyan = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] > 200 && d[i + 1] < 60 && d[i + 2] > 40 && d[i + 2] < 90) crimson++;
            if (d[i] < 90 && d[i + 1] > 150 && d[i + 2] > 180) cyan++;
        }
        return {crimson, cyan};
    }""")
    assert colours["crimson"] > 50 and colours["cyan"] > 50, colours
    page.screenshot(path=str(SHOTS / "ecg_dashboard_detail.png"))
    status, _, body = http(svc.port, "/api/beds/2")
    assert status == 200
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


def test_tiles_show_the_rhythm_and_beats_their_class(browser: Browser, ward) -> None:
    """The tile's rhythm label follows the heart rate and the detector's episodes (sent over the
    real broker); the beat list and the detail name each beat's class next to its score."""
    svc, feeder = ward
    page = _open(browser, svc.port)
    page.wait_for_function("() => document.querySelectorAll('.tile').length === 4")

    def rhythm(bed: str) -> str:
        return f"document.querySelector('.tile[data-bed=\"{bed}\"] .rhythm').textContent"

    page.wait_for_function(f"() => {rhythm('1')} === 'SR 72'")
    page.wait_for_function(f"() => {rhythm('3')} === 'ST 170'")
    now = feeder.t0 + feeder.sent / feeder.fs
    feeder.pub.event("3", "vt", True, now, {"hr_bpm": 170.0, "beats": 6, "onset_t": now - 2})
    feeder.pub.event("4", "afib", True, now, {"hr_bpm": 60.0, "beats": 12})
    page.wait_for_function(f"() => {rhythm('3')} === 'VT'")
    page.wait_for_function(f"() => {rhythm('4')} === 'AFIB 60'")
    assert "r-high" in (page.get_attribute('.tile[data-bed="3"] .rhythm', "class") or "")
    assert "r-medium" in (page.get_attribute('.tile[data-bed="4"] .rhythm', "class") or "")
    vt = page.wait_for_selector("#alarm-list li.p-high:has-text('VTACH')", timeout=10000)
    assert "Bed 3" in vt.inner_text()
    page.wait_for_selector("#alarm-list li.p-medium:has-text('AFIB')", timeout=10000)
    page.screenshot(path=str(SHOTS / "ecg_dashboard_rhythm.png"))
    feeder.pub.event("3", "vt", False, now + 3, {"hr_bpm": 170.0, "beats": 12})
    page.wait_for_function(f"() => {rhythm('3')} === 'ST 170'")

    # bed 2: every 4th beat is a PVC (class V, anomalous); the list names the classes. The
    # detail selects the newest anomalous beat when it opens: open it once bed 2 has one
    wait_for(lambda: any(b["cls"] == "V" for b in get_json(svc.port, "/api/beds/2")["beats"]))
    page.click('.tile[data-bed="2"]')
    page.wait_for_selector("#beat-list li.cls-V", timeout=10000)
    rows = page.eval_on_selector_all(
        "#beat-list li",
        "els => els.map(e => [e.dataset.cls, e.querySelector('.b-cls')"
        ".textContent, e.querySelector('.b-score').textContent])",
    )
    assert {r[1] for r in rows if r[0] == "V"} == {"PVC"}
    assert {r[1] for r in rows if r[0] == "N"} == {"normal"}
    assert all(r[2].startswith("score ") for r in rows)
    page.wait_for_selector("#beat-list li.cls-V.selected")
    page.wait_for_function(
        "() => document.querySelector('#explain-info').textContent.startsWith('PVC beat')"
    )
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


@pytest.fixture
def scoring_ward(broker, unique_ward, tmp_path: Path) -> Iterator[AlertingService]:
    """The alerting service with the real detector behind its upload."""
    with running_detector(detector_config(broker)) as det:
        cfg = make_config(
            broker,
            unique_ward,
            tmp_path / "alarms.db",
            detector_url=f"http://127.0.0.1:{det.http_port}",
            detector_token=det.token,
        )
        with running_alerting(cfg) as svc:
            yield svc


def test_upload_from_the_dashboard(
    browser: Browser, scoring_ward, data_dir: Path, tmp_path: Path
) -> None:
    """A clinician uploads a CSV: the beats come back scored with their explainability view;
    a bad file shows what is wrong."""
    svc = scoring_ward
    rec = load_record("119", data_dir, sampto=360 * 20)
    good = tmp_path / "119.csv"
    good.write_text("MLII\n" + "\n".join(f"{v:.3f}" for v in rec.lead(0)) + "\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("MLII\n0.1\n0.2\nn/a\n")
    page = _open(browser, svc.port)
    page.click("#upload-open")
    page.set_input_files("#upload-file", str(bad))
    page.fill("#upload-fs", "360")
    page.click("#upload-form button[type=submit]")
    error = page.wait_for_selector("#upload-error:not([hidden])")
    assert "line 4: 'n/a' in column 'MLII' is not a number" in error.inner_text()

    page.set_input_files("#upload-file", str(good))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-result:not([hidden])", timeout=30000)
    assert page.is_hidden("#upload-error")
    summary = page.inner_text("#upload-summary")
    assert "119.csv: 20.0 s at 360 Hz, lead MLII" in summary
    n_rows = page.eval_on_selector_all("#upload-beats li", "els => els.length")
    assert 20 <= n_rows <= 40  # record 119 runs at about 65-70 bpm with bigeminy
    assert page.eval_on_selector_all("#upload-beats li.selected", "els => els.length") == 1
    painted = page.evaluate("""() => {
        const c = document.getElementById('upload-explain');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 200) lit++;
        return lit;
    }""")
    assert painted > 500
    page.screenshot(path=str(SHOTS / "ecg_dashboard_upload.png"))
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()
