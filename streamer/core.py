"""Sans-I/O streamer core: records in, (topic, payload, due time) out, in publication order.

Bed i plays the record list cyclically, starting with record i mod R at its own start offset, so
beds never show the same trace at the same time. A chunk is due when its last sample "happens":
`start + end_of_chunk / fs / speed`. Beds are phase-staggered within one chunk so a ward's
messages spread over time instead of arriving in bursts.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ecgcommon.protocol import MISSING_SAMPLE, SampleChunk, encode_samples, encode_samples_json
from ecgcommon.records import Record
from ecgcommon.topics import samples_topic

MITDB_GAIN = 200.0  # ADC units per mV in MIT-BIH (11-bit, 5 mV range)


@dataclass(frozen=True)
class Message:
    """One MQTT publication: what, where, and when (seconds after the stream's start)."""

    topic: str
    payload: bytes
    due_s: float
    bed: str
    seq: int
    n_samples: int


@dataclass(frozen=True)
class Source:
    """A record's samples as raw int16 ADC values (physical = raw / gain)."""

    name: str
    fs: float
    gain: float
    units: str
    leads: tuple[str, ...]
    raw: np.ndarray  # (n, n_leads) int16

    @classmethod
    def from_record(cls, record: Record, gain: float = MITDB_GAIN) -> Source:
        """Raw values of a record, with MLII (the lead the detector reads) put first."""
        order = list(range(record.signal.shape[1]))
        if "MLII" in record.lead_names:
            first = record.lead_names.index("MLII")
            order = [first] + [i for i in order if i != first]
        signal = record.signal[:, order]
        # a missing sample (NaN in the record) goes on the wire as MISSING_SAMPLE
        scaled = np.clip(np.rint(np.nan_to_num(signal * gain, nan=0.0)), -32767, 32767)
        raw = np.where(np.isnan(signal), MISSING_SAMPLE, scaled).astype(np.int16)
        units = record.units[order[0]] if record.units else "mV"
        leads = tuple(record.lead_names[i] for i in order)
        return cls(record.name, record.fs, gain, units, leads, raw)


def start_offset(bed_index: int, n_samples: int, fs: float, stride_s: float) -> int:
    """The sample a bed starts at within its first record (stride_s apart, wrapping)."""
    if n_samples <= 0:
        return 0
    return int(round(bed_index * stride_s * fs)) % n_samples


@dataclass(frozen=True)
class Playback:
    """How a ward's streams play, the same for every bed: `t_start` (unix s) is the time of
    sample 0 (chunks' `t0` count from it), `speed` the replay rate (2: twice real time),
    `json_payload` the JSON wire encoding instead of binary, `max_samples` where each bed
    stops (None: it cycles its records forever)."""

    t_start: float
    speed: float = 1.0
    json_payload: bool = False
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.t_start):
            raise ValueError(f"t_start: must be a finite time in s, got {self.t_start!r}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed: must be a positive finite rate, got {self.speed!r}")
        if self.max_samples is not None and self.max_samples < 0:
            raise ValueError(f"max_samples: must be 0 or more or None, got {self.max_samples}")


class BedStream:
    """One bed: an endless (or bounded) sequence of chunks over the cycled record list, its
    first sample `offset` into `sources[first_source]`, `phase_s` later than the ward's start."""

    def __init__(
        self,
        bed: str,
        ward: str,
        sources: Sequence[Source],
        first_source: int,
        offset: int,
        chunk_s: float,
        playback: Playback,
        *,
        phase_s: float = 0.0,
    ) -> None:
        if not sources:
            raise ValueError("sources must not be empty")
        if len({s.fs for s in sources}) != 1:
            raise ValueError("all records of a stream must share one sampling rate")
        self.bed = bed
        self.topic = samples_topic(ward, bed)
        self.sources = list(sources)
        self.fs = self.sources[0].fs
        self.chunk_n = max(1, int(round(chunk_s * self.fs)))
        self.playback = playback
        self.phase_s = phase_s
        self.max_samples = playback.max_samples
        self._src = first_source % len(self.sources)
        self._pos = offset % max(1, self.sources[self._src].raw.shape[0])
        self.seq = 0
        self.sent = 0  # samples emitted so far (= first_sample of the next chunk)

    @property
    def done(self) -> bool:
        return self.max_samples is not None and self.sent >= self.max_samples

    @property
    def next_due_s(self) -> float:
        """Seconds after start when the next chunk is due (its last sample has happened)."""
        n = self._next_len()
        return self.phase_s + (self.sent + n) / self.fs / self.playback.speed

    def _next_len(self) -> int:
        n = self.chunk_n
        if self.max_samples is not None:
            n = min(n, self.max_samples - self.sent)
        return n

    def _take(self, n: int) -> np.ndarray:
        parts = []
        while n > 0:
            raw = self.sources[self._src].raw
            take = min(n, raw.shape[0] - self._pos)
            parts.append(raw[self._pos : self._pos + take])
            self._pos += take
            n -= take
            if self._pos >= raw.shape[0]:
                self._src = (self._src + 1) % len(self.sources)
                self._pos = 0
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def next_message(self) -> Message:
        """The next chunk; advances the stream."""
        n = self._next_len()
        if n <= 0:
            raise StopIteration("stream finished")
        due = self.next_due_s
        src = self.sources[self._src]
        leads = src.leads
        samples = self._take(n)
        chunk = SampleChunk(
            seq=self.seq % 2**32,
            first_sample=self.sent,
            t0=self.playback.t_start + self.phase_s + self.sent / self.fs,
            fs=self.fs,
            gain=src.gain,
            units=src.units,
            leads=leads[: samples.shape[1]],
            samples=samples,
        )
        encode = encode_samples_json if self.playback.json_payload else encode_samples
        payload = encode(chunk)
        msg = Message(self.topic, payload, due, self.bed, chunk.seq, n)
        self.seq += 1
        self.sent += n
        return msg


def bed_names(n_beds: int, first: int = 1) -> list[str]:
    """Bed names "01", "02", ... (zero-padded so they sort)."""
    width = max(2, len(str(first + n_beds - 1)))
    return [str(first + i).zfill(width) for i in range(n_beds)]


def make_streams(
    sources: Sequence[Source],
    ward: str,
    n_beds: int,
    chunk_s: float,
    playback: Playback,
    *,
    stride_s: float = 137.0,
) -> list[BedStream]:
    """One stream per bed, each on its own record and start offset (`stride_s` apart within a
    record), phases spread over a chunk."""
    streams = []
    for i, bed in enumerate(bed_names(n_beds)):
        first = i % len(sources)
        offset = start_offset(
            i // len(sources), sources[first].raw.shape[0], sources[first].fs, stride_s
        )
        phase = (i / n_beds) * chunk_s / playback.speed if n_beds > 1 else 0.0
        streams.append(
            BedStream(bed, ward, sources, first, offset, chunk_s, playback, phase_s=phase)
        )
    return streams


def schedule(streams: Sequence[BedStream]) -> Iterator[Message]:
    """All beds' chunks merged in due-time order (ties broken by bed order)."""
    heap = [(s.next_due_s, i) for i, s in enumerate(streams) if not s.done]
    heapq.heapify(heap)
    while heap:
        _, i = heapq.heappop(heap)
        stream = streams[i]
        yield stream.next_message()
        if not stream.done:
            heapq.heappush(heap, (stream.next_due_s, i))


def sleep_for(due_s: float, elapsed_s: float) -> float:
    """How long to wait before publishing a message due at `due_s` (never negative)."""
    return max(0.0, due_s - elapsed_s) if math.isfinite(due_s) else 0.0
