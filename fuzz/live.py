"""The real services under hostile input: Mosquitto, the detector, the alerting service and a
streamer replaying a real record, as `python -m` processes on free loopback ports; hostile MQTT
messages and hostile HTTP requests for a bounded time while the real bed streams.

The real bed's own topics are not attacked here: refusing a forged sample on a device's topic
is the broker ACL's job (docs/security.md); everything else on the ward is (junk beds, every
message kind, wrong wards and versions), and every HTTP route of both services.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from ecgcommon.topics import beats_topic
from fuzz import inputs

ROOT = Path(__file__).resolve().parent.parent
WARD = "fuzz-live"
GOOD_BED = "01"
GOOD_RECORD = "112"  # a regular rhythm: every reference RR interval under 1 s
TOKEN = "fuzz-alerting-token-0123"
DETECTOR_TOKEN = "fuzz-detector-token-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Stack:
    """The running processes and where they listen."""

    run: Path
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.run / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]


def _wait(what: str, ok: Callable[[], bool], stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except OSError:
            pass
        if stack.dead():
            break
        time.sleep(0.2)
    logs = {n: (stack.run / f"{n}.log").read_text(errors="replace")[-1500:] for n in stack.procs}
    raise RuntimeError(f"gave up waiting for {what}; dead: {stack.dead()}; logs: {logs}")


def _get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_stack(run: Path, data_dir: Path, max_beds: int) -> Stack:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    ports = {name: free_port() for name in ("mqtt", "detector", "alerting")}
    stack = Stack(run, ports)
    conf = run / "mosquitto.conf"
    conf.write_text(
        f"listener {ports['mqtt']} 127.0.0.1\nallow_anonymous true\n"
        "persistence false\nmax_queued_messages 100000\n"
    )
    stack.start("mosquitto", [mosquitto, "-c", str(conf)], {})
    _wait(
        "mosquitto",
        lambda: socket.create_connection(("127.0.0.1", ports["mqtt"]), 1) is not None,
        stack,
    )
    common = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(ports["mqtt"]),
        "ECG_WARD": WARD,
        "ECG_DATA_DIR": str(data_dir),
        "ECG_DETECTOR_TOKEN": DETECTOR_TOKEN,
    }
    stack.start(
        "detector",
        [sys.executable, "-m", "detector"],
        {
            **common,
            "DETECTOR_HTTP_HOST": "127.0.0.1",
            "DETECTOR_HTTP_PORT": str(ports["detector"]),
            "DETECTOR_MAX_BEDS": str(max_beds),
        },
    )
    stack.start(
        "alerting",
        [sys.executable, "-m", "alerting"],
        {
            **common,
            "ALERTING_HOST": "127.0.0.1",
            "ALERTING_PORT": str(ports["alerting"]),
            "ALERTING_TOKEN": TOKEN,
            "ALERTING_DB": str(run / "alarms.db"),
            "ALERTING_MAX_BEDS": str(max(16, max_beds // 2)),
            "DETECTOR_URL": f"http://127.0.0.1:{ports['detector']}",
        },
    )
    det = f"http://127.0.0.1:{ports['detector']}/healthz"
    alert = f"http://127.0.0.1:{ports['alerting']}/healthz"
    _wait("detector", lambda: _get(det)[0] == 200, stack, 90)
    _wait("alerting", lambda: _get(alert)[0] == 200, stack, 60)
    stack.start(
        "streamer",
        [sys.executable, "-m", "streamer"],
        {
            **common,
            "STREAMER_BEDS": "1",
            "STREAMER_RECORDS": GOOD_RECORD,
            "STREAMER_CHUNK_S": "0.1",
            "STREAMER_HTTP_HOST": "127.0.0.1",
            "STREAMER_HTTP_PORT": "0",
        },
    )
    return stack


class BeatWatch:
    """Arrival times of the real bed's beats (a real subscriber on the real broker)."""

    def __init__(self, port: int) -> None:
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzz-watch")
        self.client.on_connect = lambda c, *_: c.subscribe(beats_topic(WARD, GOOD_BED), 0)
        self.client.on_message = self._on
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            n = len(json.loads(msg.payload).get("beats", []))
        except (ValueError, AttributeError):
            return
        if n:
            with self.lock:
                self.arrivals.append(time.monotonic())

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def max_gap(self, start: float, end: float) -> float:
        """Longest wait for a beat within [start, end] (the window's edges count as arrivals
        only when a beat came before and after them)."""
        with self.lock:
            times = [t for t in self.arrivals if start <= t <= end]
        if len(times) < 2:
            return float("inf")
        edges = [start, *times, end]
        return max(b - a for a, b in zip(edges, edges[1:], strict=False))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mqtt_attack(
    port: int, stop: threading.Event, rng: random.Random, rate: float, counts: Counter[str]
) -> None:
    """Hostile messages on every kind of topic of the ward but the real bed's own."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fuzz-attacker")
    client.max_queued_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    seeds = inputs.seeds(time.time())
    start = time.monotonic()
    sent = 0
    try:
        while not stop.is_set():
            wait = start + sent / rate - time.monotonic()
            if wait > 0 and stop.wait(wait):  # read the clock once: never a negative sleep
                break
            kind = rng.choice(inputs.KINDS)
            bed = inputs.bed_name(rng)
            topic = inputs.topic(rng, WARD, bed, kind)
            if "#" in topic or "+" in topic or "\x00" in topic or not topic:
                topic = f"ecg/v1/{WARD}/junk-x/{kind}"  # MQTT itself refuses those on publish
            payload = inputs.mutate(rng, kind, seeds)
            client.publish(topic, payload, qos=0, retain=rng.random() < 0.01)
            sent += 1
            counts["mqtt"] += 1
            if sent % 2000 == 0:
                seeds = inputs.seeds(time.time())
    finally:
        client.loop_stop()
        client.disconnect()


def _http_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    raw: bytes | None = None,
) -> int:
    """One request over a plain socket (so malformed ones can be sent): the status, 0 when the
    server closed without a status line (e.g. to a garbage request line), -1 on a timeout."""
    if raw is None:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            head += f"Content-Length: {len(body)}\r\n"
        raw = head.encode("latin-1", "replace") + b"\r\n" + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            try:
                s.sendall(raw)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (and closed) before the whole request was sent
            answer = s.recv(64)
    except TimeoutError:
        return -1
    except OSError:
        return 0
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def http_attack(
    ports: dict[str, int],
    stop: threading.Event,
    rng: random.Random,
    rate: float,
    codes: Counter[str],
) -> None:
    """Hostile requests at every route of both services."""
    alert = [
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/api/alarms"),
        ("GET", "/api/beds"),
        ("GET", f"/api/beds/{GOOD_BED}"),
        ("GET", "/api/beds/x/beats/y"),
        ("POST", "/api/alarms/x/ack"),
        ("POST", "/api/score"),
        ("GET", "/ws"),
        ("GET", "/api/beds/x/report.pdf"),
        ("GET", "/static/../config.py"),
        ("DELETE", "/api/beds"),
        ("GET", "/api/alarms?limit=" + "9" * 5000),
    ]
    bodies = [
        b"",
        b"{",
        b"[" * 100_000,
        b'{"by": ' + b"9" * 5000 + b"}",
        b"\xff\xfe\x00",
        b'{"by": 1e999}',
        b'{"fs": 360, "samples": [' + b"1," * 5000 + b"1]}",
        b'{"fs": ' + b"9" * 400 + b', "samples": [1]}',
        b'{"fs": NaN, "samples": []}',
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        b"0.1\n0.2\n--b--\r\n",
        os.urandom(2000),
    ]
    start = time.monotonic()
    sent = 0
    while not stop.is_set():
        wait = start + sent / rate - time.monotonic()
        if wait > 0 and stop.wait(wait):  # read the clock once: never a negative sleep
            break
        sent += 1
        if rng.random() < 0.35:
            service, method, path = (
                "detector",
                rng.choice(["POST", "GET"]),
                rng.choice(["/v1/score", "/metrics", "/healthz", "/nope", "/v1/score?x=1"]),
            )
            token = DETECTOR_TOKEN
        else:
            service, (method, path) = "alerting", rng.choice(alert)
            token = TOKEN
        headers: dict[str, str] = {}
        r = rng.random()
        if r < 0.6:
            headers["Authorization"] = f"Bearer {token}"
        elif r < 0.7:
            headers["Authorization"] = "Bearer " + "x" * rng.choice([1, 100, 10_000])
        elif r < 0.75:
            headers["Cookie"] = "ecg_session=" + "f" * 64
        body = rng.choice(bodies) if method == "POST" else b""
        if rng.random() < 0.3:
            headers["Content-Type"] = rng.choice(
                ["application/json", "multipart/form-data; boundary=b", "text/plain", "multipart/x"]
            )
        raw = None
        q = rng.random()
        if q < 0.05:
            headers["Content-Length"] = rng.choice(["-1", "-999999", "abc", "1e3", "99999999999"])
        elif q < 0.1:
            headers["Transfer-Encoding"] = "chunked"
            body = b"ff\r\n" + os.urandom(255) + b"\r\nzz\r\n"
        elif q < 0.13:
            raw = rng.choice(
                [
                    b"GARBAGE\r\n\r\n",
                    b"GET / HTTP/9.9\r\n\r\n",
                    os.urandom(300),
                    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
                ]
            )
        status = _http_request(ports[service], method, path, headers, body, raw)
        label = {0: "closed_without_answer", -1: "timed_out"}.get(status, f"{status // 100}xx")
        codes[f"{service}:{label}"] += 1
        if status >= 500:
            codes[f"{service}:5xx:{method} {path[:40]}"] += 1


def _counter_samples(text: str, name: str) -> dict[str, float]:
    """`reason` label -> value of one counter family in Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            reason = (
                labels.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in labels else "?"
            )
            out[reason] = out.get(reason, 0.0) + float(value)
    return out


