"""Exact, stateful band-pass filter for short chunks (the QRS detector's first stage).

`scipy.signal.sosfilt` spends most of its time for a 36-sample chunk in argument handling
(array-API checks, moveaxis); the detector's speed target needs the Cython core directly.
The recursion is the same either way, so the output is bit-identical whatever the chunking.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

try:  # private, but stable for years; fall back to the public function if it moves
    from scipy.signal._sosfilt import _sosfilt
except ImportError:  # pragma: no cover - depends on the SciPy version
    _sosfilt = None


class BandPass:
    """Butterworth band-pass (second-order sections) that carries its state across chunks."""

    def __init__(self, low_hz: float, high_hz: float, fs: float, order: int = 2) -> None:
        self.sos = np.ascontiguousarray(
            sps.butter(order, [low_hz, high_hz], "bandpass", fs=fs, output="sos")
        )
        self._zi_unit = sps.sosfilt_zi(self.sos)
        self._zi = np.zeros((1, len(self.sos), 2))

    def group_delay(self, hz: float, fs: float) -> float:
        """Group delay in samples at `hz` (how late the filtered QRS is)."""
        b, a = sps.sos2tf(self.sos)
        _, gd = sps.group_delay((b, a), w=[hz], fs=fs)
        return float(gd[0])

    def reset(self, first: float) -> None:
        """Start in the steady state for a constant input `first` (no step transient)."""
        self._zi = np.ascontiguousarray((self._zi_unit * first)[None, :, :])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filter a chunk (1-D float64), continuing from the previous one."""
        if _sosfilt is None:  # pragma: no cover
            y, zi = sps.sosfilt(self.sos, x, zi=self._zi[0])
            self._zi = zi[None, :, :]
            return y
        y = np.array(x, dtype=np.float64, ndmin=2, order="C")  # filtered in place
        _sosfilt(self.sos, y, self._zi)
        return y[0]
