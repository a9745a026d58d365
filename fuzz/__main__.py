"""`python -m fuzz` (`make fuzz`): the bounded fuzz run, written to reports/fuzz.json.

In process: every decoder (mutations and hypothesis), the upload parser, and the detector's and
alerting's message handlers. Live: the real services over a real Mosquitto and real HTTP with
hostile input while a real record streams (fuzz/live.py). Targets (issue 10): 0 crashes, 0
unhandled errors, 0 HTTP 5xx, RSS growth <= 50 MB, good_bed_max_gap_s <= 1.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.report import write_report
from fuzz import inprocess, live

TARGETS = {
    "crashes": 0,
    "unhandled_errors": 0,
    "http_5xx": 0,
    "rss_growth_mb": 50.0,
    "good_bed_max_gap_s": 1.0,
}
HEADLINE = (  # the report's keys printed on stdout
    "inputs",
    "crashes",
    "unhandled_errors",
    "rss_growth_mb",
    "http_5xx",
    "good_bed_max_gap_s",
    "targets_met",
    "duration_s",
)


def _rss_mb() -> float:
    return live.rss_mb(__import__("os").getpid())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    p.add_argument("--data-dir", default="../shared/data/mitdb")
    p.add_argument("--out", default="reports/fuzz.json")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--decoder-inputs", type=int, default=60_000)
    p.add_argument("--hypothesis-inputs", type=int, default=4_000)
    p.add_argument("--upload-inputs", type=int, default=1_000)
    p.add_argument("--handler-inputs", type=int, default=30_000)
    p.add_argument("--live-s", type=float, default=90.0, help="0: no live part")
    p.add_argument("--model-dir", default="")
    a = p.parse_args(argv)
    from detector.config import DetectorConfig

    model_dir = a.model_dir or DetectorConfig().model_dir
    data_dir = Path(a.data_dir)
    rng = random.Random(a.seed)
    tally = inprocess.Tally()
    t0 = time.monotonic()
    rss0 = _rss_mb()
    phases: dict[str, float] = {}
    for name, run in (
        ("decoders", lambda: inprocess.decoders(a.decoder_inputs, rng, tally)),
        ("hypothesis", lambda: inprocess.decoders_hypothesis(a.hypothesis_inputs, tally)),
        ("uploads", lambda: inprocess.uploads(a.upload_inputs, rng, tally)),
    ):
        start = time.monotonic()
        run()
        phases[name] = round(time.monotonic() - start, 1)
        print(
            f"fuzz: {name}: {tally.inputs} inputs so far, {tally.unhandled_errors} unhandled",
            file=sys.stderr,
            flush=True,
        )
    start = time.monotonic()
    handlers = inprocess.handlers(a.handler_inputs, rng, tally, model_dir, data_dir)
    phases["handlers"] = round(time.monotonic() - start, 1)
    inproc_rss = round(_rss_mb() - rss0, 1)
    in_inputs = tally.inputs
    print(
        f"fuzz: in process done: {in_inputs} inputs; live for {a.live_s:g} s",
        file=sys.stderr,
        flush=True,
    )
    live_doc: dict = {}
    if a.live_s > 0:
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="fuzz-live-") as tmp:
            live_doc = live.run(data_dir, Path(tmp), a.live_s, a.seed)
        phases["live"] = round(time.monotonic() - start, 1)
    drops: Counter[str] = Counter(tally.drops)
    for key in ("drops_detector", "drops_alerting"):
        drops.update({k: int(v) for k, v in live_doc.get(key, {}).items()})
    live_internal = int(sum(live_doc.get("internal_errors", {}).values()))
    growth = live_doc.get("rss_growth_mb", {})
    gap = live_doc.get("good_bed_max_gap_s", math.nan)
    report = {
        "inputs": in_inputs + int(live_doc.get("inputs", 0)),
        "crashes": tally.crashes + len(live_doc.get("dead_services", [])),
        "unhandled_errors": tally.unhandled_errors + live_internal,
        "rss_growth_mb": max(growth.values()) if growth else None,
        "drops_by_reason": dict(sorted(drops.items(), key=lambda kv: -kv[1])),
        "http_5xx": int(live_doc.get("http_5xx", 0)),
        "good_bed_max_gap_s": gap if math.isfinite(gap) else None,
        "targets": TARGETS,
        "in_process": {
            "inputs": in_inputs,
            "unhandled_examples": tally.examples,
            "handlers": handlers,
            "harness_rss_growth_mb": inproc_rss,
        },
        "live": live_doc,
        "phases_s": phases,
        "duration_s": round(time.monotonic() - t0, 1),
        "seed": a.seed,
        "command": "python -m fuzz " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    met = (
        report["crashes"] == 0
        and report["unhandled_errors"] == 0
        and report["http_5xx"] == 0
        and (report["rss_growth_mb"] is None or report["rss_growth_mb"] <= 50.0)
        and (report["good_bed_max_gap_s"] is None or report["good_bed_max_gap_s"] <= 1.0)
    )
    report["targets_met"] = met
    write_report(a.out, report, HEADLINE, allow_nan=False)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
