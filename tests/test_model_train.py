"""Training smoke test (tiny run) and `make eval-model` on small record subsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from scipy.signal import resample_poly

from ecgcommon.model_contract.scorer import OnnxScorer
from ecgcommon.records import load_record
from models import evaluate

pytest.importorskip("torch")


@pytest.mark.slow
def test_training_smoke(tmp_path: Path, data_dir: Path) -> None:
    from models import train

    out = tmp_path / "artifacts"
    rc = train.main(
        [
            "--data-dir",
            str(data_dir),
            "--out-dir",
            str(out),
            "--records",
            "106",
            "119",
            "209",
            "--val-records",
            "119",
            "--epochs",
            "1",
            "--max-train-beats",
            "300",
            "--no-baselines",
            "--no-progress",
        ]
    )
    assert rc == 0
    scorer = OnnxScorer(out)  # the fresh manifest matches its model
    m = scorer.manifest
    assert m["training_records"] == ["106", "119", "209"] and "106.dat" in m["data_sha256"]
    assert m["parity_max_abs_diff"] <= 1e-4
    assert m["thresholds"]["icu"]["threshold"] <= m["thresholds"]["screening"]["threshold"]
    assert m["thresholds"]["icu"]["normal_flag_rate"] <= 0.02
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["train"]["lstm_ae"]["training"]["train_loss"]) == 1


def _check_report(report: dict) -> None:
    assert 0.5 < report["auc"] <= 1.0
    assert set(report["auc_by_class"]) == {"S", "V", "F"}
    for name in ("icu", "screening"):
        op = report["operating_points"][name]
        for key in (
            "threshold",
            "precision",
            "recall",
            "f1",
            "normal_flag_rate",
            "v_recall",
            "s_recall",
        ):
            assert key in op
        for key in ("precision", "recall", "f1", "normal_flag_rate"):
            assert 0.0 <= op[key] <= 1.0


@pytest.mark.slow
def test_eval_model_on_two_records(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "model.json"
    assert (
        evaluate.main(["--data-dir", str(data_dir), "--records", "119", "208", "--out", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    _check_report(report)
    assert report["auc_by_class"]["V"] > 0.95  # 119 and 208 are V-rich; training never saw 208
    assert set(report["baselines"]) == {"seed_style_lstm_ae", "cnn_ae"}
    for b in report["baselines"].values():
        assert 0.0 <= b["auc"] <= 1.0 and set(b["auc_by_class"]) == {"S", "V", "F"}
    ms = report["inference_ms_per_beat"]
    assert ms["batch1"] > 0 and ms["batch64"] > 0
    assert report["adapter_us_per_beat"] > 0


def _write_resampled(name: str, data_dir: Path, folder: Path, fs_new: int, seconds: int) -> None:
    rec = load_record(name, data_dir, sampto=int(360 * seconds))
    sig = resample_poly(rec.signal, fs_new, 360, axis=0)
    keep = rec.ann_samples < rec.n_samples
    samples = np.round(rec.ann_samples[keep] * fs_new / 360).astype(np.int64)
    wfdb.wrsamp(
        name,
        fs=fs_new,
        units=list(rec.units),
        sig_name=list(rec.lead_names),
        p_signal=sig,
        fmt=["16"] * sig.shape[1],
        write_dir=str(folder),
    )
    wfdb.wrann(name, "atr", samples, symbol=list(rec.ann_symbols[keep]), write_dir=str(folder))


def test_eval_model_on_another_sampling_rate(tmp_path: Path, data_dir: Path) -> None:
    """A 250 Hz copy of ten minutes of a record scores like the same ten minutes at 360 Hz."""
    reports = {}
    for fs in (250, 360):
        folder = tmp_path / str(fs)
        folder.mkdir()
        _write_resampled("208", data_dir, folder, fs, 600)
        out = tmp_path / f"m{fs}.json"
        assert (
            evaluate.main(
                ["--data-dir", str(folder), "--out", str(out), "--no-baselines", "--no-timing"]
            )
            == 0
        )
        reports[fs] = json.loads(out.read_text())
        assert reports[fs]["records"] == ["208"]  # not MIT-BIH's DS2: every annotated record
    assert reports[250]["auc_by_class"]["V"] > 0.95
    assert abs(reports[250]["auc"] - reports[360]["auc"]) < 0.02
    assert reports[250]["n_beats"] == reports[360]["n_beats"]
