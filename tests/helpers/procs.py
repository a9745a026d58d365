"""Child processes in tests: their output read live on a thread, so tests wait for a line
(or for the end of the output) instead of sleeping, and failures show what the child said."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from .mqtt import Address
from .waits import Inbox, WaitTimeout


class OutputLines:
    """Every line a child writes to `stream` (text mode), kept in order as it comes."""

    def __init__(self, stream: IO[str], on_line: Callable[[str], None] | None = None) -> None:
        self.inbox: Inbox[str] = Inbox()
        self.done = threading.Event()  # end of output: the child closed it (exited)
        self._on_line = on_line
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                line = line.rstrip("\n")
                if self._on_line is not None:
                    self._on_line(line)
                self.inbox.put(line)
        finally:
            with self.inbox.lock:
                self.done.set()
                self.inbox.lock.notify_all()

    @property
    def lines(self) -> list[str]:
        return self.inbox.items()

    def text(self) -> str:
        return "\n".join(self.inbox.items())

    def wait_line(self, pattern: str, timeout: float, what: str = "") -> re.Match[str]:
        """The first line matching the regex `pattern`, once written; `WaitTimeout` if the
        output ends or the time runs out first (the message carries the output)."""
        rx = re.compile(pattern)

        def found(lines: list[str]) -> re.Match[str] | None:
            return next((m for ln in lines for m in [rx.search(ln)] if m), None)

        try:
            self.inbox.wait_for(
                lambda lines: found(lines) or self.done.is_set(), timeout, what or pattern
            )
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}; output:\n{self.text()}") from None
        match = found(self.lines)
        if match is None:
            raise WaitTimeout(f"output ended, no line for {what or pattern}:\n{self.text()}")
        return match

    def join(self, timeout: float = 10.0) -> str:
        """Wait for the end of the output (after the child exited) and return all of it."""
        if not self.done.wait(timeout):
            raise WaitTimeout(f"output not closed within {timeout:g} s:\n{self.text()}")
        self._thread.join(timeout)
        return self.text()


def alive(
    proc: subprocess.Popen[str] | subprocess.Popen[bytes], output: Callable[[], str]
) -> Callable[[], None]:
    """A `check` for `wait_until`: fail at once, with the child's output, if it exited."""

    def check() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"the child exited ({proc.returncode}):\n{output()}")

    return check


ROOT = Path(__file__).resolve().parents[2]  # the repository: services run from here


def service_argv(module: str, broker: Address, ward: str, *args: str) -> list[str]:
    """`python -m <module> --host H --port P --ward W ...`: a service as a user starts it."""
    where = ["--host", broker.host, "--port", str(broker.port), "--ward", ward]
    return [sys.executable, "-m", module, *where, *args]


def service_env(**extra: str) -> dict[str, str]:
    """This environment, with the repository importable (and `extra` set)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}
