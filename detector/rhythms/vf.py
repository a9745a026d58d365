"""Ventricular fibrillation / flutter from the waveform, where QRS detection breaks down.

Every `hop_s` a window of the last `window_s` seconds of the (low-passed, decimated) lead is
described by the established VF features of `vf_features` (TCSC, VF filter leakage, Barro's
spectral A2 and M, dominant frequency, high-frequency share, kurtosis, amplitude, phase-space
filling, slope kurtosis) and scored by
a logistic model fitted with record-wise cross-validation on cudb, mitdb DS1 (207: flutter)
and DS1 with nstdb `em`/`ma` noise added (`python -m detector.rhythms.vf_design`). A window
below `min_amp_mv` is not VF (asystole or a flat lead: the policy's asystole); a window with
non-finite samples (lost lead, gap) is not scored. VF starts after `on_windows` consecutive
windows at `p >= p_on`, at the end time of the first (in artifact that the bed's `noisy`
condition saw before the VF-like windows began, after `on_windows_artifact` windows at
`p >= p_on_artifact`: VF raises `noisy` itself, so a VF onset from clean rhythm is not slowed,
nor a VF that resumes in the `noisy` its own previous episode raised);
it ends after `off_windows` windows below `p_off` (or `lost_windows` unscored ones), at the end
time of the first of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.rhythms.events import EpisodeChange, check_config
from detector.rhythms.vf_features import VFFeatures, vf_features

WINDOW_S = 4.0
HOP_S = 1.0

# Logistic model on `transform(features)`: standardise with MU/SD, then B[0] + B[1:] . z.
# Fitted by `python -m detector.rhythms.vf_design` (all design records; see docs/arrhythmia.md).
MU = np.array(
    [0.29984, 0.76827, 0.28699, 1.13449, 2.54406, -1.87529, 1.70992, 0.26529, 0.13393, 2.43064]
)
SD = np.array(
    [0.12888, 0.06288, 0.11942, 0.53669, 1.55838, 1.0157, 0.49543, 0.66122, 0.03428, 0.57711]
)
B = np.array(
    [-3.65282, 0.03099, -0.61825, 1.11661, -0.11315, 0.40158, 0.24356, 0.26389, -0.70087]
    + [1.22976, -1.12521]
)

_MU, _SD, _B = MU.tolist(), SD.tolist(), B[1:].tolist()


def transform(f: np.ndarray) -> np.ndarray:
    """Feature rows (n, 10) in `FEATURES` order -> model inputs (logs of the skewed ones)."""
    f = np.atleast_2d(f)
    tcsc, leak, a2, m, pk, hf, ku, amp, psr, dku = f.T
    return np.column_stack(
        [
            tcsc,
            leak,
            a2,
            np.log(m + 1e-3),
            pk,
            np.log(hf + 1e-4),
            np.log(ku + 1e-3),
            np.log(amp + 1e-3),
            psr,
            np.log(dku + 1e-3),
        ]
    )


def vf_probability(f: VFFeatures) -> float:
    """The model's VF probability of one window."""
    z = (
        f.tcsc,
        f.leakage,
        f.a2,
        math.log(f.m + 1e-3),
        f.peak_hz,
        math.log(f.hf + 1e-4),
        math.log(f.kurt + 1e-3),
        math.log(f.amp_mv + 1e-3),
        f.psr,
        math.log(f.dkurt + 1e-3),
    )  # = transform(f), one row
    s = float(B[0]) + sum((v - mu) / sd * b for v, mu, sd, b in zip(z, _MU, _SD, _B, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, s))))


@dataclass(frozen=True)
class VFConfig:
    """Decision settings, in seconds and mV."""

    window_s: float = WINDOW_S
    hop_s: float = HOP_S
    p_on: float = 0.9
    p_off: float = 0.5
    on_windows: int = 2
    off_windows: int = 3
    lost_windows: int = 3
    min_amp_mv: float = 0.1
    # in artifact that began before the VF-like windows (not raised by VF itself), more proof:
    # an organised rhythm there scores 0.90..0.98 for many windows (cudb cu15, cu19), VF 0.99+
    p_on_artifact: float = 0.98
    on_windows_artifact: int = 3

    def __post_init__(self) -> None:
        check_config(self)
        if not (self.p_off <= self.p_on <= self.p_on_artifact < 1.0):
            raise ValueError("VFConfig.p_on must be < 1, >= p_off and <= p_on_artifact")
        if self.window_s != WINDOW_S or self.hop_s != HOP_S:
            raise ValueError("VFConfig.window_s/hop_s: the model is fitted for 4 s / 1 s")


