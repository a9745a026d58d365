"""Typed errors of the detector's cores, so callers tell error kinds apart by type, not by text.

Each carries `reason`, the slug the engine counts it under in `ecg_detector_bad_messages_total`.
They subclass ValueError: code that catches ValueError (the HTTP upload path) still does.
"""

from __future__ import annotations


class ChunkRejected(ValueError):
    """A sample chunk the pipeline cannot analyse; `reason` is its metric label."""

    reason = "bad_chunk"


class UnsupportedRate(ChunkRejected):
    """The chunk's sampling rate is outside the range the QRS detector supports."""

    reason = "unsupported_fs"


class MissingLead(ChunkRejected):
    """The chunk lacks the lead the pipeline analyses."""

    reason = "bad_leads"
