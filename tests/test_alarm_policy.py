"""The alarm policy rule by rule, plus checks every scenario must pass (ids, cadence, evidence).

Ventricular criteria use the beat class (`cls == "V"`), never the anomaly score: an anomalous
beat is unusual, not ventricular, and only feeds the low-priority "unusual beats" advisory.
VT, VF, AF and SVT come from the detector's rhythm episodes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.alarms import (
    Alarm,
    AlarmChange,
    AlarmState,
    AlarmType,
    BeatInput,
    ChangeKind,
    EpisodeInput,
    Priority,
    TechnicalInput,
)
from alerting.policy import AlarmPolicy, BedLimits, PolicyConfig

T0 = 1_700_000_000.0


@dataclass
class Ward:
    """Drives a policy like the adapter does: beats in time order, a tick per sample chunk."""

    policy: AlarmPolicy = field(default_factory=AlarmPolicy)
    chunk_s: float = 0.1
    now: dict[str, float] = field(default_factory=dict)
    n: int = 0
    changes: list[AlarmChange] = field(default_factory=list)

    def _advance(self, bed: str, to: float) -> list[AlarmChange]:
        out: list[AlarmChange] = []
        t = self.now.get(bed, T0)
        while t + self.chunk_s <= to + 1e-6:
            t += self.chunk_s
            out += self.policy.tick(bed, t)
        self.now[bed] = max(t, self.now.get(bed, T0))
        return out

    def beat(
        self,
        bed: str,
        t: float,
        anomalous: bool = False,
        rr: float | None = None,
        score: float = 0.1,
        cls: str | None = "N",
    ) -> list[AlarmChange]:
        out = self._advance(bed, t)
        self.n += 1
        out += self.policy.on_beat(
            BeatInput(bed, t, f"{bed}-{self.n}", anomalous, rr_s=rr, score=score, cls=cls)
        )
        self.changes += out
        return out

    def rhythm(
        self,
        bed: str,
        start: float,
        rrs: list[float],
        anomalous: Callable[[int], bool] | list[bool] | None = None,
        pvc: Callable[[int], bool] | list[bool] | None = None,
    ) -> float:
        """Beats after `start` with the given RR intervals; returns the last beat's time.
        `anomalous` marks beats the anomaly score flags; `pvc` beats of class V (anomalous
        too, as a PVC usually is)."""
        t = start
        for i, rr in enumerate(rrs):
            t += rr
            flag = anomalous[i] if isinstance(anomalous, list) else bool(anomalous and anomalous(i))
            v = pvc[i] if isinstance(pvc, list) else bool(pvc and pvc(i))
            self.beat(bed, t, flag or v, rr, cls="V" if v else "N")
        return t

    def wait(self, bed: str, until: float) -> list[AlarmChange]:
        out = self._advance(bed, until)
        self.changes += out
        return out

    def event(self, bed: str, type_: str, active: bool, t: float) -> list[AlarmChange]:
        out = self._advance(bed, t)
        out += self.policy.on_technical(TechnicalInput(bed, type_, active, t))
        self.changes += out
        return out

    def episode(
        self, bed: str, type_: str, active: bool, t: float, **detail: object
    ) -> list[AlarmChange]:
        """The detector's rhythm episode (vt, vf, afib, svt) starts or ends at `t`."""
        out = self._advance(bed, t)
        out += self.policy.on_episode(EpisodeInput(bed, type_, active, t, detail))
        self.changes += out
        return out

    def raised(self, type_: AlarmType | None = None) -> list[Alarm]:
        return [
            c.alarm
            for c in self.changes
            if c.kind is ChangeKind.RAISED and (type_ is None or c.alarm.type is type_)
        ]

    def kinds(self, type_: AlarmType) -> list[ChangeKind]:
        return [c.kind for c in self.changes if c.alarm.type is type_]


def normal(
    ward: Ward, bed: str = "b1", seconds: float = 20.0, start: float = T0, rr: float = 0.8
) -> float:
    return ward.rhythm(bed, start, [rr] * int(seconds / rr))


# ---------------------------------------------------------------------------- scenarios
# Each scenario drives a ward and names the alarm type it must raise; the shared checks
# below run all of them.


def sc_asystole(w: Ward) -> AlarmType:
    last = normal(w)
    w.wait("b1", last + 6)
    return AlarmType.ASYSTOLE


def sc_vtach(w: Ward) -> AlarmType:
    """VT from the detector's episode (the beats during it are V beats at 133 bpm)."""
    last = normal(w)
    w.episode("b1", "vt", True, last + 0.45 * 5, hr_bpm=133.3, beats=5, onset_t=last + 0.45)
    last = w.rhythm("b1", last, [0.45] * 6, pvc=lambda i: True)
    w.episode("b1", "vt", False, last, hr_bpm=133.3, beats=6)
    normal(w, start=last, seconds=5)
    return AlarmType.VTACH


def sc_vtach_beats(w: Ward) -> AlarmType:
    """VT from 6 V beats at 133 bpm alone (the fallback for a detector without episodes)."""
    w.policy = AlarmPolicy(PolicyConfig(vt_from_beats=True))
    last = normal(w)
    last = w.rhythm("b1", last, [0.45] * 6, pvc=lambda i: True)
    normal(w, start=last, seconds=5)
    return AlarmType.VTACH


def sc_vfib(w: Ward) -> AlarmType:
    """VF: QRS detection stops; the detector finds VF from the waveform 3 s in."""
    last = normal(w)
    w.episode("b1", "vf", True, last + 3.0, hr_bpm=None, beats=None, onset_t=last + 0.5)
    w.wait("b1", last + 20)
    w.episode("b1", "vf", False, last + 20)
    normal(w, start=last + 20, seconds=5)
    return AlarmType.VFIB


def sc_afib(w: Ward) -> AlarmType:
    last = normal(w)
    w.episode("b1", "afib", True, last + 1, hr_bpm=96.0, beats=12)
    last = w.rhythm("b1", last, [0.5, 0.7, 0.55, 0.8, 0.45, 0.75, 0.6, 0.5] * 5)
    w.episode("b1", "afib", False, last, hr_bpm=98.0, beats=52)
    normal(w, start=last, seconds=10)
    return AlarmType.AFIB


def sc_svt(w: Ward) -> AlarmType:
    last = normal(w)
    w.episode("b1", "svt", True, last + 2.0, hr_bpm=150.0, beats=5)
    last = normal(w, start=last, seconds=6, rr=0.4)
    w.episode("b1", "svt", False, last)
    normal(w, start=last, seconds=10)
    return AlarmType.SVT


def sc_extreme_tachy(w: Ward) -> AlarmType:
    last = normal(w)
    normal(w, start=last, seconds=8, rr=0.35)
    return AlarmType.EXTREME_TACHY


def sc_extreme_brady(w: Ward) -> AlarmType:
    last = normal(w)
    normal(w, start=last, seconds=20, rr=1.7)
    return AlarmType.EXTREME_BRADY


def sc_tachy(w: Ward) -> AlarmType:
    last = normal(w)
    normal(w, start=last, seconds=14, rr=0.46)  # 130 bpm
    return AlarmType.TACHY


