"""The NATS worker's failure paths, one at a time: a partition whose consumer cannot be created
(JetStream electing a leader) is not left owned without a reader, a result whose acknowledgement
never comes is sent again, and a dropped partition's beats still waiting in the batcher are not
sent past the takeover filter."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from bench.cluster.engine import NatsCluster, running_cluster
from bench.cluster.scenario import sources
from detector.config import DetectorConfig
from detector.nats_link import SETTLE_TIMEOUT_S, NatsWorker, Outbox, Partition, _stream_seq
from detector.service import DetectorService
from ecgcommon import subjects
from streamer.core import Playback, make_streams, schedule
from tests.helpers.waits import wait_until_async


class _FakeJs:
    """`publish_async` of a JetStream context: records each publish; the first `hang` acks never
    come (their reply was lost with a node), the others are stored at once."""

    def __init__(self, hang: int = 0) -> None:
        self.hang = hang
        self.sent: list[tuple[str, bytes]] = []
        self.futures: list[asyncio.Future] = []

    async def publish_async(self, subj: str, payload: bytes, headers: dict) -> asyncio.Future:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.sent.append((subj, payload))
        self.futures.append(fut)
        if self.hang > 0:
            self.hang -= 1
        else:
            fut.set_result(None)
        return fut


def _outbox(hang: int) -> tuple[_FakeJs, Outbox, list[float]]:
    """An outbox on a fake JetStream whose first `hang` acks never come, and its clock."""
    now = [100.0]
    js = _FakeJs(hang)
    return js, Outbox(js, clock=lambda: now[0]), now


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.ECG_IN.ordered123.1.4711.17.1764645000000000000.3",  # v1: 9 tokens
        "$JS.ACK._.ACCHASH.ECG_IN.ordered123.1.4711.17.1764645000000000000.3.rnd",  # v2
        "$JS.ACK.hub.ACCHASH.ECG_IN.ordered123.1.4711.17.1764645000000000000.3",  # v2, domain
    ],
)
def test_stream_sequence_read_from_the_reply_matches_the_clients_metadata(reply: str) -> None:
    # no client: only the reply subject is read
    msg = Msg(None, subject="part.1.w.01.samples", reply=reply)  # type: ignore[arg-type]
    assert _stream_seq(msg) == msg.metadata.sequence.stream == 4711


def test_outbox_sends_again_a_result_whose_ack_never_comes() -> None:
    async def main() -> None:
        js, out, now = _outbox(hang=1)
        await out.send("ecg.v1.w.01.beats", b"a")
        await out.send("ecg.v1.w.01.beats", b"b")
        assert not await out.settle(timeout=0.05)  # the head is not answered yet: not settled
        assert [p for _, p in js.sent] == [b"a", b"b"]  # and not sent again this early
        now[0] += SETTLE_TIMEOUT_S  # the answer is now overdue: it is lost
        assert not await out.settle(timeout=0.05)
        assert [p for _, p in js.sent] == [b"a", b"b", b"a", b"b"]  # again, in order
        assert js.futures[0].cancelled()  # its place in the client's limit is freed
        assert await out.settle(timeout=1.0)
        assert not out.pending

    asyncio.run(main())


def test_outbox_trim_sends_again_an_overdue_head() -> None:
    async def main() -> None:
        js, out, now = _outbox(hang=1)
        await out.send("s", b"a")
        await out.trim()
        assert len(js.sent) == 1
        now[0] += SETTLE_TIMEOUT_S
        await out.trim()  # no checkpoint needed for a lost ack to be repaired
        assert [p for _, p in js.sent] == [b"a", b"a"]
        await out.trim()
        assert not out.pending

    asyncio.run(main())


@pytest.fixture
def single(tmp_path: Path) -> Iterator[NatsCluster]:
    with running_cluster(tmp_path / "nats", n=1) as cluster:
        yield cluster


def _service(bus: str, ward: str, **kw: Any) -> DetectorService:
    cfg = DetectorConfig(
        bus=bus, worker_id="w1", ward=ward, http_port=0, http_host="127.0.0.1", **kw
    )
    return DetectorService(cfg, registry=CollectorRegistry())


def test_partition_whose_consumer_cannot_be_created_is_taken_up_next_round(
    single: NatsCluster, unique_ward: str
) -> None:
    """CI lost every beat of one partition after an engine node died: the consumer's creation
    timed out in the leader election after the partition was already counted as owned, so its
    lease was renewed forever and nothing read it."""
    svc = _service(single.bus, unique_ward)
    worker = NatsWorker(svc)
    k = 3

    async def main() -> None:
        await worker._connect()
        real = worker.js.subscribe
        failed: list[str] = []

        async def subscribe(subject: str, **kw: Any) -> Any:
            if subject == subjects.partition_filter(k, unique_ward) and not failed:
                failed.append(subject)
                raise nats.errors.TimeoutError  # as in a JetStream leader election
            return await real(subject, **kw)

        worker.js.subscribe = subscribe
        try:
            await worker._rebalance()
            assert failed
            assert k not in worker.owned  # not owned without a reader
            assert all(p.sub is not None for p in worker.owned.values())
            assert set(worker.owned) == set(range(subjects.PARTITIONS)) - {k}
            await worker._rebalance()  # the next round: its own lease, taken back at once
            part = worker.owned[k]
            assert part.sub is not None
            ack = await worker.js.publish(f"part.{k}.{unique_ward}.01.status", b"{}")
            await wait_until_async(lambda: part.seq >= ack.seq, 10, "the partition's reader")
        finally:
            await worker.nc.close()

    try:
        asyncio.run(main())
    finally:
        svc.http.server_close()


def test_refused_jetstream_setup_is_tried_again_not_fatal(
    single: NatsCluster, unique_ward: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI saw one of two workers started together on a fresh cluster never join: its stream
    creation was refused (a timeout while the other created the same stream), the exception
    ended its thread, and the survivor took every partition."""
    import detector.nats_link as link

    real = subjects.ensure_stream
    refused: list[str] = []

    async def ensure_stream(js: object, name: str, *a: Any, **kw: Any) -> int:
        if len(refused) < 2:
            refused.append(name)
            raise nats.errors.TimeoutError  # as while JetStream elects the stream's leader
        return await real(js, name, *a, **kw)

    monkeypatch.setattr(subjects, "ensure_stream", ensure_stream)
    monkeypatch.setattr(link, "SETUP_RETRY_S", 0.05)
    svc = _service(single.bus, unique_ward)
    worker = NatsWorker(svc)

    async def main() -> None:
        await worker._connect()
        try:
            assert len(refused) == 2  # refused twice, then set up on the third try
            assert svc.connected.is_set() and worker.leases is not None
            await worker._rebalance()
            assert set(worker.owned) == set(range(subjects.PARTITIONS))
        finally:
            await worker.nc.close()

    try:
        asyncio.run(main())
    finally:
        svc.http.server_close()


