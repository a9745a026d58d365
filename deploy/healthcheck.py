"""Container healthcheck: exit 0 when the service answers, 1 otherwise (standard library only).

python healthcheck.py http://127.0.0.1:8000/healthz     # HTTP 200 within the timeout
python healthcheck.py mqtt://mosquitto:1883/ecg/v1/ward-a/+/status
    # a retained bed status with "state": "online" on that topic filter: for devices without
    # an HTTP port, which announce themselves with an `offline` last will
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import urllib.request
from urllib.parse import urlparse

TIMEOUT_S = 4.0


def check_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return resp.status == 200
    except OSError:
        return False


def _packet(kind: int, body: bytes) -> bytes:
    n, length = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([kind]) + length + body


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    head = sock.recv(1)
    if not head:
        raise OSError("connection closed")
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise OSError("connection closed")
        body += chunk
    return head[0], body


def check_mqtt_status(url: str) -> bool:
    """A minimal MQTT 3.1.1 client: CONNECT, SUBSCRIBE, wait for one retained online status."""
    u = urlparse(url)
    topic = u.path.lstrip("/")
    try:
        with socket.create_connection(
            (u.hostname or "localhost", u.port or 1883), timeout=TIMEOUT_S
        ) as sock:
            connect = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 10)
            sock.sendall(_packet(0x10, connect + _utf8("")))
            kind, body = _read_packet(sock)
            if kind != 0x20 or len(body) < 2 or body[1] != 0:
                return False
            sock.sendall(_packet(0x82, struct.pack("!H", 1) + _utf8(topic) + b"\x00"))
            while True:
                kind, body = _read_packet(sock)
                if kind >> 4 != 3:  # not a PUBLISH (SUBACK and others): keep reading
                    continue
                (tlen,) = struct.unpack("!H", body[:2])
                payload = body[2 + tlen + (2 if kind & 0x06 else 0) :]
                try:
                    if json.loads(payload).get("state") == "online":
                        return True
                except (ValueError, AttributeError):
                    continue
    except OSError:  # includes the socket timeout: no bed online
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    url = args[0]
    ok = check_mqtt_status(url) if url.startswith("mqtt://") else check_http(url)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
