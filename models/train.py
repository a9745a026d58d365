"""`make train`: train the beat model and its baselines on DS1, calibrate, export to ONNX.

Writes under --out-dir (default models/artifacts): beat_ae.onnx + beat_ae.manifest.json,
baselines/{cnn_ae,seed_lstm_ae}.onnx + manifests, and metrics.json. DS2 is never read here.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecgcommon.aami import DS1
from ecgcommon.model_contract.adapter import AnomalyConfig
from ecgcommon.model_contract.manifest import (
    DEFAULT_MODEL_DIR,
    MANIFEST_FILE,
    MODEL_FILE,
    sha256_file,
)
from ecgcommon.model_contract.scorer import OnnxScorer
from ecgcommon.records import resolve_data_dir
from ecgcommon.windowing import WINDOW, WindowSpec
from models.calibrate import (
    NORMAL_FLAG_BUDGET,
    calibrate_thresholds,
    fit_anomaly,
    per_record_scores,
)
from models.dataset import PROJECT_ROOT, BeatSet, data_file_hashes, load_beats
from models.export import base_manifest, export_onnx, git_commit, parity, write_json
from models.fit import FitConfig, FitResult, errors, fit_autoencoder
from models.metrics import auc_report, operating_point
from models.nets import CNNAutoencoder, LSTMAutoencoder, SeedLSTMAutoencoder

# Early stopping watches these DS1 records (split by record, never by beat).
VAL_RECORDS = ("101", "115", "205", "223")
# The seed's configuration: 187 samples at 360 Hz around the R-peak, min-max per beat.
SEED_WINDOW = WindowSpec(pre_s=90 / 360, post_s=97 / 360, fs=360.0, normalisation="minmax")
SEED_PERCENTILE = 95.0  # the seed's global threshold: this percentile of DS1 normal errors
BASELINE_DIR = "baselines"
TORCH_FILE = "beat_ae.pt"
CV_FOLDS = 2  # DS1 folds (by record) for the out-of-fold errors the anomaly rule is fitted on


@dataclass(frozen=True)
class TrainConfig:
    """What `make train` does: model sizes, fit settings, records."""

    hidden: int = 32
    latent: int = 16
    fit: FitConfig = FitConfig(epochs=30, max_train_beats=24000, patience=5)
    cnn_fit: FitConfig = FitConfig(epochs=30, max_train_beats=24000, patience=5)
    seed_fit: FitConfig = FitConfig(epochs=8, max_train_beats=8000, patience=3)
    records: tuple[str, ...] = DS1
    val_records: tuple[str, ...] = VAL_RECORDS
    baselines: bool = True

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.latent < 1:
            raise ValueError(f"hidden and latent must be >= 1, got {self.hidden}, {self.latent}")
        if not set(self.val_records) < set(self.records):
            raise ValueError(f"val_records {self.val_records} must be a strict subset of records")


def _split(beats: BeatSet, val_records: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    normal = beats.labels == "N"
    val = np.isin(beats.records, val_records)
    return beats.windows[normal & ~val], beats.windows[normal & val]


def _train_one(
    name: str,
    model: torch.nn.Module,
    beats: BeatSet,
    cfg: TrainConfig,
    fit: FitConfig,
    progress: bool,
) -> FitResult:
    train, val = _split(beats, cfg.val_records)
    t0 = time.perf_counter()
    result = fit_autoencoder(model, train, val, fit, desc=name, progress=progress)
    print(
        f"{name}: {len(train)} train / {len(val)} val normal beats, best epoch "
        f"{result.best_epoch + 1}/{len(result.val_loss)}, val loss "
        f"{result.val_loss[result.best_epoch]:.4f}, {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    return result


def _oof_errors(
    name: str,
    make: Callable[[], torch.nn.Module],
    beats: BeatSet,
    cfg: TrainConfig,
    fit: FitConfig,
    progress: bool,
) -> np.ndarray:
    """Out-of-fold errors: each DS1 record scored by a model trained without it.

    An autoencoder's errors on its own training patients are lower than on new patients, so a
    combination rule fitted on them would over-trust the raw error. Cross-fitting by record
    gives DS1 errors that look like errors on unseen patients.
    """
    records = sorted(set(cfg.records))
    out = np.full(len(beats), np.nan, dtype=np.float32)
    for k in range(CV_FOLDS):
        held = tuple(records[k::CV_FOLDS])
        rest = tuple(r for r in records if r not in held)
        val = tuple(r for r in cfg.val_records if r in rest) or rest[-1:]
        normal = beats.labels == "N"
        train_m = normal & np.isin(beats.records, rest) & ~np.isin(beats.records, val)
        val_m = normal & np.isin(beats.records, val)
        if not train_m.any():  # tiny runs: too few records to hold some out for validation
            train_m = val_m = normal & np.isin(beats.records, rest)
        model = make()
        fit_autoencoder(
            model,
            beats.windows[train_m],
            beats.windows[val_m],
            fit,
            desc=f"{name} fold {k + 1}/{CV_FOLDS}",
            progress=progress,
        )
        held_m = np.isin(beats.records, held)
        out[held_m], _ = errors(model, beats.windows[held_m])
    return out


def _calibrate(err: np.ndarray, beats: BeatSet) -> tuple[AnomalyConfig, dict[str, Any], np.ndarray]:
    """Fit the anomaly rule and thresholds on (out-of-fold) DS1 errors."""
    anomaly = fit_anomaly(err, beats)
    scores = per_record_scores(err, beats, anomaly)
    th = calibrate_thresholds(scores, beats.labels)
    anomaly = replace(anomaly, thresholds=th)
    thresholds = {
        name: {
            **operating_point(scores, beats.labels, t),
            "normal_flag_budget": NORMAL_FLAG_BUDGET[name],
        }
        for name, t in th.items()
    }
    metrics = {
        "ds1_calibration": {
            **auc_report(scores, beats.labels),
            "raw_error": auc_report(err, beats.labels),
            "errors": f"{CV_FOLDS}-fold out-of-fold by record",
        }
    }
    return anomaly, {"thresholds": thresholds, "metrics": metrics}, err


def _write_rule(
    err: np.ndarray, beats: BeatSet, manifest: dict[str, Any], path: Path
) -> dict[str, Any]:
    """The anomaly rule and thresholds fitted on `err` into `manifest`, written to `path`."""
    anomaly, extra, _ = _calibrate(err, beats)
    manifest["anomaly"] = anomaly.as_dict()
    manifest.update(extra)
    write_json(path, manifest)
    return extra


def lstm_factory(cfg: TrainConfig) -> Callable[[], torch.nn.Module]:
    """A maker of the shipped beat model, untrained (one per cross-fitting fold)."""
    return lambda: LSTMAutoencoder(cfg.hidden, cfg.latent, mode="repeat")


def _export(
    model: torch.nn.Module,
    out: Path,
    stem: str,
    spec: WindowSpec,
    arch: dict[str, Any],
    probe: np.ndarray,
) -> tuple[Path, dict[str, Any]]:
    path = out / f"{stem}.onnx"
    export_onnx(model, path, spec.n_points)
    diff = parity(model, path, probe)
    manifest = base_manifest(path, spec, arch)
    manifest["parity_max_abs_diff"] = diff
    return path, manifest


def train(cfg: TrainConfig, data_dir: Path, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train, calibrate and export everything; returns metrics.json's content."""
    torch.manual_seed(cfg.fit.seed)
    out.mkdir(parents=True, exist_ok=True)
    beats = load_beats(cfg.records, data_dir)
    common = {
        "training_records": list(cfg.records),
        "validation_records": list(cfg.val_records),
        "data_dir": str(data_dir),
        "data_sha256": data_file_hashes(cfg.records, data_dir),
        "git_commit": git_commit(PROJECT_ROOT),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    metrics: dict[str, Any] = {}

    # The beat model.
    model = lstm_factory(cfg)()
    fit = _train_one("lstm_ae", model, beats, cfg, cfg.fit, progress)
    arch = {
        "kind": "lstm_ae",
        "hidden": cfg.hidden,
        "latent": cfg.latent,
        "decoder": "latent repeated as input and as initial state",
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    _, manifest = _export(model, out, Path(MODEL_FILE).stem, WINDOW, arch, beats.windows[:256])
    torch.save(model.state_dict(), out / TORCH_FILE)  # for the ONNX/PyTorch parity test
    manifest["torch_state_file"] = TORCH_FILE
    manifest["torch_state_sha256"] = sha256_file(out / TORCH_FILE)
    manifest.update(common)
    manifest["training"] = {
        "fit": asdict(cfg.fit),
        "train_loss": fit.train_loss,
        "val_loss": fit.val_loss,
        "best_epoch": fit.best_epoch,
        "labels_used": "N beats only (AAMI N) for the autoencoder",
    }
    write_json(out / MANIFEST_FILE, manifest)
    OnnxScorer(out)  # the manifest just written must match its model
    oof = _oof_errors("lstm_ae", lstm_factory(cfg), beats, cfg, cfg.fit, progress)
    extra = _write_rule(oof, beats, manifest, out / MANIFEST_FILE)
    metrics["lstm_ae"] = {"training": manifest["training"], **extra["metrics"]}

    if cfg.baselines:
        bdir = out / BASELINE_DIR
        # 1-D CNN autoencoder: same windows, same training, same anomaly rule fitted on DS1.

        def new_cnn() -> torch.nn.Module:
            return CNNAutoencoder(WINDOW.n_points, 16, cfg.latent)

        cnn = new_cnn()
        fit = _train_one("cnn_ae", cnn, beats, cfg, cfg.cnn_fit, progress)
        _, man = _export(cnn, bdir, "cnn_ae", WINDOW, {"kind": "cnn_ae"}, beats.windows[:256])
        man.update(common)
        write_json(bdir / "cnn_ae.manifest.json", man)
        OnnxScorer(bdir, model_file="cnn_ae.onnx", manifest_file="cnn_ae.manifest.json")
        oof = _oof_errors("cnn_ae", new_cnn, beats, cfg, cfg.cnn_fit, progress)
        extra = _write_rule(oof, beats, man, bdir / "cnn_ae.manifest.json")
        metrics["cnn_ae"] = {"val_loss": fit.val_loss, **extra["metrics"]}

        # The seed's configuration: raw error, global percentile threshold, no rhythm.
        seed_beats = load_beats(cfg.records, data_dir, spec=SEED_WINDOW)
        seed = SeedLSTMAutoencoder(64)
        fit = _train_one("seed_lstm_ae", seed, seed_beats, cfg, cfg.seed_fit, progress)
        _, man = _export(
            seed,
            bdir,
            "seed_lstm_ae",
            SEED_WINDOW,
            {"kind": "seed_lstm_ae", "hidden": 64},
            seed_beats.windows[:256],
        )
        man.update(common)
        err, _ = errors(seed, seed_beats.windows)
        thr = float(np.percentile(err[seed_beats.labels == "N"], SEED_PERCENTILE))
        man["thresholds"] = {
            "global": {
                **operating_point(err, seed_beats.labels, thr),
                "percentile": SEED_PERCENTILE,
            }
        }
        man["metrics"] = {"ds1_calibration": auc_report(err, seed_beats.labels)}
        write_json(bdir / "seed_lstm_ae.manifest.json", man)
        metrics["seed_lstm_ae"] = {"val_loss": fit.val_loss, **man["metrics"]}

    write_json(out / "metrics.json", {"train": metrics})
    return metrics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="WFDB folder (default: resolve_data_dir())")
    p.add_argument("--out-dir", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--records", nargs="+", default=None, help="training records (default DS1)")
    p.add_argument("--val-records", nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-train-beats", type=int, default=None)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = TrainConfig()
    if args.records:
        cfg = replace(
            cfg,
            records=tuple(args.records),
            val_records=tuple(args.val_records or args.records[-1:]),
        )
    elif args.val_records:
        cfg = replace(cfg, val_records=tuple(args.val_records))
    over = {
        k: v
        for k, v in (("epochs", args.epochs), ("max_train_beats", args.max_train_beats))
        if v is not None
    }
    if over:
        cfg = replace(
            cfg,
            fit=replace(cfg.fit, **over),
            cnn_fit=replace(cfg.cnn_fit, **over),
            seed_fit=replace(cfg.seed_fit, **over),
        )
    if args.no_baselines:
        cfg = replace(cfg, baselines=False)
    t0 = time.perf_counter()
    train(cfg, resolve_data_dir(args.data_dir), Path(args.out_dir), progress=not args.no_progress)
    print(f"trained in {time.perf_counter() - t0:.0f} s -> {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
