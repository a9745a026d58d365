"""QRSDetector behaviour on real MIT-BIH signal: chunking, bad input, lost leads, re-learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb.processing as wp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import butter, sosfilt

from detector.qrs import QRSConfig, QRSDetector
from ecgcommon.aami import beat_mask
from ecgcommon.records import Record, load_record

FS = 360.0


@pytest.fixture(scope="module")
def rec100(data_dir: Path) -> Record:
    return load_record("100", data_dir, sampto=int(120 * FS))


@pytest.fixture(scope="module")
def rec208(data_dir: Path) -> Record:
    return load_record("208", data_dir, sampto=int(60 * FS))


def ref_beats(rec: Record, lo: int = 0, hi: int | None = None) -> np.ndarray:
    assert rec.ann_samples is not None and rec.ann_symbols is not None
    s = rec.ann_samples[beat_mask(rec.ann_symbols)]
    return s[(s >= lo) & (s < (hi if hi is not None else rec.n_samples))]


def matched(ref: np.ndarray, test: np.ndarray, tol: int = round(0.15 * FS)) -> int:
    """Reference beats with a detection within tol samples."""
    if len(test) == 0:
        return 0
    j = np.clip(np.searchsorted(test, ref), 1, len(test) - 1)
    near = np.minimum(np.abs(test[j - 1] - ref), np.abs(test[j] - ref))
    return int(np.sum(near <= tol))


def assert_finds_the_reference(
    rec: Record, peaks: np.ndarray, n: int, skip: tuple[tuple[int, int], ...] = ()
) -> None:
    """`peaks` (found in the first `n` samples of `rec`) match the reference beats within
    150 ms with Se and +P > 0.99 (wfdb's matcher). Left out: the first learning seconds, the
    last max_delay_s (beats not decided yet when the input ends) and each `skip` span of
    trouble (from 1 s before it to 1 s after the re-learning that follows it)."""
    cfg = QRSConfig()
    learn, margin = round(cfg.learn_s * FS), round(FS)
    spans = [(0, 0), *skip, (n - round((cfg.max_delay_s + 0.15) * FS), n + margin)]

    def kept(s: np.ndarray) -> np.ndarray:
        keep = np.ones(len(s), bool)
        for lo, hi in spans:
            keep &= ~((s >= lo - margin) & (s < hi + learn + margin))
        return s[keep]

    ref, found = kept(ref_beats(rec, 0, n)), kept(np.asarray(peaks, np.int64))
    assert len(ref) > 10, "too short a stretch to judge"
    cmp = wp.compare_annotations(ref, found, round(0.15 * FS))
    se, ppv = cmp.tp / len(ref), cmp.tp / max(1, len(found))
    assert se > 0.99 and ppv > 0.99, (se, ppv, len(ref), len(found))


def feed_in(det: QRSDetector, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed x in chunks of the given sizes (cycled), all R-peaks found."""
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(det.feed(x[i : i + n]))
        i += n
        k += 1
    return np.concatenate(out) if out else np.empty(0, np.int64)


TROUBLE = ((3000, 4800), (9000, 9003), (14000, 15000))  # what with_trouble() spoils


def with_trouble(x: np.ndarray) -> np.ndarray:
    """A copy of x with a NaN gap, an inf burst and a flat (clipped) stretch."""
    y = x.copy()
    y[3000:4800] = np.nan
    y[9000:9003] = np.inf
    y[14000:15000] = y[14000]
    return y


# ------------------------------------------------------------------------ chunk-size invariance
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=12).filter(
        lambda s: any(s)
    ),
    trouble=st.booleans(),
)
def test_output_is_the_same_for_any_chunking(
    rec208: Record, sizes: list[int], trouble: bool
) -> None:
    x = rec208.lead(0)[: int(45 * FS)]
    if trouble:
        x = with_trouble(x)
    whole = QRSDetector(FS).feed(x)
    assert len(whole) > 30
    np.testing.assert_array_equal(feed_in(QRSDetector(FS), x, sizes), whole)


def test_sample_by_sample_equals_whole_record(rec100: Record) -> None:
    x = with_trouble(rec100.lead(0)[: int(50 * FS)])
    whole = QRSDetector(FS).feed(x)
    np.testing.assert_array_equal(feed_in(QRSDetector(FS), x, [1]), whole)
    assert_finds_the_reference(rec100, whole, len(x), TROUBLE)


# ------------------------------------------------------------------------ output contract
def test_beats_are_int64_ascending_and_decided_within_the_delay_budget(rec208: Record) -> None:
    x = rec208.lead(0)
    det = QRSDetector(FS)
    step = int(0.1 * FS)
    found, delays = [], []
    for i in range(0, len(x), step):
        peaks = det.feed(x[i : i + step])
        assert peaks.dtype == np.int64
        found.append(peaks)
        delays.extend((det.samples_seen - 1 - peaks) / FS)
    peaks = np.concatenate(found)
    assert np.all(np.diff(peaks) > 0)
    assert det.samples_seen == len(x)
    assert max(delays) <= det.config.max_delay_s + 0.1 + 1 / FS
    ref = ref_beats(rec208)
    assert matched(ref, peaks) >= 0.98 * len(ref)


