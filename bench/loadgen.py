"""Load generator: N beds of MIT-BIH in real time, through the streamer's own core.

Publishes with a few MQTT connections (not one per bed: the bench measures the detector, and
thousands of device connections would measure the broker and this process instead). Prints one
JSON line at the end: messages published and how late they went out against their schedule.

    python -m bench.loadgen --port 1883 --ward bench --beds 500 --duration-s 30
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt

from ecgcommon.records import load_record
from streamer.core import Playback, Source, make_streams, schedule

RECORDS = ("100", "101", "103", "105", "106", "119", "200", "208", "213", "221")


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
    clients = []
    for i in range(a.connections):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"loadgen-{a.ward}-{i}")
        c.max_queued_messages_set(0)
        c.connect(a.host, a.port, keepalive=60)
        c.loop_start()
        clients.append(c)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if a.start_at:
        time.sleep(max(0.0, a.start_at - time.time()))
    t_start = time.time()
    mono0 = time.monotonic()
    playback = Playback(t_start, max_samples=int(round(a.duration_s * sources[0].fs)))
    streams = make_streams(sources, a.ward, a.beds, a.chunk_s, playback, stride_s=61.0)
    late = []
    sent = failed = 0
    for msg in schedule(streams):
        now = time.monotonic() - mono0
        if msg.due_s > now:
            if stop.wait(msg.due_s - now):
                break
        elif stop.is_set():
            break
        info = clients[int(msg.bed) % len(clients)].publish(msg.topic, msg.payload, qos=0)
        late.append(time.monotonic() - mono0 - msg.due_s)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            sent += 1
        else:
            failed += 1
    for c in clients:
        c.disconnect()
        c.loop_stop()
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
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
