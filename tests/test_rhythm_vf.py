"""VF / flutter detector: real cudb VF, sinus stretch, asystole, lost lead, chunkings."""

from __future__ import annotations

import numpy as np
import pytest

from detector.rhythms import RhythmAnalyser
from detector.rhythms.vf import VFConfig, VFDetector
from detector.rhythms.vf_features import vf_features
from tests.helpers.rhythm import cudb, feed, of

T0 = 1000.0


@pytest.fixture(scope="module")
def cu01() -> tuple[np.ndarray, float, float]:
    """cu01 from 150 s (sinus) into its VF (onset 214.2 s): samples, fs, onset (s from 150)."""
    rec, onset = cudb("cu01")
    fs = rec.fs
    return rec.signal[int(150 * fs) : int(260 * fs)], fs, onset - 150


def test_vf_in_cudb_is_found_within_seconds_of_its_onset(cu01) -> None:
    x, fs, onset = cu01
    vf = of(feed(x, fs, int(fs / 2)), "vf")
    assert vf and vf[0].active
    detected = vf[0].detail["detected_t"] - T0
    assert onset <= detected <= onset + 8.0, (onset, detected)
    assert vf[0].detail["hr_bpm"] is None and vf[0].detail["beats"] is None
    assert len(vf) == 1  # it holds to the end of the excerpt


def test_no_vf_in_the_sinus_stretch_of_the_same_record(cu01) -> None:
    x, fs, onset = cu01
    sinus = x[: int((onset - 1) * fs)]
    assert of(feed(sinus, fs, int(fs / 2)), "vf") == []


@pytest.mark.parametrize("chunk", [1, 37, 125, 1000])
def test_same_episodes_for_any_chunking(cu01, chunk: int) -> None:
    x, fs, _ = cu01
    x = x[: int(80 * fs)]
    ref = feed(x, fs, 125)
    assert of(ref, "vf")  # the stretch has VF: the comparison compares something
    assert feed(x, fs, chunk) == ref


def test_fine_vf_versus_asystole_and_flat_lead() -> None:
    fs = 250.0
    t = np.arange(int(30 * fs)) / fs
    rng = np.random.default_rng(1)
    phase = np.cumsum(2 * np.pi * (4.5 + 0.5 * rng.standard_normal(t.size)) / fs)
    coarse = 0.8 * np.sin(phase)
    fine = 0.25 * np.sin(phase)
    asystole = 0.02 * np.sin(phase)  # below the amplitude floor: not VF
    assert of(feed(coarse, fs, 125), "vf")
    assert of(feed(fine, fs, 125), "vf")
    assert of(feed(asystole, fs, 125), "vf") == []
    assert of(feed(np.zeros(t.size), fs, 125), "vf") == []


def test_lost_lead_ends_vf_and_nan_never_starts_it(cu01) -> None:
    x, fs, onset = cu01
    a = RhythmAnalyser()
    changes = feed(x, fs, 125, a)
    assert of(changes, "vf")[-1].active
    lost = np.full((int(10 * fs), 1), np.nan)
    later = a.feed_samples(lost, fs, T0 + len(x) / fs)
    assert [c.active for c in of(later, "vf")] == [False]
    assert of(feed(np.full(int(20 * fs), np.nan), fs, 125), "vf") == []
    inf = np.full(int(20 * fs), np.inf)
    assert feed(inf, fs, 125) == []


def test_other_sampling_rates_find_the_same_vf(cu01) -> None:
    from scipy.signal import resample_poly

    x, fs, onset = cu01
    for up, down in ((2, 1), (36, 25)):  # 500 Hz, 360 Hz
        y = resample_poly(x[:, 0], up, down)
        vf = of(feed(y, fs * up / down, int(fs * up / down / 2)), "vf")
        assert vf and onset <= vf[0].detail["detected_t"] - T0 <= onset + 8.0


