"""The detector's MQTT client parts (detector/mqtt_client.py) on a local socket pair and a real
Mosquitto: gathered writes reach the peer only on flush (and on close), reads are bounded per
call, and QoS 1 publications are not held by an in-flight window."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from detector.mqtt_client import MAX_INFLIGHT, BufferedClient, BufferedSocket
from tests.helpers.broker import Mosquitto


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.settimeout(2.0)
    return a, b


def test_gathered_sends_reach_the_peer_on_flush_in_order() -> None:
    a, b = _pair()
    s = BufferedSocket(a, gather=True)
    assert s.send(b"abc") == 3 and s.send(bytearray(b"de")) == 2
    assert s.unsent() == 5
    assert not select.select([b], [], [], 0.05)[0]  # nothing written yet
    s.flush()
    assert s.unsent() == 0
    assert b.recv(16) == b"abcde"
    a.close()
    b.close()


def test_close_flushes_what_was_gathered() -> None:
    a, b = _pair()
    s = BufferedSocket(a, gather=True)
    s.send(b"\xe0\x00")  # an MQTT DISCONNECT, as paho writes it just before closing
    s.close()
    assert b.recv(16) == b"\xe0\x00"
    b.close()


def test_flush_keeps_what_the_kernel_cannot_take_yet() -> None:
    a, b = _pair()
    s = BufferedSocket(a, gather=True)
    big = bytes(range(256)) * 40_000  # 10 MB: more than a socket buffer
    s.send(big)
    s.flush()
    assert 0 < s.unsent() < len(big)
    got = bytearray()
    while len(got) < len(big):
        got += b.recv(1 << 20)
        s.flush()
    assert bytes(got) == big and s.unsent() == 0
    a.close()
    b.close()


def test_plain_sends_are_not_gathered() -> None:
    a, b = _pair()
    s = BufferedSocket(a)
    assert s.send(b"xyz") == 3
    assert s.unsent() == 0
    assert b.recv(16) == b"xyz"
    a.close()
    b.close()


def _publish_packet(topic: str, payload: bytes) -> bytes:
    """A QoS 0 MQTT PUBLISH packet."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload
    assert len(body) < 128
    return bytes([0x30, len(body)]) + body


def test_loop_read_parses_at_most_its_budget_per_call() -> None:
    """A backlog is served in bounded steps: the worker gets back to its deadlines between."""
    a, b = _pair()
    got: list[str] = []
    c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id="budget")
    c.on_message = lambda _c, _u, m: got.append(m.topic)
    c._sock = BufferedSocket(a)  # as if connected: loop_read only reads packets
    n = 3 * BufferedClient.READ_BUDGET + 5
    b.sendall(b"".join(_publish_packet(f"t/{i}", b"x") for i in range(n)))
    time.sleep(0.05)
    assert c.loop_read() == mqtt.MQTT_ERR_SUCCESS
    assert len(got) == BufferedClient.READ_BUDGET
    while len(got) < n:
        c.loop_read()
    assert got == [f"t/{i}" for i in range(n)]
    assert c.loop_read() == mqtt.MQTT_ERR_SUCCESS  # nothing left: returns at once
    c._sock = None
    a.close()
    b.close()


def _turn(c: BufferedClient, timeout: float) -> None:
    """One turn of the detector worker's loop (detector/service.py `_loop_once`)."""
    c.flush()
    sock = c.socket()
    assert sock is not None
    w = [sock] if c.want_write() else []
    r, wr, _ = select.select([sock], w, [], timeout)
    if r or (isinstance(sock, BufferedSocket) and sock.pending() > 0):
        c.loop_read()
    if wr:
        c.loop_write()
        c.flush()
    c.loop_misc()


def _connected(broker_port: int, client_id: str) -> BufferedClient:
    c = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.gather_writes = True
    c.max_inflight_messages_set(MAX_INFLIGHT)
    c.connect("127.0.0.1", broker_port)
    deadline = time.monotonic() + 10
    while not c.is_connected() and time.monotonic() < deadline:
        _turn(c, 0.05)
    assert c.is_connected()
    return c


def _publish_all_and_wait(c: BufferedClient, n: int) -> list[mqtt.MQTTMessageInfo]:
    infos = [c.publish(f"t/{i % 50}", b"beat", qos=1) for i in range(n)]
    assert all(i.rc == mqtt.MQTT_ERR_SUCCESS for i in infos)
    assert c._inflight_messages == n  # no in-flight window: none held back in paho's queue
    deadline = time.monotonic() + 10
    while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
        _turn(c, 0.05)
    return infos


def test_qos1_publications_all_go_out_at_once_and_are_acked(tmp_path: Path) -> None:
    """No in-flight window: 3000 QoS 1 messages are all on the wire before any PUBACK is read,
    and every one is acknowledged; the fast PUBACK path (no on_publish) forgets each."""
    assert MAX_INFLIGHT == 0
    with Mosquitto(tmp_path) as broker:
        c = _connected(broker.port, "qos1-fast")
        infos = _publish_all_and_wait(c, 3000)
        assert all(i.is_published() for i in infos)
        assert not c._out_messages and c._inflight_messages == 0
        c.disconnect()


def test_qos1_acks_reach_on_publish_through_paho(tmp_path: Path) -> None:
    """With an on_publish callback the PUBACK takes paho's own path: every mid is reported."""
    with Mosquitto(tmp_path) as broker:
        c = _connected(broker.port, "qos1-callback")
        acked: list[int] = []
        c.on_publish = lambda _c, _u, mid, *_: acked.append(mid)
        infos = _publish_all_and_wait(c, 500)
        assert sorted(acked) == sorted(i.mid for i in infos)
        assert not c._out_messages and c._inflight_messages == 0
        c.disconnect()
