"""Parse and validate an uploaded ECG file (CSV with a stated sampling rate, or a WFDB record).

Shared so that the alerting service can check a clinician's upload and forward plain
`{fs, samples}` to the detector's `POST /v1/score` without importing the detector.
Every rejection raises `UploadError` with a message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import wfdb

from ecgcommon.limits import MAX_FS_HZ, MIN_FS_HZ

MIN_DURATION_S = 3.0
MAX_DURATION_S = 60 * 60.0  # the detector scores at most an hour per request
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
# |mV| above this is not a surface ECG in millivolts (µV or raw ADC counts, most likely).
MAX_ABS_MV = 30.0

_TIME_COLUMNS = {"time", "t", "time_s", "seconds", "sec", "s", "timestamp", "elapsed time"}
_INDEX_COLUMNS = {"sample", "samples", "index", "idx", "n", "sample #", "sample_index"}
_FS_COMMENT = re.compile(
    r"(?:fs|sampling[ _-]?(?:rate|frequency)|sample[ _-]?rate)\s*[:=]?\s*([0-9.]+)\s*(?:hz)?",
    re.IGNORECASE,
)


class UploadError(ValueError):
    """The uploaded file cannot be scored; the message says why in plain words."""


@dataclass(frozen=True)
class Upload:
    """One lead of an uploaded ECG, in millivolts, ready for scoring."""

    name: str
    fs: float
    samples: np.ndarray  # 1-D float64, mV
    lead: str
    leads: tuple[str, ...]
    kind: str  # "csv" or "wfdb"

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.fs

    def score_request(self) -> dict[str, object]:
        """The JSON body of the detector's `POST /v1/score`."""
        return {"fs": self.fs, "samples": [round(float(x), 5) for x in self.samples]}


def check_fs(fs: float | str | None, where: str = "fs") -> float:
    """A sampling rate in Hz within the supported range, or UploadError naming `where`."""
    if fs is None or (isinstance(fs, str) and not fs.strip()):
        raise UploadError(
            f"{where}: the sampling rate is missing; state it in Hz (e.g. fs=360) for a CSV file"
        )
    try:
        value = float(fs)
    except (TypeError, ValueError):
        raise UploadError(f"{where}: sampling rate {fs!r} is not a number (Hz)") from None
    if not math.isfinite(value) or not MIN_FS_HZ <= value <= MAX_FS_HZ:
        raise UploadError(
            f"{where}: sampling rate {value:g} Hz is outside {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz"
        )
    return value


def _check_signal(samples: np.ndarray, fs: float, name: str) -> np.ndarray:
    n = samples.size
    if n / fs < MIN_DURATION_S:
        raise UploadError(
            f"{name}: {n} samples at {fs:g} Hz is {n / fs:.2f} s; at least {MIN_DURATION_S:g} s "
            "of ECG is needed to find and score beats"
        )
    if n / fs > MAX_DURATION_S:
        raise UploadError(
            f"{name}: {n / fs / 60:.1f} min of ECG is longer than the {MAX_DURATION_S / 60:g} min "
            "limit; upload a shorter excerpt"
        )
    bad = np.flatnonzero(~np.isfinite(samples))
    if bad.size:
        raise UploadError(
            f"{name}: {bad.size} samples are missing or not finite (first at sample {bad[0]}); "
            "fill or cut the gap before uploading"
        )
    peak = float(np.max(np.abs(samples)))
    if peak > MAX_ABS_MV:
        raise UploadError(
            f"{name}: values reach {peak:g}, which is not an ECG in millivolts "
            f"(limit ±{MAX_ABS_MV:g} mV); convert µV or ADC counts to mV"
        )
    if float(np.ptp(samples)) == 0.0:
        raise UploadError(f"{name}: the signal is flat (every sample is {samples[0]:g} mV)")
    return samples


def _split(line: str) -> list[str]:
    for delim in (",", ";", "\t"):
        if delim in line:
            return [cell.strip() for cell in line.split(delim)]
    return line.split()


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def parse_csv(
    data: bytes,
    fs: float | str | None = None,
    *,
    name: str = "upload.csv",
    lead: str | int | None = None,
) -> Upload:
    """Read a CSV (or TSV / whitespace) ECG in mV: optional `#` comments and header row.

    The sampling rate is `fs`, else a comment like `# fs = 360 Hz`. A column named time/sample
    is skipped; `lead` picks a signal column by header name or 0-based index (default: first).
    A header that says µV (`uV`) is converted to mV.
    """
    table = _read_table(_csv_text(data, name), name)
    rate = _csv_rate(fs, table.comment_fs, name)
    width = len(table.rows[0])
    columns, signal_cols = _signal_columns(table, width, name)
    col = _csv_column(lead, columns, signal_cols, name)
    values = _column_values(table, width, col, columns, name)
    label = columns[col]
    if re.search(r"(?:\bu|µ|micro)v\b", label, re.IGNORECASE):
        values = values / 1000.0
    return Upload(
        name=name,
        fs=rate,
        samples=_check_signal(values, rate, name),
        lead=label,
        leads=tuple(columns[i] for i in signal_cols),
        kind="csv",
    )


