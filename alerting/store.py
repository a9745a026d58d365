"""Durable alarm history: SQLite in WAL mode.

Every alarm change is an idempotent upsert keyed by the alarm's stable id, so replaying the
same changes (after a restart or a retry) never duplicates an alarm. Acknowledgements and the
change log are insert-or-ignore on natural keys for the same reason. Writes go through one
connection under a lock (in the service, from one writer thread: `alerting/writer.py`); reads use
a second connection of their own, so a read never waits for a write's disk sync (WAL readers do
not block on the writer). An in-memory store (`":memory:"`, tests and offline benches) has one
connection for both.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alerting.alarms import Alarm, AlarmChange, AlarmState, ChangeKind

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    bed TEXT NOT NULL,
    type TEXT NOT NULL,
    priority TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    ended_at REAL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    escalated INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_bed_started ON alarms (bed, started_at);
CREATE INDEX IF NOT EXISTS alarms_state ON alarms (state);
CREATE INDEX IF NOT EXISTS alarms_started ON alarms (started_at);
CREATE TABLE IF NOT EXISTS acknowledgements (
    alarm_id TEXT NOT NULL,
    at REAL NOT NULL,
    by TEXT NOT NULL,
    PRIMARY KEY (alarm_id, at, by)
);
CREATE TABLE IF NOT EXISTS alarm_changes (
    alarm_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (alarm_id, kind, at)
);
"""

_UPSERT = """
INSERT INTO alarms (id, bed, type, priority, state, started_at, updated_at, ended_at,
                    acknowledged_at, acknowledged_by, escalated, version, data)
VALUES (:id, :bed, :type, :priority, :state, :started_at, :updated_at, :ended_at,
        :acknowledged_at, :acknowledged_by, :escalated, :version, :data)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state, updated_at = excluded.updated_at, ended_at = excluded.ended_at,
    acknowledged_at = excluded.acknowledged_at, acknowledged_by = excluded.acknowledged_by,
    escalated = excluded.escalated, version = excluded.version, data = excluded.data
WHERE excluded.version >= alarms.version
"""


class AlarmStore:
    """SQLite alarm history and acknowledgements (WAL, synchronous=FULL by default)."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous: must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = _connect(path)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(alarms)")}
            if columns and "version" not in columns:  # a store from before versions
                self._db.execute("ALTER TABLE alarms ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
            self._db.executescript(SCHEMA)
        if str(path) == ":memory:":  # one database per connection: share the writer's
            self._rlock, self._rdb = self._lock, self._db
        else:
            self._rlock, self._rdb = threading.Lock(), _connect(path)

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    # ------------------------------------------------------------------ writes
    def save(self, alarm: Alarm) -> None:
        """Insert or update one alarm (idempotent; an older version never overwrites a newer,
        whatever the clocks of their times)."""
        with self._lock:
            self._db.execute(_UPSERT, _row(alarm))

    def apply(self, changes: Iterable[AlarmChange]) -> int:
        """Store a batch of policy changes in one transaction: the alarms, the change log and
        acknowledgements. Returns how many changes it stored."""
        n = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for kind, alarm in changes:
                    self._db.execute(_UPSERT, _row(alarm))
                    self._db.execute(
                        "INSERT OR IGNORE INTO alarm_changes VALUES (?, ?, ?, ?)",
                        (alarm.id, ChangeKind(kind).value, alarm.updated_at, alarm.state.value),
                    )
                    if kind == ChangeKind.ACKNOWLEDGED and alarm.acknowledged_at is not None:
                        self._db.execute(
                            "INSERT OR IGNORE INTO acknowledgements VALUES (?, ?, ?)",
                            (alarm.id, alarm.acknowledged_at, alarm.acknowledged_by or ""),
                        )
                    n += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def record_ack(self, alarm_id: str, at: float, by: str) -> None:
        """Log an acknowledgement (idempotent on alarm, time and person)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO acknowledgements VALUES (?, ?, ?)", (alarm_id, at, by)
            )

    # ------------------------------------------------------------------ reads
    def get(self, alarm_id: str) -> Alarm | None:
        with self._rlock:
            row = self._rdb.execute("SELECT data FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
        return None if row is None else Alarm.from_dict(json.loads(row["data"]))

    def query(
        self,
        bed: str | None = None,
        priority: str | None = None,
        type: str | None = None,  # noqa: A002 - the alarm field's name
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 500,
    ) -> list[Alarm]:
        """Alarms matching every given filter, newest start first. since/until bound started_at
        (since <= started_at < until)."""
        if not (isinstance(limit, int) and limit >= 1):
            raise ValueError(f"limit: must be a positive integer, got {limit!r}")
        where: list[str] = []
        args: list[str | float | int] = []
        for column, value in (
            ("bed", bed),
            ("priority", priority),
            ("type", type),
            ("state", state),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(str(value))
        if since is not None:
            where.append("started_at >= ?")
            args.append(float(since))
        if until is not None:
            where.append("started_at < ?")
            args.append(float(until))
        sql = "SELECT data FROM alarms"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id LIMIT ?"
        args.append(limit)
        with self._rlock:
            rows = self._rdb.execute(sql, args).fetchall()
        return [Alarm.from_dict(json.loads(r["data"])) for r in rows]

    def active(self) -> list[Alarm]:
        """Every open alarm (not ended), for AlarmPolicy.restore after a restart."""
        with self._rlock:
            rows = self._rdb.execute(
                "SELECT data FROM alarms WHERE state != ? ORDER BY started_at, id",
                (AlarmState.ENDED.value,),
            ).fetchall()
        return [Alarm.from_dict(json.loads(r["data"])) for r in rows]

    def acknowledgements(self, alarm_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT alarm_id, at, by FROM acknowledgements", []
        if alarm_id is not None:
            sql += " WHERE alarm_id = ?"
            args.append(alarm_id)
        with self._rlock:
            rows = self._rdb.execute(sql + " ORDER BY at", args).fetchall()
        return [dict(r) for r in rows]

    def changes(self, alarm_id: str) -> list[dict[str, Any]]:
        """The change log of one alarm, oldest first."""
        with self._rlock:
            rows = self._rdb.execute(
                "SELECT kind, at, state FROM alarm_changes WHERE alarm_id = ? ORDER BY at, rowid",
                (alarm_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def count(self) -> int:
        with self._rlock:
            return int(self._rdb.execute("SELECT COUNT(*) FROM alarms").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._rdb is not self._db:
            with self._rlock:
                self._rdb.close()

    def __enter__(self) -> AlarmStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=5000")
    return db


def _row(alarm: Alarm) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "bed": alarm.bed,
        "type": alarm.type.value,
        "priority": alarm.priority.value,
        "state": alarm.state.value,
        "started_at": alarm.started_at,
        "updated_at": alarm.updated_at,
        "ended_at": alarm.ended_at,
        "acknowledged_at": alarm.acknowledged_at,
        "acknowledged_by": alarm.acknowledged_by,
        "escalated": int(alarm.escalated),
        "version": alarm.version,
        "data": json.dumps(alarm.to_dict(), sort_keys=True),
    }
