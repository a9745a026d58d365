"""The real detector service as a child process of a benchmark (`make bench`, bench-alarms live).

Brokers, free ports and waits come from `tests.helpers`, shared with the test suite.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from tests.helpers.broker import stop_mosquitto
from tests.helpers.ports import accepts
from tests.helpers.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory (MiB) of process `pid`, from /proc."""
    info = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return int(info["VmRSS"].split()[0]) / 1024, int(info["VmHWM"].split()[0]) / 1024


def bench_env(**extra: str) -> dict[str, str]:
    """This environment with the repository importable (children run `python -m ...`)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def start_detector(
    mqtt_port: int,
    ward: str,
    http_port: int,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m detector` on the loopback broker at `mqtt_port`, serving HTTP on `http_port`,
    returned once its /healthz says it is connected (60 s, else WaitTimeout; RuntimeError
    if it exits first)."""
    cmd = [
        sys.executable,
        "-m",
        "detector",
        "--host",
        HOST,
        "--port",
        str(mqtt_port),
        "--ward",
        ward,
        "--http-host",
        HOST,
        "--http-port",
        str(http_port),
        *extra,
    ]
    out: IO[bytes] | int = log if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env or bench_env(), stdout=out, stderr=subprocess.STDOUT
    )
    try:
        wait_until(
            lambda: _healthy(http_port),
            60.0,
            "the detector's /healthz",
            check=_alive(proc),
            ignore=(OSError,),
        )
    except BaseException:
        stop_process(proc)
        raise
    return proc


def _healthy(http_port: int) -> bool:
    """The service answers 200 on /healthz (its worker runs, its broker connection is up)."""
    url = f"http://{HOST}:{http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except urllib.error.HTTPError:  # 503: not connected yet
        return False


def _alive(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    """A `wait_until` check: RuntimeError at once when the child has exited."""

    def check() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")

    return check


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 30.0) -> None:
    """Until `proc` accepts connections on `port`; RuntimeError if it exits first."""
    wait_until(
        lambda: accepts(HOST, port), timeout, f"a listener on port {port}", check=_alive(proc)
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers; a no-op for a process that already exited (the
    broker helper's stop, which ends any child this way)."""
    stop_mosquitto(proc, timeout)


def add_stream_options(
    p: argparse.ArgumentParser, out: str, chunk_s: float, warmup_s: float, measure_s: float
) -> None:
    """The options of a bench that streams beds and measures them: the report, the data folder,
    the device chunk, the warm-up and the measured time (s)."""
    p.add_argument("--out", default=out)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--chunk-s", type=float, default=chunk_s)
    p.add_argument("--warmup-s", type=float, default=warmup_s)
    p.add_argument("--measure-s", type=float, default=measure_s)
