"""`make eval-model`: inter-patient evaluation of the committed beat model (default: DS2).

Scores every annotated beat of the records with the same code the live detector runs
(`beat_windows` -> `OnnxScorer` -> `RRTracker` features -> `PatientAdapter.process`, one patient
at a time in time order), then reports AUC, the manifest's operating points, the baselines and
onnxruntime inference time. Records at another sampling rate are resampled by `beat_windows`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ecgcommon.aami import DS2
from ecgcommon.model_contract.adapter import AnomalyConfig, PatientAdapter
from ecgcommon.model_contract.features import rhythm_from_row
from ecgcommon.model_contract.manifest import DEFAULT_MODEL_DIR, MANIFEST_FILE, MODEL_FILE
from ecgcommon.model_contract.scorer import OnnxScorer
from ecgcommon.records import annotated_records, resolve_data_dir
from ecgcommon.windowing import WINDOW, WindowSpec
from models.calibrate import per_record_scores
from models.dataset import BeatSet, load_beats
from models.export import write_json
from models.metrics import auc_report, operating_point

# Report keys as the report format names them; the seed-style artifact keeps its file name.
ARTIFACT_NAMES = {"seed_style_lstm_ae": "seed_lstm_ae"}
BASELINES = {
    "seed_style_lstm_ae": "raw reconstruction error (the seed's configuration)",
    "cnn_ae": "1-D CNN autoencoder, same windows, training and anomaly rule",
}


def time_inference(model_path: Path, n_points: int, repeats: int = 5) -> dict[str, float]:
    """ms per beat in onnxruntime on one thread, at batch 1 and batch 64 (best of `repeats`)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out = {}
    for name, batch, calls in (("batch1", 1, 500), ("batch64", 64, 60)):
        x = rng.standard_normal((batch, n_points)).astype(np.float32)
        for _ in range(20):
            sess.run(None, {"windows": x})
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                sess.run(None, {"windows": x})
            best = min(best, (time.perf_counter() - t0) / (calls * batch) * 1e3)
        out[name] = best
    return out


def time_adapter(
    config: AnomalyConfig, errors: np.ndarray, beats: BeatSet, n: int = 2000, repeats: int = 3
) -> float:
    """µs per beat of `PatientAdapter.process` (pure Python, per bed) on the first `n` beats."""
    first = beats.records == beats.records[0]
    err = errors[first][:n]
    rhythm = [rhythm_from_row(r) for r in beats.rhythm[first][:n]]
    windows = beats.windows[first][:n]
    best = float("inf")
    for _ in range(repeats):
        adapter = PatientAdapter(config)
        t0 = time.perf_counter()
        for e, r, w in zip(err, rhythm, windows, strict=True):
            adapter.process(float(e), r, w)
        best = min(best, (time.perf_counter() - t0) / max(1, len(err)) * 1e6)
    return best


