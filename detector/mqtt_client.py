"""The detector's MQTT client: paho's, with a buffered socket, driven from one thread.

The detector's worker runs paho's network loop and the engine in one thread (detector/service.py);
these are the client's parts that make that cheap at thousands of messages a second: reads in
big blocks, a bounded amount of parsing per call, writes gathered into one send() per turn, no
in-flight window on the QoS 1 publications and a lean PUBACK. They lean on paho 2.x internals
(`_create_socket`, `_packet_read`, `_handle_pubackcomp`, `_out_messages`);
tests/test_mqtt_client.py checks them against a real Mosquitto.
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as mqtt

# paho's limits on the detector's outgoing QoS 1 messages (beats, events). No in-flight window
# (0): acks must not throttle publication, and with a window paho walks every unacknowledged
# message on each PUBACK (`Client._update_inflight`, O(window) per ack: 16 % of the worker's
# time at 1187 beds with a window of 1000), while the PUBACKs queue behind the samples on the
# same connection, so a detector a little behind stopped publishing beats at all.
MAX_INFLIGHT = 0
MAX_QUEUED = 100_000  # messages waiting for the socket (a broker outage): then new ones fail


class BufferedSocket:
    """A socket whose recv() is served from 256 KiB reads, and whose send() may gather.

    paho reads each MQTT packet with three or more small recv() calls, and every call releases
    and re-takes the GIL; with the worker thread busy, the network thread then waits for the GIL
    after each one and cannot keep up with thousands of messages a second. Reading big blocks
    cuts that to about one system call per message. `pending()` is what paho asks of TLS sockets
    to learn that buffered bytes are waiting without select().

    With `gather`, send() only appends to an outgoing buffer (paho sees every packet written at
    once) and `flush()` writes it, as much as the kernel takes without blocking: one send() per
    worker turn instead of one per publication (each loopback send() wakes the broker: 14 -> 8
    µs of broker CPU per QoS 1 beats message, bench.qos). For a client driven from one thread
    that flushes (`BufferedClient.flush`); close() flushes what is left first (paho's DISCONNECT).
    """

    BLOCK = 256 * 1024

    def __init__(self, sock: Any, gather: bool = False) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0
        self._gather = gather
        self._out = bytearray()

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if not self._gather:
            return int(self._sock.send(data))
        self._out += data
        return len(data)

    def unsent(self) -> int:
        """Bytes gathered and not yet written."""
        return len(self._out)

    def flush(self) -> None:
        """Write the gathered bytes, as many as the kernel takes now; errors are left to the
        next recv() (paho's read reports a lost connection)."""
        while self._out:
            try:
                n = self._sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except OSError:
                self._out.clear()  # the connection is gone: paho resends QoS 1 on reconnect
                return
            del self._out[:n]

    def close(self) -> None:
        self.flush()
        self._sock.close()

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._data):
            data = self._sock.recv(max(bufsize, self.BLOCK))
            if len(data) <= bufsize:
                return data
            self._data, self._pos = data, 0
        out = self._data[self._pos : self._pos + bufsize]
        self._pos += len(out)
        return out

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)  # bytes TLS decrypted but not yet read
        return len(self._data) - self._pos + (inner() if callable(inner) else 0)

    def __getattr__(self, name: str) -> Any:  # send, fileno, close, setblocking, ...
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """paho's client with a buffered socket (see `BufferedSocket`) that parses every buffered
    packet per wake-up instead of one (one GIL hand-over per block, not per message), and, with
    `gather_writes`, writes once per `flush()`.

    `loop_read` parses what the socket buffered, at most `READ_BUDGET` packets per call: paho's
    own reads as many packets as it holds unacknowledged messages (`len(_out_messages)`), and the
    buffered socket nearly always ends a block inside a packet (which reads the next block), so
    a backlog kept the worker in one call for seconds: no batching deadline, no publication, no
    stop request (the shutdown's results and cProfile dump were lost) was served in that time.
    """

    READ_BUDGET = 64  # packets (~40 ms of 1 s sample chunks): ticks stay within max_wait_s

    gather_writes = False  # True: sends are gathered until `flush()` (one driving thread)

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket(), self.gather_writes)

    def flush(self) -> None:
        """Write what the socket gathered (see `BufferedSocket`); a no-op without a socket."""
        if isinstance(self._sock, BufferedSocket):
            self._sock.flush()

    def _handle_pubackcomp(self, cmd: Any) -> mqtt.MQTTErrorCode:
        """A PUBACK of MQTT 3.1.1 without an `on_publish` callback: what paho does with it
        (forget the message, mark it published, one fewer in flight) without building the
        reason code and properties objects only MQTT 5 carries (a third of a QoS 1 message's
        client CPU). Everything else goes to paho."""
        packet = self._in_packet["packet"]
        if (
            cmd != "PUBACK"
            or self._protocol == mqtt.MQTTv5
            or self.on_publish is not None
            or len(packet) != 2
            or self._max_inflight_messages > 0  # paho then also refills the window
        ):
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            msg = self._out_messages.pop(mid, None)
            if msg is not None:
                msg.info._set_as_published()
                if msg.qos > 0:
                    self._inflight_messages -= 1
        return mqtt.MQTT_ERR_SUCCESS

    def want_write(self) -> bool:
        """paho's queue or the gathered bytes wait for the socket."""
        sock = self._sock
        return super().want_write() or (isinstance(sock, BufferedSocket) and sock.unsent() > 0)

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        for _ in range(self.READ_BUDGET):
            if self._sock is None:
                return mqtt.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            sock = self._sock
            if (
                rc == mqtt.MQTT_ERR_AGAIN
                or not isinstance(sock, BufferedSocket)  # a plain socket: one packet, as paho
                or sock.pending() <= 0
            ):
                break
        return mqtt.MQTT_ERR_SUCCESS
