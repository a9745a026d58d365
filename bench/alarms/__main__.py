"""`python -m bench.alarms` (`make bench-alarms`): the CLI; see the package doc."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import bench.alarms
from bench.alarms.replay import Scoring, load_scoring
from bench.alarms.signals import REFERENCE_LAG_S
from bench.alarms.timing import BOUNDS
from bench.report import write_report

log = logging.getLogger("bench.alarms")
ROOT = Path(__file__).resolve().parents[2]
SWEEP_CHUNKS_S = [1.0, 0.5, 0.25, 0.1]
HEADLINE = (
    "asystole_delay_s",
    "tachy_time_to_alarm_s",
    "dashboard_latency_s",
    "alarms_per_bed_hour",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.alarms",
        description=bench.alarms.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None, help="MIT-BIH folder (default: resolved)")
    p.add_argument("--records", nargs="*", default=None, help="records (default: all 48)")
    p.add_argument("--model-dir", default=None, help="detector model folder")
    p.add_argument(
        "--beats",
        choices=("auto", "detector", "reference"),
        default="auto",
        help="beats for the MIT-BIH load: the detector, or the reference annotations",
    )
    p.add_argument("--trials", type=int, default=10)
    p.add_argument(
        "--chunk-s",
        type=float,
        default=_streamer_chunk(),
        help="device chunk (default: the streamer's)",
    )
    p.add_argument(
        "--lag-s",
        type=float,
        default=None,
        help="how long after its R-peak a reference beat is known; also the simulated nurse's "
        "clock lag (default 0.5 s)",
    )
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument(
        "--ack-after-s",
        type=float,
        default=30.0,
        help="a simulated nurse acknowledges each alarm this long after it sounds",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="also measure dashboard latency (broker, service, chromium)",
    )
    p.add_argument("--skip-load", action="store_true", help="timing only, no MIT-BIH load")
    p.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        help="skip the live run (broker, detector and alerting services, wall clock)",
    )
    p.add_argument(
        "--chunk-sweep",
        action="store_true",
        help="also sweep the device chunk (asystole delay, asystole alarms on MIT-BIH)",
    )
    p.add_argument("--out", default=str(ROOT / "reports" / "alarms.json"))
    a = p.parse_args(argv)
    if a.trials < 1:
        p.error("--trials must be >= 1")
    if not 0.01 <= a.chunk_s <= 10:
        p.error("--chunk-s must be within 0.01..10 s")
    return a


def _timing(report: dict[str, Any], a: argparse.Namespace, scoring: Scoring | None) -> None:
    """The in-process timing trials: asystole, tachycardia, standstill with P waves."""
    from bench.alarms.timing import TrialSetup, asystole_trials, tachy_trials

    s = report["settings"]
    setup = TrialSetup(scoring, s["reference_lag_s"], a.chunk_s, s["detector_batch_s"])
    t = time.perf_counter()
    asys = asystole_trials(a.trials, setup, a.seed)
    tachy = tachy_trials(a.trials, setup, a.seed + 1)
    report["asystole_delay_s"] = asys["max"]
    report["tachy_time_to_alarm_s"] = tachy["max"]
    report["asystole"] = asys
    report["tachycardia"] = tachy
    # ventricular standstill: P waves go on; does the detector tell them from QRS complexes?
    report["standstill_with_p_waves"] = asystole_trials(a.trials, setup, a.seed + 3, p_waves=True)
    log.info(
        "asystole delay %s, tachy time to alarm %s (%.1f s)", asys, tachy, time.perf_counter() - t
    )


def _live(report: dict[str, Any], a: argparse.Namespace) -> None:
    """The live run; its worst delays join the headline figures."""
    from bench.alarms.live import measure_live

    try:
        live = measure_live(
            a.trials, a.chunk_s, a.seed + 2, Path(a.model_dir) if a.model_dir else None
        )
    except Exception as exc:  # reported, not hidden
        log.exception("live path not measured")
        report["live"] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    report["live"] = live
    log.info("live path: %s", live)
    for key in ("asystole_delay_s", "tachy_time_to_alarm_s"):
        worst = live[key]["max"]
        if worst is not None and (report[key] is None or worst > report[key]):
            report[key] = worst  # the headline is the worst of both runs


def _dashboard(report: dict[str, Any], a: argparse.Namespace) -> None:
    from bench.alarms.dashboard import measure_dashboard_latency

    try:
        dash = measure_dashboard_latency(trials=max(a.trials, 20), seed=a.seed)
    except Exception as exc:  # reported, not hidden
        log.exception("dashboard latency not measured")
        report["dashboard"] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    report["dashboard_latency_s"] = dash["max"]
    report["dashboard"] = dash


def _records(a: argparse.Namespace) -> tuple[list[str], Path]:
    from ecgcommon.records import annotated_records, resolve_data_dir

    data_dir = resolve_data_dir(a.data_dir)
    return a.records or annotated_records(data_dir), data_dir


def _load(report: dict[str, Any], a: argparse.Namespace, scoring: Scoring | None) -> None:
    from bench.alarms.load import mitdb_load

    records, data_dir = _records(a)
    mode = report["settings"]["load_beats"]
    t = time.perf_counter()
    load = mitdb_load(
        records,
        data_dir,
        scoring if mode == "detector" else None,
        mode,
        report["settings"]["reference_lag_s"],
        a.chunk_s,
        a.jobs,
        a.ack_after_s,
        log.info,
    )
    report["alarms_per_bed_hour"] = load.pop("alarms_per_bed_hour")
    report["load"] = load
    log.info(
        "alarm load %s over %s bed-hours (%.0f s)",
        report["alarms_per_bed_hour"],
        load["bed_hours"],
        time.perf_counter() - t,
    )


def _sweep(report: dict[str, Any], a: argparse.Namespace) -> None:
    from bench.alarms.load import chunk_sweep

    records, data_dir = _records(a)
    batch = report["settings"]["detector_batch_s"]
    report["chunk_sweep"] = chunk_sweep(
        records, data_dir, a.trials, a.seed, SWEEP_CHUNKS_S, batch, log.info
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # every replay has a fresh alerting core, each logging the first holes of its stream
    logging.getLogger("alerting").setLevel(logging.WARNING)
    a = parse_args(argv)
    lag = REFERENCE_LAG_S if a.lag_s is None else a.lag_s
    scoring = load_scoring(Path(a.model_dir) if a.model_dir else None)
    mode = a.beats
    if mode == "auto":
        mode = "detector" if scoring else "reference"
    if mode == "detector" and scoring is None:
        log.error("--beats detector needs a model (models/artifacts or --model-dir)")
        return 2
    report: dict[str, Any] = dict.fromkeys(HEADLINE)
    report["settings"] = {
        "chunk_s": a.chunk_s,
        "reference_lag_s": lag,
        "detector_batch_s": _detector_batch_delay(),
        "trials": a.trials,
        "seed": a.seed,
        "scorer": scoring.model_dir if scoring else None,
        "beat_classifier": bool(scoring and scoring.classifier is not None),
        "load_beats": mode,
        "command": "python -m bench.alarms " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    _timing(report, a, scoring)
    if a.live:
        _live(report, a)
    if a.dashboard:
        _dashboard(report, a)
    if not a.skip_load:
        _load(report, a, scoring)
    if a.chunk_sweep:
        _sweep(report, a)
    report["bounds"] = {
        key: {"limit_s": limit, "met": None if report[key] is None else report[key] <= limit}
        for key, limit in BOUNDS.items()
    }
    write_report(a.out, report, HEADLINE)
    return 0


def _streamer_chunk() -> float:
    """The streamer's default chunk length (what a replayed device sends per message)."""
    from streamer.config import StreamerConfig

    return float(StreamerConfig().chunk_s)


def _detector_batch_delay() -> float:
    """The detector's micro-batching deadline: a beat waits at most this long to be scored."""
    from detector.engine import EngineSettings

    return float(EngineSettings().max_wait_s)


if __name__ == "__main__":
    raise SystemExit(main())
