"""Choose the anomaly rule on DS1 only: record-wise cross-validation of feature sets and L2.

DS2 is never read. Out-of-fold autoencoder errors (as in `make train`) feed the causal patient
features; the logistic rule is then fitted on 5/6 of the DS1 records and scored on the rest, six
times, and the pooled held-out scores give AUCs and the V recall with 2 % of normal beats flagged.

    .venv/bin/python -m models.select [--data-dir DIR] [--out models/artifacts/selection.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ecgcommon.model_contract.features import FEATURES
from ecgcommon.records import resolve_data_dir
from models.calibrate import ANOMALY_L2, fit_anomaly, fit_logistic, per_record_features
from models.dataset import BeatSet, load_beats
from models.export import write_json
from models.metrics import ABNORMAL, auc_report
from models.train import TrainConfig, _oof_errors, lstm_factory

CV_FOLDS = 6
# (name, features, L2): the previous rule, the new features one at a time and together, and L2.
NEW = ("log_slope_ratio", "log_qrs_decorr")
PREVIOUS = tuple(f for f in FEATURES if f not in NEW)
VARIANTS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("previous features, L2 0.01", PREVIOUS, 0.01),
    ("previous features, L2 0.1", PREVIOUS, 0.1),
    ("+ log_slope_ratio, L2 0.1", (*PREVIOUS, "log_slope_ratio"), 0.1),
    ("+ log_qrs_decorr, L2 0.1", (*PREVIOUS, "log_qrs_decorr"), 0.1),
    *((f"all features, L2 {l2:g}", FEATURES, l2) for l2 in (0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 1.0)),
)


def cross_validate(
    feats: np.ndarray, beats: BeatSet, columns: tuple[str, ...], l2: float
) -> dict[str, Any]:
    """Pooled held-out scores of a 6-fold by-record CV: AUCs and V recall at 2 % flagged."""
    x = feats[:, [FEATURES.index(c) for c in columns]]
    labels = beats.labels
    records = sorted(set(beats.records.tolist()))
    fold = np.array([records.index(r) % CV_FOLDS for r in beats.records])
    use = np.isin(labels, ("N", *ABNORMAL))
    scores = np.full(len(x), np.nan)
    for k in range(CV_FOLDS):
        tr, te = (fold != k) & use, fold == k
        mean, scale = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-9
        w, b = fit_logistic(
            (x[tr] - mean) / scale, np.isin(labels[tr], ABNORMAL).astype(float), l2=l2
        )
        scores[te] = (x[te] - mean) / scale @ w + b
    normal = np.sort(scores[labels == "N"])
    t = normal[int(np.ceil(0.98 * normal.size)) - 1]
    return {
        **auc_report(scores, labels),
        "v_recall_at_2pct_normal": float((scores[labels == "V"] > t).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="models/artifacts/selection.json")
    args = p.parse_args(argv)
    cfg = TrainConfig()
    t0 = time.perf_counter()
    beats = load_beats(cfg.records, resolve_data_dir(args.data_dir))
    err = _oof_errors("lstm_ae", lstm_factory(cfg), beats, cfg, cfg.fit, progress=False)
    feats = per_record_features(err, beats, fit_anomaly(err, beats))
    report: dict[str, Any] = {
        "records": list(cfg.records),
        "folds": CV_FOLDS,
        "chosen_l2": ANOMALY_L2,
        "variants": {},
    }
    for name, columns, l2 in VARIANTS:
        r = cross_validate(feats, beats, columns, l2)
        report["variants"][name] = {"features": list(columns), "l2": l2, **r}
        c = r["auc_by_class"]
        print(
            f"{name:32s} AUC {r['auc']:.4f} S {c['S']:.4f} V {c['V']:.4f} F {c['F']:.4f} "
            f"V recall at 2 % {r['v_recall_at_2pct_normal']:.3f}"
        )
    write_json(Path(args.out), report)
    print(f"({time.perf_counter() - t0:.0f} s) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