def sc_brady(w: Ward) -> AlarmType:
    last = normal(w)
    normal(w, start=last, seconds=25, rr=1.33)  # 45 bpm
    return AlarmType.BRADY


def sc_frequent(w: Ward) -> AlarmType:
    last = normal(w)
    w.rhythm("b1", last, [0.8] * 40, pvc=lambda i: i % 2 == 1)  # ventricular bigeminy, 37/min
    return AlarmType.FREQUENT_PVCS


def sc_unusual(w: Ward) -> AlarmType:
    """Anomalous (unusual) beats of class N, 37 a minute: a low-priority advisory only."""
    last = normal(w)
    w.rhythm("b1", last, [0.8] * 40, anomalous=lambda i: i % 2 == 1)
    return AlarmType.UNUSUAL_BEATS


def sc_couplet(w: Ward) -> AlarmType:
    last = normal(w)
    last = w.rhythm("b1", last, [0.8, 0.6, 0.6, 1.0], pvc=[False, True, True, False])
    normal(w, start=last, seconds=15)
    return AlarmType.PVC_COUPLET


def sc_run(w: Ward) -> AlarmType:
    last = normal(w)
    last = w.rhythm("b1", last, [0.6, 0.6, 0.6, 1.0], pvc=[True, True, True, False])
    normal(w, start=last, seconds=15)
    return AlarmType.PVC_RUN


def sc_pause(w: Ward) -> AlarmType:
    last = normal(w)
    normal(w, start=last + 2.2, seconds=65)  # a 3.0 s RR
    return AlarmType.PAUSE


def sc_trend(w: Ward) -> AlarmType:
    # 10 min with one anomalous beat a minute, then 6 min with 5 a minute.
    last = w.rhythm("b1", T0, [0.8] * 750, anomalous=lambda i: i % 75 == 10)
    w.rhythm("b1", last, [0.8] * 450, anomalous=lambda i: i % 15 == 7)
    return AlarmType.ANOMALY_TREND


def sc_lead_off(w: Ward) -> AlarmType:
    last = normal(w)
    w.event("b1", "lead_off", True, last + 0.5)
    w.wait("b1", last + 10)
    w.event("b1", "lead_restored", True, last + 10)
    return AlarmType.LEAD_OFF


