"""Reference rhythm episodes from a WFDB annotation file (issue 8's definitions).

- VT: a `(VT` rhythm holding >= 5 beats, or >= 5 consecutive V beats at >= 100 bpm (from the
  beat labels, so a record without rhythm notes gets its episodes too). MIT-BIH marks runs of
  3-4 V beats as `(VT` as well; those are kept apart as `vt_short` (the policy's "run", a
  medium alarm) and count, with every run of >= 3 V beats, as ventricular rhythm for `vt_ppv`.
- VF: `[` ... `]` (an unclosed `[` lasts to the end), or a `(VF` / `(VFL` rhythm.
- AF: `(AFIB` / `(AFL` rhythms (and cudb's `(AF`).
- SVT: a `(SVTA` rhythm, or >= 5 consecutive S beats at >= 100 bpm.
Overlapping intervals of one kind are merged. Times are seconds from the record's start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from ecgcommon.aami import aami_class

RUN_MIN_BEATS = 5  # VT / SVT from beat labels: >= 5 consecutive beats ...
RUN_MIN_RATE_BPM = 100.0  # ... at >= 100 bpm (mean rate over the run)
V_RUN_PPV_BEATS = 3  # a run of >= 3 V beats is ventricular rhythm for vt_ppv
RHYTHM_KINDS: dict[str, str] = {
    "(VT": "vt",
    "(VF": "vf",
    "(VFL": "vf",
    "(AFIB": "af",
    "(AFL": "af",
    "(AF": "af",
    "(SVTA": "svt",
}
KINDS = ("vt", "vt_short", "vf", "af", "svt", "vrun")


@dataclass(frozen=True)
class Episode:
    """One reference episode: [onset, end] in seconds from the record's start."""

    kind: str
    onset: float
    end: float
    source: str  # "note", "beats", "brackets" or a "+"-joined mix after merging

    @property
    def duration(self) -> float:
        return self.end - self.onset


@dataclass(frozen=True)
class Annotations:
    """A record's reference annotations: every label with its aux note, and the duration."""

    fs: float
    samples: np.ndarray  # int64 sample of each annotation
    symbols: np.ndarray  # str
    aux: np.ndarray  # str, stripped aux note ("" when none)
    duration_s: float

    @property
    def beat_mask(self) -> np.ndarray:
        return np.array([aami_class(s) is not None for s in self.symbols], dtype=bool)

    @property
    def beat_t(self) -> np.ndarray:
        """R-peak times (s) of the annotated beats."""
        return self.samples[self.beat_mask] / self.fs

    @property
    def beat_samples(self) -> np.ndarray:
        return self.samples[self.beat_mask]

    @property
    def beat_cls(self) -> np.ndarray:
        """AAMI class of each annotated beat."""
        return np.array([aami_class(s) for s in self.symbols[self.beat_mask]], dtype="<U1")

    @property
    def paced(self) -> bool:
        """A record with paced beats (left out of beat figures, as EC57 does)."""
        return bool(np.isin(self.symbols, ("/", "f")).any())


@dataclass
class Reference:
    """Reference episodes of one record, by kind (see KINDS)."""

    episodes: dict[str, list[Episode]] = field(default_factory=dict)

    def of(self, *kinds: str) -> list[Episode]:
        out: list[Episode] = []
        for k in kinds:
            out += self.episodes.get(k, [])
        return sorted(out, key=lambda e: e.onset)

    def counts(self) -> dict[str, int]:
        return {k: len(self.episodes.get(k, [])) for k in KINDS}


def read_annotations(
    name: str,
    data_dir: str | os.PathLike[str],
    duration_s: float,
    extension: str = "atr",
    sampto: int | None = None,
) -> Annotations:
    """The annotations of a record (wfdb), with their aux notes; up to `sampto` when given."""
    ann = wfdb.rdann(str(Path(data_dir) / name), extension, sampto=sampto)
    aux = [(a or "").replace("\x00", "").strip() for a in ann.aux_note]
    return Annotations(
        fs=float(ann.fs),
        samples=np.asarray(ann.sample, dtype=np.int64),
        symbols=np.asarray(ann.symbol, dtype=object),
        aux=np.asarray(aux, dtype=object),
        duration_s=float(duration_s),
    )


def make_annotations(
    fs: float, labels: list[tuple[float, str, str]], duration_s: float
) -> Annotations:
    """Annotations from (time s, symbol, aux) triples (tests, synthetic records)."""
    labels = sorted(labels, key=lambda x: x[0])
    return Annotations(
        fs=fs,
        samples=np.array([round(t * fs) for t, _, _ in labels], dtype=np.int64),
        symbols=np.array([s for _, s, _ in labels], dtype=object),
        aux=np.array([a for _, _, a in labels], dtype=object),
        duration_s=duration_s,
    )