def test_bad_input_is_ignored() -> None:
    a = RhythmAnalyser()
    assert a.feed_samples(np.empty((0, 1)), 250.0, T0) == []
    assert a.feed_samples(np.ones((10, 1)), 250.0, float("nan")) == []
    assert a.feed_samples(np.ones((10, 2, 2)), 250.0, T0) == []
    with pytest.raises(ValueError, match="p_on"):
        VFConfig(p_on=1.5)
    with pytest.raises(ValueError, match="min_amp_mv"):
        VFConfig(min_amp_mv=-1)
    d = VFDetector()
    assert d.window(None, 100.0, 1.0) == []
    assert d.window(np.full(400, np.nan), 100.0, 2.0) == []
    f = vf_features(np.zeros(400), 100.0)
    assert f.amp_mv == 0 and f.tcsc == 0


def test_two_leads_must_agree_artifact_on_one_lead_is_not_vf(data_dir) -> None:
    from ecgcommon.records import load_record

    # MIT-BIH 108 (DS1) ~1650..1760 s: artifact that looks like VF on lead 0 only
    rec = load_record("108", data_dir)
    x = rec.signal[int(1600 * rec.fs) : int(1760 * rec.fs)]
    assert of(feed(x, rec.fs, 180), "vf") == []
    # MIT-BIH 207 (DS1): ventricular flutter [ at 40.7 s, on both leads
    rec = load_record("207", data_dir, sampto=int(70 * rec.fs))
    vf = of(feed(rec.signal, rec.fs, 180), "vf")
    assert vf and 40.7 <= vf[0].detail["detected_t"] - T0 <= 40.7 + 8.0


@pytest.mark.parametrize("chunk", [1, 250, 999])
def test_two_lead_chunking_gives_the_same_episodes(data_dir, chunk: int) -> None:
    from ecgcommon.records import load_record

    rec = load_record("207", data_dir, sampto=int(90 * 360))
    ref = feed(rec.signal, rec.fs, 180)
    assert of(ref, "vf")  # 207 starts in ventricular flutter
    assert feed(rec.signal, rec.fs, chunk) == ref


def test_artifact_first_needs_more_proof_but_not_the_artifact_of_vf_itself() -> None:
    """`noisy` well before the VF-like windows asks for 3 windows at p >= 0.98 (an organised
    rhythm in artifact scores 0.90..0.98: cudb cu15, cu19); `noisy` that the last VF episode
    raised itself (begun within it or right after its end) does not: VF that resumes there
    starts on the usual 2 windows at p >= 0.9 (cudb cu27 at its annotated onset)."""
    f = vf_features(np.sin(np.arange(1000) / 250.0 * 2 * np.pi * 5.0), 250.0)

    def starts(det: VFDetector, since: float | None, ps: list[float], t0: float) -> list[float]:
        out = []
        for i, p in enumerate(ps):
            out += [c.t for c in det.window_features(f, t0 + i, since, p) if c.active]
        return out

    assert starts(VFDetector(), None, [0.92, 0.92], 20.0) == [20.0]  # from clean rhythm
    assert starts(VFDetector(), 0.0, [0.92, 0.92, 0.92], 20.0) == []  # artifact seen first
    assert starts(VFDetector(), 0.0, [0.96, 0.97, 0.96], 20.0) == []  # cu19's tachycardia
    assert starts(VFDetector(), 0.0, [0.99, 0.99, 0.97, 0.99], 20.0) == []  # one weak window
    assert starts(VFDetector(), 0.0, [0.99, 0.985, 0.99], 20.0) == [20.0]
    det = VFDetector()
    assert starts(det, None, [1.0, 1.0], 10.0) == [10.0]
    assert [c.active for c in det.window_features(f, 12.0, None, 0.1)] == []
    assert starts(det, None, [0.1, 0.1], 13.0) == []  # three low windows: ended at 12
    assert not det.active and det.episode == (10.0, 12.0)
    assert starts(det, 13.0, [0.92, 0.92], 30.0) == [30.0]  # its own artifact (from 13 s)
    det.window_features(f, 40.0, None, 0.1)
    det.window_features(f, 41.0, None, 0.1)
    det.window_features(f, 42.0, None, 0.1)
    assert starts(det, 50.0, [0.92, 0.92, 0.92], 70.0) == []  # artifact long after VF
