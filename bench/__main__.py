"""`make bench`: the most beds the detector sustains in real time, on this machine.

For each bed count N it starts a fresh Mosquitto, the detector (`python -m detector`) and the
load generator (`python -m bench.loadgen`, N beds of MIT-BIH in real time), all on this
machine, and measures while the beds stream:
- latency: from the publication of the chunk holding the last sample a beat's window needs to
  the arrival of the beat's result at a subscriber (so it includes the broker both ways);
- the detector's CPU (utime + stime from /proc) and resident memory;
- whether it kept up: p99 latency <= 1 s, the load generator on schedule, no chunk lost.
N doubles until a run fails, then a binary search narrows the limit. A last run at the limit
profiles the detector's threads with cProfile and prints where the time goes.

    python -m bench --out reports/bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from bench.report import write_report
from bench.services import (
    ROOT,
    add_stream_options,
    bench_env,
    proc_cpu_s,
    proc_rss_mb,
    start_detector,
    stop_process,
)
from detector.mqtt_client import BufferedClient
from ecgcommon.topics import subscription
from ecgcommon.windowing import WINDOW
from tests.helpers.broker import ANONYMOUS, Mosquitto
from tests.helpers.ports import free_port

FS = 360.0
LATENCY_P99_MAX_S = 1.0
LATE_P99_MAX_S = 0.25  # the load generator itself must stay on schedule
# no queue or in-flight limit: a slow subscriber is measured, not cut off by the broker
BROKER_OPTIONS = {**ANONYMOUS, "max_queued_messages": 0, "max_inflight_messages": 0}


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


class LatencyProbe:
    """Subscribes to every beat of the ward and times each against its chunk's publication."""

    def __init__(self, port: int, ward: str, chunk_n: int) -> None:
        self.chunk_n = chunk_n
        self.post = WINDOW.post_samples(FS)
        self.measure_from = float("inf")
        self.latencies: list[float] = []
        self.beats = 0
        ready = threading.Event()
        # the detector's buffered client: a plain paho client falls behind >1000 beats/s
        c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{ward}")
        c.on_connect = lambda cl, *_: cl.subscribe(subscription("beats", ward=ward), qos=0)
        c.on_subscribe = lambda *_: ready.set()
        c.on_message = self._on
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not ready.wait(10):
            raise RuntimeError("probe could not subscribe")
        self.client = c

    def _on(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        for b in json.loads(msg.payload)["beats"]:
            self.beats += 1
            if now < self.measure_from:
                continue
            sample = b["sample"]
            need = sample + self.post  # last sample the window needs
            # the chunk holding it went out when its last sample was due (stream clock)
            due = b["t"] - sample / FS + ((need // self.chunk_n) + 1) * self.chunk_n / FS
            self.latencies.append(now - due)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def trial(beds: int, args: argparse.Namespace, profile_to: str | None = None) -> dict:
    """One run at `beds` beds; returns its measurements and whether it was sustained."""
    work = Path(tempfile.mkdtemp(prefix="ecg-bench-"))
    http_port = free_port()
    ward = f"bench{beds}"
    broker = Mosquitto(work, options=BROKER_OPTIONS)
    env = bench_env(**({"DETECTOR_CPROFILE_OUT": profile_to} if profile_to else {}))
    procs: list[subprocess.Popen] = []
    chunk_n = int(round(args.chunk_s * FS))
    detector_log = open(work / "detector.log", "wb")
    try:
        broker.start()
        mq_port = broker.port
        det = start_detector(
            mq_port,
            ward,
            http_port,
            [
                "--max-batch",
                str(args.max_batch),
                "--max-wait-s",
                str(args.max_wait_s),
                "--max-beds",  # the bed table is bounded (ecgcommon.limits); this run needs all
                str(beds + 16),
            ],
            env,
            detector_log,
        )
        procs.append(det)
        probe = LatencyProbe(mq_port, ward, chunk_n)
        start_at = time.time() + 1.0
        total_s = args.warmup_s + args.measure_s
        gen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--port",
                str(mq_port),
                "--ward",
                ward,
                "--beds",
                str(beds),
                "--chunk-s",
                str(args.chunk_s),
                "--duration-s",
                str(total_s),
                "--start-at",
                str(start_at),
            ]
            + (["--data-dir", args.data_dir] if args.data_dir else []),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(gen)
        time.sleep(max(0.0, start_at + args.warmup_s - time.time()))
        probe.measure_from = time.time()
        cpu0, wall0 = proc_cpu_s(det.pid), time.monotonic()
        broker_cpu0 = proc_cpu_s(broker.proc.pid) if broker.proc else math.nan
        gen_out, gen_err = gen.communicate(timeout=total_s + 120)
        cpu1, wall1 = proc_cpu_s(det.pid), time.monotonic()
        broker_cpu1 = proc_cpu_s(broker.proc.pid) if broker.proc else math.nan
        rss, hwm = proc_rss_mb(det.pid)
        time.sleep(1.5)  # let the last windows drain
        probe.close()
        metrics = scrape(http_port)
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed: {gen_err.decode()[-2000:]}")
        gen_doc = json.loads(gen_out.decode().strip().splitlines()[-1])
        det.send_signal(signal.SIGINT)
        det.wait(timeout=30)
    finally:
        for p in reversed(procs):
            stop_process(p)
        broker.stop()
        detector_log.close()
    lat = np.asarray(probe.latencies) if probe.latencies else np.array([np.inf])
    chunks = metrics.get("ecg_detector_chunks_total", 0.0)
    lost = gen_doc["published"] - chunks
    gaps = metrics.get('ecg_detector_events_total{type="gap"}', 0.0)
    cores = (cpu1 - cpu0) / (wall1 - wall0)
    result = {
        "beds": beds,
        "msgs_per_s": gen_doc["published"] / total_s,  # sample chunks in (beats out: ~1.3x beds)
        "latency_s": {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        },
        "beats_timed": len(probe.latencies),
        "detector_cpu_cores": cores,
        # what else ran on the same cores (the machine's budget; not a criterion)
        "loadgen_cpu_cores": gen_doc.get("cpu_s", math.nan) / max(gen_doc["wall_s"], 1e-9),
        "broker_cpu_cores": (broker_cpu1 - broker_cpu0) / (wall1 - wall0),
        "detector_rss_mb": rss,
        "detector_peak_rss_mb": hwm,
        "loadgen_late_p99_s": gen_doc["late_p99_s"],
        "chunks_published": gen_doc["published"],
        "chunks_lost": lost,
        "gap_events": gaps,
        "bad_messages": sum(
            v for k, v in metrics.items() if k.startswith("ecg_detector_bad_messages_total")
        ),
    }
    result["sustained"] = bool(
        result["latency_s"]["p99"] <= LATENCY_P99_MAX_S
        and gen_doc["late_p99_s"] <= LATE_P99_MAX_S
        and lost <= 0
        and gaps == 0
        and len(probe.latencies) > beds
    )
    return result


def profile_summary(prefix: str, top: int = 15) -> dict:
    """Merge the per-thread cProfile dumps: own time by area and the top functions, as shares
    of the busy time (time blocked in select() or on the queue is reported apart as idle)."""
    files = sorted(str(p) for p in Path(prefix).parent.glob(Path(prefix).name + ".*"))
    stats = pstats.Stats(*files)
    rows = []
    areas: dict[str, float] = {}
    idle = 0.0
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        area = _area(file, func)
        if area == "idle":
            idle += tottime
            continue
        rows.append((tottime, ncalls, cumtime, f"{Path(file).name}:{line}({func})"))
        areas[area] = areas.get(area, 0.0) + tottime
    busy = sum(areas.values()) or 1.0
    rows.sort(reverse=True)
    return {
        "threads": [Path(f).suffix.lstrip(".") for f in files],
        "busy_s": busy,
        "idle_s": idle,
        "by_area": {k: round(v / busy, 4) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])},
        "top_functions": [
            {
                "function": name,
                "tottime_s": round(t, 3),
                "share": round(t / busy, 4),
                "calls": n,
                "cumtime_s": round(c, 3),
            }
            for t, n, c, name in rows[:top]
        ],
    }