SCENARIOS = {
    f.__name__[3:]: f
    for f in (
        sc_asystole,
        sc_vtach,
        sc_vtach_beats,
        sc_vfib,
        sc_afib,
        sc_svt,
        sc_extreme_tachy,
        sc_extreme_brady,
        sc_tachy,
        sc_brady,
        sc_frequent,
        sc_unusual,
        sc_couplet,
        sc_run,
        sc_pause,
        sc_trend,
        sc_lead_off,
    )
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_check_scenario_raises_its_alarm_with_evidence(name: str) -> None:
    w = Ward()
    expected = SCENARIOS[name](w)
    raised = w.raised(expected)
    assert len(raised) == 1, [c.kind + ":" + c.alarm.type for c in w.changes]
    alarm = raised[0]
    assert alarm.priority is expected.priority
    assert alarm.state is AlarmState.ACTIVE and alarm.bed == "b1"
    if expected.priority is not Priority.TECHNICAL:
        assert alarm.evidence, "a physiological alarm carries its evidence"
    assert alarm.to_dict()["label"] == expected.label and expected.label


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_check_same_alarms_whatever_the_tick_cadence(name: str) -> None:
    """Like a streaming estimator: the chunk size (tick cadence) must not change the alarms."""
    results = []
    for chunk in (0.04, 0.1, 0.25):
        w = Ward(chunk_s=chunk)
        SCENARIOS[name](w)
        results.append([(a.id, a.type, round(a.started_at, 6)) for a in w.raised()])
    assert results[0] and results[0] == results[1] == results[2]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_check_ids_stable_and_dicts_round_trip(name: str) -> None:
    a, b = Ward(), Ward()
    SCENARIOS[name](a)
    SCENARIOS[name](b)
    assert [c.alarm.id for c in a.changes] == [c.alarm.id for c in b.changes]
    ids = [x.id for x in a.raised()]
    assert len(ids) == len(set(ids)), "every raised alarm has its own id"
    for change in a.changes:
        assert Alarm.from_dict(change.alarm.to_dict()) == change.alarm


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_check_ended_alarms_never_change_again(name: str) -> None:
    w = Ward()
    SCENARIOS[name](w)
    ended: set[str] = set()
    for kind, alarm in w.changes:
        assert alarm.id not in ended, f"{kind} after the end of {alarm.type}"
        if alarm.state is AlarmState.ENDED:
            ended.add(alarm.id)
            assert alarm.ended_at is not None and alarm.end_reason
    assert all(a.open for a in w.policy.active())


# ---------------------------------------------------------------------------- asystole
def test_asystole_exactly_when_four_seconds_pass() -> None:
    w = Ward()
    last = normal(w, rr=0.75)  # binary-exact times, so "exactly 4 s" is exact
    for t in (last + 3.0, last + 3.99, last + 3.999):
        assert AlarmType.ASYSTOLE not in {c.alarm.type for c in w.policy.tick("b1", t)}
    changes = w.policy.tick("b1", last + 4.0)
    (alarm,) = [
        c.alarm
        for c in changes
        if c.kind is ChangeKind.RAISED and c.alarm.type is AlarmType.ASYSTOLE
    ]
    assert alarm.started_at == last + 4.0
    assert alarm.evidence["last_beat_t"] == last
    assert alarm.evidence["criterion_met_at"] == last + 4.0


def test_asystole_not_on_a_lost_lead_and_clock_restarts_when_restored() -> None:
    w = Ward()
    last = normal(w)
    w.event("b1", "lead_off", True, last + 1.0)
    w.wait("b1", last + 30)
    assert not w.raised(AlarmType.ASYSTOLE) and not w.raised(AlarmType.PAUSE)
    w.event("b1", "lead_off", False, last + 30)
    w.wait("b1", last + 33.9)
    assert not w.raised(AlarmType.ASYSTOLE)
    w.wait("b1", last + 34.1)
    (alarm,) = w.raised(AlarmType.ASYSTOLE)
    assert alarm.started_at == pytest.approx(last + 34.0)


def test_asystole_latches_until_acknowledged() -> None:
    w = Ward()
    last = normal(w)
    w.wait("b1", last + 5)
    (alarm,) = w.raised(AlarmType.ASYSTOLE)
    normal(w, start=last + 5, seconds=5)
    assert w.policy.get(alarm.id).state is AlarmState.LATCHED
    (change,) = w.policy.acknowledge(alarm.id, last + 20, by="nurse A")
    assert change.kind is ChangeKind.ACKNOWLEDGED
    assert change.alarm.state is AlarmState.ENDED
    assert change.alarm.acknowledged_by == "nurse A" and change.alarm.end_reason == "acknowledged"
    assert w.policy.get(alarm.id) is None
    assert w.policy.acknowledge(alarm.id, last + 21) == []


def test_asystole_caught_from_a_late_beat_without_ticks() -> None:
    policy = AlarmPolicy()
    policy.on_beat(BeatInput("b1", T0, "x1", False, rr_s=0.8))
    changes = policy.on_beat(BeatInput("b1", T0 + 5, "x2", False, rr_s=5.0))
    kinds = [(c.kind, c.alarm.type) for c in changes]
    assert (ChangeKind.RAISED, AlarmType.ASYSTOLE) in kinds
    assert (ChangeKind.LATCHED, AlarmType.ASYSTOLE) in kinds


# ---------------------------------------------------------------------------- arrhythmias
def test_vt_from_beats_needs_five_v_beats_at_100_bpm() -> None:
    w = Ward(policy=AlarmPolicy(PolicyConfig(vt_from_beats=True)))
    last = normal(w)
    w.rhythm("b1", last, [0.45] * 4, pvc=lambda i: True)
    assert not w.raised(AlarmType.VTACH)
    assert len(w.raised(AlarmType.PVC_RUN)) == 1
    w.beat("b1", last + 5 * 0.45, True, 0.45, cls="V")
    (vt,) = w.raised(AlarmType.VTACH)
    assert vt.evidence["run_beats"] == 5 and vt.evidence["run_rate_bpm"] >= 100
    assert len(vt.evidence["beat_ids"]) == 5 and len(vt.evidence["scores"]) == 5
    assert vt.evidence["classes"] == ["V"] * 5 and vt.evidence["source"] == "beats"
    # the run alarm gave way to the VT alarm (chaining)
    assert ChangeKind.SUPPRESSED in w.kinds(AlarmType.PVC_RUN)


def test_v_beats_alone_are_a_run_by_default_vt_is_the_detectors_episode() -> None:
    w = Ward()
    last = normal(w)
    w.rhythm("b1", last, [0.45] * 8, pvc=lambda i: True)
    assert not w.raised(AlarmType.VTACH)
    assert [a.type for a in w.raised()] == [AlarmType.PVC_RUN]


def test_slow_ventricular_run_is_a_run_not_vt() -> None:
    w = Ward(policy=AlarmPolicy(PolicyConfig(vt_from_beats=True)))
    last = normal(w)
    w.rhythm("b1", last, [0.8] * 8, pvc=lambda i: True)  # 75 bpm
    assert not w.raised(AlarmType.VTACH)
    assert len(w.raised(AlarmType.PVC_RUN)) == 1


def test_anomalous_beats_alone_never_raise_vt_or_ectopy_alarms() -> None:
    """Changed rule: a run of anomalous beats is no longer VT (the score says unusual, not
    ventricular). 30 anomalous non-V beats at 133 bpm give the rate alarms only."""
    for cls in ("N", "S", "Q", None):
        w = Ward()
        last = normal(w)
        for i in range(30):
            w.beat("b1", last + 0.45 * (i + 1), True, 0.45, cls=cls)
        types = {a.type for a in w.raised()}
        assert types <= {AlarmType.TACHY, AlarmType.UNUSUAL_BEATS}, (cls, types)
        assert AlarmType.TACHY in types


def test_vt_episode_alarm_names_it_and_keeps_the_detector_evidence() -> None:
    w = Ward()
    last = normal(w)
    w.rhythm("b1", last, [0.375] * 5, pvc=lambda i: True)
    w.episode("b1", "vt", True, last + 2.0, hr_bpm=160.0, beats=5, onset_t=last, lead="MLII")
    (vt,) = w.raised(AlarmType.VTACH)
    assert vt.priority is Priority.HIGH and vt.started_at == last + 2.0
    assert vt.type.label == "VTACH" and vt.to_dict()["label"] == "VTACH"
    ev = vt.evidence
    assert ev["source"] == "episode" and ev["episode"] == "vt"
    assert ev["classes"] == ["N"] + ["V"] * 5  # the beats since onset (and the one at it)
    assert (ev["hr_bpm"], ev["beats"], ev["onset_t"], ev["lead"]) == (160.0, 5, last, "MLII")
    w.episode("b1", "vt", False, last + 9.0, hr_bpm=158.0, beats=20)
    assert w.policy.get(vt.id).state is AlarmState.LATCHED  # until acknowledged
    (ack,) = w.policy.acknowledge(vt.id, last + 30, by="nurse")
    assert ack.alarm.state is AlarmState.ENDED


def test_vt_episode_supersedes_extreme_tachy() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=3, rr=0.375)  # 160 bpm
    (ext,) = w.raised(AlarmType.EXTREME_TACHY)
    w.episode("b1", "vt", True, last, hr_bpm=160.0, beats=8)
    assert w.raised(AlarmType.VTACH)
    assert w.kinds(AlarmType.EXTREME_TACHY)[-1] is ChangeKind.SUPPRESSED
    assert w.policy.get(ext.id) is None, "one high alarm for one event, named VT"


def test_vf_replaces_the_asystole_its_missing_beats_look_like() -> None:
    w = Ward()
    last = normal(w)
    w.wait("b1", last + 4.5)  # QRS detection stopped: asystole after 4 s ...
    (asys,) = w.raised(AlarmType.ASYSTOLE)
    w.episode("b1", "vf", True, last + 5.0, onset_t=last + 0.5)  # ... then the VF detector
    (vf,) = w.raised(AlarmType.VFIB)
    assert vf.priority is Priority.HIGH and vf.type.label == "VFIB"
    assert w.kinds(AlarmType.ASYSTOLE)[-1] is ChangeKind.SUPPRESSED
    assert w.policy.get(asys.id) is None and w.policy.get(vf.id).state is AlarmState.ACTIVE
    w.wait("b1", last + 30)
    assert len(w.raised(AlarmType.ASYSTOLE)) == 1, "no asystole while VF goes on"
    assert not w.raised(AlarmType.EXTREME_BRADY) and len(w.raised(AlarmType.PAUSE)) == 1
    assert [a.type for a in w.policy.active()] == [AlarmType.VFIB]


def test_vf_first_then_no_asystole_and_asystole_after_vf_ends() -> None:
    w = Ward()
    last = normal(w)
    w.episode("b1", "vf", True, last + 3.0)
    w.wait("b1", last + 20)
    assert [a.type for a in w.raised()] == [AlarmType.PAUSE, AlarmType.VFIB]
    assert [a.type for a in w.policy.active()] == [AlarmType.VFIB]
    w.episode("b1", "vf", False, last + 20)  # VF ends in asystole: 4 s after VF
    w.wait("b1", last + 23.9)
    assert not w.raised(AlarmType.ASYSTOLE)
    w.wait("b1", last + 24.1)
    (asys,) = w.raised(AlarmType.ASYSTOLE)
    assert asys.started_at == pytest.approx(last + 24.0)