def rhythm_intervals(ann: Annotations) -> list[tuple[str, float, float]]:
    """(note, onset, end) of every rhythm note: it lasts until the next one or the end."""
    pairs = zip(ann.symbols, ann.aux, strict=True)
    idx = [i for i, (s, a) in enumerate(pairs) if s == "+" and a[:1] == "("]
    out = []
    for k, i in enumerate(idx):
        onset = ann.samples[i] / ann.fs
        end = ann.samples[idx[k + 1]] / ann.fs if k + 1 < len(idx) else ann.duration_s
        out.append((str(ann.aux[i]), float(onset), float(min(end, ann.duration_s))))
    return out


def bracket_intervals(ann: Annotations) -> list[tuple[float, float]]:
    """VF/flutter between `[` and `]`; an unclosed `[` lasts to the end of the record."""
    out, start = [], None
    for s, smp in zip(ann.symbols, ann.samples, strict=True):
        t = smp / ann.fs
        if s == "[":
            start = t if start is None else start
        elif s == "]":
            out.append((0.0 if start is None else start, t))
            start = None
    if start is not None:
        out.append((start, ann.duration_s))
    return [(float(a), float(b)) for a, b in out]


def class_runs(
    t: np.ndarray, cls: np.ndarray, which: str, min_beats: int, min_rate_bpm: float | None
) -> list[tuple[float, float, int]]:
    """Maximal runs of consecutive beats of class `which`: (first t, last t, beats) of those
    with >= min_beats beats and a mean rate >= min_rate_bpm (any rate when None)."""
    out = []
    n, i = len(cls), 0
    while i < n:
        if cls[i] != which:
            i += 1
            continue
        j = i
        while j + 1 < n and cls[j + 1] == which:
            j += 1
        beats = j - i + 1
        span = float(t[j] - t[i])
        rate = 60.0 * (beats - 1) / span if span > 0 else np.inf
        if beats >= min_beats and (min_rate_bpm is None or rate >= min_rate_bpm):
            out.append((float(t[i]), float(t[j]), beats))
        i = j + 1
    return out


def merge(episodes: list[Episode]) -> list[Episode]:
    """Overlapping (or touching) episodes of one kind become one."""
    out: list[Episode] = []
    for e in sorted(episodes, key=lambda e: (e.onset, e.end)):
        if out and e.onset <= out[-1].end:
            last = out[-1]
            src = last.source if e.source in last.source.split("+") else f"{last.source}+{e.source}"
            out[-1] = Episode(last.kind, last.onset, max(last.end, e.end), src)
        else:
            out.append(e)
    return out


def reference_episodes(ann: Annotations) -> Reference:
    """Every reference episode of a record, by kind (module docstring)."""
    t, cls = ann.beat_t, ann.beat_cls
    found: dict[str, list[Episode]] = {k: [] for k in KINDS}
    for note, onset, end in rhythm_intervals(ann):
        kind = RHYTHM_KINDS.get(note)
        if kind is None or end <= onset:
            continue
        if kind == "vt":
            inside = int(((t >= onset) & (t < end)).sum())
            kind = "vt" if inside >= RUN_MIN_BEATS else "vt_short"
        found[kind].append(Episode(kind, onset, end, "note"))
    for onset, end in bracket_intervals(ann):
        if end > onset:
            found["vf"].append(Episode("vf", onset, end, "brackets"))
    for kind, c in (("vt", "V"), ("svt", "S")):
        for onset, end, _ in class_runs(t, cls, c, RUN_MIN_BEATS, RUN_MIN_RATE_BPM):
            found[kind].append(Episode(kind, onset, end, "beats"))
    for onset, end, _ in class_runs(t, cls, "V", V_RUN_PPV_BEATS, None):
        found["vrun"].append(Episode("vrun", onset, end, "beats"))
    ref = Reference({k: merge(v) for k, v in found.items()})
    # a short (VT note inside a sustained VT episode is part of it, not a separate run
    ref.episodes["vt_short"] = [
        e for e in ref.episodes["vt_short"] if not _overlaps_any(e, ref.episodes["vt"])
    ]
    return ref


def _overlaps_any(e: Episode, others: list[Episode]) -> bool:
    return any(o.onset <= e.end and e.onset <= o.end for o in others)
