"""Alerting metrics on a private registry, fed by a real policy, and their text exposition."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from alerting.alarms import AlarmType, ChangeKind
from alerting.metrics import AlertingMetrics
from alerting.policy import AlarmPolicy
from tests.helpers.policy import policy_beats

T0 = 1_700_000_000.0


def value(reg: CollectorRegistry, name: str, **labels: str) -> float:
    v = reg.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_raised_active_and_time_to_acknowledge() -> None:
    reg = CollectorRegistry()
    m = AlertingMetrics(reg)
    policy = AlarmPolicy()
    changes, t = policy_beats(policy, "b1", T0, [0.8] * 25 + [0.46] * 30)  # 14 s of tachycardia
    m.observe(changes)
    assert value(reg, "ecg_alarms_raised_total", type="tachy", priority="medium") == 1
    assert value(reg, "ecg_alarms_active", priority="medium") == 1
    assert value(reg, "ecg_alarms_active", priority="high") == 0

    asys = policy.tick("b1", t + 4.5)  # asystole (high) chains over the tachy and the pause
    m.observe(asys)
    assert value(reg, "ecg_alarms_raised_total", type="asystole", priority="high") == 1
    assert value(reg, "ecg_alarms_active", priority="high") == 1
    assert value(reg, "ecg_alarms_active", priority="medium") == 0
    assert value(reg, "ecg_alarm_changes_total", kind="suppressed", priority="medium") == 2

    (alarm,) = policy.active()
    m.observe(policy.acknowledge(alarm.id, alarm.started_at + 7.0, "n"))
    assert value(reg, "ecg_alarm_time_to_acknowledge_seconds_count", priority="high") == 1
    assert value(reg, "ecg_alarm_time_to_acknowledge_seconds_sum", priority="high") == 7.0
    assert (
        value(reg, "ecg_alarm_time_to_acknowledge_seconds_bucket", priority="high", le="5.0") == 0
    )
    assert (
        value(reg, "ecg_alarm_time_to_acknowledge_seconds_bucket", priority="high", le="10.0") == 1
    )
    assert value(reg, "ecg_alarms_active", priority="high") == 1  # acknowledged, still open


def test_sync_active_after_restore_and_per_bed_figures() -> None:
    policy = AlarmPolicy()
    for bed in ("b1", "b2"):
        _, t = policy_beats(policy, bed, T0, [0.8] * 10)
        policy.tick(bed, t + 5)
    restored = AlarmPolicy()
    restored.restore(policy.active())
    reg = CollectorRegistry()
    m = AlertingMetrics(reg)
    m.sync_active(restored.active())
    assert value(reg, "ecg_alarms_active", priority="high") == 2
    assert value(reg, "ecg_alarms_raised_total", type="asystole", priority="high") == 0

    m.observe_beat("b1", anomalous=True, hr_bpm=72.5)
    m.observe_beat("b1", anomalous=False, hr_bpm=None, cls="V")
    m.drop("invalid_beat")
    assert value(reg, "ecg_bed_beats_by_class_total", bed="b1", cls="V") == 1
    assert value(reg, "ecg_bed_beats_by_class_total", bed="b1", cls="unknown") == 1
    assert value(reg, "ecg_bed_heart_rate_bpm", bed="b1") == 72.5
    assert value(reg, "ecg_bed_beats_total", bed="b1") == 2
    assert value(reg, "ecg_bed_anomalous_beats_total", bed="b1") == 1
    assert value(reg, "ecg_alerting_dropped_messages_total", reason="invalid_beat") == 1


def test_exposition_names_follow_prometheus_conventions() -> None:
    reg = CollectorRegistry()
    m = AlertingMetrics(reg)
    policy = AlarmPolicy()
    changes, t = policy_beats(policy, "b1", T0, [0.8] * 10)
    changes += policy.tick("b1", t + 5)
    m.observe(changes)
    text = generate_latest(reg).decode()
    for line in (
        "# TYPE ecg_alarms_raised_total counter",
        'ecg_alarms_raised_total{priority="high",type="asystole"} 1.0',
        "# TYPE ecg_alarms_active gauge",
        "# TYPE ecg_alarm_time_to_acknowledge_seconds histogram",
    ):
        assert line in text
    kinds = {c.kind for c in changes}
    assert ChangeKind.RAISED in kinds and AlarmType.ASYSTOLE in {c.alarm.type for c in changes}
