"""Upload parsing (ecgcommon.upload) on real MIT-BIH files: good CSV and WFDB uploads give the
record's samples; bad files are refused with a message that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecgcommon.records import load_record
from ecgcommon.upload import UploadError, parse_csv, parse_upload


@pytest.fixture(scope="module")
def rec100(data_dir: Path):
    return load_record("100", data_dir, annotations=False, sampto=3600)


def _csv(rec, header: str | None, cols: str = "t,MLII,V5", n: int = 3600) -> bytes:
    lines = [header] if header is not None else []
    if cols:
        lines.append(cols)
    for i in range(n):
        lines.append(f"{i / rec.fs:.5f},{rec.signal[i, 0]:.3f},{rec.signal[i, 1]:.3f}")
    return ("\n".join(lines) + "\n").encode()


def test_csv_with_stated_fs_gives_the_record_samples(rec100) -> None:
    up = parse_upload({"100.csv": _csv(rec100, None)}, fs="360")
    assert up.kind == "csv" and up.fs == 360.0 and up.lead == "MLII"
    assert up.leads == ("MLII", "V5")
    np.testing.assert_allclose(up.samples, rec100.signal[:3600, 0], atol=5e-4)
    v5 = parse_upload({"100.csv": _csv(rec100, None)}, fs=360, lead="V5")
    np.testing.assert_allclose(v5.samples, rec100.signal[:3600, 1], atol=5e-4)
    body = up.score_request()
    assert body["fs"] == 360.0 and len(body["samples"]) == 3600


def test_csv_fs_from_a_comment_and_no_header(rec100) -> None:
    data = _csv(rec100, "# MIT-BIH 100, sampling rate: 360 Hz", cols="")
    up = parse_csv(data, None, name="x.csv")
    assert up.fs == 360.0
    # without a header the leading time column is recognised and skipped
    np.testing.assert_allclose(up.samples, rec100.signal[:3600, 0], atol=5e-4)


def test_csv_in_microvolts_is_converted(rec100) -> None:
    lines = ["uV"] + [f"{v * 1000:.0f}" for v in rec100.signal[:3600, 0]]
    up = parse_upload({"uv.csv": "\n".join(lines).encode()}, fs=360)
    np.testing.assert_allclose(up.samples, rec100.signal[:3600, 0], atol=1e-3)


def test_wfdb_record_uploaded_with_its_dat(data_dir: Path) -> None:
    files = {n: (data_dir / n).read_bytes() for n in ("100.hea", "100.dat")}
    up = parse_upload(files)
    rec = load_record("100", data_dir, annotations=False)
    assert up.kind == "wfdb" and up.fs == 360.0 and up.lead == "MLII"
    np.testing.assert_array_equal(up.samples, rec.signal[:, 0])


@pytest.mark.parametrize(
    ("files", "fs", "message"),
    [
        ({"a.csv": b""}, "360", "the file is empty"),
        ({"a.csv": b"0.1\n0.2\n"}, None, "sampling rate is missing"),
        ({"a.csv": b"0.1\n0.2\n"}, "abc", "is not a number"),
        ({"a.csv": b"0.1\n0.2\n"}, "5", "outside 100-1000 Hz"),
        ({"a.csv": b"mv\n0.1\n0.2\nfoo\n"}, "360", "line 4: 'foo' in column 'mv' is not a number"),
        ({"a.csv": b"0.1,0.2\n0.1\n"}, "360", "line 2: 1 columns where the file has 2"),
        ({"a.csv": b"\n".join([b"0.5"] * 300)}, "360", "at least 3 s"),
        ({"a.xlsx": b"PK\x03\x04"}, "360", "unsupported file type '.xlsx'"),
        ({"a.csv": b"\x00\x01\x02"}, "360", "binary file"),
        ({"100.dat": b"\x00" * 10}, None, "needs its .hea header"),
        ({"a.csv": b"1", "b.csv": b"2"}, "360", "got 2 files without a .hea header"),
        ({}, None, "no file was uploaded"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(files, fs, message) -> None:
    with pytest.raises(UploadError) as err:
        parse_upload(files, fs)
    assert message in str(err.value)


def test_values_that_are_not_millivolts_are_refused() -> None:
    counts = "\n".join(str(1024 + int(200 * np.sin(i / 20))) for i in range(3600))
    with pytest.raises(UploadError, match="not an ECG in millivolts"):
        parse_upload({"adc.csv": counts.encode()}, fs=360)


def test_flat_and_missing_values_are_refused() -> None:
    with pytest.raises(UploadError, match="the signal is flat"):
        parse_upload({"flat.csv": b"\n".join([b"0.0"] * 3600)}, fs=360)
    rows = [b"0.1"] * 3600
    rows[100] = b"nan"
    with pytest.raises(UploadError, match="first at sample 100"):
        parse_upload({"gap.csv": b"\n".join(rows)}, fs=360)


def test_wfdb_header_without_its_signal_file(data_dir: Path) -> None:
    with pytest.raises(UploadError, match=r"names signal file\(s\) 100.dat that were not"):
        parse_upload({"100.hea": (data_dir / "100.hea").read_bytes()})


def test_wfdb_with_a_truncated_signal_file(data_dir: Path) -> None:
    files = {"100.hea": (data_dir / "100.hea").read_bytes(), "100.dat": b"\x00" * 30}
    with pytest.raises(UploadError, match="100.hea"):
        parse_upload(files)


def test_unknown_lead_lists_the_leads(rec100) -> None:
    with pytest.raises(UploadError, match="signal columns are: MLII, V5"):
        parse_upload({"100.csv": _csv(rec100, None)}, fs=360, lead="II")
