"""Limits on untrusted input, one home each, shared by every service (docs/protocol.md "Limits").

Every device message, upload and topic name is untrusted: these bounds keep one sender from
growing memory without limit, from freezing a bed's clocks and from flooding the logs. Each
violation is counted with a reason slug and logged through a `LogLimiter`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

# Sampling rates the QRS detector, the beat windows and the dashboard are built for: the one
# range. Uploads, the protocol decoders, `QRSDetector`, the detector's pipeline and
# `score_signal` and the alerting hub all accept exactly this range (alerting's `wave_hz` is
# bounded by MAX_FS_HZ too).
MIN_FS_HZ = 100.0
MAX_FS_HZ = 1000.0
# The longest chunk a device may send (the streamer's longest chunk_s is 10 s).
MAX_CHUNK_S = 10.0
MAX_CHUNK_SAMPLES = int(MAX_CHUNK_S * MAX_FS_HZ)
# Ward and bed names: one topic level of letters, digits, '.', '_' or '-' (no ':' since beat ids
# are `ward:bed:sample`), starting with a letter or digit.
MAX_NAME_CHARS = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Beds one service tracks per ward; past this, the longest-idle bed without open alarms is
# evicted, and beds idle this long are evicted anyway.
MAX_BEDS = 1024
BED_IDLE_S = 600.0
# A device clock may differ from the receiver's by this much; beyond, its data is refused and a
# `clock_skew` technical condition is raised. Past timestamps may also be late by the transport
# and analysis delay.
MAX_CLOCK_SKEW_S = 10.0
MAX_LATENESS_S = 30.0
# A `first_sample` jump (either way) longer than the detector's `max_fill_s` (10 s) starts a new
# stream (detector/integrity.py): no separate constant, the NaN-fill bound is the jump bound.
# Integers in JSON messages: at most this many digits (Python refuses > 4300 with a ValueError,
# and anything beyond int64 is meaningless on this wire).
MAX_INT_DIGITS = 20


def valid_name(name: object) -> bool:
    """True for a ward or bed name within the limits."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def fs_ok(fs: float) -> bool:
    """True when `fs` (Hz) is a finite rate within MIN_FS_HZ..MAX_FS_HZ."""
    return isinstance(fs, int | float) and MIN_FS_HZ <= fs <= MAX_FS_HZ


def fs_range_text() -> str:
    return f"{MIN_FS_HZ:g}..{MAX_FS_HZ:g} Hz"


@dataclass
class LogLimiter:
    """Logs the first few drops of each reason, then every 1000th, so a flood of bad input
    cannot flood the log (the metric counts every one)."""

    logger: logging.Logger
    first: int = 5
    every: int = 1000
    counts: dict[str, int] = field(default_factory=dict)

    def __call__(self, reason: str, msg: str, *args: object) -> None:
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        if n <= self.first or n % self.every == 0:
            self.logger.warning("dropped message (%s, #%d): %s", reason, n, log_safe(msg, *args))


# Control characters (newlines, NUL, escapes) of untrusted text never reach a log line as such.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}
MAX_LOG_CHARS = 300


def log_safe(msg: str, *args: object) -> str:
    """`msg % args` with control characters escaped and cut to MAX_LOG_CHARS: untrusted text
    (topics, field values) cannot forge or flood log lines."""
    try:
        text = msg % args if args else msg
    except (TypeError, ValueError):
        text = " ".join(map(str, (msg, *args)))
    text = text.translate(_CONTROL)
    return text if len(text) <= MAX_LOG_CHARS else text[:MAX_LOG_CHARS] + "..."
