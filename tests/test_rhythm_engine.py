"""The engine publishes the rhythm analyser's changes: VF on a cudb record, noisy in artifact."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detector.anomaly import AnomalyConfig
from detector.engine import DetectorEngine
from detector.metrics import DetectorMetrics
from detector.scorer import OnnxScorer
from ecgcommon.protocol import SampleChunk, decode_beats_message, decode_event, encode_samples
from ecgcommon.topics import parse_topic, samples_topic
from tests.helpers.rhythm import active_spans, cudb

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def scorer() -> OnnxScorer:
    return OnnxScorer()


def replay(scorer: OnnxScorer, x: np.ndarray, fs: float, chunk_s: float = 0.5):
    """(n, leads) mV through DetectorEngine.handle in chunks; decoded events and beats."""
    anomaly = AnomalyConfig.from_manifest(scorer.manifest)
    engine = DetectorEngine(
        scorer, anomaly, anomaly.threshold("icu"), DetectorMetrics(CollectorRegistry())
    )
    n = int(round(chunk_s * fs))
    raw = np.rint(np.nan_to_num(x) * 200).astype(np.int16)
    events, beats = [], []
    for k, i in enumerate(range(0, len(raw), n)):
        chunk = SampleChunk(
            k, i, T0 + i / fs, fs, 200.0, "mV", ("ECG",) * x.shape[1], raw[i : i + n]
        )
        now = T0 + (i + n) / fs
        pubs = engine.handle(samples_topic("w1", "b1"), encode_samples(chunk), now)
        pubs += engine.tick(now + 0.1)
        for p in pubs:
            kind = parse_topic(p.topic).kind
            if kind == "events":
                events.append(decode_event(p.payload))
            elif kind == "beats":
                beats += decode_beats_message(p.payload).beats
    return events, beats


@pytest.mark.slow
def test_engine_publishes_vf_from_a_cudb_record(scorer) -> None:
    rec, onset = cudb("cu01")
    x = rec.signal[int(150 * rec.fs) : int(240 * rec.fs)]
    events, beats = replay(scorer, x, rec.fs)
    vf = [e for e in events if e.type == "vf"]
    assert vf and vf[0].active
    detected = vf[0].detail["detected_t"] - T0
    assert onset - 150 <= detected <= onset - 150 + 8.0
    assert beats  # the beat path is unchanged
    assert not [e for e in events if e.type == "vt"]


@pytest.mark.slow
def test_engine_raises_noisy_in_strong_electrode_motion_and_marks_beats_q(scorer, data_dir) -> None:
    from bench.arrhythmia.noise import NoiseProtocol, load_noise, stress
    from ecgcommon.aami import beat_mask
    from ecgcommon.records import load_record

    rec = load_record("100", data_dir, sampto=int(360 * 200))
    mask = beat_mask(rec.ann_symbols)
    peaks, syms = rec.ann_samples[mask], rec.ann_symbols[mask]
    noise = load_noise("em", rec.fs, rec.n_samples)
    st = stress(rec.signal, rec.fs, peaks, syms == "N", noise, -6.0, NoiseProtocol(60, 90, 60))
    events, beats = replay(scorer, st.signal, rec.fs)
    noisy = [e for e in events if e.type == "noisy"]
    assert noisy and noisy[0].active and 60 <= noisy[0].t - T0 <= 70
    assert {"lead", "sqi"} <= set(noisy[0].detail)
    assert not [e for e in events if e.type in ("vf", "vt")]
    spans = active_spans(noisy, T0 + 200)
    covered = sum(min(e, T0 + 150) - max(s, T0 + 60) for s, e in spans if e > T0 + 60)
    assert covered >= 0.8 * 90  # -6 dB electrode motion: noisy over most of the noise
    # beats published once the artifact was known are class Q
    inside = [b for b in beats if any(s + 3.0 <= b.t < e for s, e in spans)]
    assert inside and all(b.cls == "Q" for b in inside)
    clean = [b for b in beats if b.t < T0 + 55]
    assert clean and not any(b.cls == "Q" for b in clean)


@pytest.mark.slow
def test_beats_lost_on_a_lead_that_falls_quiet_while_another_beats_on_is_artifact(
    scorer, data_dir
) -> None:
    """mitdb 116 @1355: MLII falls to ~0.2 mV for 6 s, V1 beats on (the reference has every
    beat): the beat finder loses the beats, which is `noisy` (beats lost), never quiet enough to
    be left to the policy's asystole; the quiet lead alone would be."""
    from ecgcommon.records import load_record

    rec = load_record("116", data_dir, sampto=int(360 * 1366))
    x = rec.signal[int(1300 * rec.fs) :]
    events, _ = replay(scorer, x, rec.fs)
    lost = [e for e in events if e.type == "noisy" and e.active and e.detail.get("beats_lost")]
    assert lost and 54.0 <= lost[0].t - T0 <= 58.0
    events1, _ = replay(scorer, x[:, :1], rec.fs)
    assert not [
        e
        for e in events1
        if e.type == "noisy" and e.detail.get("beats_lost") and 54.0 <= e.t - T0 <= 58.0
    ]
