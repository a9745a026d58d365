"""`make ward` for real: the launcher starts the broker and the three services, answers on every
URL it prints, and stops everything cleanly on Ctrl-C (SIGINT). The broker refuses anonymous
clients and every service connects with its own provisioned credential. Also the embedded
broker (amqtt) that the ward falls back on where Mosquitto is not installed: real paho-mqtt 2
clients against it (anonymous, and with the provisioned accounts and topic rules), and the
whole ward running on it."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import termios
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.ports import free_port
from tests.helpers.procs import ROOT, alive
from tests.helpers.waits import Inbox, wait_until
from tests.helpers.ward import WARD_PY, RunningWard, load_ward_module, ward_args
from tests.helpers.ward import get as _get
from tests.helpers.ward import metric_sum as _metric

ward = load_ward_module()


@pytest.fixture
def amqtt_broker(tmp_path: Path) -> Iterator[int]:
    """The ward's embedded broker, started exactly as the ward starts it."""
    with _amqtt(tmp_path) as port:
        yield port


@contextmanager
def _amqtt(tmp_path: Path, creds: object = None) -> Iterator[int]:
    """The ward's embedded broker on a free port (with the provisioned accounts when given)
    while the block runs, stopped by SIGINT as the ward stops it."""
    port = free_port()
    launch = ward.broker_launch(
        "embedded", "127.0.0.1", port, tmp_path, *([creds] if creds else [])
    )
    assert launch.name == "amqtt"
    log = open(tmp_path / "amqtt.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(launch.argv, stdout=log, stderr=log, start_new_session=True)
    try:
        _wait_amqtt(launch, proc, tmp_path / "amqtt.log")
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_amqtt(launch: object, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the ward's embedded broker listens; at once with its log if it exited."""
    wait_until(
        lambda: ward.Ward._up(launch),
        20,
        "amqtt listening",
        check=alive(proc, lambda: log.read_text(errors="replace")),
    )


def _client(port: int, name: str, password: str | None = None) -> mqtt.Client:
    """Connected (CONNACK success) before it returns; `password`: log in as `name`."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
    if password is not None:
        c.username_pw_set(name, password)
    accepted = threading.Event()
    c.on_connect = lambda _c, _u, _f, rc, _p: accepted.set() if not rc.is_failure else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert accepted.wait(10), f"{name} was not accepted"
    return c


def _mqtt_refused(port: int, username: str | None = None, password: str = "") -> bool:
    """True when the broker on `port` turns the client away (a failed CONNACK, or a close)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}")
    if username is not None:
        c.username_pw_set(username, password)
    answer: list[bool] = []
    done = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        answer.append(bool(getattr(rc, "is_failure", False)))
        done.set()

    def on_disconnect(*_a: object) -> None:
        answer.append(True)
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.reconnect_delay_set(30, 30)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert done.wait(10), "the broker neither accepted nor refused"
        return answer[0]
    finally:
        c.loop_stop()
        c.disconnect()


def test_embedded_broker_serves_paho2_clients(amqtt_broker: int, unique_ward: str) -> None:
    """QoS 0 and 1 delivery in order, wildcard subscriptions and retained status messages:
    what the services rely on from a broker."""
    got: list[tuple[str, bytes, bool]] = []
    done = threading.Event()
    n = 500

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        got.append((m.topic, m.payload, m.retain))
        if len(got) == n + 1:
            done.set()

    sub = _client(amqtt_broker, "sub")
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(f"ecg/v1/{unique_ward}/+/samples", qos=1)
    assert subscribed.wait(5)
    pub = _client(amqtt_broker, "pub")
    for i in range(n):
        pub.publish(f"ecg/v1/{unique_ward}/b{i % 4}/samples", i.to_bytes(4, "big") * 300, qos=0)
    pub.publish(f"ecg/v1/{unique_ward}/b9/samples", b"last", qos=1).wait_for_publish(5)
    assert done.wait(20), f"received {len(got)} of {n + 1}"
    per_bed = {}
    for topic, payload, _ in got[:-1]:
        per_bed.setdefault(topic, []).append(int.from_bytes(payload[:4], "big"))
    assert all(seq == sorted(seq) for seq in per_bed.values())
    assert got[-1][1] == b"last"

    status = f"ecg/v1/{unique_ward}/b1/status"
    pub.publish(status, json.dumps({"state": "online"}), qos=1, retain=True).wait_for_publish(5)
    retained: Inbox[tuple[str, bytes, bool]] = Inbox()
    late_sub = _client(amqtt_broker, "late")
    late_sub.on_message = lambda _c, _u, m: retained.put((m.topic, m.payload, m.retain))
    late_sub.subscribe(f"ecg/v1/{unique_ward}/+/status", qos=1)
    late = retained.wait_count(1, 5, "the retained status")
    assert late and late[0][0] == status and late[0][2] is True
    for c in (sub, pub, late_sub):
        c.loop_stop()
        c.disconnect()


@pytest.mark.slow
def test_embedded_broker_with_credentials_applies_the_acl(tmp_path: Path) -> None:
    """The ward's amqtt fallback with the provisioned accounts: anonymous and wrong passwords
    are refused; a device's samples reach the detector, its forged other-bed samples and beats
    do not; it may not subscribe to everything."""
    creds = ward.provision_ward(
        ward.WardConfig(run_dir=tmp_path, ward="ward-e", beds=("100", "119"))
    )
    clients: list[mqtt.Client] = []
    with _amqtt(tmp_path, creds) as port:
        assert stat.S_IMODE((tmp_path / "amqtt.passwd").stat().st_mode) == 0o600
        try:
            assert _mqtt_refused(port)
            assert _mqtt_refused(port, "detector", "wrong")
            got: list[bytes] = []
            arrived = threading.Condition()

            def on_message(_c: object, _u: object, m: mqtt.MQTTMessage) -> None:
                with arrived:
                    got.append(bytes(m.payload))
                    arrived.notify_all()

            detector = _client(port, "detector", creds.password("detector"))
            alerting = _client(port, "alerting", creds.password("alerting"))
            device = _client(port, "dev-ward-e-01", creds.password("dev-ward-e-01"))
            clients += [detector, alerting, device]
            for c in (detector, alerting):
                c.on_message = on_message
            subscribed = threading.Event()
            detector.on_subscribe = lambda *a: subscribed.set()
            detector.subscribe([("ecg/v1/ward-e/+/samples", 1)])
            assert subscribed.wait(5)
            subscribed.clear()
            alerting.on_subscribe = lambda *a: subscribed.set()
            alerting.subscribe([("ecg/v1/ward-e/+/beats", 1)])
            assert subscribed.wait(5)
            snooped: list[bytes] = []
            subscribed.clear()
            device.on_message = lambda _c, _u, m: snooped.append(bytes(m.payload))
            device.on_subscribe = lambda _c, _u, _m, rcs, _p: subscribed.set()
            device.subscribe([("#", 1)])
            assert subscribed.wait(5)
            for topic in ("ecg/v1/ward-e/02/samples", "ecg/v1/ward-e/01/beats"):
                device.publish(topic, b"forged", qos=1).wait_for_publish(5)
            device.publish("ecg/v1/ward-e/01/samples", b"own", qos=1).wait_for_publish(5)
            with arrived:
                assert arrived.wait_for(lambda: b"own" in got, 10)
            assert b"forged" not in got
            assert not snooped
        finally:
            for c in clients:
                c.loop_stop()
                c.disconnect()


def _refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def _run_and_stop(ward_run: RunningWard, n_beds: int) -> None:
    """Every printed URL answers, beats flow end to end, Ctrl-C stops everything with 0."""
    try:
        ward_run.wait_banner()
        (dashboard,) = ward_run.urls("dashboard:")
        status, page = _get(dashboard)
        assert status == 200 and "<html" in page.lower()
        token = urllib.parse.parse_qs(urllib.parse.urlparse(dashboard).query)["token"][0]
        base = dashboard.split("/?")[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(base + "/")  # no token, no dashboard
        assert refused.value.code == 401
        metrics = ward_run.urls("metrics:")
        assert len(metrics) == len(ward.HTTP_SERVICES)
        for url in metrics:
            status, text = _get(url, token)
            assert status == 200 and "# TYPE ecg_" in text, url
        detector = next(u for u in metrics if "(detector)" in ward_run.line_of(u))
        ward_run.wait(
            lambda: _metric(_get(detector)[1], "ecg_detector_beats_total") > 0, 60, "beats scored"
        )
        streamer = next(u for u in metrics if "(streamer)" in ward_run.line_of(u))
        assert _metric(_get(streamer)[1], "ecg_streamer_chunks_published_total") > 0
        assert _metric(_get(streamer)[1], "ecg_streamer_connected_beds") == n_beds
        # Every bed's device and every service got in with its own credential; nobody else.
        found = (re.search(r"; broker \S+ on [\d.]+:(\d+)$", ln) for ln in ward_run.lines)
        mqtt_port = int(next(m for m in found if m).group(1))
        assert _mqtt_refused(mqtt_port), "the ward's broker lets anonymous clients in"
        assert any(ln.startswith("broker:    authenticated") for ln in ward_run.lines)
        req = urllib.request.Request(
            base + "/api/beds", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            beds = json.loads(resp.read())["beds"]
        assert len(beds) == n_beds

        assert ward_run.interrupt() == 0, "\n".join(ward_run.lines)
        stopped = [ln for ln in ward_run.lines if ln.startswith("stopped ")]
        assert len(stopped) == len(ward.SERVICES) + 1, "\n".join(ward_run.lines)
        assert all(ln.endswith("(exit code 0)") for ln in stopped), "\n".join(stopped)
        assert stopped[0].startswith("stopped streamer")  # the producer first
        for url in [dashboard, *metrics]:
            assert _refused(url), f"{url} still answers after Ctrl-C"
    finally:
        ward_run.kill()


@pytest.mark.slow
def test_ward_on_mosquitto_starts_answers_and_stops_on_ctrl_c(
    tmp_path: Path, data_dir: Path
) -> None:
    run = RunningWard(tmp_path, *ward_args("mosquitto", "203,119", 10, data_dir, "ward-test"))
    _run_and_stop(run, 2)
    assert any("broker mosquitto" in ln for ln in run.lines)
    assert any(re.search(r"TLS on :\d+ \(CA \S+ca\.crt\)", ln) for ln in run.lines)
    assert stat.S_IMODE((tmp_path / "secrets" / "mosquitto.passwd").stat().st_mode) == 0o600
    passwords = [p.read_text().strip() for p in (tmp_path / "secrets" / "passwords").iterdir()]
    assert len(passwords) >= 2 + 4  # two beds' devices and the service accounts
    logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    output = "\n".join(run.lines)
    for password in passwords:  # never in a log line or on the terminal
        assert password not in logs and password not in output


@pytest.mark.slow
def test_ward_on_the_embedded_broker(tmp_path: Path, data_dir: Path) -> None:
    """Where Mosquitto is not installed: the same ward on amqtt, beats flowing end to end."""
    run = RunningWard(tmp_path, *ward_args("embedded", "100", 10, data_dir))
    _run_and_stop(run, 1)
    assert any("broker amqtt" in ln for ln in run.lines)
    assert any("WARNING: Mosquitto is not installed" in ln for ln in run.lines)


def test_ward_without_data_explains_how_to_fetch_it(tmp_path: Path) -> None:
    empty = tmp_path / "no-mitdb"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, str(WARD_PY), "--data-dir", str(empty)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "python -m ecgcommon.fetch --data-dir" in done.stderr
    assert str(empty) in done.stderr


@pytest.mark.slow
def test_make_ward_in_a_terminal_exits_0_on_ctrl_c(tmp_path: Path, data_dir: Path) -> None:
    """The README's command as a user runs it: `make ward` in a terminal, then Ctrl-C typed
    there (the terminal sends SIGINT to its foreground process group). The ward takes the
    foreground, so make does not see the interrupt and exits with the ward's 0."""
    checksum = subprocess.run(
        "cat pyproject.toml | cksum | cut -d' ' -f1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ports = {
        "MQTT_PORT": free_port(),
        "DETECTOR_HTTP_PORT": free_port(),
        "ALERTING_PORT": free_port(),
        "STREAMER_HTTP_PORT": free_port(),
    }
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "WARD_RUN_DIR": str(tmp_path)}
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    # `-o <stamp>`: use the existing .venv as it is (no reinstall inside the test).
    proc = subprocess.Popen(
        [
            "make",
            "-o",
            f".venv/.installed-{checksum}",
            "ward",
            "BEDS=100",
            "SPEED=10",
            f"DATA_DIR={data_dir}",
        ],
        cwd=ROOT,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,  # setsid + TIOCSCTTY: the pty is its terminal
    )
    os.close(slave)
    out: list[str] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            out.append(data.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: "Ctrl-C stops the ward" in "".join(out),
            120,
            "the banner of make ward",
            check=alive(proc, lambda: "".join(out)),
            detail=lambda: "".join(out),
        )
        metrics = f"http://127.0.0.1:{ports['ALERTING_PORT']}/metrics"
        token = re.search(r"\?token=(\S+)", "".join(out))
        assert token, "".join(out)
        assert _get(metrics, token.group(1))[0] == 200
        os.write(master, b"\x03")  # Ctrl-C, as typed
        assert proc.wait(timeout=60) == 0, "".join(out)
        reader.join(timeout=5)
        text = "".join(out)
        assert "stopped streamer (exit code 0)" in text and "Interrupt" not in text, text
        assert _refused(metrics)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_ward_refuses_ports_in_use(tmp_path: Path, data_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                str(WARD_PY),
                "--free-ports",
                "--alerting-port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--run-dir",
                str(tmp_path),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"alerting 127.0.0.1:{port}" in done.stderr and "--free-ports" in done.stderr
    assert not list(tmp_path.glob("*.log")), "nothing starts when a port is taken"
