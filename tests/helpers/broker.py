"""Real Mosquitto brokers on free loopback ports, for tests and benches.

`Mosquitto` runs one broker process (anonymous, or any config text) and can be stopped and
started again on the same port for outage tests; `secure_mosquitto` serves the provisioned
password, ACL and TLS files as `make ward` does. Nothing here needs pytest: errors are
`BrokerError`, which the fixtures in tests/conftest.py turn into test failures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ecgcommon.provision import (
    DEFAULT_SERVICES,
    ProvisionConfig,
    Provisioned,
    mosquitto_conf,
    provision,
)

from .ports import accepts, free_port
from .waits import WaitTimeout, wait_until

HOST = "127.0.0.1"
START_S = 10.0  # a broker that does not listen within this is broken, not slow
ANONYMOUS: Mapping[str, object] = {
    "allow_anonymous": "true",
    "persistence": "false",
    "max_queued_messages": 100000,
}
SECURE_WARD = "ward-sec"
SECURE_BEDS = ("01", "02", "03")


class BrokerError(RuntimeError):
    """Mosquitto is missing, exited, or did not start listening."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int


@dataclass(frozen=True)
class SecureBroker:
    """A Mosquitto running the real provisioned password, ACL and TLS files."""

    host: str
    port: int  # plain listener: username/password and the ACL
    tls_port: int  # the same, over TLS with the provisioned CA's server certificate
    ward: str
    creds: Provisioned  # where the files are; creds.password(username)
    log: Path  # the broker's log (connections, refusals, take-overs)


def mosquitto_binary() -> str:
    """The installed mosquitto executable."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise BrokerError("mosquitto is not installed; run scripts/install-system-deps.sh")
    return found


def anonymous_conf(port: int, options: Mapping[str, object] = ANONYMOUS, host: str = HOST) -> str:
    """A mosquitto.conf with one plain listener and `options` (one `key value` line each)."""
    lines = [f"listener {port} {host}", *(f"{k} {v}" for k, v in options.items())]
    return "\n".join(lines) + "\n"


def start_mosquitto(
    conf: Path, port: int, log: Path | None = None, timeout: float = START_S
) -> subprocess.Popen[bytes]:
    """Mosquitto with `conf`, returned once it accepts connections on `port`; its stderr goes
    to `log` (or is kept for the error message)."""
    binary = mosquitto_binary()
    if log is not None:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=out
            )
    else:
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def exited() -> None:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            if log is not None:
                err = log.read_text(errors="replace")
            raise BrokerError(f"mosquitto exited: {err}")

    try:
        wait_until(lambda: accepts(HOST, port), timeout, f"mosquitto on port {port}", check=exited)
    except WaitTimeout as exc:
        proc.kill()
        proc.wait()
        raise BrokerError("mosquitto did not start listening") from exc
    return proc


def stop_mosquitto(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM and wait (SIGKILL if it lingers); a no-op for a process that already exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


class Mosquitto:
    """One broker on a fixed loopback port: `start()` returns once it listens, `stop()` ends it,
    and `start()` again brings it back on the same port (a broker outage and recovery)."""

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        options: Mapping[str, object] = ANONYMOUS,
        conf_text: str | None = None,
        log: Path | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.broker = Broker(HOST, self.port)
        self.conf = folder / f"mosquitto-{self.port}.conf"
        self.conf.write_text(conf_text or anonymous_conf(self.port, options))
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError(f"mosquitto on port {self.port} is already running")
        self.proc = start_mosquitto(self.conf, self.port, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_mosquitto(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without a clean shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.stop()

    def __enter__(self) -> Broker:
        self.start()
        return self.broker

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def secure_mosquitto(
    folder: Path, ward: str = SECURE_WARD, beds: tuple[str, ...] = SECURE_BEDS
) -> Iterator[SecureBroker]:
    """`python -m ecgcommon.provision`'s files for `ward` (its beds and the service accounts)
    served by a real Mosquitto logging everything, as `make ward` runs it."""
    creds = provision(
        ProvisionConfig(out=folder / "secrets", ward=ward, beds=beds, services=DEFAULT_SERVICES)
    )
    port, tls_port = free_port(), free_port()
    user = "root" if os.geteuid() == 0 else None  # else Mosquitto drops to `mosquitto`
    text = mosquitto_conf(creds.folder, HOST, port, HOST, tls_port, user)
    log = folder / "mosquitto.log"
    with Mosquitto(folder, port, conf_text=text + "log_dest stderr\nlog_type all\n", log=log):
        yield SecureBroker(HOST, port, tls_port, ward, creds, log)
