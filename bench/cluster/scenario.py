"""Pieces of a cluster run, shared by tests/test_nats_cluster.py and `make bench-cluster`:
detector workers as processes, a real-time device feeder over NATS's MQTT port, an observer of
every result on the bus, and the reference beats of the same chunks analysed by one engine."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from detector.nats_link import assignment
from ecgcommon.records import load_record
from ecgcommon.subjects import PARTITIONS
from streamer.core import Playback, Source, make_streams, schedule
from tests.helpers.procs import service_env

ROOT = Path(__file__).resolve().parents[2]
FS = 360.0


def cli_args(flags: dict[str, str]) -> list[str]:
    """`{"--ward": "w"}` -> `["--ward", "w"]`."""
    return [x for kv in flags.items() for x in kv]


def start_service(module: str, args: list[str], log: Path | None, **env: str) -> subprocess.Popen:
    """`python -m <module> <args>` from the repository, as a user starts it, with `env` added
    to this environment; its output appended to `log` (None: kept on pipes for the caller)."""
    cmd = [sys.executable, "-m", module, *args]
    if log is None:
        pipe = subprocess.PIPE
        return subprocess.Popen(cmd, cwd=ROOT, env=service_env(**env), stdout=pipe, stderr=pipe)
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=service_env(**env), stdout=out, stderr=subprocess.STDOUT
        )


def start_worker(
    bus: str,
    worker_id: str,
    ward: str,
    log: Path,
    *,
    checkpoint_s: float = 2.0,
    lease_ttl_s: float = 3.0,
    extra: list[str] | None = None,
) -> subprocess.Popen:
    """`python -m detector` as one worker of the NATS bus."""
    flags = {
        "--bus": bus,
        "--worker-id": worker_id,
        "--ward": ward,
        "--http-host": "127.0.0.1",
        "--http-port": "0",
        "--checkpoint-s": str(checkpoint_s),
        "--lease-ttl-s": str(lease_ttl_s),
    }
    args = cli_args(flags) + (extra or [])
    return start_service("detector", args, log, ECG_DETECTOR_TOKEN="bench-token-0123")


def sources(data_dir: str | Path | None, records: list[str], seconds: float) -> list[Source]:
    return [
        Source.from_record(
            load_record(r, data_dir, annotations=False, sampto=int(FS * (seconds + 400)))
        )
        for r in records
    ]


class Feeder(threading.Thread):
    """Devices in real time: `beds` beds of the records, 0.5 s chunks, over MQTT (QoS 0 as the
    streamer's default; JetStream stores each chunk as it arrives)."""

    def __init__(
        self,
        port: int,
        ward: str,
        srcs: list[Source],
        beds: int,
        seconds: float,
        chunk_s: float = 0.5,
    ) -> None:
        super().__init__(name="feeder", daemon=True)
        self.t_start = time.time() + 0.5
        playback = Playback(self.t_start, max_samples=int(round(seconds * FS)))
        self.streams = make_streams(srcs, ward, beds, chunk_s, playback, stride_s=61.0)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"feeder-{ward}")
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.sent = 0
        self.qos = 0
        self.stop_event = threading.Event()
        self.payloads: list[tuple[str, bytes]] = []  # every chunk, for the reference analysis

    def run(self) -> None:
        mono0 = time.monotonic() + (self.t_start - time.time())
        for msg in schedule(self.streams):
            wait = mono0 + msg.due_s - time.monotonic()
            if wait > 0 and self.stop_event.wait(wait):
                break
            self.client.publish(msg.topic, msg.payload, qos=self.qos)
            self.payloads.append((msg.topic, msg.payload))
            self.sent += 1

    def close(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Seen:
    """Results seen on the bus."""

    beats: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # bed: (sample, rx)
    ids: dict[str, int] = field(default_factory=dict)  # beat id: times seen
    events: list[dict] = field(default_factory=list)

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.ids.values() if n > 1)