def test_a_new_lethal_condition_after_acknowledgement_sounds_again() -> None:
    """Re-alarm (IEC 60601-1-8): an acknowledged VT that turns into VF sounds as VFIB; an
    acknowledged VF alarm ends with its episode, so the next VF episode is raised anew (cudb
    cu19 before the VF rule: one VF episode over a tachycardia and the VF after it, the only
    announcement 60 s before the VF, acknowledged)."""
    w = Ward()
    last = normal(w)
    w.episode("b1", "vt", True, last + 1.0, hr_bpm=230.0, beats=5, onset_t=last)
    (vt,) = w.raised(AlarmType.VTACH)
    (ack,) = w.policy.acknowledge(vt.id, last + 10.0, by="nurse")
    assert ack.alarm.state is AlarmState.ACKNOWLEDGED
    w.episode("b1", "vf", True, last + 14.0, onset_t=last + 13.0)  # the label changes
    (vf,) = w.raised(AlarmType.VFIB)
    assert vf.state is AlarmState.ACTIVE and vf.started_at == last + 14.0
    w.episode("b1", "vt", False, last + 14.5)
    w.policy.acknowledge(vf.id, last + 30.0, by="nurse")
    w.episode("b1", "vf", False, last + 40.0)
    assert w.policy.get(vf.id) is None  # acknowledged, cause gone: ended
    w.episode("b1", "vf", True, last + 45.0, onset_t=last + 44.0)
    first, again = w.raised(AlarmType.VFIB)
    assert first.id == vf.id and again.id != vf.id and again.state is AlarmState.ACTIVE


def test_vf_alarms_through_artifact_other_episodes_do_not() -> None:
    w = Ward()
    last = normal(w)
    w.event("b1", "noisy", True, last + 0.5)
    (noisy,) = w.raised(AlarmType.NOISY)
    assert noisy.type.label.startswith("ARTIFACT")
    w.episode("b1", "vt", True, last + 1.0, hr_bpm=180.0, beats=6)
    w.episode("b1", "afib", True, last + 1.5)
    w.episode("b1", "svt", True, last + 1.6)
    w.wait("b1", last + 12)
    assert not w.raised(AlarmType.ASYSTOLE) and not w.raised(AlarmType.PAUSE)
    assert [a.type for a in w.raised()] == [AlarmType.NOISY], "VT/AF/SVT in artifact: ignored"
    w.episode("b1", "vf", True, last + 12.0)
    (vf,) = w.raised(AlarmType.VFIB)
    assert w.policy.get(vf.id).state is AlarmState.ACTIVE
    w.event("b1", "noisy", False, last + 14)
    # ignored, not queued: the episodes seen during the artifact raise nothing afterwards
    normal(w, start=last + 14, seconds=20)
    assert {a.type for a in w.raised()} == {AlarmType.NOISY, AlarmType.VFIB}
    assert w.policy.get(vf.id) is not None


def test_organised_vt_alarms_through_artifact_but_not_through_lead_off() -> None:
    """The detector marks a VT it found as a regular V run inside `noisy` (slow VT looks like
    artifact to the quality index, mitdb 223) `organised`: it alarms like VF; without the mark,
    or under another technical condition, it does not."""
    w = Ward()
    last = normal(w)
    w.event("b1", "noisy", True, last + 0.5)
    w.episode("b1", "vt", True, last + 1.0, hr_bpm=110.0, beats=8)
    assert not w.raised(AlarmType.VTACH)
    w.episode("b1", "vt", False, last + 3.0, hr_bpm=110.0, beats=9)
    w.episode("b1", "vt", True, last + 4.0, hr_bpm=110.0, beats=8, organised=True)
    (vt,) = w.raised(AlarmType.VTACH)
    assert vt.evidence["organised"] is True and w.policy.get(vt.id).state is AlarmState.ACTIVE
    w.episode("b1", "vt", False, last + 9.0, hr_bpm=110.0, beats=20)
    assert w.policy.get(vt.id).state is AlarmState.LATCHED
    w2 = Ward()
    last = normal(w2)
    w2.event("b1", "noisy", True, last + 0.5)
    w2.event("b1", "lead_off", True, last + 0.6)
    w2.episode("b1", "vt", True, last + 1.0, hr_bpm=110.0, beats=8, organised=True)
    assert not w2.raised(AlarmType.VTACH)


def test_vt_found_on_clean_beats_alarms_though_its_event_comes_after_the_noisy_one() -> None:
    """mitdb 205 @298.8, 210 @421.0: the VT starts on beats the detector judged clean, the
    artifact right after; the `noisy` event (back-dated) reaches the policy first. The VT still
    alarms; one whose onset lies inside the artifact does not."""
    w = Ward()
    last = normal(w)
    w.event("b1", "noisy", True, last + 1.0)
    w.episode("b1", "vt", True, last + 2.5, onset_t=last + 0.2, hr_bpm=160.0, beats=5)
    (vt,) = w.raised(AlarmType.VTACH)
    assert vt.started_at == pytest.approx(last + 2.5)
    w2 = Ward()
    last = normal(w2)
    w2.event("b1", "noisy", True, last + 1.0)
    w2.episode("b1", "vt", True, last + 2.5, onset_t=last + 1.2, hr_bpm=160.0, beats=5)
    assert not w2.raised(AlarmType.VTACH)


def test_vf_that_ends_in_artifact_ends_its_alarm_so_the_next_vf_is_announced() -> None:
    """cudb cu03: VF raised, artifact starts (the rules reset), VF ends during the artifact.
    Its alarm must end (latch), or the acknowledged alarm stays open and the next, real VF is
    only an update of it: no announcement."""
    w = Ward()
    last = normal(w)
    w.episode("b1", "vf", True, last + 2.0)
    (vf,) = w.raised(AlarmType.VFIB)
    w.event("b1", "noisy", True, last + 4.0)
    assert w.policy.get(vf.id).state is AlarmState.ACTIVE, "VF goes on through artifact"
    w.policy.acknowledge(vf.id, last + 5.0, by="nurse")
    w.episode("b1", "vf", False, last + 8.0)
    assert w.policy.get(vf.id) is None, "acknowledged and its cause ended: over"
    w.event("b1", "noisy", False, last + 10.0)
    last = normal(w, start=last + 10.0, seconds=20)
    w.episode("b1", "vf", True, last + 1.0)
    first, second = w.raised(AlarmType.VFIB)
    assert second.id != first.id and w.policy.get(second.id).state is AlarmState.ACTIVE
    # unacknowledged VF ending in artifact latches (high alarms stay until acknowledged)
    w.event("b1", "noisy", True, last + 3.0)
    w.episode("b1", "vf", False, last + 6.0)
    assert w.policy.get(second.id).state is AlarmState.LATCHED


def test_ectopy_and_rate_during_artifact_are_ignored_not_queued() -> None:
    w = Ward()
    last = normal(w)
    w.event("b1", "noisy", True, last + 0.1)
    last = w.rhythm("b1", last, [0.6] * 4 + [0.46] * 20, pvc=[False, True, True] + [False] * 21)
    w.event("b1", "noisy", False, last + 0.1)
    last = normal(w, start=last + 0.1, seconds=8)
    assert [a.type for a in w.raised()] == [AlarmType.NOISY]


