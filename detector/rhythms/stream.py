"""The waveform side shared by the VF detector and the signal-quality index.

Every lead is band-passed (1..35 Hz) causally (filter state carried across chunks) and
decimated to about 100..200 Hz, keeping the phase of the decimation on the stream's own
sample count, so the kept samples, and every window cut from them, are the same for any
chunking. Non-finite samples are remembered as invalid (and fed to the filter as 0), so
windows that hold them are skipped.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy.signal import butter, sosfilt

from detector.qrs_input import all_finite

try:  # private, but stable for years (as in detector/qrs_filter.py); public fallback
    from scipy.signal._sosfilt import _sosfilt
except ImportError:  # pragma: no cover - depends on the SciPy version
    _sosfilt = None

TARGET_HZ = 100.0  # decimate to the first rate >= this (integer factor)
HIGHPASS_HZ, LOWPASS_HZ = 1.0, 35.0  # band-pass: baseline wander out, QRS slopes in
_SOS: dict[tuple[float, float], np.ndarray] = {}  # filter designs by (rate, cut-off): one per bed


def band_pass(fs: float, cut: float) -> np.ndarray:
    """The band-pass's second-order sections at `fs` (designed once per rate and shared: never
    written to; scipy's `_sosfilt` takes a writable array, so it is not flagged read-only)."""
    sos = _SOS.get((fs, cut))
    if sos is None:
        sos = np.ascontiguousarray(butter(3, [HIGHPASS_HZ, cut], btype="band", fs=fs, output="sos"))
        if len(_SOS) < 64:
            _SOS[(fs, cut)] = sos
    return sos


class Decimated:
    """Band-passed, decimated recent samples of every lead of one stream."""

    def __init__(self, fs: float, n_leads: int, keep_s: float) -> None:
        if not (math.isfinite(fs) and fs > 0) or n_leads < 1:
            raise ValueError(f"fs must be > 0 and n_leads >= 1, got {fs}, {n_leads}")
        self.fs_in = fs
        self.q = max(1, int(fs // TARGET_HZ))
        self.fs = fs / self.q
        self.n_leads = n_leads
        cut = min(LOWPASS_HZ, 0.4 * self.fs)
        self.sos = band_pass(fs, cut)
        self.zi = np.zeros((n_leads, self.sos.shape[0], 2))  # (lead, section, state)
        self.keep = int(math.ceil(keep_s * self.fs)) + 1
        # the last `keep` samples are _store[:, _lo:_hi]: room for chunks past them, so a
        # chunk is copied in once (compacted when the room runs out: every second or third
        # 1 s chunk), not concatenated
        self._store = np.zeros((n_leads, self.keep + self.keep // 4 + 64))
        self._lo = self._hi = 0
        self.invalid: deque[tuple[int, int, int]] = deque()  # (lead, start, end) decimated
        self.seen_in = 0  # input samples fed
        self.seen = 0  # decimated samples produced (index of the next one)
        self.guard = int(round(0.25 * fs))  # filter settling after non-finite input
        self.last_bad = np.full(n_leads, -(1 << 60), dtype=np.int64)
        self._last_bad_max = -(1 << 60)  # = last_bad.max()

    @property
    def buf(self) -> np.ndarray:
        """The kept decimated samples (lead, sample), newest last (a view)."""
        return self._store[:, self._lo : self._hi]

    def feed(self, x: np.ndarray, known_finite: bool = False) -> int:
        """Feed (n, n_leads) samples in mV (`known_finite`: the caller has checked that all of
        them are); returns the number of new decimated samples."""
        n = x.shape[0]
        if n == 0:
            return 0
        finite = None  # np.isfinite(x), made only where it is needed
        clean = known_finite or all_finite(x)
        if not clean:
            finite = np.isfinite(x)
            x = np.where(finite, x, 0.0)
        y = np.array(x.T, dtype=np.float64, order="C")  # (lead, sample), filtered in place
        if _sosfilt is not None:
            _sosfilt(self.sos, y, self.zi)
        else:  # pragma: no cover
            y, zi = sosfilt(self.sos, y, axis=1, zi=self.zi.transpose(1, 0, 2))
            self.zi = np.ascontiguousarray(zi.transpose(1, 0, 2))
        start = (-self.seen_in) % self.q  # first input index kept in this chunk
        first = self.seen_in
        self.seen_in += n
        y = y[:, start :: self.q]
        m = y.shape[1]
        if not clean or first - self.guard < self._last_bad_max:
            # valid once `guard` inputs have passed since the last non-finite one (transient)
            idx = np.arange(first, first + n)
            if finite is None:
                finite = np.isfinite(x)
            last = np.where(finite.T, -(1 << 60), idx)
            last = np.maximum(np.maximum.accumulate(last, axis=1), self.last_bad[:, None])
            self.last_bad = last[:, -1].copy()
            self._last_bad_max = int(self.last_bad.max())
            bad = (idx - last < self.guard)[:, start :: self.q]
            for lead in np.flatnonzero(bad.any(axis=1)).tolist():
                j = np.flatnonzero(bad[lead])
                self.invalid.append((lead, self.seen + int(j[0]), self.seen + int(j[-1]) + 1))
        if m == 0:
            return 0
        self._append(y)
        self.seen += m
        while self.invalid and self.invalid[0][2] <= self.seen - self.keep:
            self.invalid.popleft()
        return m

    def _append(self, y: np.ndarray) -> None:
        """buf := the newest `keep - m` of buf, then the m new samples (as the concatenation
        it replaces: a chunk longer than `keep` is kept whole)."""
        m = y.shape[1]
        lo = max(self._lo, self._hi - max(0, self.keep - m))
        if self._hi + m > self._store.shape[1]:  # out of room: the kept samples to the front
            kept = self._hi - lo
            size = max(self._store.shape[1], kept + m)
            store = np.zeros((self.n_leads, size)) if size > self._store.shape[1] else self._store
            store[:, :kept] = self._store[:, lo : self._hi]
            self._store, lo, self._hi = store, 0, kept
        self._store[:, self._hi : self._hi + m] = y
        self._hi += m
        self._lo = lo

    def window(self, end: int, n: int) -> tuple[np.ndarray, list[bool]] | None:
        """Samples [end - n, end) of every lead (decimated index), shape (lead, n), and whether
        each lead is valid throughout; None when they are not (or no longer) in the buffer."""
        hi = self.buf.shape[1] - (self.seen - end)
        lo = hi - n
        if lo < 0 or hi > self.buf.shape[1] or n <= 0:
            return None
        ok = [True] * self.n_leads
        for lead, a, b in self.invalid:  # rare: only around gaps and lost signal
            if a < end and b > end - n:
                ok[lead] = False
        return self.buf[:, lo:hi], ok


def decimate(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A whole (n, n_leads) signal through `Decimated` (design and tests): samples (m, leads),
    validity (m, leads) and the decimated rate."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    d = Decimated(fs, x.shape[1], keep_s=x.shape[0] / fs + 1.0)
    d.feed(x)
    ok = np.ones(d.buf.shape, dtype=bool)
    for lead, a, b in d.invalid:
        ok[lead, a:b] = False
    return d.buf.T, ok.T, d.fs
