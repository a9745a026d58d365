"""Per-lead signal-quality index (SQI) and the bed's `noisy` condition, sans-I/O.

Artifact (electrode motion, muscle) changes a lead's band-passed waveform against the same
lead's own clean past: it grows larger, less spiky (QRS complexes stand out less: kurtosis of
the signal and of its slope fall), the baseline between beats fills (interquartile over full
range, phase-space filling and threshold-crossing share rise) and muscle noise adds power above
12 Hz. Each window (the VF detector's: 4 s every 1 s, on the decimated 1..35 Hz lead of
`detector.rhythms.stream`, features of `vf_features`) is described by the logs of those
features over the lead's clean baseline (`RELATIVE`) plus the high-frequency share, and a
logistic model gives the probability of artifact; `sqi = 1 - p`, and a window with
`p >= p_bad` is in artifact.

The clean baseline is the median over the last `baseline_windows` clean windows, learnt from
the first `learn_windows` windows of a stream, so the model is relative to the patient and the
lead and carries over to other leads, gains and rates. Model fitted on MIT-BIH DS1 clean vs
DS1 with nstdb `em`/`ma` noise at 0 and -6 dB, record-wise cross-validated
(`python -m detector.rhythms.quality_design`). `NoisyGate` turns the per-window verdicts into
the `noisy` condition with hysteresis: on after `on_windows` bad windows of the last `on_of`,
off after `off_windows` consecutive clean ones (at the end of the last of them). A clean window
here is one at `p < p_recover` (a Schmitt trigger: on at `p_bad`, off only below `p_recover`),
so a window the model is unsure of (p between them) neither keeps nor ends the artifact alone,
but restarts the count: strong noise with quieter moments stays one `noisy` stretch.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from detector.rhythms.events import EpisodeChange, check_config
from detector.rhythms.vf_features import VFFeatures

RELATIVE = ("amp_mv", "kurt", "dkurt", "spread", "psr", "tcsc")
# Logistic model on quality_inputs(): standardise with MU/SD, then B[0] + B[1:] . z.
MU = (0.6593, -0.5154, -0.7364, 0.443, 0.4397, 0.5009, 0.2441)
SD = (0.6561, 0.5481, 0.5714, 0.488, 0.3639, 0.6088, 0.2103)
B = (4.146, 2.6071, 3.3024, -2.722, 0.6336, 4.3037, -1.0282, -0.2733)


def quality_inputs(f: Mapping[str, float], base: Mapping[str, float]) -> list[float]:
    """The model's inputs: log(feature / baseline) for `RELATIVE`, then the HF share."""
    out = []
    for name in RELATIVE:
        ref = base[name]
        out.append(math.log(f[name] / ref + 1e-6) if ref > 0 and f[name] >= 0 else 0.0)
    out.append(f["hf"])
    return out


def column_medians(rows: np.ndarray) -> np.ndarray:
    """`np.median(rows, axis=0)`, bit for bit (the same order statistics and mean of the middle
    two), without its Python layers (once every few windows per bed); rows with NaN go through
    `np.median` itself (its NaN rule)."""
    n = rows.shape[0]
    if n == 0 or not np.logical_and.reduce(np.isfinite(rows), axis=None):
        return np.median(rows, axis=0)
    k = n // 2
    if n % 2:  # np.median's mean of the middle row(s): np.add.reduce, then / their count
        return np.add.reduce(np.partition(rows, k, axis=0)[k : k + 1], axis=0) / 1
    part = np.partition(rows, (k - 1, k), axis=0)
    return np.add.reduce(part[k - 1 : k + 1], axis=0) / 2


def artifact_probability(z: list[float]) -> float:
    s = B[0] + sum((v - m) / d * b for v, m, d, b in zip(z, MU, SD, B[1:], strict=True))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, s))))


@dataclass(frozen=True)
class QualityConfig:
    """Decision threshold, baseline and the gate's hysteresis (in windows)."""

    p_bad: float = 0.7
    p_clean: float = 0.3  # only windows this clean join the baseline (noise must not creep in)
    p_recover: float = 0.5  # ... this clean count towards the end of `noisy` (hysteresis)
    baseline_windows: int = 60
    learn_windows: int = 8
    on_windows: int = 2
    on_of: int = 3
    off_windows: int = 5
    flat_mv: float = 0.02  # a window smaller than this is flat: no quality verdict (asystole?)

    def __post_init__(self) -> None:
        check_config(self)
        if not self.p_clean <= self.p_bad < 1:
            raise ValueError("QualityConfig.p_bad must be < 1 and >= p_clean")
        if not self.p_recover <= self.p_bad:
            raise ValueError("QualityConfig.p_recover must be <= p_bad")
        if self.on_windows > self.on_of:
            raise ValueError("QualityConfig.on_windows must be <= on_of")


@dataclass(frozen=True)
class LeadQuality:
    """One window's verdict on one lead."""

    sqi: float  # 0..1 (1 - artifact probability); nan while learning or without signal
    bad: bool


