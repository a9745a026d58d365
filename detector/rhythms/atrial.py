"""Beat times refined on the bed's own beat template, for the AF detector's RR intervals.

The beat finder's fiducial point can jump between two peaks of a wide complex: on paced beats
(mitdb 102, whose fiducial falls 33 ms before or 97 ms after the reference, beat to beat) the RR
intervals then change by 10..20 % beat to beat, which is what AF looks like. Each beat is
re-timed by cross-correlating its QRS segment (`pre_s` before to `post_s` after its time) of
the band-passed, decimated analysed lead (`stream.Decimated`) with a running template of the
bed's beats (the template-matching fiducial alignment used for signal averaging, Jané et al.
1991, IEEE Trans Biomed Eng): the shift with the highest normalised correlation, to a fraction
of a sample (parabolic peak), moves the beat onto the template's fiducial point. A beat that
matches the template poorly (`min_corr`: another morphology, artifact) keeps the beat finder's
time; the template learns only from beats that match it, and starts over on the newest beat
after `relearn_beats` poor matches in a row (the morphology changed).

A beat the classifier called V or F whose complex matches the template at `conducted_corr`
or better has the bed's own conducted complex (an AF beat the classifier read as premature):
it is passed on as S, so the AF detector keeps its interval inside an episode but starts none
on it (on one lead a PVC can match the template too: mitdb 223, 214, 200), and it is re-timed
like the others. V and F beats that match less keep their class and the beat finder's time;
the template never learns from them. A normalised correlation of about 0.9 is the usual
"same morphology" test of template-matching beat clustering; the classifier is not changed.

Causal: the samples are fed as they come and each beat is aligned when it is analysed (seconds
after its samples: the analyser defers beats for the quality verdict), so the output does not
depend on the chunking (for chunks up to `keep_s` less the beats' delay). Cost: one
correlation over `2 * max_shift_s` of lags per beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.qrs_input import all_finite
from detector.rhythms.events import RhythmBeat, check_config

try:  # np.correlate's kernel itself (private, stable since numpy 2.0); mode 0 = "valid"
    from numpy._core.multiarray import correlate2
except ImportError:  # pragma: no cover - depends on the numpy version

    def correlate2(a: np.ndarray, v: np.ndarray, mode: int) -> np.ndarray:
        return np.correlate(a, v, mode="valid")


LEARN_CLASSES = (None, "N", "S")  # beats the template learns from (not V, F or artifact)


@dataclass(frozen=True)
class AlignConfig:
    """Template segment, search range and learning."""

    pre_s: float = 0.1  # template segment: this long before the fiducial point ...
    post_s: float = 0.2  # ... and after it (QRS and early ST)
    max_shift_s: float = 0.15  # search range either side of the beat finder's time
    min_corr: float = 0.8  # normalised correlation below which the beat keeps its time
    learn_rate: float = 0.1  # template update weight of a matching beat
    relearn_beats: int = 8  # poor matches in a row after which the template starts over
    conducted_corr: float = 0.9  # a V or F beat matching the template this well is conducted
    # samples kept: a chunk may hold 10 s (ecgcommon.limits.MAX_CHUNK_S), and its beats reach
    # the AF detector a few seconds after its last sample
    keep_s: float = 16.0

    def __post_init__(self) -> None:
        check_config(self)
        if self.min_corr >= 1 or self.learn_rate > 1 or self.conducted_corr > 1:
            raise ValueError("AlignConfig.min_corr must be < 1, learn_rate and conducted_corr <= 1")
        if self.keep_s < 2 * (self.pre_s + self.post_s + self.max_shift_s):
            raise ValueError("AlignConfig.keep_s must hold a few beat segments")


class BeatAligner:
    """One bed's template and recent decimated samples of the analysed lead."""

    def __init__(self, fs: float, t0: float, config: AlignConfig = AlignConfig()) -> None:
        if not (math.isfinite(fs) and fs > 0 and math.isfinite(t0)):
            raise ValueError(f"fs must be > 0 and t0 finite, got {fs}, {t0}")
        self.config = config
        self.fs = fs
        self.t0 = t0  # signal time of sample 0
        self.pre = int(round(config.pre_s * fs))
        self.post = int(round(config.post_s * fs))
        self.shift = max(1, int(round(config.max_shift_s * fs)))
        self.keep = int(math.ceil(config.keep_s * fs))
        self.buf = np.zeros(2 * self.keep, dtype=np.float32)  # 2 x 16 s x ~100 Hz: 15 kB
        self.hi = 0  # samples in buf
        self.seen = 0  # samples fed (index of the next one)
        self.template: np.ndarray | None = None
        self.t_energy = 0.0  # the template's sum of squares
        self.ones = np.ones(self.pre + self.post + 1)
        self.poor = 0  # poor matches in a row
        self.prev_t = math.nan  # refined time of the previous beat
        self.prev_raw = math.nan  # its beat-finder time
        self.corr = math.nan  # the newest aligned beat's best correlation with the template

    def feed(self, y: np.ndarray) -> None:
        """The next decimated samples of the analysed lead (non-finite ones read as 0)."""
        y = np.asarray(y, dtype=np.float64).ravel()
        if not all_finite(y):
            y = np.where(np.isfinite(y), y, 0.0)
        m = y.size
        if m >= self.keep:
            self.buf[: self.keep] = y[-self.keep :]
            self.hi = self.keep
        else:
            if self.hi + m > self.buf.size:
                kept = self.keep - m
                self.buf[:kept] = self.buf[self.hi - kept : self.hi]
                self.hi = kept
            self.buf[self.hi : self.hi + m] = y
            self.hi += m
        self.seen += m

    def align(self, t: float, cls: str | None) -> float:
        """The beat at signal time `t` (class `cls`) re-timed on the template, or `t` itself
        when its segment is not (or no longer) in the buffer or matches poorly."""
        self.corr = math.nan
        if not math.isfinite(t):
            return t
        c = self.config
        centre = int(round((t - self.t0) * self.fs))
        lo = centre - self.pre - self.shift - (self.seen - self.hi)  # index into buf
        hi = centre + self.post + self.shift + 1 - (self.seen - self.hi)
        if lo < 0 or hi > self.hi:
            return t
        seg = self.buf[lo:hi].astype(np.float64)
        learn = cls in LEARN_CLASSES
        tmpl = self.template
        if tmpl is None:
            if learn:
                self._learn(seg[self.shift : seg.size - self.shift].copy())
            return t
        # = np.correlate(..., mode="valid") without its dispatch layer (once per beat)
        corr: np.ndarray = correlate2(seg, tmpl, 0)  # type: ignore[assignment]  # cosine, below
        energy: np.ndarray = correlate2(seg * seg, self.ones, 0)  # type: ignore[assignment]
        energy *= self.t_energy
        corr /= np.sqrt(energy + 1e-12)
        k = int(corr.argmax())
        self.corr = float(corr[k])
        if corr[k] < c.min_corr:
            self.poor += learn
            if learn and self.poor >= c.relearn_beats:
                self._learn(seg[self.shift : seg.size - self.shift].copy())
            return t
        if learn:
            self._learn(tmpl + c.learn_rate * (seg[k : k + tmpl.size] - tmpl))
        frac = 0.0
        if 0 < k < corr.size - 1:  # parabolic peak between samples
            a, b, d = corr[k - 1 : k + 2].tolist()
            den = a - 2 * b + d
            frac = 0.5 * (a - d) / den if den < 0 else 0.0
        return t + (k - self.shift + frac) / self.fs

    def _learn(self, template: np.ndarray) -> None:
        self.template = template
        self.t_energy = float(template @ template)
        self.poor = 0

    def beat(self, b: RhythmBeat) -> RhythmBeat:
        """`b` with its RR interval taken between the refined times of it and the beat before
        (the beat finder's interval when the two differ by more than the search range)."""
        self.corr = math.nan
        t = b.t if b.cls == "Q" else self.align(b.t, b.cls)
        cls = b.cls
        if cls in ("V", "F") and self.corr >= self.config.conducted_corr:
            cls = "S"  # the bed's own conducted complex: carries AF like an S beat, starts none
        elif cls in ("V", "F"):
            t = b.t  # another morphology: its time stays the beat finder's
        if cls != b.cls:
            b = RhythmBeat(b.sample, b.t, b.rr_s, b.hr_bpm, cls, b.score)
        rr = b.rr
        prev_t, prev_raw = self.prev_t, self.prev_raw
        self.prev_t, self.prev_raw = t, b.t
        if rr is None or not math.isfinite(prev_t) or abs(b.t - prev_raw - rr) > 1e-3:
            return b  # no interval, or the previous beat fed is not this interval's start
        refined = t - prev_t
        if abs(refined - rr) > 2 * self.config.max_shift_s or refined <= 0:
            return b
        return RhythmBeat(b.sample, b.t, refined, b.hr_bpm, b.cls, b.score)
