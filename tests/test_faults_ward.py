"""`make ward` supervises its children (docs/faults.md): a child that dies is logged and
restarted with backoff, and the ward goes on; it is not the end of the ward."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers.ward import RunningWard, ward_args
from tests.helpers.ward import get as _get
from tests.helpers.ward import metric_sum as _metric

pytestmark = pytest.mark.slow


def _child_pid(parent: int, module: str) -> int:
    """The pid of the ward's child running `python -m <module>` (read from /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"-m" in argv and module.encode() in argv:
            return int(entry)
    raise AssertionError(f"no child `-m {module}` of {parent}")


def test_ward_restarts_a_killed_detector_and_goes_on(tmp_path: Path, data_dir: Path) -> None:
    run = RunningWard(tmp_path, *ward_args("mosquitto", "100", 1, data_dir, "ward-faults"))
    try:
        run.wait_banner()
        detector = next(u for u in run.urls("metrics:") if "(detector)" in run.line_of(u))
        health = detector.replace("/metrics", "/healthz")
        old = _child_pid(run.proc.pid, "detector")
        os.kill(old, signal.SIGKILL)
        run.output.wait_line(r"^ward: restarting detector", 20, "the dead detector restarted")
        assert any("detector exited unexpectedly (code -9)" in ln for ln in run.lines)

        def restarted() -> bool:  # the line comes first, then the backoff, then the child
            try:
                return _child_pid(run.proc.pid, "detector") != old
            except AssertionError:  # none yet
                return False

        run.wait(restarted, 20, "the new detector child")
        assert _child_pid(run.proc.pid, "detector") != old

        def scoring() -> bool:
            try:
                return (
                    _get(health)[0] == 200
                    and _metric(_get(detector)[1], "ecg_detector_beats_total") > 0
                )
            except OSError:
                return False

        run.wait(scoring, 90, "the restarted detector scoring beats")
        assert run.proc.poll() is None  # the ward goes on
        assert run.interrupt() == 0, "\n".join(run.lines)
    finally:
        run.kill()
