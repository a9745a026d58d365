"""The benchmark's test signals through the real detector pipeline and the policy: the alarms it
times are the right ones (timing itself is measured by `make bench-alarms`, not asserted)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from alerting.alarms import AlarmType
from alerting.core import AlertingCore
from alerting.policy import AlarmPolicy
from bench.alarms.__main__ import main
from bench.alarms.replay import Replay, load_scoring
from bench.alarms.signals import FS, T0, synth_ecg
from bench.alarms.timing import TrialSetup, asystole_trials, tachy_trials
from detector.engine import DetectorEngine


def test_synthetic_ecg_beats_are_found_by_the_detector() -> None:
    rng = np.random.default_rng(1)
    rrs = np.full(40, 0.8)
    x, peaks = synth_ecg(rrs, FS, rng, tail_s=1.0)
    replay = Replay("b", AlarmPolicy(), None, lag_s=1.0, chunk_s=0.25, batch_delay_s=0.0)
    replay.run(x, FS, T0)
    assert abs(replay.n_beats - len(peaks)) <= 1
    assert not replay.raised, [r.type for r in replay.raised]


def test_standstill_raises_asystole_and_nothing_early() -> None:
    models = load_scoring(None)  # the committed models, as the service loads them
    assert models is not None and models.classifier is not None
    res = asystole_trials(2, TrialSetup(models, lag_s=0.6, chunk_s=0.25, batch_s=0.05), seed=3)
    assert res["missed"] == 0 and res["false_asystole_alarms"] == 0
    assert res["n"] == 2 and res["min"] > 0


def test_sudden_tachycardia_raises_a_tachy_alarm() -> None:
    models = load_scoring(None)
    assert models is not None
    res = tachy_trials(2, TrialSetup(models, lag_s=0.6, chunk_s=0.25, batch_s=0.05), seed=4)
    assert res["missed"] == 0 and res["n"] == 2
    assert set(res["by_type"]) <= {AlarmType.TACHY.value, AlarmType.EXTREME_TACHY.value}
    assert AlarmType.EXTREME_TACHY.value in res["by_type"]


def test_a_tiny_bench_alarms_run_drives_the_real_cores(tmp_path, monkeypatch) -> None:
    """`python -m bench.alarms` in small: every chunk goes through DetectorEngine.handle and
    every publication through AlertingCore.on_message, and the report's figures are there and
    plausible (bounded delays, the reference beats of record 100 all fed)."""
    calls: Counter[str] = Counter()

    def spy(cls: type, name: str) -> None:
        real = getattr(cls, name)

        def counted(self: object, *args: object, **kwargs: object) -> object:
            calls[f"{cls.__name__}.{name}"] += 1
            return real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    spy(DetectorEngine, "handle")
    spy(DetectorEngine, "tick")
    spy(AlertingCore, "on_message")
    out = tmp_path / "alarms.json"
    argv = ["--trials", "1", "--no-live", "--beats", "reference", "--records", "100"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    # 3 synthetic signals of ~40 s in 0.5 s chunks reach the engine; the core gets those chunks,
    # the engine's publications and the reference beats of a 30 min record
    assert calls["DetectorEngine.handle"] > 200 and calls["DetectorEngine.tick"] > 200
    assert calls["AlertingCore.on_message"] > calls["DetectorEngine.handle"] + 3000
    assert 0 < report["asystole_delay_s"] < 2.0
    assert 0 < report["tachy_time_to_alarm_s"] < 5.0
    assert report["asystole"]["n"] == 1 and report["tachycardia"]["n"] == 1
    load = report["load"]
    assert load["records"] == 1 and abs(load["bed_hours"] - 0.5) < 0.01
    assert load["per_record"][0]["beats"] > 2200  # record 100 has 2273 annotated beats
    assert set(report["alarms_per_bed_hour"]) == {"high", "medium", "low", "technical"}
    assert report["settings"]["load_beats"] == "reference"
    assert report["bounds"]["asystole_delay_s"]["met"] is not None
