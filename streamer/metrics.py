"""Prometheus metrics of the streamer, on a registry passed in (tests use a private one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ecgcommon.metrics import MetricFactory

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Why paho refused a publish: its return codes, named. Pre-created so the series exist at 0.
DROP_REASONS = ("disconnected", "queue_full", "error")


class StreamerMetrics:
    """What the streamer counts, named by Prometheus conventions (units, `_total`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        m = MetricFactory(registry, "ecg_streamer")
        self.chunks = m.counter("chunks_published", "Sample chunks handed to MQTT")
        self.samples = m.counter("samples_published", "Samples (per lead) in published chunks")
        self.dropped = m.counter(
            "chunks_dropped",
            "Chunks not sent, by reason (a bed's device was disconnected, its queue was full)",
            ["reason"],
            preset=DROP_REASONS,
        )
        self.reconnects = m.counter("reconnects", "Bed connections re-established after a loss")
        self.beds = m.gauge("beds", "Beds configured to stream")
        self.connected_beds = m.gauge(
            "connected_beds", "Beds whose device is connected to the broker"
        )
        self.lag = m.histogram(
            "pacing_lag_seconds",
            "How late a chunk is published after its due time (its last sample happened)",
            LAG_BUCKETS,
        )