def run(
    data_dir: Path, run_dir: Path, seconds: float, seed: int, max_beds: int = 128
) -> dict[str, Any]:
    """The live part of `make fuzz`; the report's live fields."""
    rng = random.Random(seed)
    stack = start_stack(run_dir, data_dir, max_beds)
    watch: BeatWatch | None = None
    try:
        watch = BeatWatch(stack.ports["mqtt"])
        _wait("the real bed's first beats", lambda: watch.count() >= 10, stack, 90)
        time.sleep(3.0)  # past start-up: the baseline is the steady state
        pids = {n: stack.procs[n].pid for n in ("detector", "alerting")}
        rss0 = {n: rss_mb(p) for n, p in pids.items()}
        stop = threading.Event()
        counts: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        threads = [
            threading.Thread(
                target=mqtt_attack,
                args=(stack.ports["mqtt"], stop, random.Random(rng.random()), 300.0, counts),
                daemon=True,
            ),
            threading.Thread(
                target=http_attack,
                args=(stack.ports, stop, random.Random(rng.random()), 25.0, codes),
                daemon=True,
            ),
        ]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        stop.wait(seconds)
        stop.set()
        for t in threads:
            t.join(30)
        time.sleep(2.0)  # let the last messages be handled
        t_end = time.monotonic()
        rss1 = {n: rss_mb(p) for n, p in pids.items()}
        _, det_metrics = _get(f"http://127.0.0.1:{stack.ports['detector']}/metrics")
        _, alert_metrics = _get(f"http://127.0.0.1:{stack.ports['alerting']}/metrics", TOKEN)
        bed_status, bed = _get(
            f"http://127.0.0.1:{stack.ports['alerting']}/api/beds/{GOOD_BED}", TOKEN
        )
        det = _counter_samples(det_metrics.decode(), "ecg_detector_bad_messages_total")
        alerting = _counter_samples(alert_metrics.decode(), "ecg_alerting_dropped_messages_total")
        try:
            good = json.loads(bed)
        except ValueError:
            good = {}
        http_sent = sum(v for k, v in codes.items() if k.count(":") == 1)
        return {
            "inputs": counts["mqtt"] + http_sent,
            "mqtt_messages": counts["mqtt"],
            "http_requests": http_sent,
            "http_status": {k: v for k, v in sorted(codes.items()) if k.count(":") == 1},
            "http_5xx": sum(v for k, v in codes.items() if k.count(":") == 1 and ":5xx" in k),
            "http_5xx_routes": {k: v for k, v in codes.items() if k.count(":") == 2},
            "http_timeouts": sum(v for k, v in codes.items() if k.endswith(":timed_out")),
            "dead_services": stack.dead(),
            "internal_errors": {
                "detector": det.get("internal_error", 0.0),
                "alerting": alerting.get("internal_error", 0.0),
            },
            "drops_detector": det,
            "drops_alerting": alerting,
            "rss_mb_before": rss0,
            "rss_mb_after": rss1,
            "rss_growth_mb": {n: round(rss1[n] - rss0[n], 1) for n in pids},
            "good_bed_max_gap_s": round(watch.max_gap(t_start, t_end), 3),
            "good_bed_beats_during_attack": sum(1 for t in watch.arrivals if t_start <= t),
            "good_bed_at_alerting": {
                "status": bed_status,
                "hr_bpm": good.get("hr_bpm"),
                "beats_held": len(good.get("beats", [])),
                "newest_beat_age_s": round(
                    time.time() - max((b["t"] for b in good.get("beats", [])), default=math.nan), 1
                ),
            },
            "attack_s": round(t_end - t_start, 1),
        }
    finally:
        if watch is not None:
            watch.close()
        stack.stop()
