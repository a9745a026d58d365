"""The SQLite alarm store: WAL, idempotent upserts, queries, restart and crash durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from alerting.alarms import Alarm, AlarmChange, AlarmState, AlarmType, ChangeKind
from alerting.policy import AlarmPolicy
from alerting.store import AlarmStore
from tests.helpers.policy import policy_beats

T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parent.parent


def tachy_episode(policy: AlarmPolicy, bed: str = "b1") -> tuple[list[AlarmChange], float]:
    a, t = policy_beats(policy, bed, T0, [0.8] * 25)
    b, t = policy_beats(policy, bed, t, [0.46] * 30)  # 14 s at 130 bpm (medium limits need 10 s)
    return a + b, t


def test_wal_mode_and_round_trip(tmp_path: Path) -> None:
    with AlarmStore(tmp_path / "alarms.sqlite") as store:
        assert store.journal_mode == "wal"
        changes, _ = tachy_episode(AlarmPolicy())
        assert store.apply(changes) == len(changes)
        (alarm,) = [c.alarm for c in changes if c.kind is ChangeKind.RAISED]
        assert store.get(alarm.id) == alarm
        assert store.get("nope") is None


def test_upsert_is_idempotent_and_never_goes_back(tmp_path: Path) -> None:
    policy = AlarmPolicy()
    changes, t = tachy_episode(policy)
    (alarm,) = policy.active()
    ended = policy.acknowledge(alarm.id, t, "n")[0].alarm
    with AlarmStore(tmp_path / "a.sqlite") as store:
        store.save(alarm)
        store.save(alarm)
        store.save(ended)
        store.save(alarm)  # an older version arriving late must not win
        assert store.count() == 1
        assert store.get(alarm.id).state is AlarmState.ACKNOWLEDGED
        store.apply(changes)
        store.apply(changes)
        assert store.count() == 1
        assert [c["kind"] for c in store.changes(alarm.id)] == ["raised"]


def test_query_filters(tmp_path: Path) -> None:
    policy = AlarmPolicy()
    changes: list[AlarmChange] = []
    for bed in ("b1", "b2"):
        c, t = tachy_episode(policy, bed)
        changes += c
        changes += policy.tick(bed, t + 5)  # asystole on both beds
    with AlarmStore(tmp_path / "a.sqlite") as store:
        store.apply(changes)
        # per bed: tachy, then pause and asystole (which chain over the tachy and the pause)
        assert store.count() == 6
        assert {a.bed for a in store.query(bed="b2")} == {"b2"}
        assert {a.type for a in store.query(priority="high")} == {AlarmType.ASYSTOLE}
        assert len(store.query(type="tachy")) == 2
        assert len(store.query(type="tachy", bed="b1")) == 1
        assert len(store.query(state="active")) == 2
        assert {a.end_reason for a in store.query(type="tachy")} == {"suppressed"}
        newest = store.query(limit=1)
        assert len(newest) == 1 and newest[0].type is AlarmType.ASYSTOLE
        starts = sorted(a.started_at for a in store.query())
        assert {(a.bed, a.type) for a in store.query(since=starts[-1])} == {
            ("b1", AlarmType.ASYSTOLE),
            ("b2", AlarmType.ASYSTOLE),
        }
        assert {(a.bed, a.type) for a in store.query(until=starts[0] + 1e-3)} == {
            ("b1", AlarmType.TACHY),
            ("b2", AlarmType.TACHY),
        }
        with pytest.raises(ValueError, match="limit"):
            store.query(limit=0)


def test_acknowledgements_are_recorded_once(tmp_path: Path) -> None:
    policy = AlarmPolicy()
    changes, t = tachy_episode(policy)
    (alarm,) = policy.active()
    changes += policy.acknowledge(alarm.id, t + 3, by="nurse B")
    with AlarmStore(tmp_path / "a.sqlite") as store:
        store.apply(changes)
        store.apply(changes)
        store.record_ack(alarm.id, t + 3, "nurse B")
        assert store.acknowledgements(alarm.id) == [
            {"alarm_id": alarm.id, "at": t + 3, "by": "nurse B"}
        ]
        assert store.get(alarm.id).acknowledged_by == "nurse B"


def test_restart_neither_loses_nor_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite"
    policy = AlarmPolicy()
    store = AlarmStore(path)
    changes, t = tachy_episode(policy)
    store.apply(changes)
    before = {a.id: a for a in store.query()}
    assert [a.type for a in before.values()] == [AlarmType.TACHY]
    store.close()

    store = AlarmStore(path)  # restart 1, with a tachycardia alarm open
    assert {a.id: a for a in store.query()} == before
    policy = AlarmPolicy()
    policy.restore(store.active())
    more, t = policy_beats(policy, "b1", t, [0.46] * 30)  # the tachycardia goes on
    store.apply(more)
    assert not [c for c in more if c.kind is ChangeKind.RAISED]
    assert store.count() == 1 and store.get(next(iter(before))).evidence["occurrences"] == 2
    asys = policy.tick("b1", t + 4.5)
    store.apply(asys)
    (asystole,) = [c.alarm for c in asys if c.alarm.type is AlarmType.ASYSTOLE]
    store.close()

    store = AlarmStore(path)  # restart 2, with an asystole alarm open
    policy = AlarmPolicy()
    policy.restore(store.active())
    assert [a.id for a in policy.active()] == [asystole.id]
    again: list[AlarmChange] = []
    for k in range(1, 60):
        again += policy.tick("b1", t + 5 + k * 0.1)  # still no beat after the restart
    store.apply(again)
    assert not [
        c for c in again if c.kind is ChangeKind.RAISED and c.alarm.type is AlarmType.ASYSTOLE
    ]
    assert [c.kind for c in again if c.alarm.id == asystole.id] == [ChangeKind.UPDATED]
    assert len(store.query(type="asystole")) == 1
    assert store.count() == 3  # tachy, pause, asystole: nothing lost, nothing doubled
    store.close()


CHILD = textwrap.dedent("""
    import sys, time
    from alerting.alarms import BeatInput
    from alerting.policy import AlarmPolicy
    from alerting.store import AlarmStore
    store = AlarmStore(sys.argv[1])
    policy = AlarmPolicy()
    t = 1_700_000_000.0
    changes = []
    for i in range(60):
        rr = 0.8 if i < 25 else 0.46
        t += rr
        changes += policy.on_beat(BeatInput("b1", t, f"k{i}", False, rr_s=rr))
    changes += policy.tick("b1", t + 4.5)
    store.apply(changes)
    print(len(changes), flush=True)
    time.sleep(60)
