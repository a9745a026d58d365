"""`AlertingCore` on its own, with no broker and no sockets: wire-format messages in through
`on_message(topic, payload, now)` on a fake clock, alarms out to the store, the hub, the metrics
and the publish callback. Also the store's writer thread: a slow disk sync never holds the loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry

from alerting.alarms import AlarmChange, AlarmQuery
from alerting.api_alarms import stored
from alerting.config import AlertingConfig
from alerting.core import AlertingCore, alarms_topic
from alerting.hub import Subscriber, WardHub
from alerting.metrics import AlertingMetrics
from alerting.policy import AlarmPolicy
from alerting.store import AlarmStore
from alerting.writer import ChangeWriter, ThreadedWriter
from ecgcommon import protocol, topics
from tests.helpers.alerting import beat, ecg_like

WARD = "core-ward"
FS = 360.0
T0 = 1_700_000_000.0
EVENT_TIMEOUT_S = 10.0


@dataclass
class Clock:
    """The fake wall clock the core reads."""

    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """One core and what it talks to, on a fake wall clock."""

    core: AlertingCore
    store: AlarmStore
    hub: WardHub
    registry: CollectorRegistry
    clock: Clock
    published: list[tuple[str, dict]]

    @property
    def now(self) -> float:
        return self.clock.now

    @now.setter
    def now(self, value: float) -> None:
        self.clock.now = value

    def send(self, bed: str, kind: str, payload: bytes) -> None:
        self.core.on_message(topics.topic(WARD, bed, kind), payload, self.now)

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def make_rig(store: AlarmStore | None = None, writer: ChangeWriter | None = None) -> Rig:
    """A core on an in-memory store (or the one given: a restart), a private registry."""
    registry = CollectorRegistry()
    hub = WardHub(WARD)
    store = store if store is not None else AlarmStore(":memory:")
    clock = Clock()
    published: list[tuple[str, dict]] = []
    core = AlertingCore(
        AlertingConfig(ward=WARD, token="core-test-token-0123", db_path=":memory:"),
        hub=hub,
        policy=AlarmPolicy(),
        store=store,
        metrics=AlertingMetrics(registry),
        registry=registry,
        publish=lambda topic, payload: published.append((topic, json.loads(payload))),
        clock=clock,
        writer=writer,
    )
    return Rig(core, store, hub, registry, clock, published)


def stream(rig: Rig, bed: str, bpm: float, seconds: float, start_s: float = 0.0) -> None:
    """`seconds` of a bed at `bpm` from `start_s` on the signal clock (T0 + s): 0.5 s sample
    chunks and, after each, the beats whose R-peak is 0.4 s old with the detector's watermark,
    the wall clock keeping up with the signal."""
    rr = 60.0 / bpm
    chunk = round(0.5 * FS)
    first = round(start_s * FS)
    n_beats = int((start_s + seconds) / rr) + 1
    samples = [round((0.2 + i * rr) * FS) for i in range(n_beats)]
    sent = {s for s in samples if s < first}
    for k in range(first, first + round(seconds * FS), chunk):
        y = np.round(ecg_like(chunk, FS, rr, start=k) * 200).astype(np.int16)[:, None]
        rig.now = T0 + (k + chunk) / FS
        seq = k // chunk
        chunk_msg = protocol.SampleChunk(seq, k, T0 + k / FS, FS, 200.0, "mV", ("MLII",), y)
        rig.send(bed, "samples", protocol.encode_samples(chunk_msg))
        ready = [s for s in samples if s not in sent and s + 0.4 * FS <= k + chunk]
        sent.update(ready)
        beats = [beat(WARD, bed, s, FS, T0, rr if s > samples[0] else None) for s in ready]
        until = T0 + (k + chunk) / FS - 0.4
        rig.send(bed, "beats", protocol.encode_beats(beats, until))


def open_alarms(rig: Rig, type_: str) -> list[dict]:
    return [a for a in rig.core.list_alarms(AlarmQuery(state="open")) if a["type"] == type_]


def frames(sub: Subscriber, type_: str) -> list[dict]:
    return [f for f in map(json.loads, sub.drain()) if f["type"] == type_]


# ---------------------------------------------------------------- the life of an alarm


def test_tachycardia_raises_is_acknowledged_and_ends() -> None:
    rig = make_rig()
    sub = rig.hub.subscribe()
    stream(rig, "7", 75, 10)
    assert not open_alarms(rig, "extreme_tachy")
    stream(rig, "7", 170, 10, start_s=10)
    (alarm,) = open_alarms(rig, "extreme_tachy")
    assert alarm["bed"] == "7" and alarm["priority"] == "high" and alarm["state"] == "active"
    stored_alarm = rig.store.get(alarm["id"])
    assert stored_alarm is not None and stored_alarm.type.value == "extreme_tachy"
    assert [a["alarm"]["id"] for a in frames(sub, "alarm")] == [alarm["id"]]
    topic, doc = rig.published[-1]
    assert topic == alarms_topic(WARD, "7") and doc["kind"] == "raised"
    assert rig.metric("ecg_alarms_raised_total", type="extreme_tachy", priority="high") == 1
    assert rig.metric("ecg_alerting_messages_total", kind="beats") == 40

    rig.now += 5.0
    outcome, acked = rig.core.acknowledge(alarm["id"], "nurse A")
    assert outcome == "ok" and acked is not None and acked["state"] == "acknowledged"
    in_store = rig.store.get(alarm["id"])
    assert in_store is not None and in_store.acknowledged_by == "nurse A"
    assert rig.store.acknowledgements(alarm["id"])[0]["by"] == "nurse A"
    assert rig.core.acknowledge(alarm["id"], "nurse B")[0] == "ok"  # again: harmless

    stream(rig, "7", 75, 35, start_s=20)  # back inside the limits for hr_clear_s (30 s)
    assert not open_alarms(rig, "extreme_tachy")
    ended = rig.store.get(alarm["id"])
    assert ended is not None and ended.state.value == "ended"
    assert rig.core.acknowledge(alarm["id"], "nurse A")[0] == "closed"
    assert rig.core.acknowledge("no-such-alarm", "nurse A") == ("unknown", None)
    assert [f["alarm"]["state"] for f in frames(sub, "alarm")][-1] == "ended"
    assert rig.metric("ecg_alarms_active", priority="high") == 0


def test_a_restart_restores_open_alarms_without_duplicates() -> None:
    first = make_rig()
    stream(first, "3", 170, 12)
    (alarm,) = open_alarms(first, "extreme_tachy")
    store = first.store

    again = make_rig(store=store)  # the service restarts on the same store
    again.now = first.now + 2.0
    assert again.core.restore() == 1
    assert [a["id"] for a in open_alarms(again, "extreme_tachy")] == [alarm["id"]]
    assert again.metric("ecg_alarms_active", priority="high") == 1
    tile = again.hub.bed_summary("3")
    assert tile is not None and tile["alarm"]["id"] == alarm["id"]
    stream(again, "3", 170, 12, start_s=14)  # the tachycardia goes on
    assert [a["id"] for a in open_alarms(again, "extreme_tachy")] == [alarm["id"]]
    assert again.metric("ecg_alarms_raised_total", type="extreme_tachy", priority="high") == 0
    assert len(store.query(type="extreme_tachy")) == 1


# ---------------------------------------------------------------- untrusted input


def _bad_inputs(bed: str) -> list[tuple[str, str, bytes]]:
    """(reason, topic, payload) for messages the core must count and drop."""
    good_beat = beat(WARD, bed, 360, FS, T0, 0.8)
    other_bed = beat(WARD, "someone-else", 720, FS, T0, 0.8)
    future = beat(WARD, bed, 0, FS, T0 + 3600.0, None)
    return [
        ("bad_topic", "ecg/v1/too/few", b"{}"),
        ("bad_topic", "not/a/topic/at/all/here", b"{}"),
        ("wrong_ward", topics.topic("other-ward", bed, "beats"), b"{}"),
        ("bad_json", topics.topic(WARD, bed, "beats"), b"{not json"),
        ("bad_json", topics.topic(WARD, bed, "events"), b"\xff\xfe"),
        ("bed_mismatch", topics.topic(WARD, bed, "beats"), protocol.encode_beats([other_bed])),
        ("clock_skew", topics.topic(WARD, bed, "beats"), protocol.encode_beats([future])),
        ("stale_beat", topics.topic(WARD, bed, "beats"), protocol.encode_beats([good_beat])),
    ]


def test_malformed_messages_are_counted_with_a_reason_and_dropped() -> None:
    rig = make_rig()
    rig.now = T0 + 2.0
    rig.send("5", "beats", protocol.encode_beats([beat(WARD, "5", 360, FS, T0, 0.8)]))
    expected: dict[str, int] = {}
    for reason, topic, payload in _bad_inputs("5"):
        rig.core.on_message(topic, payload, rig.now)  # never raises
        expected[reason] = expected.get(reason, 0) + 1
    for reason, n in expected.items():
        got = rig.metric("ecg_alerting_dropped_messages_total", reason=reason)
        assert got >= n, (reason, got)
    assert rig.metric("ecg_alerting_dropped_messages_total", reason="internal_error") == 0
    assert rig.hub.bed_summary("someone-else") is None
    stream(rig, "5", 170, 12, start_s=3)  # the core goes on as if nothing happened
    assert len(open_alarms(rig, "extreme_tachy")) == 1


# ---------------------------------------------------------------- writes off the loop


class SlowStore(AlarmStore):
    """An in-memory store whose writes block until `release` is set (a stalled disk sync)."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply(self, changes: Iterable[AlarmChange]) -> int:
        self.entered.set()
        if not self.release.wait(EVENT_TIMEOUT_S):
            raise TimeoutError("the test never released the write")
        return super().apply(changes)


