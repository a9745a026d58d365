"""One bed's rhythm analysis: samples and classified beats in, episode changes out.

    samples -> stream.Decimated (1..35 Hz, ~100 Hz) -> every 1 s, the last 4 s window
            -> VFDetector (VF / flutter from the waveform)
            -> quality.LeadSQI -> NoisyGate (`noisy`: analysis suspended for artifact)
    beats   -> VTDetector, SVTDetector, AFDetector (no new episode in artifact)

The engine feeds the samples of every accepted chunk (gaps as NaN) and the classified beats in
time order; both are causal and the output is the same for any chunking. Beats come later
than their samples (window and batch delay), so the artifact verdict is known for them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from detector.quality import LeadSQI, NoisyGate, QualityConfig
from detector.rhythms.af import AFConfig, AFDetector
from detector.rhythms.events import EpisodeChange, RhythmBeat
from detector.rhythms.runs import SVT, VT, BeatRunDetector, RunConfig
from detector.rhythms.stream import Decimated
from detector.rhythms.vf import HOP_S, WINDOW_S, VFConfig, VFDetector
from detector.rhythms.vf_features import vf_features


@dataclass(frozen=True)
class AnalyserConfig:
    """The detectors' settings."""

    vt: RunConfig = VT
    svt: RunConfig = SVT
    af: AFConfig = field(default_factory=AFConfig)
    vf: VFConfig = field(default_factory=VFConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    lead: int = 0  # the analysed lead (the pipeline's beat-finding lead)


class RhythmAnalyser:
    """VT, SVT, AF, VF and the `noisy` condition of one bed."""

    def __init__(self, config: AnalyserConfig = AnalyserConfig()) -> None:
        self.config = config
        self.vt = BeatRunDetector(config.vt)
        self.svt = BeatRunDetector(config.svt)
        self.af = AFDetector(config.af)
        self.vf = VFDetector(config.vf)
        self.gate = NoisyGate(config.quality)
        self.sqi = LeadSQI(config.quality)
        self.dec: Decimated | None = None
        self.lead_name = "?"
        self.t_anchor = 0.0  # signal time of decimated sample 0
        self.next_hop = 0
        self.last_beat_t = -math.inf

    # ------------------------------------------------------------------ samples
    def feed_samples(
        self,
        x: np.ndarray,
        fs: float,
        t0: float,
        restart: bool = False,
        lead_names: tuple[str, ...] = (),
    ) -> list[EpisodeChange]:
        """(n, n_leads) samples in mV, the first at signal time `t0` (unix s).

        `restart`: a new stream (the pipeline reset): state starts over.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        lead = self.config.lead
        if x.ndim != 2 or x.shape[0] == 0 or lead >= x.shape[1] or not math.isfinite(t0):
            return []
        out: list[EpisodeChange] = []
        x = x[:, lead : lead + 1]
        if restart or self.dec is None or self.dec.fs_in != fs:
            out += self._restart(t0)
            self.dec = Decimated(fs, 1, keep_s=WINDOW_S + 2 * HOP_S)
            self.t_anchor = t0
            self.hop = int(round(HOP_S * self.dec.fs))
            self.win = int(round(WINDOW_S * self.dec.fs))
            self.next_hop = self.hop
            self.lead_name = lead_names[lead] if lead < len(lead_names) else "?"
        dec = self.dec
        step = self.hop * dec.q
        for i in range(0, x.shape[0], step):
            dec.feed(x[i : i + step])
            while dec.seen >= self.next_hop:
                out += self._hop(self.next_hop)
                self.next_hop += self.hop
        return out

    def _hop(self, end: int) -> list[EpisodeChange]:
        """Analyse the window that ends at decimated index `end`."""
        dec = self.dec
        assert dec is not None
        t_end = self.t_anchor + end * dec.q / dec.fs_in
        t_start = t_end - self.win / dec.fs
        got = dec.window(end, self.win)
        if got is None:  # stream younger than a window
            return []
        y, ok = got
        if not ok[0]:
            out = self.vf.window(None, dec.fs, t_end)
            q = self.sqi.update(None)
        else:
            f = vf_features(y[:, 0], dec.fs)
            out = self.vf.window_features(f, t_end)
            q = self.sqi.update(f)
        out += self.gate.update(q, t_start, t_end, self.lead_name)
        return out

    def _restart(self, t: float) -> list[EpisodeChange]:
        out = self.vf.close(t) + self.gate.end(t, {"restart": True})
        self.sqi = LeadSQI(self.config.quality)
        return out

    # ------------------------------------------------------------------ beats
    def feed_beats(self, beats: Iterable[RhythmBeat]) -> list[EpisodeChange]:
        """Classified beats of this bed in time order (older or repeated ones are ignored)."""
        out: list[EpisodeChange] = []
        for b in beats:
            if not b.valid or b.t <= self.last_beat_t:
                continue
            self.last_beat_t = b.t
            noisy = self.gate.noisy_at(b.t)
            out += self.vt.feed(b, noisy)
            out += self.svt.feed(b, noisy)
            out += self.af.feed(b, noisy)
        return out

    def noisy_at(self, t: float) -> bool:
        """Whether signal time `t` is in artifact (beats there are class Q)."""
        return self.gate.noisy_at(t)