def test_detection_does_not_depend_on_amplitude(rec100: Record) -> None:
    x = rec100.lead(0)
    base = QRSDetector(FS).feed(x)
    assert_finds_the_reference(rec100, base, len(x))
    for scale in (1024.0, 1 / 1024.0, -1.0):  # exact in floating point
        np.testing.assert_array_equal(QRSDetector(FS).feed(x * scale), base)


def test_integer_samples_are_accepted(rec100: Record) -> None:
    counts = np.round(rec100.lead(0) * 200).astype(np.int16)  # ADC counts, 200/mV
    peaks = QRSDetector(FS).feed(counts)
    ref = ref_beats(rec100)
    assert matched(ref, peaks) >= 0.99 * len(ref)


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "bad",
    [
        np.array(["1.0", "2.0"]),
        np.array([1 + 2j, 3j]),
        np.array([True, False]),
        [0.1, None],
        [object()],
    ],
)
def test_non_numeric_chunks_raise_type_error(bad: object) -> None:
    det = QRSDetector(FS)
    with pytest.raises(TypeError, match="real numbers"):
        det.feed(bad)
    assert det.samples_seen == 0


@pytest.mark.parametrize("shape", [(10, 2), (2, 10), (), (1, 1, 5)])
def test_chunks_that_are_not_one_dimensional_raise_value_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="1-D"):
        QRSDetector(FS).feed(np.zeros(shape))


def test_empty_chunks_change_nothing(rec100: Record) -> None:
    x = rec100.lead(0)[: int(20 * FS)]
    det = QRSDetector(FS)
    out = []
    for i in range(0, len(x), 100):
        out.append(det.feed(np.empty(0)))
        out.append(det.feed([]))
        out.append(det.feed(x[i : i + 100]))
    np.testing.assert_array_equal(np.concatenate(out), QRSDetector(FS).feed(x))
    assert_finds_the_reference(rec100, np.concatenate(out), len(x))


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_mean_no_signal(rec100: Record, fill: float) -> None:
    det = QRSDetector(FS)
    assert det.feed(rec100.lead(0)[: int(10 * FS)]).size > 5
    assert det.lead_ok
    assert det.feed(np.full(int(5 * FS), fill)).size <= 1  # at most a beat decided just before
    assert not det.lead_ok
    assert det.samples_seen == int(15 * FS)


@pytest.mark.parametrize("level", [0.0, 5.12, -5.12])  # disconnected, clipped high / low
def test_flat_lead_is_lost_and_gives_no_beats(rec100: Record, level: float) -> None:
    det = QRSDetector(FS)
    det.feed(rec100.lead(0)[: int(10 * FS)])
    flat = np.full(int(30 * FS), level)
    beats = np.concatenate([det.feed(flat[i : i + 36]) for i in range(0, len(flat), 36)])
    assert beats.size <= 1
    assert not det.lead_ok


def test_all_zero_input_from_the_start_gives_no_beats() -> None:
    det = QRSDetector(FS)
    assert det.feed(np.zeros(int(60 * FS))).size == 0
    assert not det.lead_ok


# ------------------------------------------------------------------------ re-learning
def test_relearns_after_a_gap_even_at_another_amplitude(rec100: Record) -> None:
    x = rec100.lead(0).copy()
    gap = slice(int(40 * FS), int(50 * FS))
    x[gap] = np.nan
    x[gap.stop :] *= 8.0  # the lead comes back with another gain
    det = QRSDetector(FS)
    step = int(0.1 * FS)
    ok_after: list[tuple[int, bool]] = []
    found = []
    for i in range(0, len(x), step):
        found.append(det.feed(x[i : i + step]))
        ok_after.append((det.samples_seen, det.lead_ok))
    peaks = np.concatenate(found)
    lost = [n for n, ok in ok_after if not ok]
    assert min(lost) <= gap.start + step and max(lost) >= gap.stop
    relearnt = [n for n, ok in ok_after if ok and n > gap.stop]
    assert relearnt and relearnt[0] <= gap.stop + (det.config.learn_s + 0.1) * FS
    assert not np.any((peaks >= gap.start + 0.5 * FS) & (peaks < gap.stop))
    ref = ref_beats(rec100, gap.stop + int(FS))
    assert matched(ref, peaks) >= 0.99 * len(ref)
    tp = matched(ref, peaks[peaks >= gap.stop])
    assert np.sum(peaks >= gap.stop) - tp <= 2  # few false beats while re-learning


