"""AAMI beat classes (N, S, V, F) for scored beats: per-patient features, a small ONNX network.

Each bed has a `PatientClasses` state (causal, label-free, river-style like
`detector.anomaly.PatientAdapter`): a running template of the patient's own beats in mV on a
fixed 200 Hz grid (the point-wise median of the last non-premature beats) and the recent RR
intervals. A beat is described against that state *before* it is learnt:

- morphology against the patient's template, in seconds and mV and therefore independent of the
  device's sampling rate: QRS width (beat, template, difference), QRS / ST-T / P-region
  correlation, QRS amplitude, area, slope and projection ("polarity") ratios, normalised QRS
  residual, ST-T amplitude and P-region energy ratios; and the previous beat's QRS decorrelation;
- the autoencoder's log error, absolute and relative to the patient's running median, and the
  anomaly score (`PatientAdapter`);
- causal RR features: prematurity against the local rhythm (`ecgcommon.rhythm`), the ratio to the
  previous interval, the local RR irregularity (so that AF's irregular beats are not called
  premature), and the RR against the long end of the last 64 RR intervals
  (`detector.long_rhythm`: premature beats that have become the local rhythm). The next RR
  (compensatory pause of this beat) is never used.

`BeatClassifier.features` computes these for a micro-batch of beats of any beds in one vectorised
pass (the per-bed state is walked in time order, so a beat's features do not depend on how beats
were batched); `BeatClassifier.predict` runs the network (onnxruntime only) and applies the
manifest's decision offsets. The manifest is checked at load (sha256, feature list, classes).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.long_rhythm import LongRR, long_columns
from detector.pipeline import DetectedBeat
from ecgcommon.model_contract.beat_classes import (  # the contract shared with models/classify.py
    FEATURES,
    GRID_HZ,
    MODEL_FILE,
    check_manifest,
    load_manifest,
)
from ecgcommon.model_contract.beat_classes import MANIFEST_FILE as MANIFEST_FILE  # re-export
from ecgcommon.model_contract.manifest import DEFAULT_MODEL_DIR, ModelMismatchError
from ecgcommon.model_contract.scorer import open_session

GRID_PRE_S, GRID_POST_S = 0.24, 0.39  # the span every DetectedBeat segment holds
TEMPLATE_HISTORY = 32  # non-premature beats whose point-wise median is the template
TEMPLATE_REFRESH = 8  # accepted beats between recomputations of the median
LEARN_MIN_RATIO = 0.9  # a beat earlier than this fraction of the local RR is kept out
LEARN_FORCE_AFTER = 8  # ... unless this many beats in a row were kept out (rhythm changed)
RR_HISTORY = 16  # RR intervals behind the irregularity feature
RELATIVE_HISTORY = 64  # beats behind the running medians of the relative morphology features
RELATIVE_OF = ("qrs_decorr", "log_residual", "slope_decorr")  # made patient-relative
WIDTH_FRACTION = 0.25  # QRS width: span where |slope| exceeds this fraction of its maximum
_REL_COLS = [FEATURES.index(f) for f in RELATIVE_OF]

_K0 = -round(GRID_PRE_S * GRID_HZ)
_K1 = round(GRID_POST_S * GRID_HZ)
GRID_OFFSETS_S = np.arange(_K0, _K1 + 1, dtype=np.float64) / GRID_HZ
_R = -_K0  # index of the R-peak on the grid


def _span(lo_s: float, hi_s: float) -> slice:
    return slice(_R + round(lo_s * GRID_HZ), _R + round(hi_s * GRID_HZ) + 1)


P_REGION = _span(-0.24, -0.10)
QRS_REGION = _span(-0.10, 0.10)
ST_REGION = _span(0.12, 0.39)
WIDTH_REGION = _span(-0.15, 0.15)


def median(a: np.ndarray, axis: int) -> np.ndarray:
    """`np.median(a, axis)` of finite values, bit for bit (the same partition and mean of the
    middle two), without its Python overhead (it ran once per beat and template refresh)."""
    n = a.shape[axis]
    k = n // 2
    if n % 2:
        return np.partition(a, k, axis=axis).take(k, axis=axis)
    part = np.partition(a, (k - 1, k), axis=axis)
    return (part.take(k - 1, axis=axis) + part.take(k, axis=axis)) / 2


class UsualValues:
    """Running medians of the last `size` values of each RELATIVE_OF feature: the semantics
    of `RunningMedian` (sorted window), the three kept together so a beat costs one call."""

    def __init__(self, size: int = RELATIVE_HISTORY, k: int = len(RELATIVE_OF)) -> None:
        self.size = size
        self._fifo: list[deque[float]] = [deque() for _ in range(k)]
        self._sorted: list[list[float]] = [[] for _ in range(k)]

    def __len__(self) -> int:
        return len(self._fifo[0])

    def relative_then_add(self, values: Sequence[float]) -> list[float]:
        """Each value minus its running median (0 before any), then learn the values."""
        out = []
        for v, fifo, srt in zip(values, self._fifo, self._sorted, strict=True):
            n = len(srt)
            if n:
                med = srt[n // 2] if n % 2 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
                out.append(v - med)
            else:
                out.append(0.0)
            fifo.append(v)
            bisect.insort(srt, v)
            if len(fifo) > self.size:
                del srt[bisect.bisect_left(srt, fifo.popleft())]
        return out


class PatientClasses:
    """One bed's classification state: the mV template and recent RR intervals (causal)."""

    def __init__(self) -> None:
        # (G, TEMPLATE_HISTORY): beats as columns, so that the median runs along rows (faster)
        self._ring = np.zeros((GRID_OFFSETS_S.size, TEMPLATE_HISTORY))
        self._n = 0  # beats in the ring
        self._next = 0
        self._since_refresh = 0
        self._since_learnt = 0  # beats in a row kept out of the template
        self._template: np.ndarray | None = None
        self._rr: deque[float] = deque(maxlen=RR_HISTORY)
        self._steps: deque[float] = deque(maxlen=RR_HISTORY - 1)  # |successive RR differences|
        self.prev_decorr = math.nan  # qrs_decorr of the previous beat (NaN: none yet)
        # the patient's usual value of each RELATIVE_OF feature: a noisy or aberrant patient's
        # normal beats all differ from the template, so the departure from that usual counts
        self.usual = UsualValues(RELATIVE_HISTORY, len(RELATIVE_OF))
        self.long_rr = LongRR()  # prematurity against the long end of the recent RR intervals

    @property
    def n_template(self) -> int:
        """Beats in the template (capped at TEMPLATE_HISTORY)."""
        return self._n

    def template(self) -> np.ndarray | None:
        """The current template (None before the first learnt beat)."""
        if self._template is None and self._n:
            self._template = median(self._ring[:, : self._n], axis=1)
            self._since_refresh = 0
        return self._template

    def irregularity(self) -> float:
        """Median |successive RR difference| / mean RR of the recent intervals (0: too few)."""
        n = len(self._rr)
        if n < 3:
            return 0.0
        # plain Python: ~15 numbers, where numpy's per-call overhead would dominate
        d = sorted(self._steps)
        m = len(d)
        med = d[m // 2] if m % 2 else 0.5 * (d[m // 2 - 1] + d[m // 2])
        return med * n / sum(self._rr)

    def last_rr(self) -> float:
        """The previous RR interval in seconds (NaN when unknown)."""
        return self._rr[-1] if self._rr else math.nan

    def learn_one(self, beat: np.ndarray, rr_ratio: float, rr_s: float, valid: bool) -> bool:
        """Add a beat (grid row, baseline removed) and its RR to the state; no labels.

        The template learns only beats that come on time (premature beats, most S and V beats,
        stay out of the reference), unless LEARN_FORCE_AFTER beats in a row were kept out.
        True when the template learnt it. (A shape gate as well, keeping beats whose QRS
        correlates < 0.8 with the template out, scored lower in DS1 CV: docs/model.md.)
        """
        if not math.isfinite(rr_s):  # the RR sequence restarted (gap, lead-off)
            self._rr.clear()
            self._steps.clear()
        else:
            if self._rr:
                self._steps.append(abs(rr_s - self._rr[-1]))
            self._rr.append(rr_s)
        early = valid and rr_ratio < LEARN_MIN_RATIO
        if early and self._n and self._since_learnt < LEARN_FORCE_AFTER:
            self._since_learnt += 1
            return False
        self._since_learnt = 0
        self._ring[:, self._next] = beat
        self._next = (self._next + 1) % TEMPLATE_HISTORY
        self._n = min(self._n + 1, TEMPLATE_HISTORY)
        self._since_refresh += 1
        if self._n < TEMPLATE_REFRESH or self._since_refresh >= TEMPLATE_REFRESH:
            self._template = None
        return True


_WEIGHTS: dict[tuple[float, int, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}


def _grid_weights(
    fs: float, pre: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i0 + 1, frac, 1 - frac) of the linear interpolation onto the grid of segments of
    `size` samples at `fs` Hz with the R-peak at `pre`: made once per shape (a few per ward)."""
    key = (fs, pre, size)
    got = _WEIGHTS.get(key)
    if got is not None:
        return got
    pos = pre + GRID_OFFSETS_S * fs
    if size < 2 or pos[0] < -1.0 or pos[-1] > size:
        raise ValueError(
            f"segments of {size} samples with the R-peak at {pre} do not span "
            f"-{GRID_PRE_S}..{GRID_POST_S} s at {fs} Hz"
        )
    pos = np.clip(pos, 0.0, size - 1.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), size - 2)
    frac = pos - i0
    got = (i0, i0 + 1, frac, 1.0 - frac)
    for a in got:
        a.setflags(write=False)
    if len(_WEIGHTS) < 64:  # rates and segment shapes come from devices: bounded
        _WEIGHTS[key] = got
    return got


def grid_beats(beats: Sequence[DetectedBeat]) -> np.ndarray:
    """(n, G) beats on the 200 Hz grid in mV, each minus its own median (baseline)."""
    out = np.empty((len(beats), GRID_OFFSETS_S.size))
    groups: dict[tuple[float, int, int], list[int]] = {}
    for i, b in enumerate(beats):
        seg = b.segment
        if not isinstance(seg, np.ndarray) or seg.ndim != 1:
            raise ValueError(f"beat {i}: segment must be a 1-D array")
        if not (math.isfinite(b.fs) and b.fs > 0):
            raise ValueError(f"beat {i}: fs must be a finite number > 0 Hz, got {b.fs!r}")
        groups.setdefault((b.fs, b.pre, seg.size), []).append(i)
    for (fs, pre, size), idx in groups.items():
        i0, i1, frac, rest = _grid_weights(fs, pre, size)
        # = np.stack of each segment as float64
        segs = np.concatenate([beats[i].segment for i in idx], dtype=np.float64)
        segs = segs.reshape(len(idx), size)
        with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN rows are refused below
            g = segs[:, i0] * rest + segs[:, i1] * frac
        out[idx] = g
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise ValueError(f"beat segments hold NaN/inf in beats {bad[:10].tolist()}")
    return out - median(out, axis=1)[:, None]


def _decorr(num: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """log(1 - r + 0.01) from the centred cross and square sums (rows of several regions)."""
    den = np.sqrt(aa * bb) + 1e-9
    return np.log(np.clip(1.0 - num / den, 0.0, 2.0) + 0.01)


# Row statistics by the ufuncs' reduce, without the Python layers of .sum/.mean/.std/.max:
# numpy's own methods are these very calls (numpy/_core/_methods.py), so the values are the
# same bit for bit; morphology runs once per batch and these layers were most of its time.
_sum = np.add.reduce
_max = np.maximum.reduce
_min = np.minimum.reduce


def _mean(a: np.ndarray) -> np.ndarray:
    """= a.mean(axis=1)."""
    return _sum(a, axis=1) / a.shape[1]


def _centred(a: np.ndarray) -> np.ndarray:
    return a - _sum(a, axis=1, keepdims=True) / a.shape[1]  # = a - a.mean(axis=1, keepdims)


def _std(a: np.ndarray) -> np.ndarray:
    """= a.std(axis=1)."""
    c = _centred(a)
    return np.sqrt(_sum(c * c, axis=1) / a.shape[1])


def _width(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(QRS width in s, steepest slope in mV/s) of grid rows."""
    w = x[:, WIDTH_REGION]
    d = np.abs(w[:, 1:] - w[:, :-1]) * GRID_HZ  # = np.diff
    top = _max(d, axis=1)
    above = d >= np.maximum(WIDTH_FRACTION * top, 1e-3)[:, None]
    first = above.argmax(axis=1)
    last = d.shape[1] - 1 - above[:, ::-1].argmax(axis=1)
    return (last - first + 1) / GRID_HZ, top


def _log_ratio(a: np.ndarray, b: np.ndarray, floor: float) -> np.ndarray:
    return np.log((a + floor) / (b + floor))


def _ptp(a: np.ndarray) -> np.ndarray:
    return _max(a, axis=1) - _min(a, axis=1)  # = np.ptp(a, axis=1)


def morphology(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Morphology features (the first 15 of FEATURES) of grid beats `x` vs templates `t`.

    Row statistics are computed once over beats and templates stacked (each row's value is
    the same as alone); only the beat-vs-template products need both halves.
    """
    n = x.shape[0]
    both = np.concatenate((x, t))
    q2 = both[:, QRS_REGION]
    d2 = q2[:, 1:] - q2[:, :-1]  # = np.diff
    q, tq, dq, dt = q2[:n], q2[n:], d2[:n], d2[n:]
    w2, s2 = _width(both)
    sq_t = _sum(tq * tq, axis=1)
    sd_t = _sum(dt * dt, axis=1)
    dgain = _sum(dq * dt, axis=1) / (sd_t + 1e-6)
    dres = _mean((dq - dgain[:, None] * dt) ** 2) / (sd_t / dt.shape[1] + 1e-6)
    gain = _sum(q * tq, axis=1) / (sq_t + 1e-6)
    resid = _mean((q - gain[:, None] * tq) ** 2) / (sq_t / tq.shape[1] + 1e-6)
    st2, p2 = both[:, ST_REGION], both[:, P_REGION]
    nums, squares = [], []
    for region in (q2, st2, p2, d2):  # QRS, ST-T, P and QRS-slope correlations
        c = _centred(region)
        nums.append(_sum(c[:n] * c[n:], axis=1))
        squares.append(_sum(c * c, axis=1))
    sq = np.array(squares)  # = np.stack
    decorr = _decorr(np.array(nums), sq[:, :n], sq[:, n:])
    ptp_q, ptp_st = _ptp(q2), _ptp(st2)
    absq = _mean(np.abs(q2))
    sdp = _std(p2)
    w_x, w_t = w2[:n], w2[n:]
    return np.array(  # = np.stack(..., axis=1), as a transposed view
        [
            w_x,
            w_t,
            w_x - w_t,
            decorr[0],
            decorr[1],
            decorr[2],
            _log_ratio(ptp_q[:n], ptp_q[n:], 0.02),
            _log_ratio(absq[:n], absq[n:], 0.01),
            _log_ratio(s2[:n], s2[n:], 0.1),
            np.clip(gain, -3.0, 3.0),
            np.log(resid + 1e-3),
            _log_ratio(ptp_st[:n], ptp_st[n:], 0.02),
            _log_ratio(sdp[:n], sdp[n:], 0.005),
            decorr[3],
            np.log(dres + 1e-3),
        ]
    ).T


def _check_inputs(n: int, errors: np.ndarray, refs: np.ndarray, scores: np.ndarray) -> None:
    named = (("errors", errors), ("refs", refs), ("scores", scores))
    for name, arr in named:
        if arr.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not n:
        return
    if not np.isfinite(np.concatenate((errors, refs, scores))).all():  # one check for three
        for name, arr in named:
            if not np.isfinite(arr).all():
                bad = np.flatnonzero(~np.isfinite(arr))[:10]
                raise ValueError(f"{name} hold NaN/inf at {bad}")
    if _min(errors) < 0:
        raise ValueError("errors must be >= 0")
    if _min(scores) < 0 or _max(scores) > 1:
        raise ValueError("scores must be within 0..1")


def beat_features(
    states: Sequence[PatientClasses],
    beats: Sequence[DetectedBeat],
    errors: np.ndarray,
    refs: np.ndarray,
    scores: np.ndarray,
) -> np.ndarray:
    """(n, len(FEATURES)) features of beats of any beds, in time order within each bed; learns.

    `states[i]` is the bed of `beats[i]`; `errors` the autoencoder errors, `refs` each bed's
    `PatientAdapter.reference()` taken before that beat was learnt, `scores` the anomaly scores.
    Raises ValueError (before learning anything) on bad input.
    """
    n = len(beats)
    if len(states) != n:
        raise ValueError(f"{len(states)} states for {n} beats")
    errors = np.asarray(errors, dtype=np.float64).reshape(-1) if n else np.zeros(0)
    refs = np.asarray(refs, dtype=np.float64).reshape(-1) if n else np.zeros(0)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1) if n else np.zeros(0)
    _check_inputs(n, errors, refs, scores)
    if n == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    x = grid_beats(beats)
    # the per-bed walk, in plain Python lists (numpy's per-element overhead would dominate)
    templates: list[np.ndarray] = []
    irregular: list[float] = []
    prev_rr: list[float] = []
    rhythm_rows: list[float] = []  # 3 per beat, end to end
    prev_idx: list[int] = []
    prev_val: list[float] = []
    last_of: dict[int, int] = {}
    for i, (st, b) in enumerate(zip(states, beats, strict=True)):
        t = st._template if st._template is not None else st.template()
        row = x[i]
        templates.append(row if t is None else t)
        irregular.append(st.irregularity())
        prev_rr.append(st.last_rr())
        r = b.rhythm
        rhythm_rows.extend((r.rr_ratio, r.prev_ratio, r.short_ratio))
        key = id(st)
        prev_idx.append(last_of.get(key, -1))
        prev_val.append(st.prev_decorr)
        last_of[key] = i
        st.learn_one(row, r.rr_ratio, r.rr_s, r.valid)
    morph = morphology(x, np.concatenate(templates).reshape(n, -1))  # = np.stack
    decorr = morph[:, 3]
    decorr_l = decorr.tolist()
    # the previous beat's decorrelation: the bed's beat before in this batch, else the state's;
    # no previous beat: the beat's own (plain floats: the same values as numpy's where)
    prev = [decorr_l[j] if j >= 0 else v for j, v in zip(prev_idx, prev_val, strict=True)]
    prev = [p if math.isfinite(p) else d for p, d in zip(prev, decorr_l, strict=True)]
    for i in last_of.values():
        states[i].prev_decorr = decorr_l[i]
    values = morph[:, _REL_COLS].tolist()
    rel: list[float] = []  # time order within each bed: causal
    for st, v in zip(states, values, strict=True):
        rel.extend(st.usual.relative_then_add(v))
    rhythm = np.array(rhythm_rows, dtype=np.float64).reshape(n, 3)
    irregular_a = np.array(irregular)
    prev_rr_a = np.array(prev_rr)
    rhythm = np.clip(np.where(np.isnan(rhythm), 1.0, rhythm), 0.0, 3.0)  # = nan_to_num, clip
    rr_s = np.array([b.rhythm.rr_s for b in beats], dtype=np.float64)
    long_ratio = long_columns([st.long_rr for st in states], rr_s)
    ok = np.isfinite(rr_s) & np.isfinite(prev_rr_a)
    step = np.log(np.where(ok, rr_s / np.where(ok, prev_rr_a, 1.0), 1.0))
    log_err = np.log(errors + 1e-6)
    s = np.clip(scores, 1e-6, 1 - 1e-6)
    out = np.empty((n, len(FEATURES)), dtype=np.float32)  # = np.column_stack(...).astype
    k = morph.shape[1]
    out[:, :k] = morph
    out[:, k] = prev
    out[:, k + 1 : k + 1 + len(RELATIVE_OF)] = np.array(rel).reshape(n, -1)
    k += 1 + len(RELATIVE_OF)
    out[:, k] = log_err - refs
    out[:, k + 1] = log_err
    out[:, k + 2] = np.log(s / (1 - s))
    out[:, k + 3 : k + 6] = rhythm
    out[:, k + 6] = np.clip(step, -2.0, 2.0)
    out[:, k + 7] = irregular_a
    out[:, k + 8] = (1.0 - rhythm[:, 0]) / (irregular_a + 0.02)
    out[:, k + 9 :] = long_ratio  # LONG_FEATURES columns
    return out


class BeatClassifier:
    """The ONNX beat-class network with its manifest (normalisation, classes, decision offsets)."""

    def __init__(self, model_dir: Path | None = None, *, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        self.manifest = load_manifest(self.model_dir)
        model_path = self.model_dir / MODEL_FILE
        check_manifest(self.manifest, model_path)
        norm = self.manifest["normalisation"]
        self._mean = np.asarray(norm["mean"], dtype=np.float32)
        self._scale = np.asarray(norm["scale"], dtype=np.float32)
        self.classes: tuple[str, ...] = tuple(self.manifest["classes"])
        offsets = self.manifest["decision"]["log_offsets"]
        self._offsets = np.array([float(offsets[c]) for c in self.classes])
        self._session = open_session(model_path, threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] != len(FEATURES):
            raise ModelMismatchError(
                f"model inputs {[i.shape for i in inputs]} do not take {len(FEATURES)} features"
            )
        self._input = inputs[0].name

    @staticmethod
    def new_state() -> PatientClasses:
        """A fresh per-bed state."""
        return PatientClasses()

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(n, len(classes)) class probabilities of raw feature rows."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != len(FEATURES):
            raise ValueError(f"features must have shape (n, {len(FEATURES)}), got {f.shape}")
        if f.shape[0] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        if not np.isfinite(f).all():
            raise ValueError("features hold NaN/inf")
        z = np.ascontiguousarray((f - self._mean) / self._scale, dtype=np.float32)
        (p,) = self._session.run(None, {self._input: z})
        return p

    def decide(self, probs: np.ndarray) -> list[str]:
        """Class letters: argmax of log p + the manifest's per-class offsets."""
        if len(probs) == 0:
            return []
        k = np.argmax(np.log(np.maximum(probs, 1e-12)) + self._offsets, axis=1)
        return [self.classes[i] for i in k.tolist()]

    def predict(self, features: np.ndarray) -> list[str]:
        """Class letters of raw feature rows."""
        return self.decide(self.probabilities(features))

    def classify(
        self,
        states: Sequence[PatientClasses],
        beats: Sequence[DetectedBeat],
        errors: np.ndarray,
        refs: np.ndarray,
        scores: np.ndarray,
    ) -> list[str]:
        """Features (learning each bed's state) then classes, for a batch of beats."""
        return self.predict(beat_features(states, beats, errors, refs, scores))