class LeadSQI:
    """The running quality index of one lead, against its own clean baseline."""

    def __init__(self, config: QualityConfig = QualityConfig()) -> None:
        self.config = config
        self.history: deque[tuple[float, ...]] = deque(maxlen=config.baseline_windows)
        self.learning: list[tuple[float, ...]] = []
        self.base: dict[str, float] = {}
        self._base_row: tuple[float, ...] = ()  # the same in RELATIVE order
        self.stale = 0  # clean windows added since the medians were taken

    def update(self, f: VFFeatures | None) -> LeadQuality:
        """The verdict on one window's features (None: no signal, which is lead-off's business,
        not artifact: no verdict)."""
        c = self.config
        if f is None or f.amp_mv < c.flat_mv or not math.isfinite(f.kurt):
            return LeadQuality(math.nan, False)
        row = (  # RELATIVE
            float(f.amp_mv),
            float(f.kurt),
            float(f.dkurt),
            float(f.spread),
            float(f.psr),
            float(f.tcsc),
        )
        if not self.base:
            self.learning.append(row)
            if len(self.learning) < c.learn_windows:
                return LeadQuality(math.nan, False)
            self.history.extend(self.learning)
            self.learning = []
            self.stale = c.learn_windows
        if self.stale >= min(10, c.learn_windows):  # medians refreshed every few clean windows
            med = column_medians(np.array(self.history))
            self.base = dict(zip(RELATIVE, med.tolist(), strict=True))
            self._base_row = tuple(self.base[name] for name in RELATIVE)
            self.stale = 0
        # = quality_inputs(row as a dict, base), without building the dicts (once a window)
        z = [
            math.log(v / ref + 1e-6) if ref > 0 and v >= 0 else 0.0
            for v, ref in zip(row, self._base_row, strict=True)
        ]
        z.append(f.hf)
        p = artifact_probability(z)
        bad = p >= c.p_bad
        if p < c.p_clean:
            self.history.append(row)
            self.stale += 1
        return LeadQuality(1.0 - p, bad)


def _detail(q: LeadQuality, lead: str) -> dict[str, object]:
    return {"lead": lead, "sqi": None if math.isnan(q.sqi) else round(q.sqi, 3)}


class NoisyGate:
    """The bed's `noisy` condition from the analysed lead's window verdicts (hysteresis)."""

    def __init__(self, config: QualityConfig = QualityConfig()) -> None:
        self.config = config
        self.recent: deque[tuple[float, bool]] = deque(maxlen=config.on_of)
        self.good_run = 0
        self.first_good_t = math.nan
        self.active = False
        self.since = math.nan
        # (start, end) of the noisy spans, newest last; end inf while active
        self.spans: deque[tuple[float, float]] = deque(maxlen=64)
        # (decision time, active) of each change: the condition as it was known at a time
        self.decided: deque[tuple[float, bool]] = deque(maxlen=64)

    def update(
        self, q: LeadQuality, t_start: float, t_end: float, lead: str
    ) -> list[EpisodeChange]:
        """One window [t_start, t_end) of the analysed lead."""
        c = self.config
        self.recent.append((t_end, q.bad))
        if not self.active:
            bad = [t for t, b in self.recent if b]
            if len(bad) >= c.on_windows:
                self.active = True
                self.good_run = 0
                # artifact reached the first bad window's newest hop
                self.since = bad[0] - (t_end - t_start) / 4
                self.spans.append((self.since, math.inf))
                self.decided.append((t_end, True))
                return [EpisodeChange("noisy", True, self.since, _detail(q, lead))]
            return []
        if q.bad or 1.0 - q.sqi >= c.p_recover:  # nan (no verdict) is no artifact
            self.good_run = 0
            return []
        self.good_run += 1
        if self.good_run == 1:
            self.first_good_t = t_end
        if self.good_run >= c.off_windows:
            # ends when decided (beats up to now went out as class Q under it), not back at
            # the first clean window: the policy restarts its analysis from here
            return self.end(t_end, {**_detail(q, lead), "clean_since": self.first_good_t})
        return []

    def force(self, since: float, lead: str, decided_t: float | None = None) -> list[EpisodeChange]:
        """Start the condition at `decided_t` (default `since`), from `since` (the beat finder
        lost the beats: no window vote needed); it ends as usual, after `off_windows` clean
        windows."""
        if self.active:
            self.good_run = 0
            return []
        self.active = True
        self.good_run = 0
        self.since = since
        self.spans.append((since, math.inf))
        self.decided.append((since if decided_t is None else decided_t, True))
        return [
            EpisodeChange("noisy", True, since, {"lead": lead, "sqi": None, "beats_lost": True})
        ]

    def end(self, t: float, detail: dict | None = None) -> list[EpisodeChange]:
        """End the condition (recovered, or the stream restarted)."""
        if not self.active:
            return []
        self.active = False
        self.recent.clear()
        start, _ = self.spans.pop()
        self.spans.append((start, t))
        self.decided.append((t, False))
        return [EpisodeChange("noisy", False, t, detail or {})]

    def noisy_at(self, t: float) -> bool:
        """Whether signal time `t` lies in artifact (as far as decided)."""
        return any(s <= t < e for s, e in self.spans)

    def known_at(self, t: float) -> bool:
        """Whether the condition was on as decided by the windows ending at or before `t` (what
        a decision at `t` could know; the same for any chunking once those are judged)."""
        on = False
        for d, active in self.decided:
            if d > t:
                break
            on = active
        return on
