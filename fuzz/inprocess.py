"""In-process fuzzing: every decoder and upload parser, then `DetectorEngine.handle` and
`AlertingCore.on_message` fed hostile messages while a real record streams through both.

A decoder may raise only `DecodeError` (uploads: `UploadError`); anything else is an unhandled
error. The two handlers promise never to raise: an exception out of them is a crash, and what
they catch as `internal_error` is an unhandled error.
"""

from __future__ import annotations

import random
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client import CollectorRegistry

from ecgcommon import protocol
from ecgcommon.records import load_record
from ecgcommon.upload import UploadError, parse_upload
from fuzz import inputs

WARD = "fuzz-ward"
GOOD_BED = "01"
GOOD_RECORD = "112"


@dataclass
class Tally:
    """What a fuzz run found."""

    inputs: int = 0
    crashes: int = 0
    unhandled_errors: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # first few unhandled errors

    def unhandled(self, what: str, payload: bytes | object, exc: BaseException) -> None:
        self.unhandled_errors += 1
        if len(self.examples) < 10:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            self.examples.append(f"{what}: {tb} <- {repr(payload)[:120]}")


def decoders(n: int, rng: random.Random, tally: Tally) -> None:
    """Mutated payloads of every kind through every decoder."""
    seeds = inputs.seeds(time.time())
    for _ in range(n):
        kind = rng.choice(inputs.KINDS)
        payload = inputs.mutate(rng, kind, seeds)
        tally.inputs += 1
        try:
            inputs.DECODERS[kind](payload)
        except protocol.DecodeError as exc:
            tally.drops[exc.reason] += 1
        except Exception as exc:  # noqa: BLE001 - the finding itself
            tally.unhandled(f"decode_{kind}", payload, exc)


def decoders_hypothesis(n: int, tally: Tally) -> None:
    """Structured hostile JSON from hypothesis through every decoder (generation only)."""

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(msg=inputs.message_strategy())
    def run(msg: tuple[str, bytes]) -> None:
        kind, payload = msg
        tally.inputs += 1
        try:
            inputs.DECODERS[kind](payload)
        except protocol.DecodeError as exc:
            tally.drops[exc.reason] += 1
        except Exception as exc:  # noqa: BLE001
            tally.unhandled(f"decode_{kind}", payload, exc)

    run()


def uploads(n: int, rng: random.Random, tally: Tally) -> None:
    """Hostile CSV and WFDB uploads through the upload parser."""
    for _ in range(n):
        files, fs = inputs.upload(rng)
        tally.inputs += 1
        try:
            parse_upload(files, fs)
        except UploadError:
            tally.drops["upload_refused"] += 1
        except Exception as exc:  # noqa: BLE001
            tally.unhandled("upload", list(files), exc)


