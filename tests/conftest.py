"""Shared fixtures: the local MIT-BIH copy and a real Mosquitto broker on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecgcommon.records import resolve_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    folder = resolve_data_dir()
    if not (folder / "100.hea").is_file():
        pytest.fail(f"MIT-BIH not found at {folder}; set ECG_DATA_DIR")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Broker:
    host: str
    port: int


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        pytest.fail("mosquitto is not installed; run scripts/install-system-deps.sh")
    return found


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto on 127.0.0.1:<free port> for the whole session."""
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\n"
    )
    proc = subprocess.Popen(
        [_mosquitto_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"mosquitto exited: {err}")
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("mosquitto did not start listening")
    yield Broker("127.0.0.1", port)
    proc.terminate()
    proc.wait(timeout=5)


@pytest.fixture
def unique_ward() -> str:
    """A ward name unique to the test, so topics never collide (as aiomqtt's tests do)."""
    return f"test-{uuid.uuid4().hex[:10]}"
