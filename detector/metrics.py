"""Prometheus metrics of the detector, on a registry passed in (tests use a private one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class DetectorMetrics:
    """Everything the detector counts, named by Prometheus conventions (units, `_total`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "ecg_detector"
        self.messages = Counter(
            f"{ns}_messages", "MQTT messages received, by kind", ["kind"], registry=registry
        )
        self.chunks = Counter(f"{ns}_chunks", "Sample chunks accepted", registry=registry)
        self.samples = Counter(f"{ns}_samples", "Samples fed to the pipelines", registry=registry)
        self.beats = Counter(f"{ns}_beats", "Beats scored and published", registry=registry)
        self.anomalies = Counter(
            f"{ns}_anomalies", "Beats published as anomalous", registry=registry
        )
        self.beats_dropped = Counter(
            f"{ns}_beats_dropped",
            "Detected beats not scored, by reason",
            ["reason"],
            registry=registry,
        )
        self.bad_messages = Counter(
            f"{ns}_bad_messages",
            "Messages dropped as malformed, by reason",
            ["reason"],
            registry=registry,
        )
        self.events = Counter(
            f"{ns}_events", "Events published, by type", ["type"], registry=registry
        )
        self.lag = Histogram(
            f"{ns}_processing_lag_seconds",
            "From receipt of the chunk that completed a beat's window to the beat's publication",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{ns}_batch_size_beats",
            "Beats per inference batch",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            f"{ns}_inference_seconds",
            "Scorer time per batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.active_beds = Gauge(
            f"{ns}_active_beds",
            "Beds that sent samples within the signal timeout",
            registry=registry,
        )
        self.up = Gauge(
            f"{ns}_mqtt_connected", "1 while connected to the broker", registry=registry
        )
