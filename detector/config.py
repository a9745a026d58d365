"""Detector configuration: frozen dataclasses in physical units, set by env and CLI.

`EngineSettings` holds the knobs of the sans-I/O `DetectorEngine`; `DetectorConfig` extends it
with what the service around the engine needs (broker, HTTP, model, NATS), so each field has one
definition. Every field is a `setting` (ecgcommon/settings.py): its env variable, flag, unit and
bounds; `python -m detector --help` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ecgcommon import settings
from ecgcommon.limits import BED_IDLE_S, MAX_BEDS, valid_name
from ecgcommon.model_contract.manifest import DEFAULT_MODEL_DIR
from ecgcommon.settings import MqttSettings, Settings, setting
from ecgcommon.subjects import PARTITIONS
from ecgcommon.topics import status_topic

QOS = (0, 1, 2)


def _check_ward(ward: str) -> None:
    if ward != "+":  # "+" = every ward
        status_topic(ward, "1")  # TopicError (a ValueError) says what is wrong


def _check_worker_id(worker_id: str) -> None:
    if worker_id and not valid_name(worker_id):
        raise ValueError("must be a plain name")


@dataclass(frozen=True, repr=False)
class EngineSettings(Settings):
    """The engine's knobs: batching, silence, gap filling, QoS of what it publishes, bed limits."""

    max_batch: int = setting(
        256, env="DETECTOR_MAX_BATCH", flag="--max-batch", unit="beats", min=1, max=65536,
        help="beats per inference batch",
    )  # fmt: skip
    max_wait_s: float = setting(
        0.05, env="DETECTOR_MAX_WAIT_S", flag="--max-wait-s", unit="s", min=0, max=5,
        help="longest a beat waits for its batch to fill",
    )  # fmt: skip
    signal_timeout_s: float = setting(
        5.0, env="DETECTOR_SIGNAL_TIMEOUT_S", flag="--signal-timeout-s", unit="s", gt=0,
        help="no chunk this long: signal_lost event, bed inactive",
    )  # fmt: skip
    max_fill_s: float = setting(
        10.0, env="DETECTOR_MAX_FILL_S", flag="--max-fill-s", unit="s", min=0,
        help="longer gaps restart the bed's pipeline instead of NaN-filling",
    )  # fmt: skip
    qos_beats: int = setting(
        1, env="DETECTOR_QOS", flag="--qos-beats", choices=QOS,
        help="QoS of beats: 1 = a durable subscriber (alerting) gets what it missed (faults.md)",
    )  # fmt: skip
    qos_events: int = setting(
        1, env="DETECTOR_QOS_EVENTS", flag="--qos-events", choices=QOS, help="QoS of events"
    )  # fmt: skip
    max_upload_s: float = setting(
        3600.0, env="DETECTOR_MAX_UPLOAD_S", flag="--max-upload-s", unit="s", min=0,
        help="longest signal accepted by POST /v1/score",
    )  # fmt: skip
    max_beds: int = setting(
        MAX_BEDS, env="DETECTOR_MAX_BEDS", flag="--max-beds", unit="beds", min=1, max=1_000_000,
        help="beds tracked at once (the longest-idle one makes room)",
    )  # fmt: skip
    bed_idle_s: float = setting(
        BED_IDLE_S, env="DETECTOR_BED_IDLE_S", flag="--bed-idle-s", unit="s", gt=0,
        help="a bed with no message this long is forgotten",
    )  # fmt: skip


@dataclass(frozen=True, repr=False)
class DetectorConfig(EngineSettings):
    """Where to listen, which model, where to serve metrics; the engine's knobs above."""

    _prog = "python -m detector"
    _about = "Live ECG beat detection and scoring over MQTT (docs/protocol.md)."

    mqtt: MqttSettings = settings.nested(
        lambda: MqttSettings(client_id="detector"),  # `make ward`'s broker sets the username
        prefix="mqtt",
        env={"client_id": "DETECTOR_CLIENT_ID"},
    )
    ward: str = setting(
        "+", env="ECG_WARD", flag="--ward", check=_check_ward, help='ward to analyse; "+" = all'
    )
    model_dir: str = setting(
        str(DEFAULT_MODEL_DIR), env="DETECTOR_MODEL_DIR", flag="--model-dir",
        help="folder of the ONNX models and their manifests",
    )  # fmt: skip
    profile: str = setting(
        "icu", env="DETECTOR_PROFILE", flag="--profile", nonempty=True,
        help='operating point of the anomaly threshold (manifest "thresholds")',
    )  # fmt: skip
    qos_in: int = setting(
        0, env="DETECTOR_QOS_IN", flag="--qos-in", choices=QOS,
        help="subscription QoS for samples (status is always QoS 1)",
    )  # fmt: skip
    http_host: str = settings.http_host(
        "0.0.0.0", "DETECTOR_HTTP_HOST", "/metrics, /healthz, /v1/score"
    )
    http_port: int = settings.http_port(8000, "DETECTOR_HTTP_PORT")
    cprofile_out: str = setting(
        "", env="DETECTOR_CPROFILE_OUT", flag="--cprofile-out",
        help="benchmarks: cProfile each thread into <this>.<thread> on exit",
    )  # fmt: skip
    token: str = setting(
        "", env="ECG_DETECTOR_TOKEN", flag="--token", min_len=8, secret=True,
        help="bearer token of POST /v1/score; empty: one is generated and printed once",
    )  # fmt: skip
    bus: str = settings.bus()
    worker_id: str = setting(
        "", env="DETECTOR_WORKER_ID", flag="--worker-id", check=_check_worker_id,
        help="NATS: this worker's name (leases); empty: the host name",
    )  # fmt: skip
    partitions: int = setting(
        PARTITIONS, env="ECG_PARTITIONS", flag="--partitions", min=1, max=1024,
        help="NATS: must match the servers' subject mapping",
    )  # fmt: skip
    checkpoint_s: float = setting(
        10.0, env="DETECTOR_CHECKPOINT_S", flag="--checkpoint-s", unit="s", min=0.5, max=600,
        help="NATS: how often each bed's state is checkpointed",
    )  # fmt: skip
    lease_ttl_s: float = setting(
        3.0, env="DETECTOR_LEASE_TTL_S", flag="--lease-ttl-s", unit="s", min=1, max=60,
        help="NATS: a partition whose owner stops renewing moves after this",
    )  # fmt: skip


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str] | None = None) -> DetectorConfig:
    """Command line over environment variables over defaults; ValueError names a bad field."""
    return settings.load(DetectorConfig, argv, env)
