"""Typed errors of the detector's cores, so callers tell error kinds apart by type, not by text.

Each carries `reason`, the slug the engine counts it under in `ecg_detector_bad_messages_total`
(given in the class statement). They subclass ValueError: code that catches ValueError (the
HTTP upload path) still does.
"""

from __future__ import annotations

from typing import Any


class ChunkRejected(ValueError):
    """A sample chunk the pipeline cannot analyse; `reason` is its metric label."""

    reason = "bad_chunk"

    def __init_subclass__(cls, reason: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.reason = reason


class UnsupportedRate(ChunkRejected, reason="unsupported_fs"):
    """The chunk's sampling rate is outside the range the QRS detector supports."""


class MissingLead(ChunkRejected, reason="bad_leads"):
    """The chunk lacks the lead the pipeline analyses."""
