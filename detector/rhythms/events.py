"""What the rhythm detectors take (beats) and give (episode changes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

_REAL = (int, float)  # = int | float, made once (a beat's checks run several times)


@dataclass(frozen=True)
class RhythmBeat:
    """One classified beat, as the engine publishes it (times on the signal clock, unix s)."""

    sample: int
    t: float
    rr_s: float | None
    hr_bpm: float | None
    cls: str | None  # AAMI class N, S, V, F, Q, or None (unknown)
    score: float = 0.0

    @property
    def valid(self) -> bool:
        """A beat with a finite time (anything else is dropped by the detectors)."""
        return isinstance(self.t, _REAL) and math.isfinite(self.t)

    @property
    def rr(self) -> float | None:
        """The RR interval in s when it is a finite, physiological number, else None."""
        rr = self.rr_s
        if rr is None or not isinstance(rr, _REAL) or not math.isfinite(rr):
            return None
        return rr if 0.15 <= rr <= 6.0 else None


@dataclass(frozen=True)
class EpisodeChange:
    """An episode (or the `noisy` condition) starts (`active`) or ends at signal time `t`."""

    type: str  # "vt", "vf", "afib", "svt" or "noisy"
    active: bool
    t: float
    detail: dict[str, Any] = field(default_factory=dict)


def check_positive(owner: str, **values: float) -> None:
    """Config validation: every value a finite number > 0, the error naming the field."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{owner}.{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{owner}.{name} must be finite and > 0, got {value!r}")


def check_config(config: Any, skip: tuple[str, ...] = ()) -> None:
    """`check_positive` over every field of the dataclass `config` but `skip`, in declaration
    order (each detector's config validates its own extra rules after this)."""
    values = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in skip}
    check_positive(type(config).__name__, **values)
