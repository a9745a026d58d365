"""The MQTT wire format (docs/protocol.md): sample chunks, beat results, events, device status.

Sample chunks come as a compact binary frame (fixed little-endian header, lead names, int16
samples) or as JSON for simple devices; `decode_samples` tells them apart by the first byte.
Every decoder raises only `DecodeError` subclasses, whose `.reason` slug is the metric label.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecgcommon.limits import MAX_CHUNK_SAMPLES, MAX_INT_DIGITS, fs_ok, fs_range_text

MAGIC = b"ECGS"
VERSION = 1
# magic, version, n_leads, flags (0), seq u32, first_sample i64, t0 f64, fs f64, gain f64, n u32
HEADER = struct.Struct("<4sBBHIqdddI")
MAX_SEQ = 2**32 - 1
MAX_LEADS = 16
MAX_NAME_BYTES = 255
# A binary sample of this raw value is missing (no signal), as in WFDB's format 16: it reads as
# NaN, which the detector treats as a gap in the lead, never as a -32768-count spike.
MISSING_SAMPLE = -32768

# Rhythm episodes found by the detector, sent as conditions on the events topic: `active` True
# at onset (`t` = onset, signal clock), False at the end (`t` = end). `detail` carries the
# evidence (`hr_bpm`, `beats`, `onset_t`, ...). The alerting service turns them into alarms.
EPISODE_TYPES: tuple[str, ...] = (
    "vt",  # ventricular tachycardia: >= 5 consecutive V beats at >= 100 bpm
    "vf",  # ventricular fibrillation or flutter, found from the waveform
    "afib",  # atrial fibrillation or flutter (irregularly irregular RR)
    "svt",  # supraventricular tachycardia: a run of narrow S beats
)
EVENT_TYPES: tuple[str, ...] = (
    "anomaly",  # an anomalous (unusual) beat (point event)
    "lead_off",  # flat or disconnected lead (condition: active True, then False when restored)
    "signal_lost",  # no samples for longer than the detector's timeout (condition)
    "noisy",  # artifact: arrhythmia analysis suspended (condition)
    "device_offline",  # status went offline (condition: active False when back online)
    "gap",  # missing sequence numbers (point event)
    "duplicate",  # a chunk already seen (point event)
    "out_of_order",  # a chunk older than the newest one (point event)
    "clock_skew",  # the device clock is off the receiver's by more than allowed (condition)
    *EPISODE_TYPES,
)
# AAMI beat classes carried by each beat (`cls`): normal, supraventricular ectopic, ventricular
# ectopic, fusion, unclassifiable (artifact or paced).
BEAT_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
STATUS_STATES: tuple[str, ...] = ("online", "offline")


# ---------------------------------------------------------------------------- errors


class DecodeError(ValueError):
    """A payload that cannot be decoded; `reason` is a short slug used as a metric label."""

    reason = "decode_error"


class BadMagic(DecodeError):
    reason = "bad_magic"


class UnsupportedVersion(DecodeError):
    reason = "unsupported_version"


class Truncated(DecodeError):
    reason = "truncated"


class BadJSON(DecodeError):
    reason = "bad_json"


class BadNumber(DecodeError):
    """A JSON number too large for the wire (an integer of more than MAX_INT_DIGITS digits, or a
    float that overflows to infinity): refused while parsing, before any field is read."""

    reason = "bad_number"


class BadField(DecodeError):
    """A field that is missing, of the wrong type or out of range."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"field {field_name!r}: {problem}")
        self.field = field_name
        self.problem = problem
        self.reason = f"bad_{field_name}"


# ---------------------------------------------------------------------------- payloads


