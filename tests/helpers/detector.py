"""The real detector service in this process, for tests that need one on a real broker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from detector.config import DetectorConfig
from detector.service import DetectorService
from ecgcommon.records import load_record
from ecgcommon.settings import MqttSettings

from .mqtt import Address, suback_event
from .waits import wait_event

START_S = 10.0


def model_dir() -> str:
    """DETECTOR_MODEL_DIR as the detector itself reads it; default models/artifacts."""
    return os.environ.get("DETECTOR_MODEL_DIR") or DetectorConfig().model_dir


def detector_config(broker: Address, ward: str | None = None, **overrides: Any) -> DetectorConfig:
    """The detector on `broker` for `ward` (a fresh one by default), HTTP on a free port."""
    base = DetectorConfig(
        mqtt=MqttSettings(host=broker.host, port=broker.port),
        ward=ward or f"det-{uuid.uuid4().hex[:6]}",
        http_host="127.0.0.1",
        http_port=0,
        model_dir=model_dir(),
    )
    return replace(base, **overrides)


def start_detector(svc: DetectorService, timeout: float = START_S) -> DetectorService:
    """Start `svc` and return once it is connected and the broker acknowledged its
    subscriptions, so that what a test publishes next reaches it."""
    subscribed = suback_event(svc.client)
    svc.start()
    wait_event(svc.connected, timeout, "the detector's connection")
    wait_event(subscribed, timeout, "the detector's SUBACK")
    return svc


@contextmanager
def running_detector(config: DetectorConfig, **service_args: Any) -> Iterator[DetectorService]:
    """The real detector (a private metrics registry unless given) for the block."""
    service_args.setdefault("registry", CollectorRegistry())
    svc = start_detector(DetectorService(config, **service_args))
    try:
        yield svc
    finally:
        svc.stop()


def record_raw(data_dir: Path, name: str, seconds: float, fs: float = 360.0) -> np.ndarray:
    """Lead 0 of a record's first `seconds`, as the int16 ADC counts a device sends (200/mV)."""
    rec = load_record(name, data_dir, sampto=int(fs * seconds))
    return np.rint(rec.lead(0) * 200).astype(np.int16)