""")


def test_committed_alarms_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "alarms.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        n = int(proc.stdout.readline())  # the child has committed
        assert n > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    with AlarmStore(path) as store:
        assert [a.type.value for a in store.active()] == ["asystole"]
        assert sorted(a.type.value for a in store.query()) == ["asystole", "pause", "tachy"]


def test_one_writer_and_concurrent_readers(tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "a.sqlite")
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                store.query(limit=50)
                store.active()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    try:
        for i in range(200):
            store.save(Alarm.new(f"b{i % 7}", AlarmType.PAUSE, T0 + i, {"i": i}))
    finally:
        done.set()
        for r in readers:
            r.join(timeout=10)
    assert not errors
    assert store.count() == 200
    store.close()


def test_newest_version_wins_whatever_the_clocks(tmp_path: Path) -> None:
    """An acknowledgement at wall time, then a change stamped with an earlier signal time (an
    accelerated replay): the store keeps the later change."""
    first = Alarm.new("b1", AlarmType.TACHY, T0 + 100, {})
    acked = first.evolve(
        state=AlarmState.ACKNOWLEDGED, acknowledged_at=T0 + 500, updated_at=T0 + 500
    )
    ended = acked.evolve(state=AlarmState.ENDED, ended_at=T0 + 200, updated_at=T0 + 200)
    with AlarmStore(tmp_path / "a.sqlite") as store:
        for alarm in (first, acked, ended, acked, first):
            store.save(alarm)
        stored = store.get(first.id)
        assert stored == ended and stored.version == 2


def test_opens_a_store_written_before_versions(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE alarms (id TEXT PRIMARY KEY, bed TEXT NOT NULL, type TEXT NOT NULL,"
        " priority TEXT NOT NULL, state TEXT NOT NULL, started_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, ended_at REAL, acknowledged_at REAL,"
        " acknowledged_by TEXT, escalated INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL)"
    )
    db.commit()
    db.close()
    with AlarmStore(path) as store:
        alarm = Alarm.new("b1", AlarmType.PAUSE, T0, {})
        store.save(alarm)
        assert store.get(alarm.id) == alarm
