"""NATS subjects of the distributed bus: MQTT topics <-> subjects, partitions, stream names.

Devices keep MQTT: NATS's MQTT listener turns the topic `ecg/v1/{ward}/{bed}/{kind}` into the
subject `ecg.v1.{ward}.{bed}.{kind}`. The server's subject mapping (`mappings()`) moves every
bed's `samples` and `status` into one of `partitions` partitions,
`part.{k}.{ward}.{bed}.{kind}`, by a hash of ward and bed, so one bed always lands in one
partition and one partition has one detector owner. A `.` would split a NATS token, so names
with a `.` are refused on this bus (they still work on Mosquitto).
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgcommon.topics import (
    INPUT_KINDS,
    KINDS,
    PREFIX,
    VERSION,
    TopicError,
    parse_topic,
)

PARTITIONS = 8  # default partition count; the server's mapping and the workers must agree
PART = "part"
# topics.INPUT_KINDS are partitioned, consumed by the detector workers; topics.OUTPUT_KINDS (the
# detector's results) are consumed durably by alerting.
IN_STREAM = "ECG_IN"  # part.> : device samples and status, in order per partition
OUT_STREAM = "ECG_OUT"  # ecg.v1.*.*.* : results (and alarms), deduplicated by message id
LEASES = "ecg_leases"  # KV: partition -> owning worker, with a TTL
MEMBERS = "ecg_members"  # KV: live workers, with a TTL
CHECKPOINTS = "ecg_ckpt"  # KV: per-bed detector state and the stream sequence it covers


@dataclass(frozen=True)
class BusAddress:
    """Where the bus is: `nats://h1:4222,h2:4222` (NATS servers) or empty (MQTT broker)."""

    servers: tuple[str, ...] = ()

    @property
    def is_nats(self) -> bool:
        return bool(self.servers)


def parse_bus(url: str) -> BusAddress:
    """`""` or `mqtt` -> the MQTT broker; `nats://host:port[,host:port...]` -> NATS servers."""
    url = url.strip()
    if url in ("", "mqtt"):
        return BusAddress()
    if not url.startswith("nats://"):
        raise ValueError(f"bus must be empty, 'mqtt' or nats://host:port[,...], got {url!r:.80}")
    servers = []
    for part in url.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.startswith("nats://"):
            part = "nats://" + part
        hostport = part[len("nats://") :]
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bus server {part!r:.80} must be nats://host:port")
        servers.append(part)
    if not servers:
        raise ValueError("bus names no NATS server")
    return BusAddress(tuple(servers))


def _nats_safe(name: str, value: str) -> None:
    if "." in value:
        raise TopicError(f"{name} {value!r:.80} contains '.', which NATS subjects cannot carry")


def subject(topic: str) -> str:
    """The NATS subject of an MQTT topic (`ecg/v1/w/b/beats` -> `ecg.v1.w.b.beats`)."""
    t = parse_topic(topic)
    _nats_safe("ward", t.ward)
    _nats_safe("bed", t.bed)
    return f"{PREFIX}.{VERSION}.{t.ward}.{t.bed}.{t.kind}"


def topic_of(subj: str) -> str:
    """The MQTT topic of a subject, partitioned (`part.3.w.b.samples`) or not; TopicError."""
    parts = subj.split(".")
    if len(parts) == 5 and parts[0] == PART and parts[1].isdigit():
        ward, bed, kind = parts[2], parts[3], parts[4]
    elif len(parts) == 5 and parts[0] == PREFIX and parts[1] == VERSION:
        ward, bed, kind = parts[2], parts[3], parts[4]
    else:
        raise TopicError(f"subject {subj!r:.80} is neither part.k.ward.bed.kind nor ecg.v1.*")
    if kind not in KINDS:
        raise TopicError(f"subject {subj!r:.80} has kind {kind!r}")
    name = f"{PREFIX}/{VERSION}/{ward}/{bed}/{kind}"
    parse_topic(name)  # the same name rules as MQTT
    return name


def partition_of(subj: str) -> int:
    """The partition of a partitioned subject `part.{k}.…`; TopicError otherwise."""
    parts = subj.split(".", 2)
    if len(parts) < 3 or parts[0] != PART or not parts[1].isdigit():
        raise TopicError(f"subject {subj!r:.80} is not partitioned")
    return int(parts[1])


def partition_filter(k: int, ward: str = "+") -> str:
    """Every input message of partition `k` (of one ward, or of every ward with "+")."""
    if ward == "+":
        return f"{PART}.{k}.>"
    _nats_safe("ward", ward)
    return f"{PART}.{k}.{ward}.>"


def output_filter(ward: str) -> str:
    """Every result (beats, events) of one ward."""
    _nats_safe("ward", ward)
    return f"{PREFIX}.{VERSION}.{ward}.*.*"


def live_filter(ward: str) -> str:
    """Every input message (samples, status) of one ward, across partitions."""
    _nats_safe("ward", ward)
    return f"{PART}.*.{ward}.*.*"


def output_subjects() -> list[str]:
    """ECG_OUT's subjects: every unmapped kind (beats, events, and alerting's alarms); one
    wildcard, since a 2.9 consumer filters on one subject that must lie within one of them."""
    return [f"{PREFIX}.{VERSION}.*.*.*"]


def mappings(partitions: int = PARTITIONS) -> dict[str, str]:
    """The server's subject mapping: a bed's input kinds into its partition (hash of ward, bed)."""
    if not 1 <= partitions <= 1024:
        raise ValueError(f"partitions must be in 1..1024, got {partitions}")
    return {
        f"{PREFIX}.{VERSION}.*.*.{kind}": (
            f"{PART}.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}"
            f".{{{{wildcard(2)}}}}.{kind}"
        )
        for kind in INPUT_KINDS
    }


async def ensure_stream(
    js: object, name: str, subjects: list[str], max_age_s: float, replicas: int = 3
) -> int:
    """Create the stream unless it exists; replicated `replicas` times where the servers form a
    cluster, once on a single server. Returns the replica count in use."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import APIError, NotFoundError

    try:
        info = await js.stream_info(name)  # type: ignore[attr-defined]
        return int(info.config.num_replicas or 1)
    except NotFoundError:
        pass
    for n in dict.fromkeys((replicas, 1)):
        try:
            cfg = StreamConfig(
                name=name,
                subjects=subjects,
                max_age=max_age_s,
                num_replicas=n,
                storage=StorageType.FILE,
                duplicate_window=min(120.0, max_age_s),
            )
            await js.add_stream(cfg)  # type: ignore[attr-defined]
            return n
        except APIError as exc:
            if n == 1 or "replica" not in str(exc).lower():
                if "already in use" in str(exc):
                    return n
                raise
    return 1


async def ensure_kv(js: object, bucket: str, ttl_s: float | None, replicas: int = 3) -> object:
    """The KV bucket, created where missing (replicated where the servers allow)."""
    from nats.js.errors import APIError, BucketNotFoundError

    try:
        return await js.key_value(bucket)  # type: ignore[attr-defined]
    except BucketNotFoundError:
        pass
    for n in dict.fromkeys((replicas, 1)):
        try:
            return await js.create_key_value(  # type: ignore[attr-defined]
                bucket=bucket, ttl=ttl_s, history=1, replicas=n
            )
        except APIError as exc:
            if n == 1 or "replica" not in str(exc).lower():
                if "already in use" in str(exc):
                    return await js.key_value(bucket)  # type: ignore[attr-defined]
                raise
    raise RuntimeError("unreachable")
