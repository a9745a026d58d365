"""`scripts/ward.py` (the `make ward` launcher) for tests: the script loaded as a module, and a
ward run as a user runs it with its printed banner parsed and its output kept."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

from .procs import ROOT, OutputLines, alive
from .waits import wait_until

WARD_PY = ROOT / "scripts" / "ward.py"
BANNER = "Ctrl-C stops the ward"


def load_ward_module() -> ModuleType:
    """scripts/ward.py is a script, not a package: load it by path (once)."""
    if "ward_script" in sys.modules:
        return sys.modules["ward_script"]
    spec = importlib.util.spec_from_file_location("ward_script", WARD_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["ward_script"] = module
    spec.loader.exec_module(module)
    return module


def ward_args(broker: str, beds: str, speed: float, data_dir: Path, ward: str = "") -> list[str]:
    """The launcher's arguments: which broker ('mosquitto', 'embedded'), beds (records, comma
    separated), replay speed, the data and (optionally) the ward's name."""
    args = [
        "--broker",
        broker,
        "--beds",
        beds,
        "--speed",
        f"{speed:g}",
        "--data-dir",
        str(data_dir),
    ]
    return args + (["--ward", ward] if ward else [])


class RunningWard:
    """`python scripts/ward.py ...` as a user runs it, its printed banner parsed."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WARD_PY), "--free-ports", "--run-dir", str(tmp_path), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        self.output = OutputLines(self.proc.stdout)

    @property
    def lines(self) -> list[str]:
        return self.output.lines

    def wait_banner(self, timeout: float = 120) -> None:
        self.output.wait_line(re.escape(BANNER), timeout, "the ward's banner")

    def wait(self, cond: object, timeout: float, what: str) -> object:
        """`wait_until(cond)`, failing at once with the ward's output if the ward exited."""
        assert callable(cond)
        return wait_until(
            cond, timeout, what, check=alive(self.proc, self.output.text), detail=self.output.text
        )

    def urls(self, prefix: str) -> list[str]:
        return [
            m.group(0)
            for ln in self.lines
            if ln.startswith(prefix)
            for m in [re.search(r"http://\S+", ln)]
            if m
        ]

    def line_of(self, url: str) -> str:
        return next(ln for ln in self.lines if url in ln)

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C: SIGINT to the ward (its children run in their own sessions); returns once
        the ward exited and its last lines are read."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout)
        self.output.join()
        return code

    def kill(self) -> None:
        """Clean-up after a failed test: Ctrl-C first (the ward stops its children); if it
        hangs, kill its children too (they run in their own sessions and would outlive it)."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            pass
        for pid in _children(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait()


def _children(pid: int) -> list[int]:
    """The direct children of process `pid` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def get(url: str, token: str = "") -> tuple[int, str]:
    """GET with a cookie jar (the dashboard swaps `?token=` for a session cookie by a 303) and,
    when given, the token as a bearer (alerting's /metrics wants it)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as resp:
        return int(resp.status), resp.read().decode(errors="replace")


def metric_sum(text: str, name: str) -> float:
    """Sum of a metric's samples in a Prometheus text exposition."""
    values = [
        float(ln.split()[-1])
        for ln in text.splitlines()
        if ln.startswith(name) and (ln[len(name)] in " {")
    ]
    return sum(values)
