"""Read WFDB databases (MIT-BIH and others) from a local folder with `wfdb`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

ENV_VAR = "ECG_DATA_DIR"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = _PROJECT_ROOT.parent / "shared" / "data" / "mitdb"


class RecordError(Exception):
    """A record is missing or unreadable; the message names the folder and the record."""


@dataclass(frozen=True)
class Record:
    """One ECG record: physical signal in its units (usually mV), with optional beat labels."""

    name: str
    fs: float
    signal: np.ndarray  # shape (n_samples, n_leads), float64
    lead_names: tuple[str, ...]
    units: tuple[str, ...]
    ann_samples: np.ndarray | None = None  # int64 sample index of each annotation
    ann_symbols: np.ndarray | None = None  # str symbol of each annotation

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def lead(self, index: int = 0) -> np.ndarray:
        """One lead as a contiguous 1-D float64 array."""
        return np.ascontiguousarray(self.signal[:, index])


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: explicit argument, else $ECG_DATA_DIR, else ../shared/data/mitdb."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR


def data_file_hashes(
    names: Sequence[str], data_dir: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """sha256 of each record's .hea/.dat/.atr file used (file name -> hex digest): provenance
    for manifests and cache keys (training and the detector's offline runs alike)."""
    folder = resolve_data_dir(data_dir)
    out: dict[str, str] = {}
    for name in names:
        for ext in ("hea", "dat", "atr"):
            path = folder / f"{name}.{ext}"
            if path.is_file():
                out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def list_records(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Record names from the folder's RECORDS file, else every `.hea` file in it."""
    folder = resolve_data_dir(data_dir)
    if not folder.is_dir():
        raise RecordError(
            f"data folder {folder} does not exist; set --data-dir or ${ENV_VAR}, "
            "or fetch MIT-BIH with `python -m ecgcommon.fetch`"
        )
    listing = folder / "RECORDS"
    if listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    else:
        names = sorted(p.stem for p in folder.glob("*.hea"))
    if not names:
        raise RecordError(f"data folder {folder} holds no WFDB records (no RECORDS, no .hea)")
    return names


def annotated_records(
    data_dir: str | os.PathLike[str] | None = None, extension: str = "atr"
) -> list[str]:
    """Records of the folder that have a reference annotation file."""
    folder = resolve_data_dir(data_dir)
    return [n for n in list_records(folder) if (folder / f"{n}.{extension}").is_file()]


def load_record(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    annotations: bool = True,
    extension: str = "atr",
    sampto: int | None = None,
) -> Record:
    """Read one record; annotations are loaded when the annotation file exists."""
    folder = resolve_data_dir(data_dir)
    base = folder / name
    if not base.with_suffix(".hea").is_file():
        raise RecordError(f"record {name!r} not found in {folder} (no {name}.hea)")
    try:
        rec = wfdb.rdrecord(str(base), sampto=sampto)
    except Exception as exc:  # wfdb raises many types for bad files
        raise RecordError(f"record {name!r} in {folder} is unreadable: {exc}") from exc
    if rec.p_signal is None or rec.p_signal.ndim != 2 or rec.p_signal.shape[0] == 0:
        raise RecordError(f"record {name!r} in {folder} has no samples")
    samples = symbols = None
    if annotations and (folder / f"{name}.{extension}").is_file():
        try:
            ann = wfdb.rdann(str(base), extension, sampto=sampto)
        except Exception as exc:
            raise RecordError(
                f"annotations {name}.{extension} in {folder} are unreadable: {exc}"
            ) from exc
        samples = np.asarray(ann.sample, dtype=np.int64)
        symbols = np.asarray(ann.symbol, dtype=object)
    return Record(
        name=name,
        fs=float(rec.fs),
        signal=np.asarray(rec.p_signal, dtype=np.float64),
        lead_names=tuple(rec.sig_name),
        units=tuple(rec.units),
        ann_samples=samples,
        ann_symbols=symbols,
    )