class VFDetector:
    """One bed's VF state; `window(...)` once per hop with the newest window of the lead."""

    def __init__(self, config: VFConfig = VFConfig()) -> None:
        self.config = config
        self.active = False
        self.onset_t = math.nan
        self.high: list[float] = []  # end times of consecutive windows at p >= p_on
        self.strong: list[float] = []  # ... at p >= p_on_artifact
        self.low: list[float] = []  # ... below p_off (or unscored) while active
        self.lost = 0
        self.last: tuple[float, VFFeatures | None] = (0.0, None)
        self.episode = (math.nan, math.nan)  # onset and end of the last episode

    def window(
        self, x: np.ndarray | None, fs: float, t_end: float, artifact_since: float | None = None
    ) -> list[EpisodeChange]:
        """The window ending at `t_end` (None or non-finite: not analysable).

        `artifact_since`: start of the bed's `noisy` condition, if active.
        """
        c = self.config
        if x is None or x.size < fs or not np.isfinite(x).all():
            self.high, self.strong = [], []
            self.lost += 1
            self.last = (0.0, None)
            if self.active and self.lost >= c.lost_windows:
                return self._end(t_end - (c.lost_windows - 1) * c.hop_s, {"lost": True})
            return []
        return self.window_features(vf_features(x, fs), t_end, artifact_since)

    def quiet_window(self) -> None:
        """A window that is plainly no VF (the analyser's screen): p = 0, nothing decided."""
        self.lost = 0
        self.high, self.strong = [], []

    def probability(self, f: VFFeatures) -> float:
        """VF probability of one lead's window (0 below the amplitude floor)."""
        return vf_probability(f) if f.amp_mv >= self.config.min_amp_mv else 0.0

    def window_features(
        self,
        f: VFFeatures,
        t_end: float,
        artifact_since: float | None = None,
        p: float | None = None,
    ) -> list[EpisodeChange]:
        """The same, from the window's features (computed once for VF and quality); `p`: the
        probability when the caller combined several leads (else computed from `f`)."""
        c = self.config
        self.lost = 0
        if p is None:
            p = self.probability(f)
        self.last = (p, f)
        if not self.active:
            self.high = self.high + [t_end] if p >= c.p_on else []
            self.strong = self.strong + [t_end] if p >= c.p_on_artifact else []
            run = self.high
            if run and self._artifact_first(artifact_since, run[0]):
                run = self.strong if len(self.strong) >= c.on_windows_artifact else []
            if len(run) >= c.on_windows:
                self.active = True
                self.onset_t = run[0]
                self.low = []
                return [
                    EpisodeChange(
                        "vf",
                        True,
                        self.onset_t,
                        {
                            "hr_bpm": None,
                            "beats": None,
                            "onset_t": self.onset_t,
                            "detected_t": t_end,
                            **self._evidence(p, f),
                        },
                    )
                ]
            return []
        self.low = self.low + [t_end] if p < c.p_off else []
        if len(self.low) >= c.off_windows:
            return self._end(self.low[0], self._evidence(p, f))
        return []

    def _artifact_first(self, since: float | None, first: float) -> bool:
        """Whether `noisy` (from `since`) began well before the VF-like windows (from `first`)
        and is not the artifact verdict of the last VF episode itself (begun within it, or by
        a window after its end: cudb cu27 at 444 s, VF resuming at its annotated onset). VF's
        own onset makes windows bad a few seconds early."""
        c = self.config
        if since is None or since >= first - 2 * c.window_s:
            return False
        onset, end = self.episode
        return not onset - 2 * c.window_s <= since <= end + c.window_s

    @staticmethod
    def _evidence(p: float, f: VFFeatures) -> dict[str, float]:
        return {
            "p": round(p, 3),
            "peak_hz": round(f.peak_hz, 2),
            "tcsc": round(f.tcsc, 3),
            "leakage": round(f.leakage, 3),
            "amp_mv": round(f.amp_mv, 3),
        }

    def _end(self, t: float, detail: dict) -> list[EpisodeChange]:
        if not self.active:
            return []
        self.active = False
        self.high, self.strong, self.low = [], [], []
        self.episode = (self.onset_t, t)
        return [
            EpisodeChange(
                "vf", False, t, {"hr_bpm": None, "beats": None, "onset_t": self.onset_t, **detail}
            )
        ]

    def close(self, t: float) -> list[EpisodeChange]:
        """End an active episode (stream restart)."""
        return self._end(t, {"restart": True})