class Observer(threading.Thread):
    """Every beat and event of the ward stored in ECG_OUT, with its receipt time."""

    def __init__(self, servers: list[str], ward: str) -> None:
        super().__init__(name="observer", daemon=True)
        self.servers, self.ward = servers, ward
        self.seen = Seen()
        self.ready = threading.Event()
        self._done = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import nats

        nc = await nats.connect(
            servers=self.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.3
        )

        async def on_msg(msg: object) -> None:
            now = time.time()
            kind = msg.subject.rsplit(".", 1)[1]  # type: ignore[attr-defined]
            if kind not in ("beats", "events"):
                return
            doc = json.loads(msg.data)  # type: ignore[attr-defined]
            with self.lock:
                if kind == "beats":
                    for b in doc.get("beats", []):
                        self.seen.beats.setdefault(b["bed"], []).append((b["sample"], now))
                        self.seen.ids[b["beat_id"]] = self.seen.ids.get(b["beat_id"], 0) + 1
                else:
                    doc["rx"] = now
                    self.seen.events.append(doc)

        from nats.js.api import DeliverPolicy

        from ecgcommon.subjects import OUT_STREAM, ensure_stream, output_filter, output_subjects

        js = nc.jetstream()
        await ensure_stream(js, OUT_STREAM, output_subjects(), 600.0)
        # what is stored in ECG_OUT, as the durable alerting consumer gets it
        await js.subscribe(
            output_filter(self.ward),
            stream=OUT_STREAM,
            cb=on_msg,
            ordered_consumer=True,
            idle_heartbeat=1.0,
            deliver_policy=DeliverPolicy.NEW,
            pending_msgs_limit=-1,
        )
        self.ready.set()
        while not self._done.is_set():
            await asyncio.sleep(0.1)
        await nc.close()

    def close(self) -> None:
        self._done.set()
        self.join(5)


def reference_beats(payloads: list[tuple[str, bytes]]) -> dict[str, list[int]]:
    """The beat samples one engine finds in the same chunks (the ground truth of a run)."""
    from prometheus_client import CollectorRegistry

    from detector.config import DetectorConfig
    from detector.service import DetectorService

    svc = DetectorService(
        DetectorConfig(http_port=0, http_host="127.0.0.1"), registry=CollectorRegistry()
    )
    try:
        engine = svc.engine
        pubs = []
        now = time.monotonic()
        for topic, payload in payloads:
            pubs += engine.handle(topic, payload, now)
        pubs += engine.flush(now)
    finally:
        svc.http.server_close()
    out: dict[str, list[int]] = {}
    for p in pubs:
        if p.topic.endswith("/beats"):
            for b in json.loads(p.payload).get("beats", []):
                out.setdefault(b["bed"], []).append(b["sample"])
    return {bed: sorted(s) for bed, s in out.items()}


def compare(seen: Seen, ref: dict[str, list[int]]) -> dict[str, int]:
    """Missing and extra beats against the reference, and repeats of one beat id."""
    missing = extra = 0
    for bed, samples in ref.items():
        got = {s for s, _ in seen.beats.get(bed, [])}
        missing += len(set(samples) - got)
        extra += len(got - set(samples))
    return {"missing": missing, "extra": extra, "duplicates": seen.duplicates()}


def max_silence_s(seen: Seen, after: float, before: float = float("inf")) -> float:
    """Longest wait between two beats of one bed received between `after` and `before`."""
    worst = 0.0
    for rows in seen.beats.values():
        times = sorted(rx for _, rx in rows if after <= rx <= before)
        worst = max([worst] + [b - a for a, b in zip(times, times[1:], strict=False)])
    return worst


@dataclass
class ClusterState:
    """What the cluster holds now (the cluster test waits on it instead of sleeping)."""

    in_last_seq: int  # ECG_IN's newest sequence
    checkpoints: dict[int, tuple[int, set[str]]] = field(default_factory=dict)  # k: (seq, beds)
    unhandled: int = -1  # results the durable consumer has not acknowledged (-1: not asked)

    def committed_after(self, seq: int, beds: set[str]) -> bool:
        """Every bed in `beds` is in a checkpoint committed past stream sequence `seq`."""
        done = {b for s, bs in self.checkpoints.values() if s > seq for b in bs}
        return beds <= done


async def _lease_owners(servers: list[str], ward: str) -> dict[int, str]:
    import nats

    from ecgcommon.subjects import LEASES

    nc = await nats.connect(servers=servers, connect_timeout=2)
    try:
        kv = await nc.jetstream().key_value(LEASES)
        out = {}
        try:
            keys = await kv.keys()
        except Exception:
            keys = []
        prefix = f"{ward}.p"
        for key in keys:
            if not key.startswith(prefix):
                continue
            try:
                out[int(key[len(prefix) :])] = ((await kv.get(key)).value or b"").decode()
            except Exception:
                pass
        return out
    finally:
        await nc.close()


