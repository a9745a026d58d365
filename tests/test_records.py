"""Data access: reading records, listing, AAMI mapping, and errors that name folder and record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgcommon.aami import DS1, DS2, PACED_RECORDS, aami_class, aami_labels, beat_mask
from ecgcommon.records import RecordError, annotated_records, list_records, load_record


def test_reads_mitdb_record(data_dir: Path) -> None:
    rec = load_record("100", data_dir, sampto=3600)
    assert rec.fs == 360.0
    assert rec.signal.shape == (3600, 2)
    assert rec.lead_names == ("MLII", "V5")
    assert rec.units == ("mV", "mV")
    assert rec.ann_samples is not None and rec.ann_samples.max() < 3600
    assert beat_mask(rec.ann_symbols).sum() >= 10


def test_lists_all_48_annotated_records(data_dir: Path) -> None:
    assert len(list_records(data_dir)) == 48
    assert len(annotated_records(data_dir)) == 48


def test_split_is_disjoint_and_excludes_paced() -> None:
    assert len(DS1) == len(DS2) == 22
    assert not set(DS1) & set(DS2)
    assert not (set(DS1) | set(DS2)) & set(PACED_RECORDS)


def test_aami_mapping() -> None:
    assert [aami_class(s) for s in "NLRejAaJSVEF/fQ"] == list("NNNNNSSSSVVFQQQ")
    assert aami_class("+") is None and aami_class("~") is None
    assert list(aami_labels(np.array(["N", "+", "V"], dtype=object))) == ["N", "", "V"]


def test_missing_folder_names_folder(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=str(tmp_path / "nope")):
        list_records(tmp_path / "nope")


def test_missing_record_names_folder_and_record(data_dir: Path) -> None:
    with pytest.raises(RecordError) as err:
        load_record("999", data_dir)
    assert "999" in str(err.value) and str(data_dir) in str(err.value)


def test_corrupt_record_names_folder_and_record(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "bad.hea").write_text("bad 1 360 1000\nbad.dat 212 200 11 1024 0 0 0 MLII\n")
    (tmp_path / "bad.dat").write_bytes(b"\x00\x01")
    with pytest.raises(RecordError) as err:
        load_record("bad", tmp_path)
    assert "bad" in str(err.value) and str(tmp_path) in str(err.value)


def test_record_without_annotations_and_other_rate(tmp_path: Path) -> None:
    import wfdb

    sig = np.sin(np.linspace(0, 20, 500))[:, None] * 1.0
    wfdb.wrsamp(
        "syn",
        fs=250,
        units=["mV"],
        sig_name=["II"],
        p_signal=sig,
        fmt=["16"],
        write_dir=str(tmp_path),
    )
    rec = load_record("syn", tmp_path)
    assert rec.fs == 250 and rec.lead_names == ("II",) and rec.ann_samples is None
    assert list_records(tmp_path) == ["syn"]