def test_episode_going_on_through_artifact() -> None:
    """An AF announced before an artifact is not announced again after it (one AF alarm per
    episode, not one per artifact); a VT going on through it sounds again (high)."""
    w = Ward()
    t = normal(w)
    w.episode("b1", "afib", True, t, hr_bpm=110.0)
    (af,) = w.raised(AlarmType.AFIB)
    t = normal(w, start=t, seconds=5)
    w.event("b1", "noisy", True, t)
    assert w.kinds(AlarmType.AFIB)[-1] is ChangeKind.SUPPRESSED
    t = normal(w, start=t, seconds=4)
    w.event("b1", "noisy", False, t)
    t = normal(w, start=t, seconds=4)
    assert len(w.raised(AlarmType.AFIB)) == 1
    w.episode("b1", "vt", True, t, hr_bpm=170.0)
    (vt,) = w.raised(AlarmType.VTACH)
    w.policy.acknowledge(vt.id, t + 0.5)
    t = normal(w, start=t, seconds=2)
    w.event("b1", "noisy", True, t)
    assert w.policy.get(vt.id) is None  # acknowledged, then suppressed by the artifact
    t = normal(w, start=t, seconds=3)
    w.event("b1", "noisy", False, t)
    again = w.raised(AlarmType.VTACH)
    assert len(again) == 2 and again[1].evidence["resumed"] is True
    assert again[1].started_at == t
    w.episode("b1", "vt", False, t + 1)
    w.episode("b1", "afib", False, t + 1)
    t = normal(w, start=t, seconds=PolicyConfig().episode_hold_s + 5)
    w.episode("b1", "afib", True, t)
    assert len(w.raised(AlarmType.AFIB)) == 2, "a new AF episode after the hold is announced"


def test_af_alarm_held_through_short_breaks_then_ends() -> None:
    w = Ward()
    last = normal(w)
    w.episode("b1", "afib", True, last, hr_bpm=104.0, beats=10)
    (af,) = w.raised(AlarmType.AFIB)
    assert af.priority is Priority.MEDIUM and af.type.label == "AFIB"
    last = w.rhythm("b1", last, [0.5, 0.7, 0.55, 0.8, 0.45, 0.75] * 8)
    w.episode("b1", "afib", False, last)
    last2 = normal(w, start=last, seconds=60)
    w.episode("b1", "afib", True, last2)  # back within episode_hold_s: the same alarm
    assert len(w.raised(AlarmType.AFIB)) == 1
    assert w.policy.get(af.id).evidence["occurrences"] == 2
    w.episode("b1", "afib", False, last2)
    hold = PolicyConfig().episode_hold_s
    last = normal(w, start=last2, seconds=hold - 5)
    assert w.policy.get(af.id) is not None
    normal(w, start=last, seconds=10)
    assert w.policy.get(af.id) is None and w.kinds(AlarmType.AFIB)[-1] is ChangeKind.ENDED


def test_svt_supersedes_the_tachy_it_explains() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=14, rr=0.46)  # 130 bpm
    (tachy,) = w.raised(AlarmType.TACHY)
    w.episode("b1", "svt", True, last, hr_bpm=130.0, beats=9)
    assert w.raised(AlarmType.SVT)
    assert w.policy.get(tachy.id) is None
    normal(w, start=last, seconds=5, rr=0.46)
    assert len(w.raised(AlarmType.TACHY)) == 1, "no tachy beside the SVT that explains it"


def test_episodes_also_come_through_on_technical() -> None:
    policy = AlarmPolicy()
    detail = '{"hr_bpm": 170.0, "beats": 7}'
    out = policy.on_technical(TechnicalInput("b1", "vt", True, T0, detail=detail))
    ((kind, alarm),) = out
    assert kind is ChangeKind.RAISED and alarm.type is AlarmType.VTACH
    assert alarm.evidence["hr_bpm"] == 170.0 and alarm.evidence["beats"] == 7
    out = policy.on_technical(TechnicalInput("b1", "vt", False, T0 + 5, detail="not json"))
    assert [c.kind for c in out] == [ChangeKind.LATCHED]


def test_beats_without_class_count_for_heart_rate_only() -> None:
    w = Ward()
    t = T0
    for i in range(60):
        t += 0.45 if i >= 20 else 0.8
        w.beat("b1", t, anomalous=False, rr=0.45 if i >= 20 else 0.8, cls=None)
    assert {a.type for a in w.raised()} == {AlarmType.TACHY}


def test_extreme_tachy_within_three_seconds_and_suppresses_tachy() -> None:
    w = Ward()
    onset = normal(w)
    normal(w, start=onset, seconds=6, rr=0.375)  # 160 bpm
    (alarm,) = w.raised(AlarmType.EXTREME_TACHY)
    assert alarm.started_at - onset <= 3.0
    assert w.policy.get(alarm.id).state is AlarmState.ACTIVE
    tachy = [a.id for a in w.policy.active() if a.type is AlarmType.TACHY]
    assert not tachy, "the lesser tachy alarm is chained under extreme tachy"


def test_extreme_brady() -> None:
    w = Ward()
    last = normal(w)
    normal(w, start=last, seconds=12, rr=1.7)  # 35 bpm
    assert len(w.raised(AlarmType.EXTREME_BRADY)) == 1
    assert not [a for a in w.policy.active() if a.type is AlarmType.BRADY]


def test_debounce_a_few_fast_beats_raise_nothing() -> None:
    w = Ward()
    last = normal(w)
    last = w.rhythm("b1", last, [0.3, 0.3])
    normal(w, start=last, seconds=10)
    assert not w.raised()


def test_single_anomalous_beats_raise_nothing() -> None:
    w = Ward()
    w.rhythm("b1", T0, [0.8] * 60, anomalous=lambda i: i % 10 == 5)  # 7.5 per minute
    assert not w.raised()


def test_tachy_ends_by_itself_with_hysteresis() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=14, rr=0.46)  # 130 bpm
    (alarm,) = w.raised(AlarmType.TACHY)
    last = normal(w, start=last, seconds=5, rr=0.52)  # 115 bpm: inside the 5 bpm hysteresis
    assert w.policy.get(alarm.id) is not None
    last = normal(w, start=last, seconds=28, rr=0.8)
    assert w.policy.get(alarm.id) is not None, "back inside, but not for 30 s yet"
    normal(w, start=last, seconds=4, rr=0.8)
    assert w.policy.get(alarm.id) is None
    assert w.kinds(AlarmType.TACHY)[-1] is ChangeKind.ENDED


def test_limits_are_per_bed() -> None:
    w = Ward()
    w.policy.set_limits("b2", BedLimits(low_bpm=50, high_bpm=140))
    for bed in ("b1", "b2"):
        last = normal(w, bed)
        normal(w, bed, start=last, seconds=14, rr=0.46)  # 130 bpm
    beds = {a.bed for a in w.raised(AlarmType.TACHY)}
    assert beds == {"b1"}
    assert w.policy.limits("b2").high_bpm == 140
    assert w.policy.limits("b1") == PolicyConfig().default_limits


