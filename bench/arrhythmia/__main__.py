"""`python -m bench.arrhythmia`: the live chain offline on a WFDB folder, scored (issue 8).

    make eval-arrhythmia        # mitdb, every annotated record -> reports/arrhythmia.json
    make eval-arrhythmia DATA_DIR=../shared/data/cudb OUT=reports/arrhythmia-cudb.json
    make eval-noise             # noise stress -> reports/arrhythmia-noise.json

Noise stress (`--noise em,ma --snr-db 12,6,0`): nstdb-style records (bench/arrhythmia/noise.py)
from the given clean records (default on MIT-BIH: NOISE_RECORDS), one per record, noise and
SNR; the report holds the clean run of the same records and, under "noise", the same figures per
SNR plus `artifact_coverage`. Records play as the beds of wards of `--ward-size` (8) through
one engine each (cross-bed batches, as live), wards in `--jobs` (2) processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

from bench.arrhythmia import summary
from bench.arrhythmia.chain import ACK_AFTER_S, CHUNK_S
from bench.arrhythmia.noise import NOISE_KINDS, NoiseProtocol
from bench.arrhythmia.record import Task, evaluate
from bench.arrhythmia.score import ALARM_WINDOW, MATCH_WINDOW_S, PPV_WINDOW_S
from bench.report import write_report
from ecgcommon.aami import DS1, DS2
from ecgcommon.records import annotated_records, resolve_data_dir

log = logging.getLogger("bench.arrhythmia")
ROOT = Path(__file__).resolve().parent.parent.parent
# nstdb's own clean records (118, 119) and a DS2 record with few ectopic beats (100):
# 3 records x 2 noises x 3 SNRs = 9 bed-hours, a few minutes on 2 cores.
NOISE_RECORDS = ("100", "118", "119")
EC57_LEARNING_S = 300.0

DEFINITIONS = {
    "beats": "EC57 matching (150 ms), gross VEB/SVEB Se and +P, from 300 s on (EC57's learning "
    "period), records with paced beats left out; on MIT-BIH only the DS2 records given count",
    "vt": "a (VT rhythm holding >= 5 beats, or >= 5 consecutive V beats at >= 100 bpm; 3-4 beat "
    "(VT notes are 'vt_short' (a run, not VT)",
    "vf": "[ .. ] (unclosed: to the end), (VF or (VFL",
    "af": "(AFIB / (AFL (cudb: (AF); EC57 overlap matching; duration Se/+P by overlap time",
    "svt": "(SVTA or >= 5 consecutive S beats at >= 100 bpm; called_vt: a VT alarm starts within "
    "+-2 s of it",
    "alarmed": "a high alarm sounds (raised or re-announced) between onset - 1 s and onset + 10 s "
    "and its criterion was met (alarm start / re-trigger) before the episode ended; labelled: "
    "that alarm is vtach or vfib; time_to_alarm_s: onset to the first labelled alarm's sounding",
    "vt_ppv": "vtach/vfib alarms whose start lies within +-2 s of a VT/VF episode, a (VT note or a "
    "run of >= 3 V beats",
    "false_high": "a high alarm whose criterion the reference does not meet within +-2 s (VT/VF: "
    "a VT or VF episode; asystole: no beat for asystole_s; extreme brady/tachy: reference heart "
    "rate past the limit)",
    "reference_per_bed_hour": "the same alerting core fed with the reference: annotated beats "
    "with their AAMI classes (anomalous = not N), known 0.5 s after the R peak, and the "
    "reference VT/VF/AF/SVT episodes as episode events",
    "artifact_coverage": "share of the noisy segments' time under an open `noisy` alarm",
}


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x for x in v.replace(",", " ").split() if x]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.arrhythmia",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None, help="WFDB folder (default: resolved, mitdb)")
    p.add_argument("--records", nargs="*", default=None, help="records (default: all annotated)")
    p.add_argument("--out", default=str(ROOT / "reports" / "arrhythmia.json"))
    p.add_argument("--model-dir", default=None, help="detector model folder (default: its own)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--ward-size",
        type=int,
        default=8,
        help="records played at once as the beds of one ward (one engine; default 8)",
    )
    p.add_argument("--noise", default=None, help="noise stress: nstdb noises, e.g. em,ma")
    p.add_argument("--snr-db", default="12,6,0", help="noise stress SNRs in dB (default 12,6,0)")
    p.add_argument("--noise-dir", default=None, help="nstdb noise records (default: shared)")
    p.add_argument(
        "--duration-s", type=float, default=None, help="only the first seconds of each record"
    )
    p.add_argument(
        "--beats-from-s",
        type=float,
        default=EC57_LEARNING_S,
        help="beat figures from this time on (default 300 s, EC57's learning period)",
    )
    p.add_argument(
        "--no-reference-floor",
        dest="floor",
        action="store_false",
        help="skip feeding the alerting core with the reference (alarms.reference_per_bed_hour)",
    )
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error("--jobs must be >= 1")
    if a.ward_size < 1:
        p.error("--ward-size must be >= 1")
    a.records = _split(a.records)
    try:
        a.snrs = [float(x) for x in _split([a.snr_db])]
    except ValueError:
        p.error(f"--snr-db must be numbers, got {a.snr_db!r}")
    a.noises = _split([a.noise]) if a.noise else []
    bad = [n for n in a.noises if n not in NOISE_KINDS]
    if bad:
        p.error(f"--noise must be among {NOISE_KINDS}, got {bad}")
    if a.duration_s is not None and not a.duration_s > 0:
        p.error("--duration-s must be > 0")
    return a


def is_mitdb(data_dir: Path) -> bool:
    """A folder holding every MIT-BIH DS1 and DS2 record (then DS1 is training data)."""
    try:
        names = set(annotated_records(data_dir))
    except Exception:
        return False
    return set(DS1) | set(DS2) <= names


def groups_of(tasks: list[Task], size: int) -> list[list[Task]]:
    """Wards of at most `size` records with the same rate (one engine per ward), longest first."""
    by_key: dict[tuple[str, str | None], list[Task]] = {}
    for t in tasks:
        by_key.setdefault((t.data_dir, t.noise and f"{t.noise}{t.snr_db}"), []).append(t)
    out: list[list[Task]] = []
    for group in by_key.values():
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return sorted(out, key=len, reverse=True)


def run_tasks(tasks: list[Task], jobs: int, ward_size: int) -> list[dict[str, Any]]:
    """Evaluate the tasks as wards of `ward_size` beds in `jobs` processes; logs each record."""
    out: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    groups = groups_of(tasks, ward_size)
    if jobs == 1 or len(groups) == 1:
        for g in groups:
            for r in evaluate(g):
                out.append(r)
                _progress(r, len(out), len(tasks), t0)
        return out
    ctx = mp.get_context("spawn")  # a clean interpreter per worker (onnxruntime, threads)
    with ctx.Pool(jobs) as pool:
        for rows in pool.imap_unordered(evaluate, groups):
            for r in rows:
                out.append(r)
                _progress(r, len(out), len(tasks), t0)
    return out


def _progress(r: dict[str, Any], done: int, total: int, t0: float) -> None:
    if "error" in r:
        log.error("[%d/%d] %s: %s", done, total, r["key"], r["error"])
    else:
        log.info(
            "[%d/%d] %s %.2f h in %.1f s (%.0f s so far)",
            done,
            total,
            r["key"],
            r["hours"],
            r["wall_s"],
            time.perf_counter() - t0,
        )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = parse_args(argv)
    data_dir = resolve_data_dir(a.data_dir)
    mitdb = is_mitdb(data_dir)
    if a.records:
        records = a.records
    elif a.noises and mitdb:
        records = list(NOISE_RECORDS)
    else:
        records = annotated_records(data_dir)
    fs_any = None
    sampto = None
    if a.duration_s is not None:
        import wfdb

        fs_any = wfdb.rdheader(str(data_dir / records[0])).fs
        sampto = int(round(a.duration_s * fs_any))
    beat_set = set(DS2) if mitdb else None

    def task(name: str, noise: str | None = None, snr: float | None = None) -> Task:
        return Task(
            name=name,
            data_dir=str(data_dir),
            model_dir=a.model_dir,
            sampto=sampto,
            beats=beat_set is None or name in beat_set,
            beats_from_s=a.beats_from_s,
            noise=noise,
            snr_db=snr,
            noise_dir=a.noise_dir,
            reference_floor=a.floor and noise is None,
        )

    tasks = [task(n) for n in records]
    tasks += [task(n, k, s) for s in a.snrs for k in a.noises for n in records] if a.noises else []
    t0 = time.perf_counter()
    rows = run_tasks(tasks, a.jobs, a.ward_size)
    wall = time.perf_counter() - t0
    clean = [r for r in rows if r["key"] in records]
    report: dict[str, Any] = summary.summarise(clean)
    print(summary.table(rows))
    if a.noises:
        report["noise"] = {}
        for s in a.snrs:
            part = [r for r in rows if r.get("noise", {}).get("snr_db") == s]
            fig = summary.summarise(part)
            covered = sum(r.get("artifact", {}).get("covered_s", 0.0) for r in part)
            noisy = sum(r.get("artifact", {}).get("noisy_s", 0.0) for r in part)
            fig["artifact_coverage"] = round(covered / noisy, 4) if noisy else None
            report["noise"][f"{s:g}"] = fig
    report["settings"] = {
        "data_dir": str(data_dir),
        "records": records,
        "mitdb_ds2_beats_only": mitdb,
        "chunk_s": CHUNK_S,
        "ack_after_s": ACK_AFTER_S,
        "beat_match_window_s": MATCH_WINDOW_S,
        "beats_from_s": a.beats_from_s,
        "alarm_window_s": list(ALARM_WINDOW),
        "ppv_window_s": PPV_WINDOW_S,
        "duration_s": a.duration_s,
        "noise": None
        if not a.noises
        else {
            "kinds": a.noises,
            "snr_db": a.snrs,
            "records": records,
            "default_records": list(NOISE_RECORDS),
            "protocol": NoiseProtocol().__dict__,
            "why_these_records": "nstdb's clean records (118, 119) and a DS2 record with few "
            "ectopic beats (100): the test is about artifact, and keeps to minutes on 2 cores",
        },
        "classifier": all(r.get("classifier") for r in rows if "error" not in r),
        "models_refused": next((r["refused"] for r in rows if r.get("refused")), None),
        "jobs": a.jobs,
        "ward_size": a.ward_size,
        "wall_s": round(wall, 1),
        "command": "python -m bench.arrhythmia "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    report["definitions"] = DEFINITIONS
    out = write_report(a.out, report, indent=1)
    head = {k: report[k] for k in ("beats", "episodes", "lethal", "alarms")}
    head["beats"] = {k: v for k, v in head["beats"].items() if k != "records"}
    print(json.dumps(head))
    log.info("wrote %s (%.0f s)", out, wall)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
