"""Shared helpers of the rhythm tests: records through the analyser in chunks, reference spans."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from detector.rhythms import EpisodeChange, RhythmAnalyser
from ecgcommon.records import Record, load_record

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # beside the repository


def cudb(name: str, start_s: float = 0.0, end_s: float | None = None) -> tuple[Record, float]:
    """A cudb record and its first `[` (VF onset, s)."""
    rec = load_record(name, DATA / "cudb")
    assert rec.ann_samples is not None and rec.ann_symbols is not None
    onset = float(rec.ann_samples[list(rec.ann_symbols).index("[")]) / rec.fs
    return rec, onset


def feed(
    x: np.ndarray,
    fs: float,
    chunk: int,
    analyser: RhythmAnalyser | None = None,
    t0: float = 1000.0,
) -> list[EpisodeChange]:
    """(n, leads) samples through a fresh (or given) analyser in chunks of `chunk` samples."""
    a = analyser or RhythmAnalyser()
    x = x.reshape(len(x), -1)
    out: list[EpisodeChange] = []
    for i in range(0, len(x), chunk):
        out += a.feed_samples(x[i : i + chunk], fs, t0 + i / fs, False, ("ECG",) * x.shape[1])
    return out


def of(changes: list[EpisodeChange], etype: str) -> list[EpisodeChange]:
    return [c for c in changes if c.type == etype]


class Change(Protocol):
    """An on/off change of an episode (`EpisodeChange`, a decoded `Event`)."""

    @property
    def active(self) -> bool: ...

    @property
    def t(self) -> float: ...


def active_spans(changes: Iterable[Change], end: float) -> list[tuple[float, float]]:
    """(start, stop) of each episode in a run of on/off changes; one still on stops at `end`."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for c in changes:
        if c.active:
            start = c.t
        elif start is not None:
            out.append((start, c.t))
            start = None
    if start is not None:
        out.append((start, end))
    return out
