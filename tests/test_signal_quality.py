"""Signal quality: nstdb electrode-motion noise raises `noisy` (and no VF); clean stays quiet."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.arrhythmia.noise import NoiseProtocol, load_noise, stress
from detector.quality import LeadQuality, LeadSQI, NoisyGate, QualityConfig, column_medians
from detector.rhythms.vf_features import VFFeatures
from ecgcommon.aami import beat_mask
from ecgcommon.records import load_record
from tests.helpers.rhythm import active_spans, feed, of

PROTOCOL = NoiseProtocol(clean_s=120.0, noisy_s=120.0, gap_s=120.0)
T0 = 1000.0


@pytest.fixture(scope="module")
def rec100(data_dir):
    return load_record("100", data_dir, sampto=int(360 * 400))


def stressed(rec, kind: str, snr_db: float):
    mask = beat_mask(rec.ann_symbols)
    peaks, syms = rec.ann_samples[mask], rec.ann_symbols[mask]
    noise = load_noise(kind, rec.fs, rec.n_samples)
    return stress(rec.signal, rec.fs, peaks, syms == "N", noise, snr_db, PROTOCOL, kind)


def spans(changes, end):
    return active_spans(of(changes, "noisy"), end)


def test_clean_record_raises_no_noisy(rec100) -> None:
    changes = feed(rec100.signal, rec100.fs, 180)
    assert of(changes, "noisy") == [] and of(changes, "vf") == []


def test_electrode_motion_at_0_db_raises_noisy_over_the_noisy_time_and_no_vf(rec100) -> None:
    st = stressed(rec100, "em", 0.0)
    assert len(st.segments) == 2 and st.segments[1][0] == 360.0
    changes = feed(st.signal, rec100.fs, 180)
    assert of(changes, "vf") == []
    got = spans(changes, T0 + rec100.duration_s)
    start, end = st.segments[0]
    covered = sum(max(0.0, min(e, T0 + end) - max(s, T0 + start)) for s, e in got)
    covered += sum(max(0.0, e - max(s, T0 + 360.0)) for s, e in got)  # the 2nd segment's start
    assert covered >= 0.8 * (end - start + 40.0)
    outside = sum(e - s for s, e in got) - covered
    assert outside <= 15.0
    first = of(changes, "noisy")[0]
    assert first.t - T0 <= start + 5.0 and first.detail["lead"] == "ECG"
    assert 0.0 <= first.detail["sqi"] < 0.5


@pytest.mark.parametrize("kind", ["em", "ma"])
def test_moderate_noise_never_raises_vf(rec100, kind: str) -> None:
    for snr in (12.0, 6.0):
        st = stressed(rec100, kind, snr)
        assert of(feed(st.signal, rec100.fs, 180), "vf") == []


@pytest.mark.parametrize("chunk", [1, 77, 360, 5000])
def test_same_quality_verdicts_for_any_chunking(rec100, chunk: int) -> None:
    st = stressed(rec100, "em", 0.0)
    x = st.signal[: int(200 * rec100.fs)]
    ref = feed(x, rec100.fs, 180)
    assert of(ref, "noisy")  # the noise starts at 120 s: the comparison compares something
    assert feed(x, rec100.fs, chunk) == ref


def test_baseline_and_bad_windows() -> None:
    sqi = LeadSQI()
    clean = VFFeatures(0.2, 0.8, 0.3, 2.5, 1.2, 0.2, 9.0, 1.0, 0.09, 22.0, 0.09)
    assert math.isnan(sqi.update(clean).sqi)  # learning
    for _ in range(10):
        q = sqi.update(clean)
    assert not q.bad and q.sqi > 0.5
    big = VFFeatures(0.4, 0.7, 0.3, 2.5, 1.0, 0.1, 3.5, 2.5, 0.16, 8.0, 0.2)  # em-like
    assert sqi.update(big).bad
    assert not sqi.update(None).bad  # no signal is lead-off's business
    flat = VFFeatures(0.0, 1.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0)
    assert not sqi.update(flat).bad
    gate = NoisyGate()
    bad = sqi.update(big)
    assert gate.update(bad, 0.0, 4.0, "II") == []
    on = gate.update(bad, 1.0, 5.0, "II")
    assert [c.active for c in on] == [True] and gate.noisy_at(4.5)
    ok = sqi.update(clean)
    off = []
    for i in range(5):
        off += gate.update(ok, 2.0 + i, 6.0 + i, "II")
    assert [c.active for c in off] == [False] and not gate.noisy_at(off[0].t + 0.1)


@pytest.mark.parametrize(
    "bad, field",
    [({"on_windows": 5, "on_of": 3}, "on_windows"), ({"p_bad": 1.0}, "p_bad"),
     ({"p_clean": math.nan}, "p_clean")],
)  # fmt: skip
def test_bad_quality_config_names_the_field(bad: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        QualityConfig(**bad)


def test_noisy_ends_only_on_clearly_clean_windows_and_is_known_from_its_decision() -> None:
    """Hysteresis: on at p >= p_bad, the end counts only windows at p < p_recover; a doubtful
    window (in between) restarts the count. `known_at` answers as of a decision time."""
    gate = NoisyGate(QualityConfig(p_bad=0.7, p_recover=0.5, off_windows=3))
    bad, doubtful, clean = LeadQuality(0.1, True), LeadQuality(0.4, False), LeadQuality(0.8, False)
    out = gate.update(bad, 0.0, 4.0, "II") + gate.update(bad, 1.0, 5.0, "II")
    assert [c.active for c in out] == [True] and out[0].t == 3.0
    assert not gate.known_at(4.9) and gate.known_at(5.0) and gate.noisy_at(3.5)
    seq = [clean, clean, doubtful, clean, clean, LeadQuality(math.nan, False)]
    out = []
    for i, q in enumerate(seq):
        out += gate.update(q, 2.0 + i, 6.0 + i, "II")
    assert [(c.active, c.t) for c in out] == [(False, 11.0)]  # not at 8.0: the doubtful one
    assert gate.known_at(10.9) and not gate.known_at(11.0) and gate.known_at(5.5)
    with pytest.raises(ValueError, match="p_recover"):
        QualityConfig(p_recover=0.8)


def test_column_medians_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for n in range(1, 70):
        for scale in (1e-3, 1.0, 1e3):
            rows = rng.standard_normal((n, 6)) * scale
            rows[: n // 3] = np.round(rows[: n // 3], 1) * 0.0  # ties and signed zeros
            assert column_medians(rows).tobytes() == np.median(rows, axis=0).tobytes()
    rows = rng.standard_normal((9, 6))
    rows[3, 2] = np.nan
    assert np.array_equal(column_medians(rows), np.median(rows, axis=0), equal_nan=True)