def lease_owners(servers: list[str], ward: str) -> dict[int, str]:
    """Partition -> the worker holding its lease now (the workers serving `ward`)."""
    try:
        return asyncio.run(_lease_owners(servers, ward))
    except Exception:
        return {}


def wait_owned(
    servers: list[str], ward: str, partitions: int, owners: set[str], timeout: float
) -> bool:
    """Every partition of the ward's workers leased as the workers `owners` split them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = lease_owners(servers, ward)
        if got == assignment(owners, partitions):
            return True
        time.sleep(0.3)
    return False


async def _cluster_state(servers: list[str], ward: str, durable: str) -> ClusterState:
    import pickle

    import nats
    from nats.js.errors import KeyNotFoundError

    from ecgcommon.subjects import CHECKPOINTS, IN_STREAM, OUT_STREAM

    nc = await nats.connect(servers=servers, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=2.0)
        state = ClusterState(int((await js.stream_info(IN_STREAM)).state.last_seq))
        kv = await js.key_value(CHECKPOINTS)
        for k in range(PARTITIONS):
            try:
                entry = await kv.get(f"{ward}.p{k}")
            except KeyNotFoundError:
                continue
            if entry.value is None:
                continue
            seq, beds = pickle.loads(entry.value)  # our own test cluster's checkpoints
            state.checkpoints[k] = (int(seq), {bed for _, bed in beds})
        if durable:
            info = await js.consumer_info(OUT_STREAM, durable)
            state.unhandled = int(info.num_pending) + int(info.num_ack_pending)
        return state
    finally:
        await nc.close()


def cluster_state(servers: list[str], ward: str, durable: str = "") -> ClusterState | None:
    """ECG_IN's newest sequence, the ward's committed checkpoints and what the durable consumer
    `durable` (alerting's) has not handled yet; None while the cluster does not answer."""
    try:
        return asyncio.run(_cluster_state(servers, ward, durable))
    except Exception:
        return None


async def _stored(servers: list[str], ward: str) -> Seen:
    import nats

    from ecgcommon.subjects import OUT_STREAM, output_filter

    seen = Seen()
    nc = await nats.connect(servers=servers, connect_timeout=2)
    try:
        js = nc.jetstream()
        for attempt in range(15):  # the cluster may still be electing leaders after a fault
            try:
                sub = await js.subscribe(
                    output_filter(ward), stream=OUT_STREAM, ordered_consumer=True
                )
                break
            except Exception:
                if attempt == 14:
                    raise
                await asyncio.sleep(2.0)
        while True:
            try:
                msg = await sub.next_msg(timeout=2.0)
            except Exception:  # nothing more within 2 s: the end of the stream
                break
            kind = msg.subject.rsplit(".", 1)[1]
            doc = json.loads(msg.data)
            if kind == "beats":
                for b in doc.get("beats", []):
                    seen.beats.setdefault(b["bed"], []).append((b["sample"], 0.0))
                    seen.ids[b["beat_id"]] = seen.ids.get(b["beat_id"], 0) + 1
            elif kind == "events":
                seen.events.append(doc)
        await sub.unsubscribe()
    finally:
        await nc.close()
    return seen


def stored(servers: list[str], ward: str) -> Seen:
    """Every beat and event of the ward in ECG_OUT now: what a durable consumer gets."""
    return asyncio.run(_stored(servers, ward))


def describe(seen: Seen, ref: dict[str, list[int]]) -> str:
    """Where the beats differ from the reference (for a failing check)."""
    lines = []
    for bed, samples in sorted(ref.items()):
        got = [s for s, _ in seen.beats.get(bed, [])]
        miss = sorted(set(samples) - set(got))
        dup = sorted({s for s in got if got.count(s) > 1})
        if miss or dup:
            lines.append(
                f"{bed}: {len(samples)} ref, missing {miss[:3]}..{miss[-3:]} "
                f"({len(miss)}), repeated {dup[:5]}"
            )
    return "; ".join(lines)