async def _wait_thread_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, EVENT_TIMEOUT_S)


def test_a_slow_store_write_does_not_hold_the_event_loop() -> None:
    """While the writer thread is stuck in a disk sync, the loop keeps handling samples and the
    hub keeps sending waveform frames; the alarm goes out only once stored, and `stored()`
    (what an acknowledgement's 200 waits on) resolves only then."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        store = SlowStore()
        writer = ThreadedWriter(store, loop.call_soon_threadsafe)
        rig = make_rig(store=store, writer=writer)
        woke = asyncio.Event()
        sub = rig.hub.subscribe(woke.set)
        sub.drain()
        try:
            stream(rig, "9", 170, 12)  # raises extreme tachycardia: its write blocks
            await _wait_thread_event(store.entered)
            (alarm,) = open_alarms(rig, "extreme_tachy")  # the policy has it already
            durable = asyncio.ensure_future(stored(rig.core))
            woke.clear()
            stream(rig, "9", 170, 1, start_s=12)  # the loop goes on meanwhile
            rig.hub.flush(rig.now)
            await asyncio.wait_for(woke.wait(), EVENT_TIMEOUT_S)
            assert frames(sub, "batch"), "no waveform frame while the write was stuck"
            assert not store.release.is_set() and not durable.done()
            assert not frames(sub, "alarm") and rig.store.get(alarm["id"]) is None
            store.release.set()
            await asyncio.wait_for(durable, EVENT_TIMEOUT_S)
            assert rig.store.get(alarm["id"]) is not None
            assert [f["alarm"]["id"] for f in frames(sub, "alarm")] == [alarm["id"]]
            assert rig.published and rig.published[0][1]["alarm"]["id"] == alarm["id"]
        finally:
            store.release.set()
            await asyncio.to_thread(writer.close)

    asyncio.run(scenario())


def test_closing_the_writer_stores_everything_queued() -> None:
    store = SlowStore()
    delivered: list[Callable[[], None]] = []
    writer = ThreadedWriter(store, delivered.append)  # results handed back, run below
    rig = make_rig(store=store, writer=writer)
    stream(rig, "4", 170, 12)
    stream(rig, "4", 30, 12, start_s=12)  # more changes queue behind the stuck first write
    assert store.entered.wait(EVENT_TIMEOUT_S) and writer.pending >= 1
    store.release.set()
    writer.close()  # drains the queue, then stops
    assert writer.pending == 0
    for fn in delivered:
        fn()
    assert {a.type.value for a in store.query()} >= {"extreme_tachy", "extreme_brady"}
    assert rig.metric("ecg_alerting_store_errors_total") == 0
    changes = [c for a in store.query() for c in store.changes(a.id)]
    assert changes, "the change log is stored with the alarms"
    after: list[BaseException | None] = []
    writer.submit([], after.append)  # after close: written at once on the caller's thread
    assert after == [None]


def test_a_failing_store_still_broadcasts_and_counts_the_error() -> None:
    class BrokenStore(AlarmStore):
        def apply(self, changes: Iterable[AlarmChange]) -> int:
            raise OSError("disk full")

    rig = make_rig(store=BrokenStore(":memory:"))
    sub = rig.hub.subscribe()
    stream(rig, "2", 170, 12)
    assert len(open_alarms(rig, "extreme_tachy")) == 1
    assert [f["alarm"]["type"] for f in frames(sub, "alarm")] == ["extreme_tachy"]
    assert rig.metric("ecg_alerting_store_errors_total") >= 1
