"""Prometheus metrics of the detector, on a registry passed in (tests use a private one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ecgcommon.metrics import MetricFactory

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class DetectorMetrics:
    """Everything the detector counts, named by Prometheus conventions (units, `_total`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry, "ecg_detector")
        self.messages = m.counter("messages", "MQTT messages received, by kind", ["kind"])
        self.chunks = m.counter("chunks", "Sample chunks accepted")
        self.samples = m.counter("samples", "Samples fed to the pipelines")
        self.beats = m.counter("beats", "Beats scored and published")
        self.anomalies = m.counter("anomalies", "Beats published as anomalous")
        self.beats_dropped = m.counter(
            "beats_dropped", "Detected beats not scored, by reason", ["reason"]
        )
        self.bad_messages = m.counter(
            "bad_messages", "Messages dropped as malformed, by reason", ["reason"]
        )
        self.events = m.counter("events", "Events published, by type", ["type"])
        self.lag = m.histogram(
            "processing_lag_seconds",
            "From receipt of the chunk that completed a beat's window to the beat's publication",
            LATENCY_BUCKETS,
        )
        self.batch_size = m.histogram(
            "batch_size_beats", "Beats per inference batch", BATCH_BUCKETS
        )
        self.inference = m.histogram("inference_seconds", "Scorer time per batch", LATENCY_BUCKETS)
        self.active_beds = m.gauge(
            "active_beds", "Beds that sent samples within the signal timeout"
        )
        self.up = m.gauge("mqtt_connected", "1 while connected to the broker")
