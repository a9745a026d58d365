"""`python -m detector.evaluate_qrs` (make eval-qrs): runs, prints, writes the documented JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.evaluate_qrs import main


def test_report_has_the_documented_fields(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "qrs.json"
    argv = f"--data-dir {data_dir} --records 100 --jobs 1 --out {out}".split()
    assert main(argv) == 0
    report = json.loads(out.read_text())
    det = report["detector"]
    for key in ("se", "ppv", "delay_p50_s", "delay_p99_s"):
        assert 0 <= det[key] <= 1, key
    assert det["tp"] + det["fn"] == 2273  # beat annotations of record 100
    assert det["se"] == pytest.approx(det["tp"] / (det["tp"] + det["fn"]))
    assert det["delay_p99_s"] <= 0.5
    assert det["realtime_factor"] > 0
    for peer in ("gqrs", "xqrs"):
        assert 0.9 <= report["peers"][peer]["se"] <= 1
        assert 0.9 <= report["peers"][peer]["ppv"] <= 1
    assert set(report["records"]) == {"100"}
    assert report["records"]["100"]["tp"] == det["tp"]
    printed = capsys.readouterr().out
    assert "pooled" in printed and "gqrs" in printed and "xqrs" in printed


def test_no_peers_and_config_overrides(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "qrs.json"
    argv = f"--data-dir {data_dir} --records 100 101 --no-peers --out {out}".split()
    assert main([*argv, "--set", "threshold_fraction=0.3"]) == 0
    report = json.loads(out.read_text())
    assert "peers" not in report
    assert set(report["records"]) == {"100", "101"}
    assert report["config"]["threshold_fraction"] == 0.3
    rows = report["records"].values()
    assert report["detector"]["fp"] == sum(r["fp"] for r in rows)


def test_missing_record_or_folder_is_a_clear_error(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.json"
    assert main(f"--data-dir {data_dir} --records 999 --no-peers --jobs 1 --out {out}".split()) == 2
    assert "999" in capsys.readouterr().err
    assert main(f"--data-dir {tmp_path / 'nowhere'} --no-peers --out {out}".split()) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not out.exists()