def _scores(scorer: OnnxScorer, beats: BeatSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    err, per_t = scorer.score(beats.windows)
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    return per_record_scores(err, beats, anomaly), err, per_t


def evaluate(
    records: list[str],
    data_dir: Path,
    model_dir: Path,
    timing: bool = True,
    baselines: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report, extras): the JSON report and arrays the figures need."""
    scorer = OnnxScorer(model_dir)
    beats = load_beats(records, data_dir, spec=WINDOW)
    scores, err, per_t = _scores(scorer, beats)
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    report: dict[str, Any] = {
        **auc_report(scores, beats.labels),
        "operating_points": {
            name: operating_point(scores, beats.labels, anomaly.threshold(name))
            for name in scorer.manifest["thresholds"]
        },
        "raw_error": auc_report(err, beats.labels),
        "n_beats": {c: int((beats.labels == c).sum()) for c in "NSVFQ"},
        "records": list(records),
        "data_dir": str(data_dir),
        "model_sha256": scorer.manifest["model_sha256"],
        "git_commit_of_model": scorer.manifest.get("git_commit"),
    }
    extras: dict[str, Any] = {
        "beats": beats,
        "scores": scores,
        "errors": err,
        "per_t": per_t,
        "baselines": {},
    }
    if baselines:
        report["baselines"] = {}
        bdir = model_dir / "baselines"
        for key, what in BASELINES.items():
            name = ARTIFACT_NAMES.get(key, key)
            b = OnnxScorer(
                bdir,
                model_file=f"{name}.onnx",
                manifest_file=f"{name}.manifest.json",
                spec=WindowSpec(**_spec_args(bdir, name)),
            )
            bb = load_beats(records, data_dir, spec=b.spec)
            if "anomaly" in b.manifest:
                s, e, _ = _scores(b, bb)
                entry = {**auc_report(s, bb.labels), "raw_error": auc_report(e, bb.labels)}
            else:
                s, _ = b.score(bb.windows)
                entry = auc_report(s, bb.labels)
                g = b.manifest["thresholds"]["global"]
                entry["operating_point"] = operating_point(s, bb.labels, g["threshold"])
            entry["what"] = what
            report["baselines"][key] = entry
            extras["baselines"][name] = (s, bb.labels)
    if timing:
        report["inference_ms_per_beat"] = time_inference(model_dir / MODEL_FILE, WINDOW.n_points)
        report["inference_ms_per_beat"]["runtime"] = f"onnxruntime {ort.__version__}, 1 thread"
        if len(beats):
            report["adapter_us_per_beat"] = time_adapter(anomaly, err, beats)
    return report, extras


def _spec_args(bdir: Path, name: str) -> dict[str, Any]:
    w = json.loads((bdir / f"{name}.manifest.json").read_text())["window"]
    return {k: w[k] for k in ("pre_s", "post_s", "fs", "normalisation")}


def record_evaluation(metrics_path: Path, model_dir: Path, report: dict[str, Any]) -> None:
    """Store the evaluation in metrics.json and in the manifest (the model file is unchanged)."""
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["evaluation"] = report
    write_json(metrics_path, metrics)
    manifest_path = model_dir / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    keep = (
        "auc",
        "auc_by_class",
        "operating_points",
        "records",
        "inference_ms_per_beat",
        "adapter_us_per_beat",
    )
    manifest.setdefault("metrics", {})["evaluation"] = {k: report[k] for k in keep if k in report}
    write_json(manifest_path, manifest)


def default_records(data_dir: Path) -> list[str]:
    """DS2 when the folder holds it (MIT-BIH), else every annotated record of the folder."""
    have = set(annotated_records(data_dir))
    return list(DS2) if set(DS2) <= have else sorted(have)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--records", nargs="+", default=None, help="default: DS2")
    p.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--out", default="reports/model.json")
    p.add_argument("--figures", default=None, help="folder for the PNG figures (optional)")
    p.add_argument("--benchmark-out", default=None, help="also write the timing JSON here")
    p.add_argument(
        "--metrics-out",
        default=None,
        help="merge this report into metrics.json and the manifest's metrics",
    )
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-timing", action="store_true")
    args = p.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    records = args.records or default_records(data_dir)
    t0 = time.perf_counter()
    report, extras = evaluate(
        records,
        data_dir,
        Path(args.model_dir),
        timing=not args.no_timing,
        baselines=not args.no_baselines,
    )
    write_json(Path(args.out), report)
    if args.benchmark_out and "inference_ms_per_beat" in report:
        write_json(
            Path(args.benchmark_out),
            {
                "inference_ms_per_beat": report["inference_ms_per_beat"],
                "command": "make eval-model (models.evaluate --benchmark-out)",
                "n_points": WINDOW.n_points,
            },
        )
    if args.metrics_out:
        record_evaluation(Path(args.metrics_out), Path(args.model_dir), report)
    if args.figures:
        from models.figures import write_figures

        write_figures(extras, Path(args.figures))
    ops = report["operating_points"]
    print(
        f"AUC {report['auc']:.4f} by class "
        + " ".join(f"{k} {v:.4f}" for k, v in report["auc_by_class"].items())
        + "; "
        + "; ".join(
            f"{n}: recall {o['recall']:.3f} precision {o['precision']:.3f} "
            f"V {o['v_recall']:.3f} S {o['s_recall']:.3f} normal flagged "
            f"{o['normal_flag_rate']:.4f}"
            for n, o in ops.items()
        )
        + f" ({time.perf_counter() - t0:.0f} s) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
