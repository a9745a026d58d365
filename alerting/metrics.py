"""Prometheus metrics of the alerting service; the registry is passed in (tests use their own)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from alerting.alarms import Alarm, AlarmChange, ChangeKind, Priority
from ecgcommon.protocol import BEAT_CLASSES

# Time to acknowledge: from seconds (at the bedside) to tens of minutes.
ACK_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)


class AlertingMetrics:
    """Alarm counters, open-alarm gauges, time to acknowledge, and per-bed gauges for Grafana."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.raised = Counter(
            "ecg_alarms_raised_total",
            "Alarms raised, by type and priority.",
            ["type", "priority"],
            registry=registry,
        )
        self.transitions = Counter(
            "ecg_alarm_changes_total",
            "Alarm changes by kind (raised, escalated, ended, ...).",
            ["kind", "priority"],
            registry=registry,
        )
        self.active = Gauge(
            "ecg_alarms_active",
            "Open alarms (active, acknowledged or latched), by priority.",
            ["priority"],
            registry=registry,
        )
        self.time_to_ack = Histogram(
            "ecg_alarm_time_to_acknowledge_seconds",
            "Seconds from an alarm's start to its acknowledgement.",
            ["priority"],
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.bed_heart_rate = Gauge(
            "ecg_bed_heart_rate_bpm",
            "Current heart rate of each bed.",
            ["bed"],
            registry=registry,
        )
        self.bed_beats = Counter(
            "ecg_bed_beats_total",
            "Beats received per bed.",
            ["bed"],
            registry=registry,
        )
        self.bed_anomalous = Counter(
            "ecg_bed_anomalous_beats_total",
            "Anomalous beats received per bed.",
            ["bed"],
            registry=registry,
        )
        self.bed_classes = Counter(
            "ecg_bed_beats_by_class_total",
            "Beats received per bed and AAMI class (N, S, V, F, Q; unknown from an older "
            "detector).",
            ["bed", "cls"],
            registry=registry,
        )
        self.dropped = Counter(
            "ecg_alerting_dropped_messages_total",
            "Malformed or unusable input messages dropped, by reason.",
            ["reason"],
            registry=registry,
        )
        self._open: dict[str, Priority] = {}
        for p in Priority:
            self.active.labels(priority=p.value).set(0)

    def observe(self, changes: Iterable[AlarmChange]) -> None:
        """Account for the changes one policy call returned."""
        for kind, alarm in changes:
            kind = ChangeKind(kind)
            p = alarm.priority.value
            self.transitions.labels(kind=kind.value, priority=p).inc()
            if kind is ChangeKind.RAISED:
                self.raised.labels(type=alarm.type.value, priority=p).inc()
            if kind is ChangeKind.ACKNOWLEDGED and alarm.acknowledged_at is not None:
                self.time_to_ack.labels(priority=p).observe(
                    max(0.0, alarm.acknowledged_at - alarm.started_at)
                )
            self._track(alarm)

    def sync_active(self, alarms: Iterable[Alarm]) -> None:
        """Reset the open-alarm gauges to exactly these alarms (after AlarmPolicy.restore)."""
        self._open.clear()
        for alarm in alarms:
            self._track(alarm)
        self._publish()

    def observe_beat(
        self, bed: str, anomalous: bool, hr_bpm: float | None, cls: str | None = None
    ) -> None:
        """Per-bed figures for the Grafana ward board."""
        self.bed_beats.labels(bed=bed).inc()
        self.bed_classes.labels(bed=bed, cls=cls if cls in BEAT_CLASSES else "unknown").inc()
        if anomalous:
            self.bed_anomalous.labels(bed=bed).inc()
        if hr_bpm is not None:
            self.bed_heart_rate.labels(bed=bed).set(hr_bpm)

    def drop(self, reason: str) -> None:
        """Count one dropped input message."""
        self.dropped.labels(reason=reason).inc()

    def _track(self, alarm: Alarm) -> None:
        if alarm.open:
            self._open[alarm.id] = alarm.priority
        else:
            self._open.pop(alarm.id, None)
        self._publish()

    def _publish(self) -> None:
        counts = dict.fromkeys(Priority, 0)
        for p in self._open.values():
            counts[p] += 1
        for p, n in counts.items():
            self.active.labels(priority=p.value).set(n)


class ServerMetrics:
    """The HTTP side's metrics: websocket clients and their dropped frames, uploads, refusals."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ws_clients = Gauge(
            "ecg_alerting_websocket_clients",
            "Dashboard websocket clients connected",
            registry=registry,
        )
        self.ws_dropped = Counter(
            "ecg_alerting_websocket_frames_dropped_total",
            "Waveform frames dropped for slow websocket clients",
            registry=registry,
        )
        self.ws_cut = Counter(
            "ecg_alerting_websocket_clients_cut_total",
            "Websocket clients disconnected because they could not keep up",
            registry=registry,
        )
        self.uploads = Counter(
            "ecg_alerting_uploads_total",
            "ECG uploads for scoring by outcome",
            ["outcome"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "ecg_alerting_auth_failures_total",
            "Requests refused for a missing or wrong token",
            registry=registry,
        )