def test_frequent_pvcs_above_the_bed_limit() -> None:
    w = Ward()
    w.policy.set_limits("b2", BedLimits(pvcs_per_min=40))
    for bed in ("b1", "b2"):
        w.rhythm(bed, T0, [0.8] * 80, pvc=lambda i: i % 2 == 1)  # 37.5 per minute
    (alarm,) = w.raised(AlarmType.FREQUENT_PVCS)
    assert alarm.bed == "b1" and alarm.evidence["pvcs"] == 11
    assert alarm.priority is Priority.MEDIUM


def test_unusual_beats_are_a_low_advisory_above_the_bed_limit() -> None:
    """Changed rule: frequent anomalous beats were a medium alarm; now a low advisory."""
    w = Ward()
    w.policy.set_limits("b2", BedLimits(anomalies_per_min=40))
    for bed in ("b1", "b2"):
        w.rhythm(bed, T0, [0.8] * 80, anomalous=lambda i: i % 2 == 1)  # 37.5 per minute
    (alarm,) = w.raised(AlarmType.UNUSUAL_BEATS)
    assert alarm.bed == "b1" and alarm.evidence["unusual"] == 11
    assert alarm.priority is Priority.LOW
    assert {a.type for a in w.raised()} == {AlarmType.UNUSUAL_BEATS}


def test_frequent_pvcs_is_one_alarm_while_they_hover_at_the_limit() -> None:
    w = Ward()
    last = normal(w)
    # ~12 PVCs a minute, then ~7 (below 80 % of the limit) for 40 s, then ~12 again
    last = w.rhythm("b1", last, [0.8] * 150, pvc=lambda i: i % 6 == 3)
    last = w.rhythm("b1", last, [0.8] * 50, pvc=lambda i: i % 10 == 3)
    last = w.rhythm("b1", last, [0.8] * 150, pvc=lambda i: i % 6 == 3)
    assert len(w.raised(AlarmType.FREQUENT_PVCS)) == 1
    normal(w, start=last, seconds=PolicyConfig().rate_clear_s + 62)
    assert w.kinds(AlarmType.FREQUENT_PVCS)[-1] is ChangeKind.ENDED


def test_couplets_in_a_burst_are_one_alarm_then_it_ends() -> None:
    w = Ward()
    last = normal(w)
    for _ in range(3):
        last = w.rhythm("b1", last, [0.8, 0.6, 0.6, 1.0], pvc=[False, True, True, False])
    (alarm,) = w.raised(AlarmType.PVC_COUPLET)
    assert alarm.evidence["classes"][-2:] == ["V", "V"]
    assert w.policy.get(alarm.id).evidence["occurrences"] == 3
    # couplets every 2 minutes stay one held alarm (the bedside "one condition")
    for _ in range(4):
        last = normal(w, start=last, seconds=120)
        last = w.rhythm("b1", last, [0.8, 0.6, 0.6, 1.0], pvc=[False, True, True, False])
    assert len(w.raised(AlarmType.PVC_COUPLET)) == 1
    normal(w, start=last, seconds=PolicyConfig().ectopy_hold_s + 2)
    assert w.kinds(AlarmType.PVC_COUPLET)[-1] is ChangeKind.ENDED


def test_pause_then_asystole_chain() -> None:
    w = Ward()
    last = normal(w)
    w.wait("b1", last + 2.6)
    (pause,) = w.raised(AlarmType.PAUSE)
    assert pause.started_at == pytest.approx(last + 2.5)
    w.wait("b1", last + 4.1)
    assert w.raised(AlarmType.ASYSTOLE)
    assert ChangeKind.SUPPRESSED in w.kinds(AlarmType.PAUSE)


def test_pause_alone_does_not_raise_asystole() -> None:
    w = Ward()
    sc_pause(w)
    assert not w.raised(AlarmType.ASYSTOLE)
    assert w.kinds(AlarmType.PAUSE)[-1] is ChangeKind.ENDED


def test_trend_is_low_priority_and_needs_a_baseline() -> None:
    w = Ward()
    sc_trend(w)
    (alarm,) = w.raised(AlarmType.ANOMALY_TREND)
    assert alarm.priority is Priority.LOW
    assert alarm.evidence["recent_per_min"] >= 2 * alarm.evidence["baseline_per_min"]
    w2 = Ward()  # the same high rate from the start: no rising trend
    w2.rhythm("b1", T0, [0.8] * 1125, anomalous=lambda i: i % 15 == 7)
    assert not w2.raised(AlarmType.ANOMALY_TREND)


# ---------------------------------------------------------------------------- technical
@pytest.mark.parametrize(
    "event,type_",
    [
        ("lead_off", AlarmType.LEAD_OFF),
        ("signal_lost", AlarmType.SIGNAL_LOST),
        ("device_offline", AlarmType.DEVICE_OFFLINE),
        ("noisy", AlarmType.NOISY),
    ],
)
def test_technical_alarm_suppresses_physiological_ones(event: str, type_: AlarmType) -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=14, rr=0.46)
    (tachy,) = w.raised(AlarmType.TACHY)
    changes = w.event("b1", event, True, last + 0.1)
    assert [(c.kind, c.alarm.type) for c in changes] == [
        (ChangeKind.RAISED, type_),
        (ChangeKind.SUPPRESSED, AlarmType.TACHY),
    ]
    assert changes[0].alarm.priority is Priority.TECHNICAL
    normal(w, start=last + 0.1, seconds=10, rr=0.46)  # beats on a noisy signal: not judged
    assert len(w.raised(AlarmType.TACHY)) == 1
    ending = w.event("b1", event, False, last + 11)
    assert [(c.kind, c.alarm.type) for c in ending] == [(ChangeKind.ENDED, type_)]


def test_technical_suppression_latches_an_unacknowledged_high_alarm() -> None:
    w = Ward()
    last = normal(w)
    w.wait("b1", last + 4.5)
    (asys,) = w.raised(AlarmType.ASYSTOLE)
    w.event("b1", "lead_off", True, last + 5)
    assert w.policy.get(asys.id).state is AlarmState.LATCHED


def test_restoring_events_and_ignored_event_types() -> None:
    w = Ward()
    w.event("b1", "device_offline", True, T0 + 1)
    assert w.event("b1", "device_online", True, T0 + 2)[0].kind is ChangeKind.ENDED
    for ignored in ("gap", "duplicate", "out_of_order", "anomaly", "bogus"):
        assert w.policy.on_technical(TechnicalInput("b1", ignored, True, T0 + 3)) == []


# ---------------------------------------------------------------------------- behaviour
def test_acknowledged_medium_alarm_ends_when_its_cause_ends() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=14, rr=0.46)
    (tachy,) = w.raised(AlarmType.TACHY)
    (ack,) = w.policy.acknowledge(tachy.id, last, by="n")
    assert ack.alarm.state is AlarmState.ACKNOWLEDGED
    normal(w, start=last, seconds=34)
    assert w.kinds(AlarmType.TACHY)[-1] is ChangeKind.ENDED


