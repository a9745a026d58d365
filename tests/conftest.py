"""Shared fixtures: the local MIT-BIH copy and real Mosquitto brokers on free loopback ports
(anonymous `broker`; `secure_broker` with the provisioned password, ACL and TLS files)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecgcommon.provision import (
    DEFAULT_SERVICES,
    ProvisionConfig,
    Provisioned,
    mosquitto_conf,
    provision,
)
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


def start_mosquitto(conf: Path, port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Mosquitto with `conf`, returned once it accepts connections on `port`."""
    out = open(log, "wb") if log is not None else subprocess.PIPE  # noqa: SIM115
    proc = subprocess.Popen(
        [_mosquitto_binary(), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=out,
    )
    if log is not None:
        out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                if log is not None:
                    err = log.read_text(errors="replace")
                pytest.fail(f"mosquitto exited: {err}")
            time.sleep(0.05)
    proc.kill()
    pytest.fail("mosquitto did not start listening")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto on 127.0.0.1:<free port> for the whole session."""
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\n"
    )
    proc = start_mosquitto(conf, port)
    yield Broker("127.0.0.1", port)
    proc.terminate()
    proc.wait(timeout=5)


@dataclass(frozen=True)
class SecureBroker:
    """A Mosquitto running the real provisioned password, ACL and TLS files."""

    host: str
    port: int  # plain listener: username/password and the ACL
    tls_port: int  # the same, over TLS with the provisioned CA's server certificate
    ward: str
    creds: Provisioned  # where the files are; creds.password(username)
    log: Path  # the broker's log (connections, refusals, take-overs)


SECURE_WARD = "ward-sec"
SECURE_BEDS = ("01", "02", "03")


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """`python -m ecgcommon.provision`'s files for SECURE_WARD (beds 01-03 and the service
    accounts) served by a real Mosquitto, as `make ward` runs it."""
    folder = tmp_path_factory.mktemp("secure-broker")
    creds = provision(
        ProvisionConfig(
            out=folder / "secrets",
            ward=SECURE_WARD,
            beds=SECURE_BEDS,
            services=DEFAULT_SERVICES,  # detector, alerting, observer, healthcheck
        )
    )
    port, tls_port = free_port(), free_port()
    conf = folder / "mosquitto.conf"
    user = "root" if os.geteuid() == 0 else None  # else Mosquitto drops to `mosquitto`
    text = mosquitto_conf(creds.folder, "127.0.0.1", port, "127.0.0.1", tls_port, user)
    conf.write_text(text + "log_dest stderr\nlog_type all\n")
    log = folder / "mosquitto.log"
    proc = start_mosquitto(conf, port, log)
    yield SecureBroker("127.0.0.1", port, tls_port, SECURE_WARD, creds, log)
    proc.terminate()
    proc.wait(timeout=5)


@pytest.fixture
def unique_ward() -> str:
    """A ward name unique to the test, so topics never collide (as aiomqtt's tests do)."""
    return f"test-{uuid.uuid4().hex[:10]}"
