"""Causal streaming R-peak (QRS) detector, sans-I/O: `QRSDetector.feed(chunk) -> R-peak indices`.

Pan-Tompkins / Hamilton-Tompkins family, vectorised per chunk:

    x -> band-pass (Butterworth, sosfilt) -> |first difference| -> moving-window integral (MWI)

Filter states are carried exactly between chunks. A sample m of the MWI is a candidate when it
is the largest value within +-`refractory_s`; it is decided once the sample `refractory_s`
after it has arrived, so every decision depends on the samples only, never on where chunks
start or end, and the output is the same for any chunk size. A candidate is a beat when it
rises above an adaptive threshold between the running signal- and noise-peak levels (so the
detector is amplitude-independent), unless it is a T wave (close after a beat, with a much
smaller slope). A bounded search-back recovers a beat missed under a long RR interval with half
the threshold, but only while that beat can still be reported within `max_delay_s`.

NaN/inf samples mean "no signal" and a lead that stays flat for `flat_s` is lost too: the lead
is reported lost (`lead_ok` False), and when the signal returns the detector re-learns its
thresholds from scratch over `learn_s`.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections import deque
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import ArrayLike

from detector.qrs_filter import BandPass
from detector.qrs_input import all_finite as _all_finite
from detector.qrs_input import as_samples, finite_runs, first_change, flat_onset
from ecgcommon.limits import MAX_FS_HZ, MIN_FS_HZ

MIN_FS, MAX_FS = MIN_FS_HZ, MAX_FS_HZ  # the one range every service accepts (limits.py)


@dataclass(frozen=True)
class QRSConfig:
    """QRS detector settings, in physical units; validated on creation."""

    low_hz: float = 5.0  # band-pass corners: the QRS energy band, above baseline wander and T
    high_hz: float = 15.0
    integration_s: float = 0.15  # moving-window integration: about one QRS width
    refractory_s: float = 0.2  # no two beats closer; also the candidate look-ahead
    threshold_fraction: float = 0.25  # threshold = noise + fraction * (signal - noise) levels
    learn_fraction: float = 0.35  # while learning: threshold = fraction * largest MWI so far
    level_weight: float = 0.125  # weight of a new peak in the running signal/noise levels
    level_clip: float = 2.0  # a peak counts at most this many times the signal level (artefacts)
    search_back_rr: float = 1.3  # no beat for this many mean RR: a missed one is looked for
    search_back_fraction: float = 0.6  # ... with this fraction of the threshold
    max_delay_s: float = 0.4  # every beat is decided at most this long after its R peak
    t_wave_window_s: float = 0.36  # a candidate this soon after a beat may be its T wave
    t_wave_slope_ratio: float = 0.5  # ... and is one when its slope is below this ratio
    t_wave_level_ratio: float = 0.5  # ... and its MWI peak below this ratio of the beat level
    valley_ratio: float = 0.35  # a candidate whose MWI stays above this ratio of its peak
    valley_rr_s: float = 0.6  # on both sides, this soon after a beat, is flutter or noise
    valley_noise_ratio: float = 0.5  # ... and at any time once noise is this close to signal
    rr_beats: int = 8  # RR intervals averaged
    learn_s: float = 2.0  # (re-)learning time after start or after the signal comes back
    relearn_after_s: float = 3.0  # no beat for this long, and for relearn_rr mean RR intervals:
    relearn_rr: float = 3.0  # the signal probably got smaller, so the levels are re-learnt
    relearn_valley_ratio: float = 0.2  # ... from clean peaks only (MWI valleys below this ratio)
    settle_s: float = 0.12  # no beat this soon after the signal (re)starts: a partial beat
    flat_s: float = 1.0  # a lead this long without change is lost (disconnected/clipped)
    flat_tolerance_mv: float = 1e-6  # "no change" between consecutive samples, in mV

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"QRSConfig.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"QRSConfig.{f.name} must be finite and >= 0, got {value!r}")
        positive = (
            "level_clip",
            "low_hz",
            "high_hz",
            "integration_s",
            "refractory_s",
            "search_back_rr",
            "learn_s",
            "flat_s",
            "rr_beats",
            "relearn_after_s",
            "relearn_rr",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"QRSConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.high_hz <= self.low_hz:
            raise ValueError(
                f"QRSConfig.high_hz ({self.high_hz}) must be above low_hz ({self.low_hz})"
            )
        for name in (
            "threshold_fraction",
            "learn_fraction",
            "level_weight",
            "search_back_fraction",
            "t_wave_slope_ratio",
            "t_wave_level_ratio",
            "valley_ratio",
            "valley_noise_ratio",
            "relearn_valley_ratio",
        ):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"QRSConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.max_delay_s < self.refractory_s + 0.1:
            raise ValueError(
                f"QRSConfig.max_delay_s must be >= refractory_s + 0.1 s, got {self.max_delay_s}"
            )
        if not isinstance(self.rr_beats, int):
            raise TypeError(f"QRSConfig.rr_beats must be an int, got {self.rr_beats!r}")


_PEAK_BLOCK = 256  # MWI peaks tested at once (bounds the window matrix of a long signal)


def _rows(x: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """The windows x[r : r + width] for r in rows, as a (len(rows), width) copy; x is 1-D,
    contiguous (an overlapping strided view, then whole rows taken from it)."""
    step = x.strides[0]
    view = np.ndarray((len(x) - width + 1, width), x.dtype, x, 0, (step, step))
    return view[rows]


_FEW_PEAKS = 2  # up to this many (short chunks), peaks are tested one by one: fewer calls


def _peak_tests(mwi: np.ndarray, idx: np.ndarray, w: int) -> tuple[list, list, list]:
    """For MWI local maxima at buffer indices `idx` (each with `w` samples after it in the
    buffer): whether each is the largest within +-w (ties to the left lose), its value, and
    its valley (the smallest MWI within +-w). Windows are cut at buffer start.

    Many peaks: the same comparisons over a (peaks, 2w+1) matrix of windows at once.
    """
    if len(idx) <= _FEW_PEAKS:
        return _peak_tests_each(mwi, idx.tolist(), w)
    a = int(idx[0]) - w
    pad = max(0, -a)
    seg = mwi[a + pad : int(idx[-1]) + w + 1]
    rows = idx - idx[0]  # the window of peak j starts at idx[j] - w: row idx[j] - idx[0]
    if pad:  # cut at buffer start: absent samples count as 0 for the max, +inf for the min
        win = _rows(np.concatenate((np.zeros(pad), seg)), rows, 2 * w + 1)
        wide = _rows(np.concatenate((np.full(pad, np.inf), seg)), rows, 2 * w + 1)
    else:
        win = wide = _rows(seg, rows, 2 * w + 1)
    values = win[:, w]
    top, bottom = np.maximum.reduce, np.minimum.reduce  # .max(axis), .min(axis) sans wrappers
    # v > left.max(initial=0): above every earlier sample and above 0
    keep = (values >= top(win[:, w + 1 :], axis=1)) & (values > top(win[:, :w], axis=1))
    keep &= values > 0.0
    return keep.tolist(), values.tolist(), bottom(wide, axis=1).tolist()


def _make_room(buf: np.ndarray, fill: int, n: int, hist: int, cap: int) -> tuple[np.ndarray, int]:
    """Room for n samples after buf[:fill]: the newest `hist` samples moved to the front (into
    a new array when a large chunk needs more than `cap`, or to shrink back to it after one);
    returns the buffer and how many samples were dropped from its start."""
    keep = min(fill, hist)
    size = max(cap, keep + n)
    src = buf[fill - keep : fill]
    if size != len(buf):
        buf = np.concatenate([src, np.zeros(size - keep)])
    else:
        buf[:keep] = src  # numpy copies overlapping ranges correctly
    return buf, fill - keep


_max, _min = np.maximum.reduce, np.minimum.reduce  # .max(), .min() sans their Python wrappers


def _peak_tests_each(mwi: np.ndarray, idx: list[int], w: int) -> tuple[list, list, list]:
    """`_peak_tests`, one peak at a time (a valley only for a peak that passes)."""
    keep, values, valleys = [], [], []
    for i in idx:
        v = mwi[i]
        left, right = mwi[max(0, i - w) : i], mwi[i + 1 : i + w + 1]
        ok = bool(v >= _max(right) and v > _max(left, initial=0.0))
        keep.append(ok)
        values.append(float(v))
        valleys.append(float(min(_min(left, initial=v), _min(right))) if ok else 0.0)
    return keep, values, valleys


def _is_real(x: object) -> bool:
    """A real number, numpy's included (not narrowed: typeshed's float is no `numbers.Real`)."""
    return isinstance(x, numbers.Real)


class QRSDetector:
    """Streaming R-peak detector for one ECG lead; see the module docstring."""

    # per-segment state, (re)set by _start_segment
    _seg_end: int | None
    _fresh: bool
    _rr: deque[int]
    _pending: list[tuple[int, float, int, float]]  # (deadline, MWI value, R-peak, slope)

    def __init__(self, fs: float, config: QRSConfig | None = None) -> None:
        if isinstance(fs, bool) or not _is_real(fs) or not math.isfinite(fs):
            raise TypeError(f"fs must be a finite number of Hz, got {fs!r}")
        if not MIN_FS <= fs <= MAX_FS:
            raise ValueError(f"fs must be within {MIN_FS:g}..{MAX_FS:g} Hz, got {fs}")
        cfg = config if config is not None else QRSConfig()
        if not isinstance(cfg, QRSConfig):
            raise TypeError(f"config must be a QRSConfig, got {type(cfg).__name__}")
        if cfg.high_hz >= 0.45 * fs:
            raise ValueError(f"QRSConfig.high_hz ({cfg.high_hz}) must be below 0.45 * fs ({fs})")
        self.fs = float(fs)
        self.config = cfg

        def n_of(seconds: float) -> int:
            return max(1, round(seconds * self.fs))

        self._bandpass = BandPass(cfg.low_hz, cfg.high_hz, self.fs)
        self._n_int = n_of(cfg.integration_s)
        # the band-pass delays the QRS by its group delay near the band centre
        self._gd = round(self._bandpass.group_delay(math.sqrt(cfg.low_hz * cfg.high_hz), self.fs))
        self._w = n_of(cfg.refractory_s)
        self._t_win = n_of(cfg.t_wave_window_s)
        self._valley_rr = n_of(cfg.valley_rr_s)
        self._learn_n = n_of(cfg.learn_s)
        self._settle = round(cfg.settle_s * self.fs)
        self._relearn_n = n_of(cfg.relearn_after_s)
        self._flat_n = max(2, n_of(cfg.flat_s))
        self._max_delay = n_of(cfg.max_delay_s)
        self._loc = self._n_int + self._gd + n_of(0.05)  # R-peak search span before the MWI peak
        self._hist = self._learn_n + 3 * self._w + self._loc + self._n_int + 8
        self._cap = self._hist + n_of(1.0)
        # the band-passed signal is read back only by _locate: refractory + search span
        self._bp_hist = self._w + self._loc + self._n_int + 8
        self._bp_cap = self._bp_hist + n_of(1.0)
        # buffers of recent band-passed signal and MWI (unscaled), each with its own history;
        # they start with n_int samples of history before sample 0
        self._bp = np.zeros(self._bp_cap)
        self._bp_base = -self._n_int  # absolute index of _bp position 0
        self._bp_fill = self._n_int
        self._mwi = np.zeros(self._cap)
        # the running sum of |difference| of the last n_int samples: all the MWI looks back on
        self._cs = np.zeros(self._n_int)
        self._base = -self._n_int  # absolute index of buffer position 0
        self._fill = self._n_int
        self._n = 0  # samples seen
        self._prev = math.nan  # last raw sample (flat detection)
        self._flat_run = 0
        self._lost = False  # inside a NaN or flat stretch
        self._relearn_until = 0
        self._next_m = 1  # first MWI index not yet examined for candidates
        self._out: list[int] = []
        self._start_segment(0)

    # ------------------------------------------------------------------ public API
    @property
    def lead_ok(self) -> bool:
        """False while the lead is flat, disconnected or NaN, and while re-learning after it."""
        return not self._lost and self._n >= self._relearn_until

    @property
    def samples_seen(self) -> int:
        """Samples fed so far (NaN ones included)."""
        return self._n

    def feed(self, chunk: ArrayLike) -> np.ndarray:
        """R-peak sample indices (int64, ascending, absolute) confirmed by this chunk."""
        x = as_samples(chunk)
        if len(x) == 0:
            return np.empty(0, dtype=np.int64)
        if _all_finite(x):
            self._feed_finite(x)
        else:
            for a, b, finite in finite_runs(x):
                if finite:
                    self._feed_finite(x[a:b])
                else:
                    self._feed_absent(b - a)
                    self._prev = math.nan
                    self._flat_run = 0
        if not self._out:
            return np.empty(0, dtype=np.int64)
        out = np.asarray(self._out, dtype=np.int64)
        self._out.clear()
        return out

    # ------------------------------------------------------------------ input handling
    def _feed_finite(self, x: np.ndarray) -> None:
        """Finite samples: split further where the lead goes flat or comes back."""
        tol = self.config.flat_tolerance_mv
        resumed = False
        while len(x):
            if self._lost and not resumed:
                k = first_change(x, self._prev, tol)
                if k < 0:
                    self._prev = float(x[-1])
                    self._feed_absent(len(x))
                    return
                if k:
                    self._feed_absent(k)
                    self._prev = float(x[k - 1])
                self._flat_run = 0
                x = x[k:]
                resumed = True
                continue
            resumed = False
            k, run = flat_onset(x, self._prev, self._flat_run, tol, self._flat_n)
            if k < 0:
                self._feed_signal(x)
                self._flat_run = run
                self._prev = float(x[-1])
                return
            if k:
                self._feed_signal(x[:k])
                self._prev = float(x[k - 1])
            self._feed_absent(0)  # the lead is lost from sample k on
            x = x[k:]

    def _feed_absent(self, n: int) -> None:
        """No signal for n samples (NaN, inf or flat): the lead is lost."""
        if not self._lost:
            self._lost = True
            self._seg_end = self._n
            self._pending = []
        if n:
            f, g = self._room(n)
            self._bp[g : g + n] = 0.0
            self._mwi[f : f + n] = 0.0
            self._cs[:] = 0.0  # (the signal restarts the sum at 0 when it comes back anyway)
            self._filled(n)
            self._decide()

    def _feed_signal(self, x: np.ndarray) -> None:
        n = len(x)
        if self._lost or self._fresh:
            if self._lost:
                self._lost = False
                self._start_segment(self._n)
                self._relearn_until = self._n + self._learn_n
            self._fresh = False
            self._bandpass.reset(float(x[0]))
            self._bp_last = 0.0
            # the running sum restarts at 0, so the MWI sees zeros before the segment
            self._cs[:] = 0.0
        bp = self._bandpass(x)
        k = self._n_int
        # the running sum of |difference| after the last n_int sums (cs[k - 1], the newest, is
        # where it continues from): sequential, so chunking-exact
        cs = np.empty(k + n)
        cs[:k] = self._cs
        cs[k] = bp[0] - self._bp_last
        np.subtract(bp[1:], bp[:-1], out=cs[k + 1 :])
        np.abs(cs[k:], out=cs[k:])
        np.add.accumulate(cs[k - 1 :], out=cs[k - 1 :])  # = np.cumsum, sans its wrapper
        self._bp_last = float(bp[-1])
        f, g = self._room(n)
        self._bp[g : g + n] = bp
        np.subtract(cs[k:], cs[:n], out=self._mwi[f : f + n])  # the MWI: sum over n_int
        self._cs[:] = cs[n:]
        self._filled(n)
        self._decide()

    def _room(self, n: int) -> tuple[int, int]:
        """Make room for n samples after the newest in the buffers; their first index in
        `_mwi` and in `_bp`."""
        if self._fill + n > len(self._mwi):
            self._mwi, cut = _make_room(self._mwi, self._fill, n, self._hist, self._cap)
            self._base += cut
            self._fill -= cut
        if self._bp_fill + n > len(self._bp):
            self._bp, cut = _make_room(self._bp, self._bp_fill, n, self._bp_hist, self._bp_cap)
            self._bp_base += cut
            self._bp_fill -= cut
        return self._fill, self._bp_fill

    def _filled(self, n: int) -> None:
        """n samples were written at `_room`'s indices."""
        self._fill += n
        self._bp_fill += n
        self._n += n

    # ------------------------------------------------------------------ decisions
    def _start_segment(self, start: int) -> None:
        """Forget everything learnt: the signal (re)starts at sample `start`."""
        self._seg_start = start
        self._learn_from = start  # thresholds are being (re-)learnt from this sample on
        self._spk_fresh = True  # the next beat sets the signal level outright
        self._seg_end = None
        self._fresh = True  # filters start on the next signal sample
        self._spk = 0.0  # running signal-peak level (MWI units)
        self._npk = 0.0  # running noise-peak level
        self._have_beat = False
        self._last_r = -(10**12)
        self._last_slope = 0.0
        self._rr = deque(maxlen=self.config.rr_beats)
        self._pending = []  # sub-threshold candidates, by deadline

    def _decide(self) -> None:
        """Examine every MWI sample whose look-ahead is complete, in sample order."""
        w, base, mwi = self._w, self._base, self._mwi
        lo = max(self._next_m, base + 1, self._seg_start + 1)
        hi = self._n - w  # m + w <= n - 1
        if hi > lo:
            s = mwi[lo - 1 - base : hi + 1 - base]
            mid = s[1:-1]
            peaks = ((mid > s[:-2]) & (mid >= s[2:])).nonzero()[0]  # = np.flatnonzero
            self._next_m = hi
            peaks += lo
            for k in range(0, len(peaks), _PEAK_BLOCK):
                block = peaks[k : k + _PEAK_BLOCK]
                if not self._decide_peaks(block, *_peak_tests(mwi, block - base, w)):
                    break
        if self._pending and self._pending[0][0] < self._n:
            self._search_back(self._n)

    def _decide_peaks(self, peaks: np.ndarray, keep: list, values: list, valleys: list) -> bool:
        """Decide MWI peaks in sample order (their window tests done); False: signal lost.

        Only the peaks that pass (`keep`) are visited: the sub-threshold candidates due before
        a failing peak are decided at the next passing one, or by `_decide`'s closing
        `_search_back` (one call to `limit` decides the same, in the same order, as calls to
        any smaller limits before it: nothing else happens in between), and the look-ahead
        test is monotone in the sample (the first peak past `_seg_end` stops the rest).
        """
        w = self._w
        end = self._seg_end  # constant here: only lost signal (`_feed_absent`) sets it
        ms = peaks.tolist()
        if end is not None and ms and ms[-1] + w >= end:
            stop = next(j for j, m in enumerate(ms) if m + w >= end)
        else:
            stop = len(ms)
        rows = zip(ms, keep, values, valleys, strict=True)
        for j, (m, ok, v, valley) in enumerate(rows):
            if j == stop:
                return False  # look-ahead runs into lost signal
            if ok:
                e = m + w  # the last sample this decision needs
                if self._pending and self._pending[0][0] < e:
                    self._search_back(e)
                self._candidate(m, e, v, valley)
        return stop == len(ms)

    def _locate(self, m: int) -> tuple[int, float]:
        """R-peak index (largest band-passed deflection before the MWI peak) and max slope."""
        base = self._bp_base
        lo = max(m - self._loc, m + self._w - self._max_delay, self._seg_start, base) - base
        seg = self._bp[lo : m + 1 - base]
        k = int(np.abs(seg).argmax())
        slope = float(np.maximum.reduce(np.abs(seg[1:] - seg[:-1]), initial=0.0))  # np.diff
        return max(lo + base + k - self._gd, self._seg_start), slope

    def _threshold(self) -> float:
        return self._npk + self.config.threshold_fraction * (self._spk - self._npk)

    def _candidate(self, m: int, e: int, v: float, valley: float) -> None:
        cfg = self.config
        r, slope = self._locate(m)
        if valley > cfg.valley_ratio * v and (
            r - self._last_r < self._valley_rr or self._npk > cfg.valley_noise_ratio * self._spk
        ):
            self._npk += cfg.level_weight * (v - self._npk)
            return
        if self._have_beat:
            quiet = max(self._relearn_n, round(cfg.relearn_rr * self._rr_mean()))
            since = max(self._last_r, self._learn_from + self._learn_n)
            if e >= since + quiet:  # beats have vanished: re-learn the levels (again)
                self._learn_from = since + quiet
                self._spk_fresh = True
        if e < self._learn_from + self._learn_n:
            lo = max(self._learn_from, self._base) - self._base
            thr = cfg.learn_fraction * float(_max(self._mwi[lo : e + 1 - self._base]))
            if self._learn_from > self._seg_start and valley > cfg.relearn_valley_ratio * v:
                thr = math.inf  # while re-learning, only clean peaks count
        else:
            thr = self._threshold()
        if r - self._last_r < self._w or r < self._seg_start + self._settle:
            return
        if v >= thr and not self._is_t_wave(r, v, slope):
            self._accept(r, v, slope, cfg.level_weight)
            return
        self._npk += cfg.level_weight * (v - self._npk)
        if v >= cfg.search_back_fraction * thr and self._have_beat:
            # decided at the last moment that still meets max_delay, unless a beat comes first
            bisect.insort(self._pending, (r + self._max_delay, v, r, slope))

    def _is_t_wave(self, r: int, v: float, slope: float) -> bool:
        """Soon after a beat, with a much smaller slope and MWI peak: its T wave."""
        cfg = self.config
        return (
            self._have_beat
            and r - self._last_r < self._t_win
            and slope < cfg.t_wave_slope_ratio * self._last_slope
            and v < cfg.t_wave_level_ratio * self._spk
        )

    def _accept(self, r: int, v: float, slope: float, weight: float) -> None:
        if self._have_beat:
            self._rr.append(r - self._last_r)
        if self._spk_fresh:
            self._spk = v
            self._npk = min(self._npk, self.config.valley_noise_ratio * v)
            self._spk_fresh = False
        else:
            self._spk += weight * (min(v, self.config.level_clip * self._spk) - self._spk)
        self._have_beat = True
        self._last_r = r
        self._last_slope = slope
        self._out.append(r)
        if self._pending:
            self._pending = [p for p in self._pending if p[2] - r >= self._w]

    def _rr_mean(self) -> float:
        return sum(self._rr) / len(self._rr) if self._rr else self.fs

    def _search_back(self, limit: int) -> None:
        """Decide sub-threshold candidates whose deadline is before sample `limit`.

        One is a beat (a missed one) when no beat has come for `search_back_rr` mean RR
        intervals by its deadline, it clears `search_back_fraction` of the threshold and it is
        the largest candidate still pending.
        """
        cfg = self.config
        while self._pending and self._pending[0][0] < limit:
            d, v, r, slope = self._pending.pop(0)
            if (
                r - self._last_r >= self._w
                and d - self._last_r >= cfg.search_back_rr * self._rr_mean()
                and v >= cfg.search_back_fraction * self._threshold()
                and all(v >= p[1] for p in self._pending if p[2] <= d)
                and not self._is_t_wave(r, v, slope)
            ):
                self._accept(r, v, slope, 2 * cfg.level_weight)