def test_escalation_when_not_acknowledged_in_time() -> None:
    w = Ward()
    last = normal(w)
    normal(w, start=last, seconds=14, rr=0.46)
    (tachy,) = w.raised(AlarmType.TACHY)
    start = tachy.started_at
    assert w.policy.tick(None, start + 59.9) == []
    (esc,) = w.policy.tick(None, start + 60)
    assert esc.kind is ChangeKind.ESCALATED and esc.alarm.escalated
    assert w.policy.tick(None, start + 120) == []  # escalates once


def test_acknowledged_alarm_does_not_escalate() -> None:
    w = Ward()
    last = normal(w)
    normal(w, start=last, seconds=14, rr=0.46)
    (tachy,) = w.raised(AlarmType.TACHY)
    w.policy.acknowledge(tachy.id, tachy.started_at + 10)
    assert w.policy.tick(None, tachy.started_at + 100) == []


def test_realarm_after_silence() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=14, rr=0.46)
    (tachy,) = w.raised(AlarmType.TACHY)
    (sil,) = w.policy.silence("b1", last, 120)
    assert sil.kind is ChangeKind.SILENCED and sil.alarm.silenced_until == last + 120
    assert w.policy.tick(None, last + 119) == []  # silenced: no escalation either
    changes = w.policy.tick(None, last + 120)
    assert [c.kind for c in changes] == [ChangeKind.REALARMED, ChangeKind.ESCALATED]
    assert changes[0].alarm.silenced_until is None
    with pytest.raises(ValueError, match="seconds"):
        w.policy.silence("b1", last, 0)


def test_alarms_raised_during_silence_are_silenced_except_high() -> None:
    w = Ward()
    last = normal(w)
    w.policy.silence("b1", last, 120)
    last = normal(w, start=last, seconds=14, rr=0.46)
    (tachy,) = w.raised(AlarmType.TACHY)
    assert tachy.silenced_until == pytest.approx(T0 + 19.2 + 120)
    w.wait("b1", last + 5)
    (asys,) = w.raised(AlarmType.ASYSTOLE)
    assert asys.silenced_until is None


def test_lesser_state_alarm_comes_back_when_the_higher_one_ends() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=6, rr=0.375)  # 160 bpm: extreme tachy
    (ext,) = w.raised(AlarmType.EXTREME_TACHY)
    last = normal(w, start=last, seconds=36, rr=0.46)  # 130 bpm
    assert w.policy.get(ext.id).state is AlarmState.LATCHED
    assert [a.type for a in w.policy.active() if a.state is AlarmState.ACTIVE] == [AlarmType.TACHY]


def test_beds_are_independent() -> None:
    w = Ward()
    last = normal(w, "b1")
    normal(w, "b2")
    w.wait("b1", last + 5)
    assert {a.bed for a in w.raised(AlarmType.ASYSTOLE)} == {"b1"}
    assert w.policy.active("b2") == []


# ---------------------------------------------------------------------------- restart
def test_restore_after_restart_neither_loses_nor_duplicates() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=14, rr=0.46)
    w.policy.silence("b1", last, 5)
    before = {a.id: a for a in w.policy.active()}
    assert [a.type for a in before.values()] == [AlarmType.TACHY]

    w2 = Ward(policy=AlarmPolicy(), now=dict(w.now), n=w.n)
    w2.policy.restore(before.values())
    w2.policy.restore(before.values())  # idempotent
    assert {a.id for a in w2.policy.active()} == set(before)
    normal(w2, start=last, seconds=14, rr=0.46)  # the tachycardia goes on
    assert not w2.raised(), "no duplicate alarm after the restart"
    (tachy,) = w2.policy.active()
    assert tachy.id in before and tachy.evidence["occurrences"] == 2


def test_restored_alarm_not_seen_again_ends_and_high_latches() -> None:
    w = Ward()
    last = normal(w)
    last = normal(w, start=last, seconds=8, rr=0.375)
    w.event("b1", "noisy", True, last)  # latches extreme tachy
    w.event("b1", "noisy", False, last + 1)
    last = normal(w, start=last + 1, seconds=3)
    w.wait("b1", last + 4.5)  # asystole
    stored = w.policy.active()
    assert {a.type for a in stored} == {AlarmType.EXTREME_TACHY, AlarmType.ASYSTOLE}

    policy = AlarmPolicy()
    policy.restore(stored)
    changes: list[AlarmChange] = []
    t = last + 7
    for _ in range(40):
        t += 0.8
        changes += policy.on_beat(BeatInput("b1", t, f"r{t}", False, rr_s=0.8))
        changes += policy.tick(None, t)
    kinds = {(c.kind, c.alarm.type) for c in changes}
    assert (ChangeKind.LATCHED, AlarmType.ASYSTOLE) in kinds
    assert not [c for c in changes if c.kind is ChangeKind.RAISED]
    assert {a.type for a in policy.active()} == {AlarmType.EXTREME_TACHY, AlarmType.ASYSTOLE}


def test_restored_technical_alarm_ends_on_a_beat() -> None:
    policy = AlarmPolicy()
    changes = policy.on_technical(TechnicalInput("b1", "lead_off", True, T0))
    (lead,) = [c.alarm for c in changes]
    fresh = AlarmPolicy()
    fresh.restore([lead])
    out = fresh.on_beat(BeatInput("b1", T0 + 60, "z1", False, rr_s=0.8))
    assert [(c.kind, c.alarm.id) for c in out] == [(ChangeKind.ENDED, lead.id)]


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs,field_name",
    [
        ({"t": math.nan}, "t"),
        ({"rr_s": -1.0}, "rr_s"),
        ({"hr_bpm": 0.0}, "hr_bpm"),
        ({"bed": ""}, "bed"),
        ({"cls": "X"}, "cls"),
        ({"cls": "v"}, "cls"),
    ],
)
def test_bad_beats_are_rejected_naming_the_field(kwargs: dict, field_name: str) -> None:
    base = {"bed": "b1", "t": T0, "beat_id": "x", "anomalous": False}
    with pytest.raises(ValueError, match=field_name):
        BeatInput(**{**base, **kwargs})


@pytest.mark.parametrize(
    "kwargs,field_name",
    [
        ({"type": "noisy"}, "type"),
        ({"t": math.inf}, "t"),
        ({"bed": ""}, "bed"),
        ({"detail": ["hr_bpm"]}, "detail"),
    ],
)
def test_bad_episodes_are_rejected_naming_the_field(kwargs: dict, field_name: str) -> None:
    base = {"bed": "b1", "type": "vt", "active": True, "t": T0}
    with pytest.raises(ValueError, match=field_name):
        EpisodeInput(**{**base, **kwargs})


def test_every_alarm_type_has_a_priority_and_a_label() -> None:
    for type_ in AlarmType:
        assert type_.priority in Priority and type_.label


