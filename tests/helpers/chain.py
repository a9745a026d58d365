"""The default Mosquitto path as separate processes (a real Mosquitto; detector, alerting and
streamer as `python -m ...`), each of them killable and restartable, for the fault tests."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from .alerting import TOKEN, get_json, http, metric_value, wait_for
from .broker import Mosquitto
from .ports import free_port
from .procs import ROOT, service_argv, service_env

RECORDS = ("100", "103")  # sinus rhythm: no real pause or asystole in their first minutes


class Chain:
    """A real Mosquitto and real services as subprocesses, each killable and restartable."""

    def __init__(self, tmp: Path, ward: str) -> None:
        self.tmp, self.ward = tmp, ward
        self.mosquitto = Mosquitto(tmp)
        self.mqtt_port = self.mosquitto.port
        self.broker = self.mosquitto.broker
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.alerting_port = free_port()
        self.detector_port = free_port()
        self.start_broker()

    def start_broker(self) -> None:
        proc = self.mosquitto.start().proc
        assert proc is not None
        self.procs["mosquitto"] = proc

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=service_env(**(env or {})),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_detector(self) -> None:
        http_at = ("--http-host", "127.0.0.1", "--http-port", str(self.detector_port))
        self._spawn(
            "detector",
            service_argv("detector", self.broker, self.ward, *http_at),
            {"ECG_DETECTOR_TOKEN": "t" * 24},
        )

    def start_alerting(self) -> None:
        self._spawn(
            "alerting",
            [sys.executable, "-m", "alerting"],
            {
                "MQTT_HOST": "127.0.0.1",
                "MQTT_PORT": str(self.mqtt_port),
                "ECG_WARD": self.ward,
                "ALERTING_PORT": str(self.alerting_port),
                "ALERTING_TOKEN": TOKEN,
                "ALERTING_DB": str(self.tmp / "alarms.db"),
            },
        )

    def start_streamer(self, data_dir: Path, records: tuple[str, ...] = RECORDS) -> None:
        args = ("--beds", str(len(records)), "--records", *records, "--speed", "1")
        args += ("--data-dir", str(data_dir), "--http-host", "127.0.0.1", "--http-port", "0")
        self._spawn("streamer", service_argv("streamer", self.broker, self.ward, *args))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(10)

    def healthz(self, port: int) -> int:
        try:
            return http(port, "/healthz", token=None)[0]
        except OSError:
            return 0

    def wait_healthy(self, port: int, timeout: float = 60.0) -> None:
        wait_for(lambda: self.healthz(port) == 200, timeout=timeout, every=0.2)

    def beats_seen(self, bed: str) -> float:
        return metric_value(self.alerting_port, "ecg_bed_beats_total", bed=bed)

    def alarms(self, **query: str) -> list[dict[str, object]]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        alarms: list[dict[str, object]] = get_json(
            self.alerting_port, f"/api/alarms?limit=1000&{q}"
        )["alarms"]
        return alarms

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
