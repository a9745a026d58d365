"""Drive a real `AlarmPolicy` with beats on the signal clock (no broker, no store)."""

from __future__ import annotations

from alerting.alarms import AlarmChange, BeatInput
from alerting.policy import AlarmPolicy


def policy_beats(
    policy: AlarmPolicy, bed: str, start: float, rrs: list[float]
) -> tuple[list[AlarmChange], float]:
    """Beats with these RR intervals after `start`, ticking the bed just before every beat;
    returns the changes and the last beat's time."""
    out: list[AlarmChange] = []
    t = start
    for i, rr in enumerate(rrs):
        t += rr
        out += policy.tick(bed, t - 0.01)
        out += policy.on_beat(BeatInput(bed, t, f"{bed}-{t:.3f}-{i}", False, rr_s=rr))
    return out, t
