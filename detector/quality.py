"""Per-lead signal-quality index (SQI) and the bed's `noisy` condition, sans-I/O.

Artifact (electrode motion, muscle) on a lead changes its band-passed waveform against the same
lead's own clean past: it grows larger (`rel_amp`, the 5..95 % range over its clean baseline),
less spiky (`rel_kurt`, kurtosis over its clean baseline: QRS complexes stand out less), and
muscle noise adds power above 12 Hz (`hf`). Each window (the VF detector's: 4 s every 1 s, on
the decimated 1..35 Hz lead of `detector.rhythms.stream`) gets

    badness = max(rel_amp / max_rel_amp, min_rel_kurt / rel_kurt, hf / max_hf),
    sqi = 1 / (1 + badness)         (sqi < 0.5: the window is in artifact)

The clean baseline is the median over the last `baseline_windows` clean windows (learnt from
the first `learn_windows` windows of a stream). Thresholds are relative, so they carry over
to other leads, gains and rates. `NoisyGate` turns the per-window verdicts into the `noisy`
condition with hysteresis: on after `on_windows` bad windows of the last `on_of`, off after
`off_windows` consecutive clean ones. Designed on MIT-BIH DS1 with nstdb `em`/`ma` noise
(`python -m detector.rhythms.vf_design`, the same windows).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from detector.rhythms.events import EpisodeChange, check_positive
from detector.rhythms.vf_features import VFFeatures


@dataclass(frozen=True)
class QualityConfig:
    """Limits (relative to the lead's clean baseline) and the gate's hysteresis, in windows."""

    max_rel_amp: float = 1.6
    min_rel_kurt: float = 0.55
    max_hf: float = 0.75
    baseline_windows: int = 60
    learn_windows: int = 8
    on_windows: int = 2
    on_of: int = 3
    off_windows: int = 5
    flat_mv: float = 0.02  # a window smaller than this is flat: no quality verdict (asystole?)

    def __post_init__(self) -> None:
        check_positive(
            "QualityConfig",
            max_rel_amp=self.max_rel_amp,
            min_rel_kurt=self.min_rel_kurt,
            max_hf=self.max_hf,
            baseline_windows=self.baseline_windows,
            learn_windows=self.learn_windows,
            on_windows=self.on_windows,
            on_of=self.on_of,
            off_windows=self.off_windows,
            flat_mv=self.flat_mv,
        )
        if self.on_windows > self.on_of:
            raise ValueError("QualityConfig.on_windows must be <= on_of")


@dataclass(frozen=True)
class LeadQuality:
    """One window's verdict on one lead."""

    sqi: float  # 0..1, below 0.5 in artifact; nan while learning or unscored
    bad: bool
    rel_amp: float
    rel_kurt: float
    hf: float


class LeadSQI:
    """The running quality index of one lead, against its own clean baseline."""

    def __init__(self, config: QualityConfig = QualityConfig()) -> None:
        self.config = config
        self.amps: deque[float] = deque(maxlen=config.baseline_windows)
        self.kurts: deque[float] = deque(maxlen=config.baseline_windows)
        self.learning: list[tuple[float, float]] = []
        self.base = (math.nan, math.nan)  # median amp, kurtosis of the clean baseline
        self.stale = 0  # clean windows added since the medians were taken

    def update(self, f: VFFeatures | None) -> LeadQuality:
        """The verdict on one window's features (None: no signal, which is lead-off's business,
        not artifact: no verdict)."""
        c = self.config
        nan = math.nan
        if f is None:
            return LeadQuality(nan, False, nan, nan, nan)
        if f.amp_mv < c.flat_mv or not math.isfinite(f.kurt):
            return LeadQuality(nan, False, nan, nan, nan)
        if not self.amps:
            self.learning.append((f.amp_mv, f.kurt))
            if len(self.learning) < c.learn_windows:
                return LeadQuality(nan, False, nan, nan, f.hf)
            amps, kurts = zip(*self.learning, strict=True)
            self.amps.extend(amps)
            self.kurts.extend(kurts)
            self.learning = []
            self.stale = c.learn_windows
        if self.stale >= min(10, c.learn_windows):  # medians refreshed every few clean windows
            self.base = (float(np.median(self.amps)), float(np.median(self.kurts)))
            self.stale = 0
        base_amp, base_kurt = self.base
        rel_amp = f.amp_mv / base_amp if base_amp > 0 else 1.0
        rel_kurt = f.kurt / base_kurt if base_kurt > 0 else 1.0
        badness = max(
            rel_amp / c.max_rel_amp, c.min_rel_kurt / max(rel_kurt, 1e-6), f.hf / c.max_hf
        )
        sqi = 1.0 / (1.0 + badness)
        bad = badness >= 1.0
        if not bad:
            self.amps.append(f.amp_mv)
            self.kurts.append(f.kurt)
            self.stale += 1
        return LeadQuality(sqi, bad, rel_amp, rel_kurt, f.hf)


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

    def update(
        self, q: LeadQuality, t_start: float, t_end: float, lead: str
    ) -> list[EpisodeChange]:
        """One window [t_start, t_end) of the analysed lead."""
        c = self.config
        self.recent.append((t_end, q.bad))
        detail = {"lead": lead, "sqi": None if math.isnan(q.sqi) else round(q.sqi, 3)}
        if not self.active:
            bad = [t for t, b in self.recent if b]
            if len(bad) >= c.on_windows:
                self.active = True
                self.good_run = 0
                # artifact reached the first bad window's newest hop
                self.since = bad[0] - (t_end - t_start) / 4
                self.spans.append((self.since, math.inf))
                return [EpisodeChange("noisy", True, self.since, detail)]
            return []
        if q.bad:
            self.good_run = 0
            return []
        self.good_run += 1
        if self.good_run == 1:
            self.first_good_t = t_end
        if self.good_run >= c.off_windows:
            return self.end(self.first_good_t, detail)
        return []

    def end(self, t: float, detail: dict | None = None) -> list[EpisodeChange]:
        """End the condition (recovered, or the stream restarted)."""
        if not self.active:
            return []
        self.active = False
        self.recent.clear()
        start, _ = self.spans.pop()
        self.spans.append((start, t))
        return [EpisodeChange("noisy", False, t, detail or {})]

    def noisy_at(self, t: float) -> bool:
        """Whether signal time `t` lies in artifact (as far as decided)."""
        return any(s <= t < e for s, e in self.spans)
