"""One bed's streaming pipeline, sans-I/O: chunks in, beat windows and technical events out.

    chunk -> integrity (gaps NaN-filled, duplicates/late chunks dropped) -> QRSDetector
          -> ring buffer -> beat window once `post` samples after the R-peak have arrived
          -> causal RR features

The pipeline runs at the device's own rate: the QRS detector works at any rate in 100-1000 Hz
and `beat_windows` interpolates each window onto the model's grid, so a 250 Hz or 500 Hz device
needs no separate resampling step, and offline evaluation (same functions, whole record) gives
the same windows as live. Indices are the device's sample count (`first_sample` based).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.errors import MissingLead, UnsupportedRate
from detector.integrity import ACCEPT, DROP, IntegrityTracker
from detector.qrs import QRSConfig, QRSDetector
from detector.qrs_input import all_finite
from detector.signal_buffer import SignalBuffer
from ecgcommon.limits import MAX_FS_HZ as MAX_FS
from ecgcommon.limits import MIN_FS_HZ as MIN_FS
from ecgcommon.protocol import SampleChunk
from ecgcommon.rhythm import RhythmFeatures, RRTracker
from ecgcommon.windowing import WINDOW, WindowSpec, beat_windows


@dataclass(frozen=True)
class DetectedBeat:
    """A beat whose window is complete, ready for scoring."""

    sample: int  # device sample index of the R-peak
    t: float  # unix seconds of the R-peak
    rr_s: float | None
    hr_bpm: float | None
    rhythm: RhythmFeatures
    segment: np.ndarray  # raw lead (mV) from `pre` samples before to `post` after the R-peak
    fs: float
    pre: int  # index of the R-peak in `segment`

    @property
    def window(self) -> np.ndarray:
        """The model's input for this beat alone (use `windows_of` for many)."""
        return windows_of([self])[0]


def windows_of(beats: list[DetectedBeat], spec: WindowSpec = WINDOW) -> np.ndarray:
    """Model inputs (n, n_points) float32 of beats of any beds: one `beat_windows` call per rate.

    Each beat's segment holds every sample its window reads, so windowing the concatenated
    segments gives exactly the windows `beat_windows` gives on the bed's own signal.
    """
    out = np.empty((len(beats), spec.n_points), dtype=np.float32)
    by_fs: dict[tuple[float, int], list[int]] = {}
    for i, b in enumerate(beats):
        by_fs.setdefault((b.fs, b.pre), []).append(i)
    for (fs, pre), idx in by_fs.items():
        # segments of one rate and `pre` have one length (pre + post + 1): laid end to end
        flat = np.concatenate([beats[i].segment for i in idx])
        length = beats[idx[0]].segment.size
        if flat.size != length * len(idx):
            raise ValueError(f"beat segments at {fs:g} Hz differ in length")
        peaks = np.arange(len(idx), dtype=np.int64) * length + pre
        out[idx] = beat_windows(flat, peaks, fs, spec)
    return out


@dataclass(frozen=True)
class PipelineEvent:
    """A technical event found by the pipeline (type from `ecgcommon.protocol.EVENT_TYPES`)."""

    type: str
    active: bool
    t: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Output:
    """What one chunk produced."""

    beats: list[DetectedBeat] = field(default_factory=list)
    events: list[PipelineEvent] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # beats not windowed, by reason
    accepted: bool = False  # the chunk's samples were fed (False: dropped as duplicate/late)
    # Every beat with its R-peak before this time (unix s) is in this or an earlier Output;
    # None while the lead is not analysable (lost, re-learning), when no promise can be made.
    analysed_until: float | None = None
    # The accepted samples of every lead (mV, gaps NaN-filled), the first at `signal_t0`, for
    # the rhythm analysis; `restart`: they begin a new stream.
    signal: np.ndarray | None = None
    signal_t0: float = 0.0
    restart: bool = False