class Handlers:
    """The detector's engine and the alerting core, wired as the services wire them (the
    engine's publications go to the core), without sockets."""

    def __init__(self, model_dir: str | Path, db: Path, max_beds: int = 128) -> None:
        from alerting.config import AlertingConfig
        from alerting.hub import WardHub
        from alerting.metrics import AlertingMetrics
        from alerting.policy import AlarmPolicy
        from alerting.service import AlertingCore
        from alerting.store import AlarmStore
        from detector.anomaly import AnomalyConfig
        from detector.engine import DetectorEngine, EngineSettings
        from detector.metrics import DetectorMetrics
        from detector.scorer import OnnxScorer

        onnx = OnnxScorer(Path(model_dir))
        anomaly = AnomalyConfig.from_manifest(onnx.manifest)
        self.det_registry = CollectorRegistry()
        kwargs: dict[str, Any] = {}
        try:  # the beat-class network, when its artifacts match (as the service loads it)
            from detector.classifier import BeatClassifier

            kwargs["classifier"] = BeatClassifier(Path(model_dir))
        except Exception:  # noqa: BLE001 - the engine runs without it, as eval-arrhythmia does
            pass
        self.engine = DetectorEngine(
            onnx,
            anomaly,
            anomaly.threshold("icu"),
            DetectorMetrics(self.det_registry),
            EngineSettings(max_beds=max_beds),
            **kwargs,
        )
        self.alert_registry = CollectorRegistry()
        config = AlertingConfig(
            ward=WARD, token="fuzz-token-0123456789", db_path=str(db), max_beds=max_beds // 2
        )
        self.core = AlertingCore(
            config,
            hub=WardHub(WARD),
            policy=AlarmPolicy(),
            store=AlarmStore(str(db)),
            metrics=AlertingMetrics(self.alert_registry),
            registry=self.alert_registry,
        )
        self.good_beats = 0

    def feed(self, topic: str, payload: bytes, retained: bool, tally: Tally) -> None:
        now = time.monotonic()
        try:
            pubs = self.engine.handle(topic, payload, now, retained)
        except Exception as exc:  # noqa: BLE001 - handle() must never raise
            tally.crashes += 1
            tally.unhandled("DetectorEngine.handle", payload, exc)
            pubs = []
        try:
            self.core.on_message(topic, payload)
            for p in pubs:
                if p.topic.endswith(f"/{GOOD_BED}/beats"):
                    self.good_beats += len(protocol.decode_beats(p.payload))
                self.core.on_message(p.topic, p.payload)
        except Exception as exc:  # noqa: BLE001 - on_message() must never raise
            tally.crashes += 1
            tally.unhandled("AlertingCore.on_message", payload, exc)

    def tick(self, tally: Tally) -> None:
        try:
            for p in self.engine.tick(time.monotonic()):
                if p.topic.endswith(f"/{GOOD_BED}/beats"):
                    self.good_beats += len(protocol.decode_beats(p.payload))
                self.core.on_message(p.topic, p.payload)
            self.core.tick()
        except Exception as exc:  # noqa: BLE001
            tally.crashes += 1
            tally.unhandled("tick", b"", exc)

    def internal_errors(self) -> int:
        det = (
            self.det_registry.get_sample_value(
                "ecg_detector_bad_messages_total", {"reason": "internal_error"}
            )
            or 0.0
        )
        alert = (
            self.alert_registry.get_sample_value(
                "ecg_alerting_dropped_messages_total", {"reason": "internal_error"}
            )
            or 0.0
        )
        return int(det + alert)

    def drops(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for registry, name in (
            (self.det_registry, "ecg_detector_bad_messages"),
            (self.alert_registry, "ecg_alerting_dropped_messages"),
        ):
            for family in registry.collect():
                if family.name != name:
                    continue
                for s in family.samples:
                    if s.name.endswith("_total"):
                        out[s.labels.get("reason", "?")] += int(s.value)
        return out


def handlers(
    n: int, rng: random.Random, tally: Tally, model_dir: str, data_dir: Path
) -> dict[str, Any]:
    """Hostile messages into both handlers, one good chunk of a real record every 20."""
    rec = load_record(GOOD_RECORD, data_dir, sampto=int(360 * 600))
    raw = np.rint(rec.lead(0) * 200).astype(np.int16)
    step = 36  # 0.1 s chunks
    with tempfile.TemporaryDirectory() as tmp:
        h = Handlers(model_dir, Path(tmp) / "fuzz.db")
        seeds = inputs.seeds(time.time())
        k = 0
        start_unhandled = tally.unhandled_errors
        for i in range(n):
            if i % 20 == 0:  # the real bed: the next chunk of the record, on the wall clock
                lo = (k * step) % (raw.size - step)
                chunk = protocol.SampleChunk(
                    k,
                    k * step,
                    time.time(),
                    360.0,
                    200.0,
                    "mV",
                    ("MLII",),
                    raw[lo : lo + step, None],
                )
                h.feed(
                    f"ecg/v1/{WARD}/{GOOD_BED}/samples",
                    protocol.encode_samples(chunk),
                    False,
                    tally,
                )
                k += 1
                h.tick(tally)
            kind = rng.choice(inputs.KINDS)
            bed = inputs.bed_name(rng)  # not the good bed: its own topics are the ACL's job
            topic = inputs.topic(rng, WARD, bed, kind)
            tally.inputs += 1
            h.feed(topic, inputs.mutate(rng, kind, seeds), rng.random() < 0.1, tally)
        internal = h.internal_errors()
        tally.unhandled_errors += internal
        tally.drops.update(h.drops())
        return {
            "good_bed_chunks": k,
            "good_bed_beats": h.good_beats,
            "detector_beds": len(h.engine.beds),
            "internal_errors": internal,
            "unhandled_in_handlers": tally.unhandled_errors - start_unhandled,
        }
