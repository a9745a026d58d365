"""One bed's rhythm analysis: samples and classified beats in, episode changes out.

    samples -> stream.Decimated (1..35 Hz, ~100 Hz) -> every 1 s, the last 4 s window
            -> VFDetector (VF / flutter from the waveform; where the analysed lead looks
               like VF, the other leads are scored too and two must agree)
            -> quality.LeadSQI -> NoisyGate (`noisy`: analysis suspended for artifact)
    beats   -> VTDetector, SVTDetector (no new episode in artifact; a VT run must repeat its
               complexes, cut from the decimated leads: `shapes`)
            -> atrial.BeatAligner (RR between beat times refined on the bed's beat template,
               from the decimated analysed lead; V/F beats with the template's complex go on
               as S) -> AFDetector (no AF in VF)

The engine feeds the samples of every accepted chunk (gaps as NaN) and the classified beats in
time order; both are causal and the output is the same for any chunking. Beats come later
than their samples (window and batch delay), so the artifact verdict is known for them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from detector.qrs_input import all_finite
from detector.quality import LeadQuality, LeadSQI, NoisyGate, QualityConfig
from detector.rhythms.af import AFConfig, AFDetector
from detector.rhythms.atrial import AlignConfig, BeatAligner
from detector.rhythms.events import EpisodeChange, RhythmBeat
from detector.rhythms.runs import SVT, VT, VT_EARLY, BeatRunDetector, EpisodeUnion, RunConfig
from detector.rhythms.shapes import ShapeBook, ShapeConfig, cut_leads, run_consistency
from detector.rhythms.stream import Decimated
from detector.rhythms.vf import HOP_S, WINDOW_S, VFConfig, VFDetector
from detector.rhythms.vf_features import centred, screen, vf_features


@dataclass(frozen=True)
class AnalyserConfig:
    """The detectors' settings."""

    vt: RunConfig = VT
    vt_early: RunConfig = VT_EARLY  # judged on arrival, before the quality verdict
    svt: RunConfig = SVT
    af: AFConfig = field(default_factory=AFConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    vf: VFConfig = field(default_factory=VFConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    shape: ShapeConfig = field(default_factory=ShapeConfig)  # VT runs must be alike (shapes)
    lead: int = 0  # the analysed lead (the pipeline's beat-finding lead)
    max_leads: int = 3  # leads that vote on VF (cost: one feature set per voting lead)
    calm_p: float = 0.05  # below this VF probability (and clean) the next window is skipped
    defer_s: float = 2.0  # beats wait until the quality this long after them is judged
    beat_gap_s: float = 3.0  # no beat for this long while the lead is active: artifact
    active_ratio: float = 0.5  # ... active: last 2 s span >= this share of the clean amplitude
    other_lead_mv: float = 0.5  # ... or another lead's last 2 s span (QRS-sized) is this large
    screen_kurt: float = 5.0  # a window passing the screen (_ordinary) skips the full features
    screen_spread: float = 0.15
    screen_ratio: float = 1.2


class RhythmAnalyser:
    """VT, SVT, AF, VF and the `noisy` condition of one bed."""

    def __init__(self, config: AnalyserConfig = AnalyserConfig()) -> None:
        self.config = config
        self.vt = BeatRunDetector(config.vt, self._alike)
        self.vt_early = BeatRunDetector(config.vt_early, self._alike)
        self.shapes = ShapeBook()  # complexes of the recent VT-class beats (all leads), by time
        # only runs of these classes are ever shape-checked (`_alike`): other beats keep none
        self.shape_classes = frozenset(config.vt.classes) | frozenset(config.vt_early.classes)
        self.vt_union = EpisodeUnion()
        self.svt = BeatRunDetector(config.svt)
        self.af = AFDetector(config.af)
        self.vf = VFDetector(config.vf)
        self.gate = NoisyGate(config.quality)
        self.sqi = LeadSQI(config.quality)
        self.dec: Decimated | None = None
        self.aligner: BeatAligner | None = None  # with the waveform: the AF detector's RR
        self.lead_name = "?"
        self.t_anchor = 0.0  # signal time of decimated sample 0
        self.next_hop = 0
        self.last_beat_t = -math.inf  # newest beat analysed
        self.last_rx_t = -math.inf  # newest beat received
        self.pending: deque[RhythmBeat] = deque()  # received, waiting for their quality verdict
        self.early: deque[RhythmBeat] = deque()  # received, waiting for the window of their time
        self.judged_until = -math.inf  # end of the newest window judged for quality
        self.analysed_until = -math.inf  # beat finder's watermark (note_analysed)
        self.calm = False  # skip the next window (see _hop)

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
        if lead:  # the analysed lead first, the others after it
            x = np.concatenate([x[:, lead : lead + 1], np.delete(x, lead, axis=1)], axis=1)
        x = x[:, : self.config.max_leads]
        dec = self.dec
        if restart or dec is None or dec.fs_in != fs or dec.n_leads != x.shape[1]:
            out += self._restart(t0)
            self.dec = Decimated(fs, x.shape[1], keep_s=WINDOW_S + 2 * HOP_S)
            self.t_anchor = t0
            self.hop = int(round(HOP_S * self.dec.fs))
            self.win = int(round(WINDOW_S * self.dec.fs))
            self.next_hop = self.hop
            self.aligner = BeatAligner(self.dec.fs, t0, self.config.align)
            self.lead_name = lead_names[lead] if lead < len(lead_names) else "?"
        dec = self.dec
        assert dec is not None
        # a finite chunk whose windows all stay in the buffer goes in at once (the filter and
        # decimation are sequential, so the kept samples are the same); otherwise hop by hop,
        # so that the invalid spans `Decimated` records are the same for any chunking
        whole = x.shape[0] // dec.q + 1 + self.win <= dec.keep and all_finite(x)
        step = x.shape[0] if whole else self.hop * dec.q
        aligner = self.aligner
        for i in range(0, x.shape[0], step):
            m = dec.feed(x[i : i + step], known_finite=whole)
            if m and aligner is not None:
                aligner.feed(dec.buf[0, -m:])
            while dec.seen >= self.next_hop:
                out += self._hop(self.next_hop)
                self.next_hop += self.hop
        return out

    def _hop(self, end: int) -> list[EpisodeChange]:
        """Analyse the window that ends at decimated index `end`.

        A calm bed (last window far from VF, clean, no episode) skips every other window: the
        cost halves where nothing happens, at up to one hop of extra latency.
        """
        dec = self.dec
        assert dec is not None
        t_end = self.t_anchor + end * dec.q / dec.fs_in
        t_start = t_end - self.win / dec.fs
        if self.calm:
            self.calm = False
            self.judged_until = t_end  # calm: clean, as the window before
            return self._release()
        got = dec.window(end, self.win)
        if got is None:  # stream younger than a window
            return []
        y, ok = got
        since = self.gate.since if self.gate.active else None
        pre = centred(y[0]) if ok[0] else None  # for the screen and the features alike
        if pre is None:
            out = self.vf.window(None, dec.fs, t_end)
            q = self.sqi.update(None)
        elif self._ordinary(pre):
            # a plainly clean, spiky ECG like this lead's baseline: no VF, no artifact, and
            # the full feature set is not needed (most windows of most beds)
            self.vf.quiet_window()
            q = LeadQuality(math.nan, False)
            out = []
            gap = self.analysed_until - self.last_rx_t
            self.calm = not self.gate.active and gap < self.config.beat_gap_s / 2
            if self._beats_lost(y, ok, dec.fs):
                out += self.gate.force(t_end - 1.0, self.lead_name, t_end)
        else:
            f = vf_features(y[0], dec.fs, pre)
            p = self.vf.probability(f)
            if p >= self.config.vf.p_off and y.shape[0] > 1:
                p = self._agreed(p, y, ok)
            out = self.vf.window_features(f, t_end, since, p)
            q = self.sqi.update(f)
            c = self.config
            lost_beats = self._beats_lost(y, ok, dec.fs)
            self.calm = (
                p < c.calm_p
                and not q.bad
                and not self.gate.active
                and not self.vf.active
                and self.analysed_until - self.last_rx_t < c.beat_gap_s / 2
            )
            if lost_beats and not self.vf.active:
                # beats stopped but the lead still shows QRS-sized activity: the beat finder
                # lost them in artifact, which must not be called a pause or asystole
                out += self.gate.force(t_end - 1.0, self.lead_name, t_end)
        out += self.gate.update(q, t_start, t_end, self.lead_name)
        self.judged_until = t_end
        return out + self._release()

    def _ordinary(self, pre: tuple[np.ndarray, np.ndarray]) -> bool:
        """The cheap screen: kurtosis >= `screen_kurt` (QRS spikes), interquartile share <=
        `screen_spread` (quiet baseline) and amplitude, kurtosis and spread within
        `screen_ratio` of the lead's clean baseline. 1.5 % of cudb/207 VF windows and 83 % of
        clean DS1 windows pass the absolute part (design windows of `vf_design`)."""
        base = self.sqi.base
        if not base or self.vf.active or self.gate.active:
            return False
        c = self.config
        amp, spread, kurt = screen(pre[0], pre)
        r = c.screen_ratio
        return (
            kurt >= c.screen_kurt
            and spread <= c.screen_spread
            and base["amp_mv"] / r <= amp <= base["amp_mv"] * r
            and kurt >= base["kurt"] / r
            and spread <= base["spread"] * r
        )

    def _beats_lost(self, y: np.ndarray, ok: list[bool], fs: float) -> bool:
        """No beat for `beat_gap_s` up to the beat finder's watermark (`note_analysed`) while
        the last 2 s of the lead span at least `active_ratio` of its clean amplitude, or
        another lead with signal spans at least `other_lead_mv` there (a true pause or
        asystole is quiet on every lead; mitdb 116 @1355: MLII falls to 0.2 mV, V1 beats on)."""
        c = self.config
        base = self.sqi.base.get("amp_mv", math.nan)
        gap = self.analysed_until - self.last_rx_t
        if not (gap >= c.beat_gap_s and math.isfinite(gap)):
            return False
        n = int(round(2.0 * fs))
        tail = y[0, -n:]
        if base > 0 and float(tail.max() - tail.min()) >= c.active_ratio * base:
            return True
        return any(
            ok[k] and float(np.ptp(y[k, -n:])) >= c.other_lead_mv for k in range(1, y.shape[0])
        )

    def _agreed(self, p0: float, y: np.ndarray, ok: list[bool]) -> float:
        """VF is global, artifact mostly is not: with two or more leads carrying signal, the
        second-highest lead probability (two leads must agree); a lead without signal (lost,
        flat) does not vote."""
        fs = self.dec.fs if self.dec is not None else 0.0
        ps = [p0]
        for k in range(1, y.shape[0]):
            if ok[k]:
                f = vf_features(y[k], fs)
                if f.amp_mv >= self.config.vf.min_amp_mv:
                    ps.append(self.vf.probability(f))
        if len(ps) < 2:
            return p0
        return sorted(ps)[-2]

    def _restart(self, t: float) -> list[EpisodeChange]:
        self.calm = False
        self.judged_until = -math.inf
        self.last_rx_t = -math.inf
        self.analysed_until = -math.inf
        self.pending.clear()
        self.early.clear()
        self.shapes.clear()
        out = self.vf.close(t) + self.gate.end(t, {"restart": True})
        self.sqi = LeadSQI(self.config.quality)
        return out

    # ------------------------------------------------------------------ beats
    def note_analysed(self, until: float) -> None:
        """The beat finder's watermark: every beat before `until` has been fed (the engine
        calls this when no beat of the bed waits for scoring)."""
        if math.isfinite(until):
            self.analysed_until = max(self.analysed_until, until)

    def feed_beats(self, beats: Iterable[RhythmBeat]) -> list[EpisodeChange]:
        """Classified beats of this bed in time order (older or repeated ones are ignored).

        A beat is analysed once the signal quality of `defer_s` after it has been judged (the
        artifact verdict needs a window or two): episodes start that much later, but never on
        beats of an artifact's first seconds. A regular V run (`vt_early`) starts VT sooner,
        once the window of its newest beat is judged, unless artifact was known by then.
        """
        for b in beats:
            if not b.valid or b.t <= self.last_rx_t:
                continue
            self.last_rx_t = b.t
            self.pending.append(b)
            self.early.append(b)
        return self._release()

    def _release(self) -> list[EpisodeChange]:
        out: list[EpisodeChange] = []
        # without any waveform there is no quality verdict to wait for
        judged = math.inf if self.dec is None else self.judged_until
        # a beat's complex reaches `after_s` past it: decimated once that much is judged
        after = self.config.shape.after_s
        while self.early and self.early[0].t + after <= judged:
            b = self.early.popleft()
            self._keep_shape(b)
            noisy = self.gate.known_at(b.t)
            out += self.vt_union.merge("early", self.vt_early.feed(b, noisy))
        limit = judged - self.config.defer_s
        while self.pending and self.pending[0].t <= limit:
            b = self.pending.popleft()
            self.last_beat_t = b.t
            noisy = self.gate.noisy_at(b.t)
            out += self.vt_union.merge("deferred", self.vt.feed(b, noisy))
            out += self.svt.feed(b, noisy)
            # beats found in VF are no atrial rhythm: they neither start nor feed AF
            ab = b if self.aligner is None else self.aligner.beat(b)
            out += self.af.feed(ab, noisy, in_vf=self.vf.active)
        return out

    def _keep_shape(self, b: RhythmBeat) -> None:
        """Store the complex of a beat a VT run can hold on every lead (while it is in the
        decimated buffer)."""
        dec = self.dec
        if dec is None or b.cls not in self.shape_classes:
            return
        centre = int(round((b.t - self.t_anchor) * dec.fs))
        shape = cut_leads(dec, centre, self.config.shape)
        if shape is not None:
            self.shapes.put(b.t, shape)

    def run_alike(self, run: list[RhythmBeat]) -> float:
        """How well a run repeats its complexes (`shapes.run_consistency`) on every lead whose
        samples are valid through the run, together: one ventricular focus repeats its complex
        on every lead, while electrode-motion artifact is each electrode's own, so bumps that
        happen to repeat on one lead do not on the other (nstdb `em` on 118 at 1260 s: 0.87 on
        MLII, 0.60 on V1). nan when a beat's complex is unknown (no waveform, lost samples)."""
        shapes = [self.shapes.get(b.t) for b in run]
        if self.dec is None or any(s is None for s in shapes):
            return math.nan
        rows = [s for s in shapes if s is not None]
        leads = [k for k in range(self.dec.n_leads) if all(np.isfinite(s[k, 0]) for s in rows)]
        if not leads:
            return math.nan
        lag = int(round(self.config.shape.lag_s * self.dec.fs))
        return run_consistency([s[leads] for s in rows], lag)

    def _alike(self, run: list[RhythmBeat]) -> bool:
        """A VT run about to start must repeat its complexes (`shapes` module doc); one that
        cannot be judged is let through."""
        r = self.run_alike(run)
        return math.isnan(r) or r >= self.config.shape.min_corr

    def noisy_at(self, t: float) -> bool:
        """Whether signal time `t` is in artifact (beats there are class Q)."""
        return self.gate.noisy_at(t)
