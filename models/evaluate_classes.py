"""Beat classes offline: EC57 gross VEB / SVEB Se and +P of the live classifier (default DS2).

    python -m models.evaluate_classes --data-dir ../shared/data/mitdb --out reports/classes.json

Each record's lead 0 goes through `DetectorEngine.score_signal`, the live code path (QRS
detector, beat segments, autoencoder, `PatientAdapter`, `detector.classifier`), run by
`python -m detector.offline classes` in its own process, so the evaluated classes are the live
classes. Detections are matched to the reference beats within 150 ms.
Gross statistics over all records given, paced records left out:
- VEB: TP = reference V called V; FN = reference V called anything else or missed;
  FP = reference N or S called V, and detections matching no reference beat called V (F and Q
  called V are not counted, as in EC57).
- SVEB: TP = S called S; FN = S called otherwise or missed; FP = N, V or F called S, and
  unmatched detections called S.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ecgcommon.aami import DS1, DS2, PACED_RECORDS
from ecgcommon.model_contract.beat_classes import load_manifest
from ecgcommon.model_contract.beat_data import MATCH_WINDOW_S, match, reference_beats
from ecgcommon.model_contract.manifest import DEFAULT_MODEL_DIR
from ecgcommon.records import annotated_records, load_record, resolve_data_dir
from models.classify_data import run_detector


def record_counts(name: str, data_dir: Path, det: np.ndarray, det_cls: list[str]) -> dict[str, int]:
    """Confusion counts of one record: reference class x detector class ("-" = missed/extra).

    `det`, `det_cls`: the detector's beat samples and classes ("-" when it gave none)."""
    rec = load_record(name, data_dir)
    if rec.ann_samples is None or rec.ann_symbols is None:
        raise ValueError(f"record {name} has no annotations")
    ref, ref_cls = reference_beats(rec.ann_samples, rec.ann_symbols)
    det_match, used = match(ref, det, round(MATCH_WINDOW_S * rec.fs))
    pairs: dict[str, int] = {}
    for i, j in enumerate(det_match.tolist()):
        key = f"{ref_cls[j] if j >= 0 else '-'}{det_cls[i]}"
        pairs[key] = pairs.get(key, 0) + 1
    for c in ref_cls[~used].tolist():
        pairs[f"{c}-"] = pairs.get(f"{c}-", 0) + 1
    return pairs


def gross(pairs: dict[str, int]) -> dict[str, dict[str, float | int]]:
    """EC57 gross VEB and SVEB figures from reference/detector class pair counts."""

    def count(refs: str, dets: str) -> int:
        return sum(n for k, n in pairs.items() if k[0] in refs and k[1] in dets)

    out = {}
    for name, c, fp_refs in (("veb", "V", "NS-"), ("sveb", "S", "NVF-")):
        others = "NSVFQ-".replace(c, "")
        tp, fn, fp = count(c, c), count(c, others), count(fp_refs, c)
        out[name] = {
            "se": tp / (tp + fn) if tp + fn else 1.0,
            "ppv": tp / (tp + fp) if tp + fp else 1.0,
            "tp": tp,
            "fn": fn,
            "fp": fp,
        }
    return out


def evaluate(records: list[str], data_dir: Path, model_dir: Path) -> dict[str, Any]:
    """Per-record and pooled figures of the live classifier."""
    with tempfile.TemporaryDirectory(prefix="classes-") as tmp:
        index = run_detector("classes", records, data_dir, model_dir, Path(tmp))
        detections = {}
        for name in records:
            with np.load(index["files"][name], allow_pickle=False) as z:
                detections[name] = (z["samples"], z["classes"].tolist())
    total: dict[str, int] = {}
    per: dict[str, Any] = {}
    for name in records:
        pairs = record_counts(name, data_dir, *detections[name])
        for k, n in pairs.items():
            total[k] = total.get(k, 0) + n
        per[name] = {**gross(pairs), "pairs": pairs}
    return {
        "beats": gross(total),
        "pairs": total,
        "records": per,
        "record_names": records,
        "data_dir": str(data_dir),
        "classifier_sha256": load_manifest(model_dir)["model_sha256"],
        "definitions": __doc__.split("Gross statistics", 1)[1].strip(),
        "classifier_us_per_beat_batch64": round(index["classifier_us_per_beat_batch64"], 1),
    }


def default_records(data_dir: Path) -> list[str]:
    """DS2 when the folder holds it, else every annotated record; paced records left out."""
    names = annotated_records(data_dir)
    if set(DS2) <= set(names):
        names = list(DS2)
    return [n for n in names if n not in PACED_RECORDS]


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{'record':>8} {'V tp':>6} {'fn':>5} {'fp':>5} {'Se':>6} {'+P':>6}   "
        f"{'S tp':>6} {'fn':>5} {'fp':>5} {'Se':>6} {'+P':>6}"
    )
    rows = [*report["records"].items(), ("gross", report["beats"])]
    for name, r in rows:
        v, s = r["veb"], r["sveb"]
        print(
            f"{name:>8} {v['tp']:6d} {v['fn']:5d} {v['fp']:5d} {v['se']:6.1%} {v['ppv']:6.1%}   "
            f"{s['tp']:6d} {s['fn']:5d} {s['fp']:5d} {s['se']:6.1%} {s['ppv']:6.1%}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--records", nargs="*", default=None)
    p.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--out", default="reports/classes.json")
    a = p.parse_args(argv)
    data_dir = resolve_data_dir(a.data_dir)
    records = a.records or default_records(data_dir)
    if any(r in DS1 for r in records) and "mitdb" in str(data_dir):
        print("note: DS1 records are training data for the classifier", file=sys.stderr)
    report = evaluate(records, data_dir, Path(a.model_dir))
    print_table(report)
    print(f"classifier: {report['classifier_us_per_beat_batch64']} µs per beat (batch 64)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