@dataclass(frozen=True)
class _Table:
    """A CSV file's cells: the header row if any, the data rows and their file line numbers."""

    comment_fs: float | None  # from a comment like `# fs = 360 Hz`
    header: list[str] | None
    rows: list[list[str]]  # never empty
    line_numbers: list[int]  # file line number of each data row, for error messages


def _csv_text(data: bytes, name: str) -> str:
    """The upload as text, refused when empty, too large or binary."""
    if not data.strip():
        raise UploadError(f"{name}: the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: {len(data)} bytes is over the {MAX_UPLOAD_BYTES} byte limit")
    if b"\x00" in data[:4096]:
        raise UploadError(f"{name}: this is a binary file, not CSV text (for WFDB send .hea+.dat)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_table(text: str, name: str) -> _Table:
    """Comments (the first stating fs is kept), a header row (cells that are not all numbers,
    before any data) and the data rows; UploadError when there is no data row."""
    comment_fs: float | None = None
    header: list[str] | None = None
    rows: list[list[str]] = []
    line_numbers: list[int] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = _FS_COMMENT.search(line)
            if m and comment_fs is None:
                comment_fs = check_fs(m.group(1), where=f"{name} line {lineno}")
            continue
        cells = _split(line)
        if header is None and not rows and any(_number(c) is None for c in cells):
            header = [c.strip().strip('"').strip("'") for c in cells]
            continue
        rows.append(cells)
        line_numbers.append(lineno)
    if not rows:
        raise UploadError(f"{name}: no rows of numbers found (only a header or comments)")
    return _Table(comment_fs, header, rows, line_numbers)


def _csv_rate(fs: float | str | None, comment_fs: float | None, name: str) -> float:
    """The stated `fs`, else the file's comment; both given, they must agree."""
    if fs is not None and str(fs).strip():
        rate = check_fs(fs)
        if comment_fs is not None and abs(comment_fs - rate) > 1e-6:
            raise UploadError(
                f"{name}: the stated fs={rate:g} Hz disagrees with the file's comment "
                f"fs={comment_fs:g} Hz"
            )
        return rate
    if comment_fs is not None:
        return comment_fs
    return check_fs(None)


def _signal_columns(table: _Table, width: int, name: str) -> tuple[list[str], list[int]]:
    """The column names (from the header, else numbered) and the indices of signal columns:
    not a named time/sample column, nor a leading strictly increasing one without a header."""
    header, rows = table.header, table.rows
    if header is not None and len(header) != width:
        raise UploadError(
            f"{name}: the header has {len(header)} columns but the first row has {width}"
        )
    columns = header or [f"column {i + 1}" for i in range(width)]
    signal_cols = (
        [i for i, c in enumerate(columns) if c.lower() not in _TIME_COLUMNS | _INDEX_COLUMNS]
        if header
        else list(range(width))
    )
    if header is None and width > 1:
        # Without a header a leading, strictly increasing column is a time or sample index.
        first = [_number(r[0]) if r else None for r in rows[:50]]
        known = [v for v in first if v is not None]
        if len(known) == len(first) > 2 and all(
            b > a for a, b in zip(known, known[1:], strict=False)
        ):
            signal_cols = signal_cols[1:]
    if not signal_cols:
        raise UploadError(f"{name}: no signal column (only time or sample-index columns)")
    return columns, signal_cols


def _csv_column(
    lead: str | int | None, columns: list[str], signal_cols: list[int], name: str
) -> int:
    """The column `lead` asks for: none (the first signal column), an index, or a name."""
    if lead is None or (isinstance(lead, str) and not lead.strip()):
        return signal_cols[0]
    if isinstance(lead, int) or str(lead).strip().isdigit():
        k = int(lead)
        if not 0 <= k < len(signal_cols):
            raise UploadError(
                f"{name}: lead index {k} out of range; the file has "
                f"{len(signal_cols)} signal column(s)"
            )
        return signal_cols[k]
    wanted = str(lead).strip().lower()
    matches = [i for i in signal_cols if columns[i].lower() == wanted]
    if not matches:
        names = ", ".join(columns[i] for i in signal_cols)
        raise UploadError(f"{name}: no column named {lead!r}; signal columns are: {names}")
    return matches[0]


def _column_values(
    table: _Table, width: int, col: int, columns: list[str], name: str
) -> np.ndarray:
    """Column `col` of every row as numbers; a row of another width or a cell that is not a
    number is refused, naming its line."""
    values = np.empty(len(table.rows), dtype=np.float64)
    for k, (cells, lineno) in enumerate(zip(table.rows, table.line_numbers, strict=True)):
        if len(cells) != width:
            raise UploadError(
                f"{name} line {lineno}: {len(cells)} columns where the file has {width}"
            )
        v = _number(cells[col])
        if v is None:
            raise UploadError(
                f"{name} line {lineno}: {cells[col]!r} in column {columns[col]!r} is not a number"
            )
        values[k] = v
    return values


def _safe_name(filename: str) -> str:
    base = PurePath(filename.replace("\\", "/")).name
    if not base or base in {".", ".."} or not re.fullmatch(r"[A-Za-z0-9_.+-]+", base):
        raise UploadError(f"file name {filename!r} is not a plain WFDB file name")
    return base


def parse_wfdb(files: Mapping[str, bytes], *, lead: str | int | None = None) -> Upload:
    """Read a WFDB record uploaded as its `.hea` header together with the signal files it names."""
    named = {_safe_name(n): d for n, d in files.items()}
    headers = [n for n in named if n.lower().endswith(".hea")]
    if len(headers) != 1:
        raise UploadError(
            f"a WFDB upload needs exactly one .hea header, got {len(headers)} "
            f"({', '.join(sorted(named)) or 'no files'})"
        )
    hea = headers[0]
    record = hea[: -len(".hea")]
    try:
        text = named[hea].decode("ascii")
    except UnicodeDecodeError:
        raise UploadError(f"{hea}: a WFDB header must be ASCII text") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise UploadError(f"{hea}: the header is empty")
    first = lines[0].split()
    if "/" in first[0]:
        raise UploadError(f"{hea}: multi-segment records are not supported; upload one segment")
    if len(first) < 2 or not first[1].isdigit() or int(first[1]) < 1:
        raise UploadError(f"{hea}: the record line {lines[0]!r} does not give a signal count")
    wanted = sorted({ln.split()[0] for ln in lines[1 : 1 + int(first[1])] if ln.split()})
    missing = [f for f in wanted if f not in named and f != "~"]
    if missing:
        raise UploadError(
            f"{hea} names signal file(s) {', '.join(missing)} that were not uploaded; "
            "send the .hea and its .dat file(s) together"
        )
    with tempfile.TemporaryDirectory(prefix="ecg-upload-") as tmp:
        for fname, payload in named.items():
            (Path(tmp) / fname).write_bytes(payload)
        try:
            rec = wfdb.rdrecord(str(Path(tmp) / record))
        except Exception as exc:  # wfdb raises many types for bad files
            raise UploadError(
                f"{hea}: the WFDB record cannot be read ({exc}); check that the signal file is "
                "complete and belongs to this header"
            ) from exc
    if rec.p_signal is None or rec.p_signal.ndim != 2 or rec.p_signal.shape[0] == 0:
        raise UploadError(f"{hea}: the record holds no samples")
    names = tuple(str(s) for s in rec.sig_name)
    k = _wfdb_lead(lead, names, hea)
    samples = np.asarray(rec.p_signal[:, k], dtype=np.float64)
    unit = str(rec.units[k]).lower() if rec.units else "mv"
    if unit in {"uv", "µv"}:
        samples = samples / 1000.0
    elif unit == "v":
        samples = samples * 1000.0
    fs = check_fs(rec.fs, where=f"{hea} fs")
    return Upload(
        name=record,
        fs=fs,
        samples=_check_signal(samples, fs, hea),
        lead=names[k],
        leads=names,
        kind="wfdb",
    )


def _wfdb_lead(lead: str | int | None, names: tuple[str, ...], hea: str) -> int:
    """The index of the lead `lead` asks for: none (the first), an index, or a name."""
    if lead is None or (isinstance(lead, str) and not lead.strip()):
        return 0
    if isinstance(lead, int) or str(lead).strip().isdigit():
        k = int(lead)
        if not 0 <= k < len(names):
            raise UploadError(f"{hea}: lead index {k} out of range; leads are {', '.join(names)}")
        return k
    if str(lead) in names:
        return names.index(str(lead))
    raise UploadError(f"{hea}: no lead named {lead!r}; leads are {', '.join(names)}")


def parse_upload(
    files: Mapping[str, bytes],
    fs: float | str | None = None,
    *,
    lead: str | int | None = None,
) -> Upload:
    """Dispatch on the file names: one CSV/TXT/TSV file, or a WFDB `.hea` with its signal files."""
    if not files:
        raise UploadError("no file was uploaded; send a CSV file or a WFDB .hea with its .dat")
    total = sum(len(d) for d in files.values())
    if total > MAX_UPLOAD_BYTES:
        raise UploadError(f"the upload is {total} bytes, over the {MAX_UPLOAD_BYTES} byte limit")
    lower = {n.lower(): n for n in files}
    if any(n.endswith(".hea") for n in lower):
        return parse_wfdb(files, lead=lead)
    if len(files) != 1:
        raise UploadError(
            f"got {len(files)} files without a .hea header; send one CSV file, or a WFDB record"
        )
    ((fname, payload),) = files.items()
    ext = PurePath(fname).suffix.lower()
    if ext in {".dat", ".atr", ".xyz"}:
        raise UploadError(f"{fname}: a WFDB signal file needs its .hea header uploaded with it")
    if ext not in {".csv", ".txt", ".tsv", ""}:
        raise UploadError(
            f"{fname}: unsupported file type {ext!r}; upload a CSV (.csv/.txt/.tsv) with a "
            "stated sampling rate, or a WFDB record (.hea + .dat)"
        )
    return parse_csv(payload, fs, name=fname, lead=lead)
