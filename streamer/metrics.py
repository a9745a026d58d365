"""Prometheus metrics of the streamer, on a registry passed in (tests use a private one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Why paho refused a publish: its return codes, named. Pre-created so the series exist at 0.
DROP_REASONS = ("disconnected", "queue_full", "error")


class StreamerMetrics:
    """What the streamer counts, named by Prometheus conventions (units, `_total`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "ecg_streamer"
        self.chunks = Counter(
            f"{ns}_chunks_published", "Sample chunks handed to MQTT", registry=registry
        )
        self.samples = Counter(
            f"{ns}_samples_published", "Samples (per lead) in published chunks", registry=registry
        )
        self.dropped = Counter(
            f"{ns}_chunks_dropped",
            "Chunks not sent, by reason (a bed's device was disconnected, its queue was full)",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self.reconnects = Counter(
            f"{ns}_reconnects", "Bed connections re-established after a loss", registry=registry
        )
        self.beds = Gauge(f"{ns}_beds", "Beds configured to stream", registry=registry)
        self.connected_beds = Gauge(
            f"{ns}_connected_beds",
            "Beds whose device is connected to the broker",
            registry=registry,
        )
        self.lag = Histogram(
            f"{ns}_pacing_lag_seconds",
            "How late a chunk is published after its due time (its last sample happened)",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