@pytest.mark.parametrize(
    "kwargs,field_name",
    [
        ({"asystole_s": 0}, "asystole_s"),
        ({"pause_s": 5.0}, "pause_s"),
        ({"vt_min_beats": 2}, "run_min_beats"),
        ({"hr_confirm_beats": 0}, "hr_confirm_beats"),
        ({"rate_hysteresis": 1.5}, "rate_hysteresis"),
        ({"event_hold_s": -1}, "event_hold_s"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(kwargs: dict, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        PolicyConfig(**kwargs)


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="low_bpm"):
        BedLimits(low_bpm=130, high_bpm=120)
    with pytest.raises(ValueError, match="anomalies_per_min"):
        BedLimits(anomalies_per_min=0)
    with pytest.raises(ValueError, match="pvcs_per_min"):
        BedLimits(pvcs_per_min=math.nan)
    with pytest.raises(TypeError, match="limits"):
        AlarmPolicy().set_limits("b1", {"low_bpm": 40})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- properties
_segment = st.tuples(
    st.sampled_from([0.3, 0.375, 0.46, 0.6, 0.8, 1.0, 1.4, 1.7, 2.7, 4.5]),  # RR (s)
    st.integers(min_value=1, max_value=12),  # beats
    st.sampled_from([0, 1, 2, 3]),  # every n-th beat anomalous (0: none)
    st.sampled_from([None, "lead_off", "noisy", "signal_lost", "vt", "vf", "afib", "svt"]),
    st.booleans(),  # the marked beats are PVCs (class V), not only anomalous
)


def _drive(segments: list[tuple[float, int, int, str | None, bool]], chunk_s: float) -> Ward:
    w = Ward(chunk_s=chunk_s)
    t = T0
    w.beat("b1", t)  # monitoring starts with a beat at a time that does not depend on ticks
    for rr, n, every, event, pvc in segments:
        marked = lambda i, every=every: every > 0 and i % every == 0  # noqa: E731
        t = w.rhythm("b1", t, [rr] * n, pvc=marked if pvc else None, anomalous=marked)
        if event in ("vt", "vf", "afib", "svt"):
            w.episode("b1", event, True, t + 0.1, hr_bpm=60 / rr)
            t += 3.0
            w.episode("b1", event, False, t)
        elif event is not None:
            w.event("b1", event, True, t + 0.1)
            t += 3.0
            w.event("b1", event, False, t)
    w.wait("b1", t + 5.0)
    return w


@settings(max_examples=60, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=12))
def test_property_invariants_hold_for_any_rhythm(segments: list) -> None:
    w = _drive(segments, 0.1)
    ended: set[str] = set()
    raised: set[str] = set()
    for kind, alarm in w.changes:
        assert alarm.id not in ended
        assert alarm.priority is alarm.type.priority
        if kind is ChangeKind.RAISED:
            assert alarm.id not in raised
            raised.add(alarm.id)
        if not alarm.open:
            ended.add(alarm.id)
    active = w.policy.active()
    keys = [(a.bed, a.type) for a in active]
    assert len(keys) == len(set(keys)), "one open alarm per bed and type"
    present = [
        a
        for a in active
        if a.state in (AlarmState.ACTIVE, AlarmState.ACKNOWLEDGED)
        and a.priority is not Priority.TECHNICAL
    ]
    for a in present:
        for b in present:
            assert not (a.priority.rank > b.priority.rank), "chaining: no lesser alarm beside"


@settings(max_examples=25, deadline=None)
@given(st.lists(_segment, min_size=1, max_size=8))
def test_property_tick_cadence_does_not_change_raised_alarms(segments: list) -> None:
    fine = [(a.id, a.type) for a in _drive(segments, 0.05).raised()]
    coarse = [(a.id, a.type) for a in _drive(segments, 0.5).raised()]
    assert fine == coarse


def test_a_restoring_event_without_a_condition_keeps_the_analysis() -> None:
    """device_online / lead_restored with nothing to restore (a retained status, a restart) must
    not reset the criteria, or the asystole clock would restart."""
    w = Ward()
    last = normal(w)
    w.event("b1", "device_online", True, last + 2.0)
    w.event("b1", "lead_restored", True, last + 3.0)
    w.wait("b1", last + 4.2)
    (alarm,) = w.raised(AlarmType.ASYSTOLE)
    assert alarm.started_at == pytest.approx(last + 4.0)


def test_a_condition_named_by_its_own_chain_does_not_sound_again_later() -> None:
    """Ventricular bigeminy with couplets: the couplet alarm covers the frequent PVCs (Philips'
    chain: run > pair > PVCs/min); when it ends, the same ongoing ectopy is not a new alarm."""
    w = Ward()
    last = normal(w)
    last = w.rhythm("b1", last, [0.8, 0.6, 0.6, 1.0], pvc=[False, True, True, False])
    last = w.rhythm("b1", last, [0.8] * 600, pvc=lambda i: i % 2 == 1)  # 8 min of bigeminy
    assert [a.type for a in w.raised()] == [AlarmType.PVC_COUPLET]  # (PVCs are not "unusual")
    assert w.kinds(AlarmType.PVC_COUPLET)[-1] is ChangeKind.ENDED


def test_medium_rate_limits_need_ten_seconds_high_ones_two_beats() -> None:
    w = Ward()
    onset = normal(w)
    last = normal(w, start=onset, seconds=9, rr=0.46)  # 130 bpm for 9 s: not yet
    assert not w.raised(AlarmType.TACHY)
    normal(w, start=last, seconds=5, rr=0.46)
    (tachy,) = w.raised(AlarmType.TACHY)  # 10 s after the 4-beat rate passed the limit
    assert 11.5 <= tachy.started_at - onset <= 12.5
    w2 = Ward()
    onset = normal(w2)
    normal(w2, start=onset, seconds=3, rr=0.375)  # 160 bpm: extreme tachy at once
    (ext,) = w2.raised(AlarmType.EXTREME_TACHY)
    assert ext.started_at - onset <= 3.0


def test_no_pause_right_after_analysis_restarts_but_asystole_still() -> None:
    w = Ward()
    last = normal(w)
    w.event("b1", "noisy", True, last + 0.5)
    w.event("b1", "noisy", False, last + 5.0)
    w.wait("b1", last + 8.0)  # 3 s without a beat after the artifact: no "pause" between beats
    assert [a.type for a in w.raised()] == [AlarmType.NOISY]
    w.wait("b1", last + 9.1)  # but 4 s without a beat is asystole
    assert w.raised(AlarmType.ASYSTOLE)


def test_beats_sent_before_a_late_end_of_artifact_restart_the_asystole_clock() -> None:
    """The detector knows an artifact ended only some seconds after it did: the beats it sent
    meanwhile (ignored, the bed was still noisy) prove the heart beats; no asystole 4 s after
    the reported end."""
    w = Ward()
    last = normal(w)
    w.event("b1", "noisy", True, last + 0.5)
    last = normal(w, start=last, seconds=8)  # beats, not judged
    w.event("b1", "noisy", False, last - 3.5)  # reported late: it ended 3.5 s ago
    last = normal(w, start=last + 0.7, seconds=10)  # the next beat 0.7 s after the last
    assert [a.type for a in w.raised()] == [AlarmType.NOISY]
    w.wait("b1", last + 4.1)
    (asys,) = w.raised(AlarmType.ASYSTOLE)
    assert asys.started_at == pytest.approx(last + 4.0)
