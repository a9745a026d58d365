"""`python -m bench.qos`: the detector-side CPU of one beats message at QoS 0 and at QoS 1.

QoS 1 lets a durable subscriber (the alerting service) get what it missed (docs/faults.md); its
cost is the client's bookkeeping of in-flight messages and their PUBACKs. This drives the
detector's own MQTT client class (`BufferedClient`) from one thread, as the detector's worker
does (`select`, `loop_read`, `loop_write`, `loop_misc` every 50 publications), against a real
Mosquitto on a free loopback port, and prints the process CPU per message for each QoS.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from bench.services import proc_cpu_s
from detector.mqtt_client import MAX_INFLIGHT, MAX_QUEUED, BufferedClient, BufferedSocket
from ecgcommon import protocol
from tests.helpers.broker import Mosquitto

PAYLOAD = protocol.encode_beats(
    [
        protocol.BeatResult(
            bed="01",
            sample=123456,
            t=1.7e9,
            rr_s=0.8,
            hr_bpm=75.0,
            score=0.31,
            threshold=1.0,
            anomalous=False,
            beat_id="w:01:123456",
            cls="N",
        )
    ],
    analysed_from=1.7e9,
)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _turn(c: BufferedClient, timeout: float) -> None:
    c.flush()
    sock = c.socket()
    if sock is None:
        return
    buffered = isinstance(sock, BufferedSocket) and sock.pending() > 0
    w = [sock] if c.want_write() else []
    readable, writable, _ = select.select([sock], w, [], 0.0 if buffered else timeout)
    if readable or buffered:
        c.loop_read()
    if writable and c.socket() is not None:
        c.loop_write()
        c.flush()
    c.loop_misc()


def cpu_per_message_us(
    port: int, qos: int, n: int, inflight: int = MAX_INFLIGHT, gather: bool = True
) -> float:
    """Process CPU (µs) per beats message published with `qos`, all of them delivered, with
    paho's in-flight window `inflight` (0: none) and writes gathered per turn or not (the
    detector's settings by default)."""
    c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=f"qos{qos}-{time.time_ns()}")
    c.gather_writes = gather
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(MAX_QUEUED)
    c.connect("127.0.0.1", port)
    for _ in range(20):
        _turn(c, 0.01)
    t0 = _cpu_s()
    for i in range(n):
        c.publish(f"ecg/v1/w/{i % 1000:04d}/beats", PAYLOAD, qos)
        if i % 50 == 49:
            _turn(c, 0.0)
    deadline = time.monotonic() + 60
    while (c.want_write() or (qos and c._out_messages)) and time.monotonic() < deadline:
        _turn(c, 0.01)
    used = _cpu_s() - t0
    c.disconnect()
    return used / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.qos", description=__doc__)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--inflight", type=int, default=MAX_INFLIGHT, help="paho's in-flight window (0: none)"
    )
    p.add_argument("--no-gather", action="store_true", help="one send() per publication")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ecg-qos-") as tmp:
        mosquitto = Mosquitto(Path(tmp)).start()
        assert mosquitto.proc is not None
        runs: dict[int, list[float]] = {0: [], 1: []}
        broker_us: dict[int, list[float]] = {0: [], 1: []}
        try:
            for _ in range(args.repeats):
                for qos in (0, 1):
                    b0 = proc_cpu_s(mosquitto.proc.pid)
                    runs[qos].append(
                        cpu_per_message_us(
                            mosquitto.port, qos, args.messages, args.inflight, not args.no_gather
                        )
                    )
                    used = proc_cpu_s(mosquitto.proc.pid) - b0
                    broker_us[qos].append(used / args.messages * 1e6)
        finally:
            mosquitto.stop()
        best = {qos: min(v) for qos, v in runs.items()}
        print(
            json.dumps(
                {
                    "us_cpu_per_beats_message": {str(q): round(v, 1) for q, v in best.items()},
                    "qos1_extra_us": round(best[1] - best[0], 1),
                    # the broker's share (a subscriber-less topic: its intake and the PUBACKs)
                    "broker_us_cpu_per_beats_message": {
                        str(q): round(min(v), 1) for q, v in broker_us.items()
                    },
                    "inflight_window": args.inflight,
                    "writes_gathered": not args.no_gather,
                    "runs": {str(q): [round(x, 1) for x in v] for q, v in runs.items()},
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