def _area(file: str, func: str) -> str:
    if "select" in func or "SimpleQueue" in func or "acquire" in func:
        return "idle"
    if "paho" in file:
        return "mqtt (paho)"
    if "onnxruntime" in file or "onnxruntime" in func:
        return "onnx inference"
    if "socket" in func:
        return "sockets"
    for key, area in (
        ("detector/qrs", "qrs"),
        ("windowing", "windowing"),
        ("detector/pipeline", "pipeline"),
        ("model_contract/adapter", "anomaly"),  # the patient adaptation (was detector/anomaly)
        ("model_contract/features", "anomaly"),
        ("rhythm", "rhythm"),
        ("protocol", "protocol (encode/decode)"),
        ("detector/engine", "engine"),
        ("detector/integrity", "pipeline"),
        ("json", "json"),
        ("prometheus_client", "metrics"),
        ("scipy", "scipy"),
        ("numpy", "numpy"),
    ):
        if key in file:
            return area
    if func.startswith("<method") or func.startswith("<built-in"):
        return "builtins (numpy kernels, json, struct)"
    return "other python"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_stream_options(p, "reports/bench.json", chunk_s=1.0, warmup_s=15.0, measure_s=20.0)
    p.add_argument(
        "--beds", type=int, nargs="+", default=None, help="run these bed counts only (no search)"
    )
    p.add_argument("--start-beds", type=int, default=250)
    p.add_argument("--max-beds", type=int, default=16000)
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--max-wait-s", type=float, default=0.05)
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args(argv)

    runs: list[dict] = []

    def run(n: int) -> bool:
        r = trial(n, args)
        runs.append(r)
        print(
            f"{n:6d} beds: {'ok  ' if r['sustained'] else 'FAIL'} p50 {r['latency_s']['p50']:.3f}"
            f" s  p99 {r['latency_s']['p99']:.3f} s  detector {r['detector_cpu_cores']:.2f} "
            f"cores  {r['detector_rss_mb']:.0f} MB  {r['msgs_per_s']:.0f} msg/s  "
            f"late p99 {r['loadgen_late_p99_s']:.3f} s  lost {r['chunks_lost']:.0f}  loadgen "
            f"{r['loadgen_cpu_cores']:.2f} / broker {r['broker_cpu_cores']:.2f} cores",
            flush=True,
        )
        return r["sustained"]

    lo, hi = 0, None
    n = args.start_beds if args.beds is None else args.max_beds + 1  # a fixed list: no search
    for fixed in args.beds or []:
        run(fixed)
    while n <= args.max_beds:
        if run(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    if hi is not None:
        while hi - lo > max(50, lo // 10):
            mid = (lo + hi) // 2
            if run(mid):
                lo = mid
            else:
                hi = mid
    best = max((r for r in runs if r["sustained"]), key=lambda r: r["beds"], default=None)
    report: dict = {
        "max_beds_realtime": best["beds"] if best else 0,
        "beds_per_detector_core": (best["beds"] / best["detector_cpu_cores"]) if best else 0.0,
        "msgs_per_s": best["msgs_per_s"] if best else 0.0,
        "latency_s": {"p50": best["latency_s"]["p50"], "p99": best["latency_s"]["p99"]}
        if best
        else {"p50": None, "p99": None},
        "detector_rss_mb": best["detector_rss_mb"] if best else None,
        "chunk_s": args.chunk_s,
        "machine": {
            "cpu_cores": os.cpu_count(),
            "note": "loadgen, mosquitto, detector and the latency probe share these cores",
        },
        "criteria": {
            "latency_p99_max_s": LATENCY_P99_MAX_S,
            "loadgen_late_p99_max_s": LATE_P99_MAX_S,
            "chunks_lost": 0,
            "gap_events": 0,
        },
        "command": "make bench  (python -m bench --out reports/bench.json)",
        "runs": runs,
    }
    at_1000 = [r for r in runs if r["beds"] == 1000]
    if at_1000:
        report["detector_rss_mb_at_1000_beds"] = at_1000[0]["detector_rss_mb"]
    if best and not args.no_profile:
        prefix = str(Path(tempfile.mkdtemp(prefix="ecg-prof-")) / "detector.prof")
        prof_run = trial(best["beds"], args, profile_to=prefix)
        summary = profile_summary(prefix)
        summary["beds"] = best["beds"]
        summary["note"] = "cProfile of the detector's worker and MQTT threads (slows them down)"
        summary["run"] = prof_run
        report["profile"] = summary
        print(f"\nwhere the detector's time goes at {best['beds']} beds (cProfile, own time):")
        for area, share in summary["by_area"].items():
            print(f"  {share:6.1%}  {area}")
        for row in summary["top_functions"]:
            print(
                f"  {row['share']:6.1%}  {row['tottime_s']:8.3f} s  {row['calls']:9d}  "
                f"{row['function']}"
            )
    # strict JSON: a run with no beat timed has non-finite figures, written as null
    out = write_report(args.out, report, nan_as_null=True)
    print(
        f"\nmax_beds_realtime {report['max_beds_realtime']}, beds_per_detector_core "
        f"{report['beds_per_detector_core']:.0f}, p99 {report['latency_s']['p99']}, "
        f"rss {report['detector_rss_mb']} MB -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
