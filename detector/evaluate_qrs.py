"""`make eval-qrs`: our streaming QRS detector against the reference beats, gqrs and XQRS.

Each record's lead 0 is fed to `QRSDetector` in 100 ms chunks, as it would arrive live. Beats
are matched to the reference beat annotations (beat symbols only) by
`wfdb.processing.compare_annotations` within 150 ms. gqrs and XQRS (wfdb.processing) run on
the same signals in the same run. Prints a per-record table and pooled totals, writes JSON.

    python -m detector.evaluate_qrs --data-dir ../shared/data/mitdb --out reports/qrs.json
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import wfdb.processing as wp

from detector.qrs import QRSConfig, QRSDetector
from ecgcommon.aami import beat_mask
from ecgcommon.records import RecordError, annotated_records, load_record, resolve_data_dir

MATCH_WINDOW_S = 0.15
CHUNK_S = 0.1
PEERS = ("gqrs", "xqrs")


@dataclass(frozen=True)
class Job:
    name: str
    data_dir: str
    peers: bool
    config: QRSConfig
    resample_hz: float | None = None


def _score(ref: np.ndarray, test: np.ndarray, fs: float) -> dict[str, float | int]:
    """Sensitivity, positive predictivity and counts of test against reference beats."""
    cmp = wp.compare_annotations(ref, np.asarray(test, dtype=np.int64), round(MATCH_WINDOW_S * fs))
    tp, fn, fp = int(cmp.tp), int(cmp.fn), int(cmp.fp)
    return {"se": _ratio(tp, tp + fn), "ppv": _ratio(tp, tp + fp), "tp": tp, "fn": fn, "fp": fp}


def _ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


def run_detector(
    x: np.ndarray, fs: float, config: QRSConfig
) -> tuple[np.ndarray, np.ndarray, float]:
    """Feed x in 100 ms chunks: (R-peaks, decision delays in s, CPU seconds in the detector)."""
    det = QRSDetector(fs, config)
    step = max(1, round(CHUNK_S * fs))
    peaks: list[np.ndarray] = []
    delays: list[np.ndarray] = []
    cpu = 0.0
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        t0 = time.process_time()
        found = det.feed(chunk)
        cpu += time.process_time() - t0
        if len(found):
            peaks.append(found)
            # the beat is out once the chunk's last sample has arrived
            delays.append((det.samples_seen - 1 - found) / fs)
    if not peaks:
        return np.empty(0, np.int64), np.empty(0), cpu
    return np.concatenate(peaks), np.concatenate(delays), cpu


def _resample(x: np.ndarray, fs: float, new_fs: float) -> np.ndarray:
    from fractions import Fraction

    from scipy.signal import resample_poly

    frac = Fraction(new_fs / fs).limit_denominator(1000)
    return resample_poly(x, frac.numerator, frac.denominator)


def evaluate_record(job: Job) -> dict:
    """Everything measured on one record (runs in a worker process)."""
    rec = load_record(job.name, job.data_dir)
    if rec.ann_samples is None or rec.ann_symbols is None:
        raise RecordError(f"record {job.name!r} has no reference annotations")
    x, fs = rec.lead(0), rec.fs
    ref = rec.ann_samples[beat_mask(rec.ann_symbols)]
    if job.resample_hz:
        x = _resample(x, fs, job.resample_hz)
        ref = np.round(ref * job.resample_hz / fs).astype(np.int64)
        fs = job.resample_hz
    peaks, delays, cpu = run_detector(x, fs, job.config)
    out: dict[str, Any] = _score(ref, peaks, fs)
    out.update(
        fs=fs,
        duration_s=len(x) / fs,
        cpu_s=cpu,
        realtime_factor=(len(x) / fs) / cpu if cpu > 0 else float("inf"),
        delays=delays.tolist(),
    )
    if job.peers:
        peers: dict[str, dict[str, Any]] = {}
        t0 = time.process_time()
        peers["gqrs"] = _score(ref, wp.gqrs_detect(sig=x, fs=fs), fs)
        peers["gqrs"]["cpu_s"] = time.process_time() - t0
        t0 = time.process_time()
        logging.disable(logging.INFO)  # XQRS logs every learning step
        peers["xqrs"] = _score(ref, wp.xqrs_detect(sig=x, fs=fs, verbose=False), fs)
        peers["xqrs"]["cpu_s"] = time.process_time() - t0
        out["peers"] = peers
    return out


def _pooled(rows: list[dict]) -> dict[str, Any]:
    tp = sum(r["tp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    return {"se": _ratio(tp, tp + fn), "ppv": _ratio(tp, tp + fp), "tp": tp, "fn": fn, "fp": fp}


def summarise(results: dict[str, dict], peers: bool, config: QRSConfig) -> dict:
    """The JSON report: pooled detector figures, peers, per-record rows."""
    rows = list(results.values())
    delays = np.concatenate([np.asarray(r["delays"]) for r in rows]) if rows else np.empty(0)
    seconds = sum(r["duration_s"] for r in rows)
    cpu = sum(r["cpu_s"] for r in rows)
    detector = _pooled(rows)
    detector.update(
        delay_p50_s=float(np.percentile(delays, 50)) if len(delays) else None,
        delay_p99_s=float(np.percentile(delays, 99)) if len(delays) else None,
        delay_max_s=float(delays.max()) if len(delays) else None,
        delay_percentiles_s={
            f"p{q:g}": float(np.percentile(delays, q)) for q in (1, 10, 25, 50, 75, 90, 99, 99.9)
        }
        if len(delays)
        else {},
        delay_histogram={
            "edges_s": [round(0.05 * k, 2) for k in range(11)],
            "counts": np.histogram(delays, bins=np.linspace(0, 0.5, 11))[0].tolist(),
            "over_0.5_s": int(np.sum(delays > 0.5)),
        },
        realtime_factor=seconds / cpu if cpu > 0 else None,
        chunk_s=CHUNK_S,
        signal_s=seconds,
    )
    report: dict = {
        "detector": detector,
        "match_window_s": MATCH_WINDOW_S,
        "config": asdict(config),
        "records": {},
    }
    if peers:
        report["peers"] = {
            p: _pooled([r["peers"][p] for r in rows])
            | {"cpu_s": sum(r["peers"][p]["cpu_s"] for r in rows)}
            for p in PEERS
        }
    for name, r in results.items():
        d = np.asarray(r["delays"])
        row = {
            k: r[k] for k in ("se", "ppv", "tp", "fn", "fp", "fs", "duration_s", "realtime_factor")
        }
        row["delay_p99_s"] = float(np.percentile(d, 99)) if len(d) else None
        if peers:
            row["peers"] = {
                p: {k: r["peers"][p][k] for k in ("se", "ppv", "tp", "fn", "fp")} for p in PEERS
            }
        report["records"][name] = row
    return report


def print_table(report: dict, out: TextIO | None = None) -> None:
    """Per-record table and pooled totals, percentages (to stdout by default)."""
    out = out if out is not None else sys.stdout
    peers = "peers" in report
    head = f"{'record':>8} {'beats':>6} {'TP':>6} {'FN':>4} {'FP':>4} {'Se%':>7} {'+P%':>7}"
    if peers:
        head += f" | {'gqrs Se':>7} {'+P':>7} | {'xqrs Se':>7} {'+P':>7}"
    print(head, file=out)
    for name, r in report["records"].items():
        line = (
            f"{name:>8} {r['tp'] + r['fn']:>6} {r['tp']:>6} {r['fn']:>4} {r['fp']:>4} "
            f"{100 * r['se']:>7.2f} {100 * r['ppv']:>7.2f}"
        )
        if peers:
            g, x = r["peers"]["gqrs"], r["peers"]["xqrs"]
            line += (
                f" | {100 * g['se']:>7.2f} {100 * g['ppv']:>7.2f}"
                f" | {100 * x['se']:>7.2f} {100 * x['ppv']:>7.2f}"
            )
        print(line, file=out)
    d = report["detector"]
    print(
        f"{'pooled':>8} {d['tp'] + d['fn']:>6} {d['tp']:>6} {d['fn']:>4} {d['fp']:>4} "
        f"{100 * d['se']:>7.2f} {100 * d['ppv']:>7.2f}",
        file=out,
    )
    if peers:
        for p, v in report["peers"].items():
            print(
                f"{p:>8} Se {100 * v['se']:.2f} %  +P {100 * v['ppv']:.2f} %"
                f"  (TP {v['tp']}, FN {v['fn']}, FP {v['fp']})",
                file=out,
            )
    print(
        f"decision delay p50 {d['delay_p50_s']:.3f} s, p99 {d['delay_p99_s']:.3f} s, "
        f"max {d['delay_max_s']:.3f} s; realtime factor {d['realtime_factor']:.0f} x "
        f"(signal s per CPU s, {1000 * d['chunk_s']:.0f} ms chunks)",
        file=out,
    )


def _config(pairs: list[str]) -> QRSConfig:
    types = {f.name: f.type for f in fields(QRSConfig)}
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set expects NAME=VALUE with NAME in {sorted(types)}, got {pair!r}")
        kwargs[key] = int(value) if types[key] in ("int", int) else float(value)
    return QRSConfig(**kwargs)


def main(argv: list[str] | None = None) -> int:
    """Evaluate on the records, print the table, write the JSON report; 0 on success."""
    ap = argparse.ArgumentParser(
        prog="python -m detector.evaluate_qrs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--data-dir",
        default=None,
        help="WFDB folder (default: $ECG_DATA_DIR or ../shared/data/mitdb)",
    )
    ap.add_argument(
        "--records", nargs="+", default=None, help="record names (default: every annotated record)"
    )
    ap.add_argument("--out", default="reports/qrs.json", help="JSON report path")
    ap.add_argument("--no-peers", action="store_true", help="skip gqrs and XQRS (faster)")
    ap.add_argument(
        "--resample",
        type=float,
        default=None,
        metavar="HZ",
        help="resample each record to this rate first (robustness check)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes (default: 2)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a QRSConfig field (experiments)",
    )
    args = ap.parse_args(argv)
    try:
        config = _config(args.set)
        folder = resolve_data_dir(args.data_dir)
        names = args.records or annotated_records(folder)
    except (RecordError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = [Job(n, str(folder), not args.no_peers, config, args.resample) for n in names]
    try:
        if args.jobs > 1 and len(jobs) > 1:
            with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
                rows = pool.map(evaluate_record, jobs, chunksize=1)
        else:
            rows = [evaluate_record(j) for j in jobs]
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = summarise(dict(zip(names, rows, strict=True)), not args.no_peers, config)
    report["data_dir"] = str(folder)
    report["resample_hz"] = args.resample
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