@dataclass(frozen=True, eq=False)
class SampleChunk:
    """Consecutive samples of one bed: raw values (int16 for binary) and how to read them.

    Physical value = sample / gain (in `units`). `first_sample` counts samples since the
    device's stream started; `t0` is the unix time of the first sample of this chunk.
    """

    seq: int
    first_sample: int
    t0: float
    fs: float
    gain: float
    units: str
    leads: tuple[str, ...]
    samples: np.ndarray  # (n, n_leads)

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_leads(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def physical(self) -> np.ndarray:
        """Samples in physical units, float64 (n, n_leads); `MISSING_SAMPLE` reads as NaN."""
        x = np.divide(self.samples, self.gain, dtype=np.float64)  # = astype(float64) / gain
        # raw counts (binary, or integer JSON): only a chunk reaching MISSING_SAMPLE can hold it
        raw = self.samples
        low = np.minimum.reduce(raw, axis=None) if raw.dtype.kind == "i" and raw.size else 0
        if low <= MISSING_SAMPLE:
            x[raw == MISSING_SAMPLE] = np.nan
        return x


@dataclass(frozen=True)
class BeatResult:
    """One scored beat. `errors` (per-timestep reconstruction error) only when asked for."""

    bed: str
    sample: int  # index of the R peak in the device's sample count
    t: float  # unix seconds of the R peak
    rr_s: float | None  # interval to the previous beat; None for the first beat
    hr_bpm: float | None
    score: float
    threshold: float
    anomalous: bool
    beat_id: str
    label: str | None = None
    errors: tuple[float, ...] | None = None
    cls: str | None = None  # AAMI class (BEAT_CLASSES) from the detector's beat classifier


@dataclass(frozen=True)
class Event:
    """A clinical (anomaly) or technical event of one bed. Conditions use `active`."""

    bed: str
    type: str
    active: bool
    t: float
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    """Device status, published retained; `offline` is also the MQTT last will."""

    state: str
    t: float
    device: str = ""


# ---------------------------------------------------------------------------- samples


def _encode_name(what: str, name: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"{what} {name!r} is longer than {MAX_NAME_BYTES} bytes")
    return bytes([len(raw)]) + raw


def encode_samples(chunk: SampleChunk) -> bytes:
    """The binary frame of a chunk; samples must fit int16 (raw ADC units)."""
    samples = np.asarray(chunk.samples)
    if samples.ndim != 2 or samples.shape[1] != len(chunk.leads):
        raise ValueError(f"samples shape {samples.shape} does not match {len(chunk.leads)} leads")
    if not 1 <= len(chunk.leads) <= MAX_LEADS:
        raise ValueError(f"need 1..{MAX_LEADS} leads, got {len(chunk.leads)}")
    if samples.dtype != np.int16:
        if samples.dtype.kind not in "iu" or (
            samples.size and (samples.min() < -32768 or samples.max() > 32767)
        ):
            raise ValueError("binary samples must be int16 raw values (use JSON for floats)")
        samples = samples.astype(np.int16)
    if not 0 <= chunk.seq <= MAX_SEQ:
        raise ValueError(f"seq {chunk.seq} outside 0..{MAX_SEQ}")
    head = HEADER.pack(
        MAGIC,
        VERSION,
        len(chunk.leads),
        0,
        chunk.seq,
        chunk.first_sample,
        chunk.t0,
        chunk.fs,
        chunk.gain,
        samples.shape[0],
    )
    names = _encode_name("units", chunk.units) + b"".join(
        _encode_name("lead", lead) for lead in chunk.leads
    )
    return head + names + samples.astype("<i2", copy=False).tobytes()


def encode_samples_json(chunk: SampleChunk) -> bytes:
    """The JSON form of a chunk (what a simple device would send)."""
    samples = np.asarray(chunk.samples)
    values = samples[:, 0].tolist() if samples.shape[1] == 1 else samples.tolist()
    doc = {
        "seq": chunk.seq,
        "first_sample": chunk.first_sample,
        "t0": chunk.t0,
        "fs": chunk.fs,
        "gain": chunk.gain,
        "units": chunk.units,
        "leads": list(chunk.leads),
        "samples": values,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _check_rate_gain(fs: float, gain: float, t0: float) -> None:
    if not fs_ok(fs):
        raise BadField("fs", f"must be a rate within {fs_range_text()}, got {fs!r}")
    if not (math.isfinite(gain) and gain != 0):
        raise BadField("gain", f"must be finite and non-zero, got {gain!r}")
    if not math.isfinite(t0):
        raise BadField("t0", f"must be finite unix seconds, got {t0!r}")


def _read_name(payload: bytes, offset: int, what: str) -> tuple[str, int]:
    if offset >= len(payload):
        raise Truncated(f"payload ends before the {what} name")
    size = payload[offset]
    end = offset + 1 + size
    if end > len(payload):
        raise Truncated(f"{what} name needs {size} bytes, payload ends first")
    try:
        return payload[offset + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError as exc:
        raise BadField(what, "not UTF-8") from exc


def decode_samples_binary(payload: bytes) -> SampleChunk:
    """Decode a binary frame (zero-copy int16 view of the samples)."""
    if len(payload) < 4 or payload[:4] != MAGIC:
        raise BadMagic(f"binary sample frame must start with {MAGIC!r}, got {bytes(payload[:4])!r}")
    if len(payload) < HEADER.size:
        if len(payload) >= 5 and payload[4] != VERSION:
            raise UnsupportedVersion(f"frame version {payload[4]}, this code reads {VERSION}")
        raise Truncated(f"header needs {HEADER.size} bytes, payload has {len(payload)}")
    _, version, n_leads, _flags, seq, first, t0, fs, gain, n = HEADER.unpack_from(payload)
    if version != VERSION:
        raise UnsupportedVersion(f"frame version {version}, this code reads {VERSION}")
    if not 1 <= n_leads <= MAX_LEADS:
        raise BadField("leads", f"need 1..{MAX_LEADS} leads, header says {n_leads}")
    if first < 0:
        raise BadField("first_sample", f"must be >= 0, got {first}")
    if n == 0:
        raise BadField("samples", "chunk holds no samples")
    if n > MAX_CHUNK_SAMPLES:
        raise BadField("samples", f"{n} samples in one chunk, at most {MAX_CHUNK_SAMPLES}")
    _check_rate_gain(fs, gain, t0)
    units, offset = _read_name(payload, HEADER.size, "units")
    leads = []
    for _ in range(n_leads):
        lead, offset = _read_name(payload, offset, "lead")
        leads.append(lead)
    need = n * n_leads * 2
    have = len(payload) - offset
    if have < need:
        raise Truncated(f"{n} samples x {n_leads} leads need {need} bytes, payload has {have}")
    if have > need:
        raise BadField("samples", f"{have - need} bytes after the last sample")
    data = np.frombuffer(payload, dtype="<i2", count=n * n_leads, offset=offset)
    return SampleChunk(seq, first, t0, fs, gain, units, tuple(leads), data.reshape(n, n_leads))


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadNumber(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadNumber(f"number {text[:40]!r} overflows a float")
    return value


def _parse_constant(text: str) -> float:
    raise BadNumber(f"{text} is not a number this wire accepts")


# A digit run longer than any allowed integer, or a 3-digit exponent: only such payloads take
# the slow path that checks every number (the C scanner stays fast for ordinary ones).
_SUSPECT_B = re.compile(rb"\d{%d}|[eE][+-]?0*\d{3}" % (MAX_INT_DIGITS + 1))
_SUSPECT_S = re.compile(_SUSPECT_B.pattern.decode())


def _loads(payload: bytes | str) -> Any:
    suspect: re.Match[Any] | None
    if isinstance(payload, str):
        suspect = _SUSPECT_S.search(payload)
    else:
        suspect = _SUSPECT_B.search(payload)
    try:
        if suspect is None:
            return json.loads(payload, parse_constant=_parse_constant)
        return json.loads(
            payload,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise BadJSON(f"not valid JSON: {exc}") from exc


def _get(doc: Mapping[str, Any], name: str, kinds: tuple[type, ...], default: Any = ...) -> Any:
    if name not in doc:
        if default is ...:
            raise BadField(name, "missing")
        return default
    value = doc[name]
    if isinstance(value, bool) and bool not in kinds:
        raise BadField(name, f"expected {'/'.join(k.__name__ for k in kinds)}, got bool")
    if not isinstance(value, kinds):
        raise BadField(name, f"expected {'/'.join(k.__name__ for k in kinds)}, got {value!r:.40}")
    return value


def decode_samples_json(payload: bytes | str) -> SampleChunk:
    """Decode the JSON form; samples stay as sent (float64), physical = sample / gain."""
    doc = _loads(payload)
    if not isinstance(doc, dict):
        raise BadJSON("sample chunk must be a JSON object")
    seq = _get(doc, "seq", (int,))
    if not 0 <= seq <= MAX_SEQ:
        raise BadField("seq", f"outside 0..{MAX_SEQ}")
    first = _get(doc, "first_sample", (int,))
    if not 0 <= first < 2**63:
        raise BadField("first_sample", "must be in 0..2^63")
    t0 = float(_get(doc, "t0", (int, float)))
    fs = float(_get(doc, "fs", (int, float)))
    gain = float(_get(doc, "gain", (int, float), 1.0))
    _check_rate_gain(fs, gain, t0)
    units = _get(doc, "units", (str,), "mV")
    leads_raw = _get(doc, "leads", (list,), ["ECG"])
    if not 1 <= len(leads_raw) <= MAX_LEADS or not all(isinstance(x, str) for x in leads_raw):
        raise BadField("leads", f"must be a list of 1..{MAX_LEADS} names")
    raw = _get(doc, "samples", (list,))
    if len(raw) > MAX_CHUNK_SAMPLES:
        raise BadField("samples", f"{len(raw)} samples in one chunk, at most {MAX_CHUNK_SAMPLES}")
    try:
        values = np.asarray(raw)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged lists
        raise BadField("samples", f"not a rectangular array of numbers: {exc}") from exc
    if values.size == 0:
        raise BadField("samples", "chunk holds no samples")
    if values.dtype.kind not in "iuf":
        raise BadField("samples", "must hold numbers only")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != len(leads_raw):
        raise BadField("samples", f"shape {values.shape} does not match {len(leads_raw)} leads")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise BadField("samples", "must be finite numbers")
    return SampleChunk(seq, first, t0, fs, gain, units, tuple(leads_raw), values)


def decode_samples(payload: bytes) -> SampleChunk:
    """Decode either form: JSON when the first non-blank byte is `{`, else binary."""
    if not payload:
        raise Truncated("empty payload")
    head = payload.lstrip()[:1] if payload[:1].isspace() else payload[:1]
    if head == b"{":
        return decode_samples_json(payload)
    return decode_samples_binary(payload)


# ---------------------------------------------------------------------------- beats


def _num(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


# The encoders `json.dumps(doc, separators=(",", ":")[, default=...])` builds on every call,
# made once (the same settings, so the same bytes): one beats message per bed per batch.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def beat_to_dict(beat: BeatResult) -> dict[str, Any]:
    """The JSON object of one beat (floats rounded to keep messages small)."""
    doc: dict[str, Any] = {
        "bed": beat.bed,
        "beat_id": beat.beat_id,
        "sample": beat.sample,
        "t": round(beat.t, 4),
        "rr_s": None if beat.rr_s is None else round(float(beat.rr_s), 4),  # _num, inlined
        "hr_bpm": None if beat.hr_bpm is None else round(float(beat.hr_bpm), 2),
        "score": round(float(beat.score), 6),
        "threshold": round(float(beat.threshold), 6),
        "anomalous": beat.anomalous,
    }
    if beat.label is not None:
        doc["label"] = beat.label
    if beat.cls is not None:
        doc["cls"] = beat.cls
    if beat.errors is not None:
        doc["errors"] = np.round(np.asarray(beat.errors, dtype=np.float64), 5).tolist()
    return doc


_STR = json.encoder.encode_basestring_ascii  # how `_COMPACT` writes a str (ensure_ascii)
_FLOAT_REPR = float.__repr__  # ... a float (a float subclass too), but for these three:
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _float_json(x: float) -> str:
    r = _FLOAT_REPR(x)
    return _NON_FINITE.get(r, r)


def _beat_json(b: BeatResult) -> str:
    """`_COMPACT.encode(beat_to_dict(b))`, the same characters, written directly: building
    the dict and walking it cost more than the message (one per beat). Unusual field types
    take the dict path."""
    if not (
        type(b.sample) is int
        and type(b.anomalous) is bool
        and type(b.bed) is str
        and type(b.beat_id) is str
        and (b.label is None or type(b.label) is str)
        and (b.cls is None or type(b.cls) is str)
    ):
        return _COMPACT.encode(beat_to_dict(b))
    rr = "null" if b.rr_s is None else _float_json(round(float(b.rr_s), 4))
    hr = "null" if b.hr_bpm is None else _float_json(round(float(b.hr_bpm), 2))
    text = (
        f'{{"bed":{_STR(b.bed)},"beat_id":{_STR(b.beat_id)},"sample":{b.sample},'
        f'"t":{_float_json(round(b.t, 4))},"rr_s":{rr},"hr_bpm":{hr},'
        f'"score":{_float_json(round(float(b.score), 6))},'
        f'"threshold":{_float_json(round(float(b.threshold), 6))},'
        f'"anomalous":{"true" if b.anomalous else "false"}'
    )
    if b.label is not None:
        text += f',"label":{_STR(b.label)}'
    if b.cls is not None:
        text += f',"cls":{_STR(b.cls)}'
    if b.errors is not None:
        errors = np.round(np.asarray(b.errors, dtype=np.float64), 5).tolist()
        text += ',"errors":[' + ",".join(map(_float_json, errors)) + "]"
    return text + "}"


def encode_beats(
    beats: Sequence[BeatResult],
    analysed_until: float | None = None,
    analysed_from: float | None = None,
) -> bytes:
    """One beats message: `{"beats": [...]}`; the detector sends one per bed per batch.

    `analysed_until` (unix s), when given, promises that every beat of the bed whose R-peak is
    before that time has been published: during a pause the detector sends it with no beats, so
    an asystole can be told from a detector that is merely slow.

    `analysed_from` (unix s), when given, is where the detector's current unbroken analysis of
    the bed began (its stream started, restarted or resumed after a hole in the samples): a
    receiver that knows the bed analysed only up to an earlier time has a hole in between, and
    never measures a pause or asystole across it (docs/faults.md).
    """
    text = '{"beats":[' + ",".join([_beat_json(b) for b in beats]) + "]"
    if analysed_until is not None:
        text += ',"analysed_until":' + _float_json(round(float(analysed_until), 4))
    if analysed_from is not None:
        text += ',"analysed_from":' + _float_json(round(float(analysed_from), 4))
    return (text + "}").encode()


def _opt_float(doc: Mapping[str, Any], name: str) -> float | None:
    value = _get(doc, name, (int, float, type(None)), None)
    return None if value is None else float(value)


def beat_from_dict(doc: Any) -> BeatResult:
    """One beat from its JSON object; BadField names what is wrong."""
    if not isinstance(doc, dict):
        raise BadField("beats", "each beat must be a JSON object")
    errors = _get(doc, "errors", (list, type(None)), None)
    if errors is not None:
        if not all(isinstance(e, int | float) and not isinstance(e, bool) for e in errors):
            raise BadField("errors", "must be a list of numbers")
        errors = tuple(float(e) for e in errors)
    cls = _get(doc, "cls", (str, type(None)), None)
    if cls is not None and cls not in BEAT_CLASSES:
        raise BadField("cls", f"must be one of {BEAT_CLASSES}, got {cls!r:.20}")
    return BeatResult(
        bed=_get(doc, "bed", (str,)),
        sample=_get(doc, "sample", (int,)),
        t=float(_get(doc, "t", (int, float))),
        rr_s=_opt_float(doc, "rr_s"),
        hr_bpm=_opt_float(doc, "hr_bpm"),
        score=float(_get(doc, "score", (int, float))),
        threshold=float(_get(doc, "threshold", (int, float))),
        anomalous=_get(doc, "anomalous", (bool,)),
        beat_id=_get(doc, "beat_id", (str,)),
        label=_get(doc, "label", (str, type(None)), None),
        errors=errors,
        cls=cls,
    )


@dataclass(frozen=True)
class BeatsMessage:
    """A decoded beats message: its beats and the detector's analysis watermark, if any."""

    beats: list[BeatResult]
    analysed_until: float | None = None
    analysed_from: float | None = None  # start of the detector's unbroken analysis (faults.md)


def decode_beats_message(payload: bytes | str) -> BeatsMessage:
    """A beats message (`{"beats": [...], "analysed_until": t}`; a bare beat object too)."""
    doc = _loads(payload)
    if isinstance(doc, dict) and "beats" in doc:
        items = doc["beats"]
        if not isinstance(items, list):
            raise BadField("beats", "must be a list")
        until = _opt_float(doc, "analysed_until")
        if until is not None and not math.isfinite(until):
            raise BadField("analysed_until", "must be a finite unix time")
        since = _opt_float(doc, "analysed_from")
        if since is not None and not math.isfinite(since):
            raise BadField("analysed_from", "must be a finite unix time")
        return BeatsMessage([beat_from_dict(d) for d in items], until, since)
    return BeatsMessage([beat_from_dict(doc)])


def decode_beats(payload: bytes | str) -> list[BeatResult]:
    """Beats of one message (`{"beats": [...]}`; a single beat object is accepted too)."""
    return decode_beats_message(payload).beats


# ---------------------------------------------------------------------------- events, status


def encode_event(event: Event) -> bytes:
    """The JSON of one event."""
    doc = {
        "bed": event.bed,
        "type": event.type,
        "active": event.active,
        "t": round(event.t, 4),
        "detail": dict(event.detail),
    }
    return _COMPACT_EVENT.encode(doc).encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_COMPACT_EVENT = json.JSONEncoder(separators=(",", ":"), default=_json_default)  # see _COMPACT


def decode_event(payload: bytes | str) -> Event:
    doc = _loads(payload)
    if not isinstance(doc, dict):
        raise BadJSON("event must be a JSON object")
    etype = _get(doc, "type", (str,))
    if not etype:
        raise BadField("type", "empty")
    return Event(
        bed=_get(doc, "bed", (str,)),
        type=etype,
        active=_get(doc, "active", (bool,), True),
        t=float(_get(doc, "t", (int, float))),
        detail=_get(doc, "detail", (dict,), {}),
    )


def encode_status(status: Status) -> bytes:
    if status.state not in STATUS_STATES:
        raise ValueError(f"state {status.state!r} is not one of {STATUS_STATES}")
    doc = {"state": status.state, "t": round(status.t, 4), "device": status.device}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_status(payload: bytes | str) -> Status:
    """Status JSON; a bare `online`/`offline` string (as simple devices send) is accepted."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    if text.strip() in STATUS_STATES:
        return Status(state=text.strip(), t=math.nan)
    doc = _loads(payload)
    if not isinstance(doc, dict):
        raise BadJSON("status must be a JSON object or 'online'/'offline'")
    state = _get(doc, "state", (str,))
    if state not in STATUS_STATES:
        raise BadField("state", f"must be one of {STATUS_STATES}, got {state!r:.40}")
    return Status(
        state=state,
        t=float(_get(doc, "t", (int, float), math.nan)),
        device=_get(doc, "device", (str,), ""),
    )


def parse_json(payload: bytes | str) -> Any:
    """JSON under the wire's limits (integers of at most MAX_INT_DIGITS digits, finite floats, no
    NaN/Infinity, bounded nesting): BadJSON or BadNumber otherwise, never another exception."""
    return _loads(payload)
