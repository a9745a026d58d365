"""Load generator: N beds of MIT-BIH in real time, through the streamer's own core.

Publishes with a few MQTT connections (not one per bed: the bench measures the detector, and
thousands of device connections would measure the broker and this process instead), all driven
from the one publishing thread: each publish is written to its socket at once, and the sockets
are served (keepalive, acks, what the kernel could not take) while waiting for the next message
due. paho's background network threads (`loop_start`) cost a wake-up, a socket-pair write and
GIL hand-overs per message: 0.23 ms of CPU per chunk here, taken from the two cores the
detector and the broker need, where each real device pays its own. Prints one JSON line at the
end: messages published and how late they went out against their schedule.

    python -m bench.loadgen --port 1883 --ward bench --beds 500 --duration-s 30
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from ecgcommon.records import load_record
from streamer.core import Playback, Source, make_streams, schedule

RECORDS = ("100", "101", "103", "105", "106", "119", "200", "208", "213", "221")


def connect(host: str, port: int, client_id: str, timeout_s: float = 10.0) -> mqtt.Client:
    """A connected client with no network thread (its owner calls `serve`); RuntimeError if the
    broker does not accept it within `timeout_s`."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.max_queued_messages_set(0)
    c.connect(host, port, keepalive=60)  # the CONNECT is written at once (no thread)
    deadline = time.monotonic() + timeout_s
    while not c.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no CONNACK from {host}:{port} in {timeout_s} s")
        serve([c], 0.05)
    return c


def serve(clients: list[mqtt.Client], timeout_s: float) -> None:
    """Wait up to `timeout_s` for any client's socket, then read what came (CONNACK, PINGRESP),
    write what the kernel could not take yet, and keep the connections alive."""
    socks: dict[Any, mqtt.Client] = {}
    for c in clients:
        sock = c.socket()
        if sock is not None:
            socks[sock] = c
    writing = [s for s, c in socks.items() if c.want_write()]
    try:
        readable, writable, _ = select.select(list(socks), writing, [], max(0.0, timeout_s))
    except (OSError, ValueError):  # a socket closed under us: the next publish reports it
        readable, writable = [], []
    for s in readable:
        socks[s].loop_read()
    for s in writable:
        socks[s].loop_write()
    for c in clients:
        c.loop_misc()


def drain(clients: list[mqtt.Client], timeout_s: float = 30.0) -> None:
    """Write every queued message out, then disconnect cleanly."""
    deadline = time.monotonic() + timeout_s
    while any(c.want_write() for c in clients) and time.monotonic() < deadline:
        serve(clients, 0.05)
    for c in clients:
        c.disconnect()
    while any(c.want_write() for c in clients) and time.monotonic() < deadline:
        serve(clients, 0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ward", default="bench")
    p.add_argument("--beds", type=int, required=True)
    p.add_argument("--chunk-s", type=float, default=1.0)
    p.add_argument("--duration-s", type=float, required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--records", nargs="*", default=list(RECORDS))
    p.add_argument("--connections", type=int, default=4, help="a bed always uses the same one")
    p.add_argument("--start-at", type=float, default=0.0, help="unix time to start (sync)")
    a = p.parse_args(argv)

    sources = [
        Source.from_record(load_record(n, a.data_dir, annotations=False, sampto=360 * 600))
        for n in a.records
    ]
    clients = [connect(a.host, a.port, f"loadgen-{a.ward}-{i}") for i in range(a.connections)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if a.start_at:
        time.sleep(max(0.0, a.start_at - time.time()))
    t_start = time.time()
    mono0 = time.monotonic()
    cpu0 = time.process_time()
    playback = Playback(t_start, max_samples=int(round(a.duration_s * sources[0].fs)))
    streams = make_streams(sources, a.ward, a.beds, a.chunk_s, playback, stride_s=61.0)
    late = []
    sent = failed = 0
    for msg in schedule(streams):
        now = time.monotonic() - mono0
        while msg.due_s > now and not stop.is_set():  # serve the sockets until it is due
            serve(clients, min(msg.due_s - now, 0.5))
            now = time.monotonic() - mono0
        if stop.is_set():
            break
        info = clients[int(msg.bed) % len(clients)].publish(msg.topic, msg.payload, qos=0)
        late.append(time.monotonic() - mono0 - msg.due_s)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            sent += 1
        else:
            failed += 1
    drain(clients)
    lat = np.asarray(late) if late else np.zeros(1)
    print(
        json.dumps(
            {
                "published": sent,
                "failed": failed,
                "t_start": t_start,
                "late_p50_s": float(np.percentile(lat, 50)),
                "late_p99_s": float(np.percentile(lat, 99)),
                "late_max_s": float(lat.max()),
                "wall_s": time.monotonic() - mono0,
                "cpu_s": time.process_time() - cpu0,  # this process, while it published
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