def test_dropped_partition_does_not_send_its_queued_beats(data_dir: Path) -> None:
    """Beats waiting in the batcher when a partition is dropped follow its last checkpoint, so
    the next owner replays them; sent as well they would reach alerting twice."""
    svc = _service("nats://127.0.0.1:1", "w", max_wait_s=5.0, max_batch=65536)
    try:
        worker = NatsWorker(svc)
        js = _FakeJs()
        worker.out = Outbox(js)
        playback = Playback(time.time(), max_samples=2880)
        streams = make_streams(sources(data_dir, ["100"], 8.0), "w", 2, 0.5, playback)
        now = time.monotonic()
        for msg in schedule(streams):  # one instant: every beat stays in the batcher
            worker.engine.handle(msg.topic, msg.payload, now)
        assert all(worker.engine.beds[("w", b)].queued > 0 for b in ("01", "02"))
        part = Partition(0, 1, float("inf"), beds={("w", "01")})
        asyncio.run(worker._drop(part))
        beds = {
            b["bed"]
            for subj, payload in js.sent
            if subj.endswith(".beats")
            for b in json.loads(payload)["beats"]
        }
        assert beds == {"02"}  # the other partition's bed is scored and sent as usual
        assert ("w", "01") not in worker.engine.beds and part.closed
    finally:
        svc.http.server_close()