class Pipeline:
    """QRS detection, beat windowing and RR features for one bed, over any chunking."""

    def __init__(
        self,
        spec: WindowSpec = WINDOW,
        qrs_config: QRSConfig | None = None,
        max_fill_s: float = 10.0,
        lead_grace_s: float = 3.0,
        lead: int = 0,
    ) -> None:
        self.spec = spec
        self.qrs_config = qrs_config
        self.max_fill_s = max_fill_s
        self.lead_grace_s = lead_grace_s
        self.lead = lead
        self.fs: float | None = None
        self.integrity: IntegrityTracker | None = None
        self.qrs: QRSDetector | None = None

    # ------------------------------------------------------------------ stream (re)start
    def _reset(self, chunk: SampleChunk) -> None:
        fs = float(chunk.fs)
        self.fs = fs
        self.qrs = QRSDetector(fs, self.qrs_config)
        self._max_delay = int(math.ceil(self.qrs.config.max_delay_s * fs)) + 1
        self.rr = RRTracker()
        self.origin = chunk.first_sample  # device index of QRS index 0
        self.pre = self.spec.pre_samples(fs)
        self.post = self.spec.post_samples(fs)
        # samples kept before a chunk: a peak the QRS reports is at most `_max_delay` plus the
        # band-pass delay (< `post`) older than the chunk's first sample (peaks waiting for
        # their `post` samples hold the buffer back themselves); a second spare on top
        self.keep = self.pre + self.post + self._max_delay + int(round(fs))
        # the raw lead by QRS index (buf.start = QRS index of its oldest sample), room for two
        # one-second chunks past `keep` before it grows
        self.buf = SignalBuffer(1 << (self.keep + 2 * int(fs)).bit_length())
        self.pending: list[tuple[int, RhythmFeatures]] = []
        self.t_ref = (chunk.first_sample, chunk.t0)
        self.lead_off = False
        self.lead_seen_ok = False
        self.hold_until = 0  # no lead-off reports before this QRS index (after a gap)
        self.lead_name = chunk.leads[self.lead] if self.lead < len(chunk.leads) else "?"

    def _time(self, sample: int) -> float:
        first, t0 = self.t_ref
        return t0 + (sample - first) / (self.fs or 1.0)

    # ------------------------------------------------------------------ feeding
    def feed(self, chunk: SampleChunk) -> Output:
        """Feed one chunk; returns completed beats, events and drop counts."""
        if not MIN_FS <= chunk.fs <= MAX_FS:
            raise UnsupportedRate(f"fs {chunk.fs} Hz outside {MIN_FS:g}..{MAX_FS:g} Hz")
        if self.lead >= chunk.n_leads:
            raise MissingLead(f"chunk has {chunk.n_leads} leads, lead {self.lead} is analysed")
        out = Output()
        if self.fs != chunk.fs or self.integrity is None:  # a new stream: the verdict is RESET
            self.integrity = IntegrityTracker(max_fill=int(round(self.max_fill_s * chunk.fs)))
        verdict = self.integrity.check(chunk.seq, chunk.first_sample, chunk.n_samples)
        t_chunk = chunk.t0
        for etype, detail in verdict.events:
            out.events.append(PipelineEvent(etype, True, t_chunk, detail))
        if verdict.action == DROP:
            return out
        if verdict.action != ACCEPT:  # RESET: a (re)started stream
            had_stream = self.qrs is not None and self.qrs.samples_seen > 0
            if had_stream and self.lead_off:
                out.events.append(
                    PipelineEvent(
                        "lead_off", False, t_chunk, {"lead": self.lead_name, "restart": True}
                    )
                )
            self._reset(chunk)
        out.accepted = True
        out.restart = verdict.action != ACCEPT
        signal = chunk.physical()[verdict.skip :]
        x = np.ascontiguousarray(signal[:, self.lead])
        if verdict.fill:
            self.rr.reset()
            x = np.concatenate([np.full(verdict.fill, np.nan), x])
            signal = np.concatenate([np.full((verdict.fill, signal.shape[1]), np.nan), signal])
            # a transmission gap is reported as a gap, not as lead-off while QRS re-learns
            assert self.qrs is not None
            self.hold_until = (
                self.qrs.samples_seen
                + verdict.fill
                + int(math.ceil(self.qrs.config.learn_s * chunk.fs))
                + 1
            )
        out.signal = signal
        out.signal_t0 = chunk.t0 + (verdict.skip - verdict.fill) / chunk.fs
        self.t_ref = (chunk.first_sample + verdict.skip, chunk.t0 + verdict.skip / chunk.fs)
        self._run(x, out)
        return out

    def feed_signal(self, x: np.ndarray, fs: float, t0: float = 0.0) -> Output:
        """Offline use (one whole signal in physical units): the same path as live."""
        chunk = SampleChunk(
            0, 0, t0, fs, 1.0, "mV", ("ECG",), np.asarray(x, dtype=np.float64).reshape(-1, 1)
        )
        self.integrity = None
        self.fs = None
        out = self.feed(chunk)
        return out

    def _run(self, x: np.ndarray, out: Output) -> None:
        assert self.qrs is not None and self.fs is not None
        peaks = self.qrs.feed(x)
        # the raw lead, kept long enough for the QRS delay plus a window
        self.buf.append(x)
        end = self.qrs.samples_seen  # QRS index one past the newest sample (= self.buf.end)
        for p in peaks.tolist():
            rhythm = self.rr.update(p, self.fs)
            self.pending.append((p, rhythm))
        self._lead_events(out)
        if self.pending:
            ready = [(p, r) for p, r in self.pending if p + self.post < end]
            if ready:
                self.pending = self.pending[len(ready) :]
                self._window(ready, out)
        if self.qrs.lead_ok:
            # the QRS decides every peak within max_delay; peaks still waiting for their window
            # hold the watermark back
            horizon = end - self._max_delay
            if self.pending:
                horizon = min(horizon, self.pending[0][0])
            out.analysed_until = self._time(self.origin + horizon)
        if len(self.buf) > self.keep + x.size:
            cut = len(self.buf) - self.keep
            if self.pending:
                cut = min(cut, max(0, self.pending[0][0] - self.pre - self.buf.start))
            self.buf.drop(cut)

    def _window(self, ready: list[tuple[int, RhythmFeatures]], out: Output) -> None:
        """Cut each ready beat's segment from the ring buffer (windowing is done per batch)."""
        assert self.fs is not None
        pre, post, start, buf = self.pre, self.post, self.buf.start, self.buf.view()
        for p, rhythm in ready:
            lo, hi = p - pre - start, p + post + 1 - start
            if lo >= 0:
                seg = buf[lo:hi].copy()
            elif start == 0:  # stream start: edge-padded, as beat_windows does offline
                seg = np.concatenate([np.full(-lo, buf[0]), buf[:hi]])
            else:  # pre-samples already trimmed (cannot happen with `keep`)
                out.dropped["edge"] = out.dropped.get("edge", 0) + 1
                continue
            if not all_finite(seg):
                out.dropped["gap"] = out.dropped.get("gap", 0) + 1
                continue
            rr = rhythm.rr_s if rhythm.rr_s == rhythm.rr_s else None  # NaN -> None
            sample = self.origin + p
            out.beats.append(
                DetectedBeat(
                    sample=sample,
                    t=self._time(sample),
                    rr_s=rr,
                    hr_bpm=(60.0 / rr) if rr else None,
                    rhythm=rhythm,
                    segment=seg,
                    fs=self.fs,
                    pre=pre,
                )
            )

    def _lead_events(self, out: Output) -> None:
        assert self.qrs is not None and self.fs is not None
        ok = self.qrs.lead_ok
        now = self._time(self.origin + self.qrs.samples_seen)
        if ok:
            self.lead_seen_ok = True
            if self.lead_off:
                self.lead_off = False
                out.events.append(PipelineEvent("lead_off", False, now, {"lead": self.lead_name}))
            return
        if self.lead_off or self.qrs.samples_seen < self.hold_until:
            return
        if self.lead_seen_ok or self.qrs.samples_seen > self.lead_grace_s * self.fs:
            self.lead_off = True
            self.rr.reset()
            out.events.append(PipelineEvent("lead_off", True, now, {"lead": self.lead_name}))


def offline_beats(x: np.ndarray, fs: float, spec: WindowSpec = WINDOW) -> list[DetectedBeat]:
    """Beats of a whole signal through the live pipeline (for uploads and evaluation)."""
    if not math.isfinite(fs):
        raise ValueError(f"fs must be finite, got {fs}")
    return Pipeline(spec).feed_signal(x, fs).beats
