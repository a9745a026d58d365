"""The detector as one worker of many on the NATS bus (`ECG_BUS=nats://…`).

Around the same `DetectorEngine` as the MQTT path:
- Partitions: the servers map each bed's samples and status into `part.{k}.{ward}.{bed}.*`
  (ecgcommon.subjects). A worker owns a partition while it holds its lease in the KV bucket
  `ecg_leases` (a key per partition, TTL `lease_ttl_s`, renewed every second with a
  compare-and-set on the revision). Live workers announce themselves in `ecg_members` (same TTL);
  each wants the partitions that rendezvous hashing gives it among the live members, so N workers
  split the partitions, a dead worker's partitions go to the survivors once its lease expires,
  and a worker restarted under the same id takes its leases straight back.
- Order and replay: an owned partition is read with an ordered consumer of the stream `ECG_IN`
  from the sequence its checkpoint covers, so each bed is analysed by one worker, in order.
- Checkpoints: every `checkpoint_s` the worker flushes the batcher, snapshots each bed's state
  (pipeline, QRS, filters, patient adapter, classes, rhythms) with the newest stream sequence,
  waits until every result so far is acknowledged by `ECG_OUT`, then writes the snapshot to the
  KV bucket `ecg_ckpt`: the committed sequence is the partition's acknowledgement. A new owner
  loads the states and replays from there, so nothing is lost and no patient is re-learnt.
- No duplicates: results carry a `Nats-Msg-Id` (a hash of subject and payload; the stream drops
  repeats), and after a takeover the beats up to the newest one already in `ECG_OUT` for a bed
  are dropped before they are sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import pickle
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from ecgcommon import nats_conn, protocol, subjects
from ecgcommon.topics import TopicError, parse_topic

if TYPE_CHECKING:
    from detector.engine import Bed, Publication
    from detector.service import DetectorService

log = logging.getLogger("detector.nats")
RENEW_S = 1.0  # lease and membership renewal period
SETUP_RETRY_S = 1.0  # between refused JetStream set-ups
IN_MAX_AGE_S = 600.0  # how far back ECG_IN keeps samples (replay horizon)
OUT_MAX_AGE_S = 600.0
SETTLE_TIMEOUT_S = 5.0  # results must be acknowledged this fast for a checkpoint to commit
JS_TIMEOUT_S = 2.0  # a JetStream request unanswered this long is retried next round


def _msg_id(subj: str, payload: bytes) -> str:
    return hashlib.blake2b(subj.encode() + b"\0" + payload, digest_size=12).hexdigest()


def _stream_seq(msg: Any) -> int:
    """The ECG_IN sequence of a delivered message, read straight from its reply subject
    (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...`): the client's `metadata` builds
    dataclasses and a datetime for every message. Other reply layouts go through the client."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[5])
    return int(msg.metadata.sequence.stream)


def _rank(k: int, member: str) -> bytes:
    """Rendezvous hashing: the live member with the highest rank owns partition `k`."""
    return hashlib.blake2b(f"{k}:{member}".encode(), digest_size=8).digest()


def _bed_key(topic: str) -> tuple[str, str] | None:
    """(ward, bed) of a result topic; None for a topic that names no bed."""
    try:
        t = parse_topic(topic)
    except TopicError:
        return None
    return (t.ward, t.bed)


def lease_scope(ward: str) -> str:
    """The KV key prefix of a worker's group: its ward, or `all` for every ward."""
    return "all" if ward == "+" else ward


def assignment(members: list[str] | set[str], partitions: int) -> dict[int, str]:
    """Partition -> owner: rendezvous hashing with a cap of ceil(partitions / members) each, so
    the shares stay even (plain hashing may leave a worker idle) and a member coming or going
    moves few partitions. Every worker computes the same answer from the same members."""
    live = sorted(set(members))
    cap = -(-partitions // len(live))
    load = dict.fromkeys(live, 0)
    out: dict[int, str] = {}
    for k in range(partitions):
        for m in sorted(live, key=lambda m: _rank(k, m), reverse=True):
            if load[m] < cap:
                out[k] = m
                load[m] += 1
                break
    return out


def desired(members: list[str], me: str, partitions: int) -> set[int]:
    """The partitions `me` should own among the live `members`."""
    return {k for k, m in assignment(set(members) | {me}, partitions).items() if m == me}


@dataclass
class Partition:
    """An owned partition: lease, consumer and the beds seen in it."""

    k: int
    lease_rev: int
    valid_until: float  # monotonic; past it the lease may be someone else's: stop
    seq: int = 0  # newest ECG_IN sequence handled
    beds: set[tuple[str, str]] = field(default_factory=set)
    skip: dict[tuple[str, str], int] = field(default_factory=dict)  # in the checkpoint already
    sub: Any = None
    next_ckpt: float = 0.0
    closed: bool = False


class Outbox:
    """Results published with acknowledgement, in order; failed ones are sent again in order
    (their message ids make a repeat harmless). An acknowledgement that never comes (its reply
    was in flight when a node died: the client's futures have no deadline) counts as failed
    once it is `SETTLE_TIMEOUT_S` old, so the result is sent again and the checkpoints go on."""

    def __init__(self, js: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.js = js
        self.clock = clock
        # (number, subject, payload, ack future, sent at), oldest first; numbers only grow
        self.pending: deque[tuple[int, str, bytes, asyncio.Future, float]] = deque()
        self._count = 0
        self._resend_at = 0.0  # a stream without a leader is not hammered: one resend a 0.5 s

    async def send(self, subj: str, payload: bytes, number: int | None = None) -> None:
        if number is None:
            self._count += 1
            number = self._count
        fut = await self.js.publish_async(
            subj, payload, headers={"Nats-Msg-Id": _msg_id(subj, payload)}
        )
        self.pending.append((number, subj, payload, fut, self.clock()))

    def _overdue(self) -> bool:
        """The head has waited for its acknowledgement longer than any answer takes."""
        return bool(self.pending) and self.clock() - self.pending[0][4] >= SETTLE_TIMEOUT_S

    async def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until everything sent before this call is stored, resending what failed;
        False when that did not happen within `timeout`."""
        upto = self._count
        deadline = self.clock() + timeout
        while self.pending and self.pending[0][0] <= upto:
            fut = self.pending[0][3]
            left = deadline - self.clock()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(asyncio.shield(fut), left)
            except TimeoutError:
                if self._overdue():  # its answer is lost: send it (and the rest) again
                    log.warning("result not acknowledged; sending the rest again")
                    await self._resend()
                return False
            except Exception as exc:  # no stream leader for a moment, or a lost connection
                log.warning("result not stored (%s); sending the rest again", exc)
                await self._resend()
                await asyncio.sleep(0.2)
                continue
            if self.pending and self.pending[0][3] is fut:  # trim() may have taken it
                self.pending.popleft()
        return True

    async def trim(self) -> None:
        """Forget the acknowledged head; a failed or overdue head is sent again (with what
        follows)."""
        while self.pending:
            head = self.pending[0][3]
            if not head.done():
                if self._overdue() and self.clock() >= self._resend_at:
                    log.warning("result not acknowledged; sending the rest again")
                    await self._resend()
                return
            if head.cancelled() or head.exception() is not None:
                if self.clock() >= self._resend_at:
                    log.warning("result not stored; sending the rest again")
                    await self._resend()
                return
            self.pending.popleft()

    async def _resend(self) -> None:
        self._resend_at = self.clock() + 0.5
        old, self.pending = self.pending, deque()
        for number, subj, payload, fut, _ in old:
            if fut.done():
                if not fut.cancelled():
                    fut.exception()  # retrieved: asyncio need not report it
            else:
                fut.cancel()  # also frees its place in the client's pending-publish limit
            await self.send(subj, payload, number)


class NatsWorker:
    """Runs the engine of a `DetectorService` on the NATS bus; `run()` blocks until stopping."""

    def __init__(self, service: DetectorService) -> None:
        self.service = service
        self.engine = service.engine
        cfg = service.config
        self.servers = list(subjects.parse_bus(cfg.bus).servers)
        self.me = cfg.worker_id or socket.gethostname()
        self.partitions = cfg.partitions
        self.ttl = cfg.lease_ttl_s
        self.checkpoint_s = cfg.checkpoint_s
        self.ward = cfg.ward  # "+": every ward
        self.scope = lease_scope(cfg.ward)
        self.owned: dict[int, Partition] = {}
        self.max_beds = cfg.max_beds
        # subject -> (MQTT topic, (ward, bed)): parsed once per bed, not once per chunk
        self._topics: dict[str, tuple[str, tuple[str, str]]] = {}
        self.sent: dict[tuple[str, str], float] = {}  # after a takeover: results out up to t
        self.nc: Any = None
        self.js: Any = None
        self.out: Outbox | None = None
        self.leases: Any = None
        self.members: Any = None
        self.ckpt: Any = None

    def run(self) -> None:
        asyncio.run(self._main())

    # ------------------------------------------------------------------ connection
    async def _connect(self) -> None:
        svc = self.service

        def up() -> None:
            svc.connected.set()
            svc.metrics.up.set(1)

        def down() -> None:
            svc.connected.clear()
            svc.metrics.up.set(0)

        self.nc = await nats_conn.connect(
            self.servers,
            f"detector-{self.me}",
            log,
            on_up=up,
            on_down=down,
            stopping=svc._stopping.is_set,
        )
        if self.nc is None:
            return
        self.js = self.nc.jetstream(timeout=JS_TIMEOUT_S)
        self.out = Outbox(self.js)
        while not svc._stopping.is_set():
            try:
                await self._setup()
                break
            except Exception as exc:  # a fresh cluster with no JetStream leader yet, or a
                # worker racing another to create a stream: tried again, never fatal
                log.warning("JetStream setup refused (%s); trying again", exc)
                await asyncio.sleep(SETUP_RETRY_S)
        else:
            await self.nc.close()
            self.nc = None
            return
        up()
        log.info("worker %s on %s: %d partitions", self.me, self.servers, self.partitions)

    async def _setup(self) -> None:
        """The streams and buckets the worker uses, created where missing."""
        await subjects.ensure_stream(
            self.js, subjects.IN_STREAM, [f"{subjects.PART}.>"], IN_MAX_AGE_S
        )
        await subjects.ensure_stream(
            self.js, subjects.OUT_STREAM, subjects.output_subjects(), OUT_MAX_AGE_S
        )
        self.leases = await subjects.ensure_kv(self.js, subjects.LEASES, self.ttl)
        self.members = await subjects.ensure_kv(self.js, subjects.MEMBERS, self.ttl)
        self.ckpt = await subjects.ensure_kv(self.js, subjects.CHECKPOINTS, None)

    async def _main(self) -> None:
        await self._connect()
        if self.nc is None:
            return
        tick = asyncio.create_task(self._tick_loop())
        renew = asyncio.create_task(self._renew_loop())
        ckpt = asyncio.create_task(self._checkpoint_loop())
        try:
            while not self.service._stopping.is_set():
                try:
                    await self._rebalance()
                except Exception as exc:  # a server away for a moment: try again next round
                    log.warning("lease round failed: %s", exc)
                await asyncio.sleep(RENEW_S)
        finally:
            tick.cancel()
            renew.cancel()
            ckpt.cancel()
            for part in list(self.owned.values()):
                try:
                    await self._release(part)
                except Exception as exc:
                    log.warning("releasing partition %d: %s", part.k, exc)
            try:
                await self.members.delete(f"{self.scope}.{self.me}")
            except Exception:
                pass
            await self.nc.close()

    # ------------------------------------------------------------------ leases
    def _key(self, k: int) -> str:
        """The KV key of partition `k` (leases, checkpoints) for the wards this worker serves:
        workers serving different wards never share a lease or a checkpoint."""
        return f"{self.scope}.p{k}"

    async def _live_members(self) -> list[str]:
        """Workers whose membership key has not expired: read from the bucket's stream state
        (no consumer is created, so this stays cheap on the cluster's meta layer)."""
        stream = f"KV_{subjects.MEMBERS}"
        prefix = f"$KV.{subjects.MEMBERS}.{self.scope}."
        info = await self.js.stream_info(stream, subjects_filter=prefix + ">")
        return [name[len(prefix) :] for name in (info.state.subjects or {})]

    async def _renew(self, part: Partition) -> None:
        now = time.monotonic()
        try:
            part.lease_rev = await self.leases.update(
                self._key(part.k), self.me.encode(), last=part.lease_rev
            )
            part.valid_until = now + self.ttl * 0.9
        except KeyWrongLastSequenceError as exc:  # expired, or someone else's now
            log.warning("lost the lease of partition %d (%s)", part.k, exc)
            await self._drop(part)
        except Exception as exc:  # the bucket is electing a leader: kept until the fence
            log.warning("lease of partition %d not renewed (%s)", part.k, exc)

    async def _renew_loop(self) -> None:
        """Leases and membership, every second, on their own: a slow takeover never delays
        them past the fence."""
        while True:
            try:
                await asyncio.gather(*(self._renew(p) for p in list(self.owned.values())))
                await self.members.put(f"{self.scope}.{self.me}", str(time.time()).encode())
            except Exception as exc:
                log.warning("membership not renewed (%s)", exc)
            await asyncio.sleep(RENEW_S)

    async def _rebalance(self) -> None:
        want = desired(await self._live_members(), self.me, self.partitions)
        for k, part in list(self.owned.items()):
            if k not in want:
                await self._release(part)
        for k in sorted(want - set(self.owned)):
            rev = await self._take_lease(k)
            if rev is not None:
                try:
                    await self._acquire(k, rev)
                except Exception as exc:  # checkpoint unreadable just now: next round
                    log.warning("partition %d not taken up yet (%s)", k, exc)

    async def _take_lease(self, k: int) -> int | None:
        key = self._key(k)
        try:
            return int(await self.leases.create(key, self.me.encode()))
        except Exception:
            pass
        try:  # my own lease from before a restart: take it back at once
            entry = await self.leases.get(key)
            if entry.value == self.me.encode():
                return int(await self.leases.update(key, self.me.encode(), last=entry.revision))
        except Exception:
            pass
        return None

    # ------------------------------------------------------------------ partitions
    async def _acquire(self, k: int, rev: int) -> None:
        """Take partition `k` up under lease revision `rev`: restore its checkpoint, subscribe
        from there, renew the lease, and only then count it as owned. A step that fails (a
        JetStream request unanswered while a leader is elected) undoes the others and raises,
        and the next lease round tries again: an owned partition always has a reader. (Owned
        without one, its lease would be renewed forever and its beds never analysed again.)"""
        now = time.monotonic()
        part = Partition(k, rev, now + self.ttl * 0.8)
        part.next_ckpt = now + self.checkpoint_s * (0.5 + (k % 8) / 16)
        assert self.out is not None
        await self.out.settle()  # our own results in flight land before the newest is read
        try:
            start = await self._restore(part)

            async def on_msg(msg: Any) -> None:
                await self._on_msg(part, msg)

            part.sub = await self.js.subscribe(
                subjects.partition_filter(k, self.ward),
                stream=subjects.IN_STREAM,
                cb=on_msg,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                config=ConsumerConfig(opt_start_seq=start),
            )
            await self._renew(part)  # the set-up may have used up most of the fence
        except Exception:
            await self._drop(part)
            raise
        if part.closed:  # the lease went meanwhile (renewal refused, or the fence passed)
            return
        self.owned[k] = part
        log.info(
            "worker %s owns partition %d from sequence %d (%d beds restored)",
            self.me,
            k,
            start,
            len(part.beds),
        )

    async def _restore(self, part: Partition) -> int:
        """Load the partition's checkpoint into the engine; the sequence to read from. Every
        read happens before anything is installed: an unanswered read raises, and the lease
        round tries again (a missing answer is not a missing checkpoint)."""
        k = part.k
        try:
            index = pickle.loads((await self.ckpt.get(self._key(k))).value)
        except KeyNotFoundError:
            index = None
        if index is None:  # never checkpointed: from now on, and say so at once
            info = await self.js.stream_info(subjects.IN_STREAM)
            part.seq = int(info.state.last_seq)
            await self.ckpt.put(self._key(k), pickle.dumps((part.seq, [])))
            return part.seq + 1
        seq, keys = index
        start = seq + 1
        loaded = []
        for key in keys:
            ward, bed_name = key
            try:
                entry = await self.ckpt.get(f"{self._key(k)}.{ward}.{bed_name}")
            except KeyNotFoundError:
                log.warning("no checkpoint for %s/%s: it starts afresh", ward, bed_name)
                continue
            bed_seq, bed = pickle.loads(entry.value)
            loaded.append((key, bed_seq, bed, await self._last_sent(ward, bed_name)))
            start = min(start, bed_seq + 1)
        now = time.monotonic()
        for key, bed_seq, bed, last in loaded:
            self._install(bed, now)
            part.beds.add(key)
            part.skip[key] = bed_seq
            if last is not None:
                self.sent[key] = last
        part.seq = start - 1
        return start

    def _install(self, bed: Bed, now: float) -> None:
        bed.last_rx = now if bed.last_rx != -math.inf else bed.last_rx
        bed.last_msg = now
        bed.queued = 0
        self.engine.beds[(bed.ward, bed.bed)] = bed

    async def _last_sent(self, ward: str, bed: str) -> float | None:
        """How far the bed's results in ECG_OUT go (signal time of the newest beat, or the
        analysis watermark of a pause): the old owner may have gone past its checkpoint."""
        subj = f"{subjects.PREFIX}.{subjects.VERSION}.{ward}.{bed}.beats"
        try:
            raw = await self.js.get_last_msg(subjects.OUT_STREAM, subj)
        except NotFoundError:
            return None
        try:
            msg = protocol.decode_beats_message(raw.data)
        except protocol.DecodeError:
            return None
        marks = [b.t for b in msg.beats]
        if msg.analysed_until is not None:
            marks.append(msg.analysed_until)
        return max(marks, default=None)

    async def _drop(self, part: Partition) -> None:
        """Stop working on a partition (lease lost or given back, or a take-up that failed).
        Its beds' beats still waiting in the batcher are thrown away, not sent: they come from
        messages after the last checkpoint (a checkpoint flushes the batcher first), so whoever
        takes the partition up replays them, and sent now, past the takeover filter's reading
        of ECG_OUT, they would reach alerting twice."""
        part.closed = True
        if self.owned.get(part.k) is part:
            del self.owned[part.k]
        pubs: list[Publication] = []
        if any(getattr(self.engine.beds.get(key), "queued", 0) for key in part.beds):
            pubs = self.engine.flush(time.monotonic())
        for key in part.beds:
            self.engine.beds.pop(key, None)
            self.sent.pop(key, None)
        if part.sub is not None:  # not awaited: this may run in the subscription's callback
            asyncio.ensure_future(part.sub.unsubscribe())
            part.sub = None
        await self._publish([p for p in pubs if _bed_key(p.topic) not in part.beds])

    async def _release(self, part: Partition) -> None:
        """Checkpoint, stop and give the lease back (rebalancing, shutdown)."""
        if part.sub is not None:
            await part.sub.unsubscribe()
            part.sub = None
        await self._checkpoint(part)
        await self._drop(part)
        try:
            await self.leases.delete(self._key(part.k))
        except Exception as exc:
            log.warning("giving back partition %d: %s", part.k, exc)
        log.info("worker %s gave back partition %d at sequence %d", self.me, part.k, part.seq)

    async def _checkpoint(self, part: Partition) -> None:
        """Snapshot every bed of the partition at its newest sequence (no await in between),
        then commit it once every result so far is acknowledged."""
        await self._publish(self.engine.flush(time.monotonic()))
        if part.closed:  # dropped meanwhile: its beds are gone from the engine
            return
        seq = part.seq
        snaps: list[tuple[str, bytes]] = []
        keys = []
        for key in sorted(part.beds):
            bed = self.engine.beds.get(key)
            if bed is None:
                continue
            keys.append(key)
            name = f"{self._key(part.k)}.{key[0]}.{key[1]}"
            snaps.append((name, pickle.dumps((seq, bed), protocol=5)))
        assert self.out is not None
        if not await self.out.settle():
            log.warning("partition %d: results not acknowledged; checkpoint skipped", part.k)
            return
        if part.closed:  # the lease went while waiting: the partition may be someone else's
            return
        for name, blob in snaps:
            await self.ckpt.put(name, blob)
        await self.ckpt.put(self._key(part.k), pickle.dumps((seq, keys)))
        log.debug("partition %d: checkpoint of %d beds at sequence %d", part.k, len(keys), seq)

    # ------------------------------------------------------------------ messages
    async def _on_msg(self, part: Partition, msg: Any) -> None:
        if part.closed:
            return
        now = time.monotonic()
        if now > part.valid_until:  # the lease may have moved on: never two owners
            log.warning("partition %d: lease not renewed in time, stopping", part.k)
            await self._drop(part)
            return
        seq = _stream_seq(msg)
        if seq <= part.seq:
            return
        part.seq = seq
        found = self._topics.get(msg.subject)
        if found is None:
            try:
                topic = subjects.topic_of(msg.subject)
                t = parse_topic(topic)
            except TopicError as exc:
                self.engine.bad("bad_topic", "%s", exc)
                return
            if len(self._topics) >= 4 * self.max_beds:  # bounded: never grows unchecked
                self._topics.clear()
            found = self._topics[msg.subject] = (topic, (t.ward, t.bed))
        topic, key = found
        if part.skip and part.skip.get(key, 0) >= seq:
            return
        part.beds.add(key)
        pubs = self.engine.handle(topic, msg.data, now)
        if pubs:  # most chunks only queue beats: the tick loop publishes the batches
            await self._publish(pubs)

    async def _publish(self, pubs: list[Publication]) -> None:
        out = self.out
        assert out is not None
        for p in pubs:
            payload: bytes | None = p.payload
            if self.sent and p.topic.endswith("/beats"):  # batches flush from tick() too
                payload = self._unsent(p.topic, p.payload)
            if payload is None:
                continue
            try:
                subj = subjects.subject(p.topic)
            except TopicError as exc:
                self.engine.bad("bad_topic", "%s", exc)
                continue
            await out.send(subj, payload)
        await out.trim()

    def _unsent(self, topic: str, payload: bytes) -> bytes | None:
        """A replayed beats message without the beats the old owner already sent."""
        t = parse_topic(topic)
        last = self.sent.get((t.ward, t.bed))
        if last is None:
            return payload
        msg = protocol.decode_beats_message(payload)
        keep = [b for b in msg.beats if b.t > last]
        if keep:
            del self.sent[(t.ward, t.bed)]  # caught up: from here on nothing is a repeat
        if len(keep) == len(msg.beats):
            return payload
        if not keep and msg.analysed_until is None:
            return None
        extra = {}
        if getattr(msg, "analysed_from", None) is not None:
            extra["analysed_from"] = msg.analysed_from
        return protocol.encode_beats(keep, analysed_until=msg.analysed_until, **extra)

    async def _tick_loop(self) -> None:
        """The batching deadlines and silence sweeps (never held up by a checkpoint)."""
        engine = self.engine
        while True:
            try:
                await self._publish(engine.tick(time.monotonic()))
            except Exception:
                self.service.metrics.bad_messages.labels("internal_error").inc()
                log.exception("error in tick")
            deadline = engine.next_deadline()
            wait = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(wait)

    async def _checkpoint_loop(self) -> None:
        """Each owned partition's checkpoint when due (its own task: its waits for
        acknowledgements and KV writes must not delay the batching deadlines)."""
        while True:
            now = time.monotonic()
            for part in list(self.owned.values()):
                if now >= part.next_ckpt and not part.closed:
                    part.next_ckpt = now + self.checkpoint_s
                    try:
                        await self._checkpoint(part)
                    except Exception as exc:  # the bucket away for a moment: next time
                        log.warning("partition %d: checkpoint failed (%s)", part.k, exc)
            await asyncio.sleep(0.2)