@pytest.mark.parametrize("factor", [0.25, 0.05])
def test_follows_a_sudden_amplitude_drop(rec100: Record, factor: float) -> None:
    x = rec100.lead(0).copy()
    x[int(60 * FS) :] *= factor  # electrode half off, no gap
    peaks = QRSDetector(FS).feed(x)
    ref = ref_beats(rec100, int(60 * FS))
    late = peaks[peaks >= 60 * FS]
    assert matched(ref, late) >= 0.9 * len(ref)
    assert len(late) <= len(ref)
    cfg = QRSConfig()
    back = ref_beats(rec100, int((60 + cfg.relearn_after_s + cfg.learn_s) * FS))
    assert matched(back, peaks) == len(back)  # all found once re-learnt


def test_follows_a_sudden_amplitude_rise(rec100: Record) -> None:
    x = rec100.lead(0).copy()
    x[int(60 * FS) :] *= 5.0
    peaks = QRSDetector(FS).feed(x)
    late = peaks[peaks >= 60 * FS]
    ref = ref_beats(rec100, int(60 * FS))
    assert matched(ref, late) >= 0.99 * len(ref)
    assert len(late) <= len(ref) + 2


def test_baseline_wander_and_mains_do_not_matter(rec100: Record) -> None:
    x = rec100.lead(0)
    t = np.arange(len(x)) / FS
    noisy = x + 2.0 * np.sin(2 * np.pi * 0.3 * t) + 0.1 * np.sin(2 * np.pi * 60 * t)
    ref = ref_beats(rec100)
    peaks = QRSDetector(FS).feed(noisy)
    assert matched(ref, peaks) >= 0.99 * len(ref)
    assert len(peaks) <= 1.01 * len(ref)


@pytest.mark.parametrize("noise_mv", [0.005, 0.05])
def test_asystole_with_a_noisy_baseline_gives_no_beats(rec100: Record, noise_mv: float) -> None:
    """Beats stop but the lead stays on: re-learning must not turn noise into beats."""
    x = rec100.lead(0)[: int(30 * FS)]
    t = np.arange(int(20 * FS)) / FS
    rng = np.random.default_rng(0)
    still = x[-1] + 0.1 * np.sin(2 * np.pi * 0.2 * t) + noise_mv * rng.standard_normal(len(t))
    peaks = QRSDetector(FS).feed(np.concatenate([x, still]))
    assert np.sum(peaks > len(x) + 0.2 * FS) == 0


@pytest.mark.parametrize(
    ("band_hz", "rms_mv"),
    [((20.0, 150.0), 0.2), ((0.5, 8.0), 0.1)],  # muscle (EMG), motion artefact
    ids=["muscle", "motion"],
)
def test_muscle_and_motion_noise(
    rec100: Record, band_hz: tuple[float, float], rms_mv: float
) -> None:
    x = rec100.lead(0)
    sos = butter(2, band_hz, "bandpass", fs=FS, output="sos")
    noise = sosfilt(sos, np.random.default_rng(1).standard_normal(len(x)))
    peaks = QRSDetector(FS).feed(x + noise * rms_mv / noise.std())
    ref = ref_beats(rec100)
    tp = matched(ref, peaks)
    assert tp >= 0.99 * len(ref)
    assert len(peaks) <= 1.01 * len(ref)


def test_memory_stays_bounded(data_dir: Path) -> None:
    """Half an hour more signal, in chunks of every size, leaves memory where it was."""
    import tracemalloc

    x = load_record("203", data_dir).lead(0)
    half = len(x) // 2
    det = QRSDetector(FS)
    det.feed(x[:half])  # one huge chunk: buffers grow for it, then shrink back
    tracemalloc.start()
    try:
        det.feed(x[half : half + 36])
        before, _ = tracemalloc.get_traced_memory()
        rng = np.random.default_rng(3)
        i = half + 36
        while i < len(x):
            n = int(rng.integers(1, 2000))
            det.feed(x[i : i + n])
            i += n
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 64 * 1024


# ------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"low_hz": -1.0}, "low_hz"),
        ({"high_hz": 4.0}, "high_hz"),
        ({"refractory_s": 0.0}, "refractory_s"),
        ({"threshold_fraction": 1.5}, "threshold_fraction"),
        ({"learn_s": float("nan")}, "learn_s"),
        ({"rr_beats": 2.5}, "rr_beats"),
        ({"max_delay_s": 0.1}, "max_delay_s"),
        ({"flat_s": "1"}, "flat_s"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises((ValueError, TypeError), match=field):
        QRSConfig(**kwargs)


@pytest.mark.parametrize("fs", [50.0, 5000.0, float("nan"), 0])
def test_unsupported_sampling_rates_are_refused(fs: float) -> None:
    with pytest.raises((ValueError, TypeError), match="fs"):
        QRSDetector(fs)
