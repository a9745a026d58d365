"""Stream integrity of one bed: sequence gaps, duplicates, out-of-order chunks, restarts.

Pure code. Alignment follows `first_sample` (the device's sample count), classification uses
`seq`. A chunk that starts after the expected sample is accepted behind a NaN fill of the missing
samples, so sample indices stay aligned with the device; a chunk that lies wholly in the past is
dropped (a duplicate if its seq was seen recently, else an out-of-order late arrival whose place
was already NaN-filled); a partly overlapping chunk is trimmed to its new samples.

A jump of more than `max_fill` samples either way is a new stream (RESET), never a reason to drop
what follows: one chunk dated 2^40 samples ahead (a forged or corrupt `first_sample`) must not
make every later real chunk look "out of order", and a device that restarted its sample count
without restarting `seq` is followed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

ACCEPT = "accept"
DROP = "drop"
RESET = "reset"  # first chunk of a (re)started stream: the caller starts a fresh pipeline


@dataclass(frozen=True)
class Verdict:
    """What to do with a chunk: accept (after `fill` NaN samples, skipping `skip`), drop, reset."""

    action: str
    fill: int = 0  # NaN samples to feed before the chunk
    skip: int = 0  # leading samples of the chunk already seen
    events: tuple[tuple[str, dict[str, Any]], ...] = ()  # (event type, detail)


@dataclass
class IntegrityTracker:
    """Per-bed sequence and sample-index bookkeeping."""

    max_fill: int  # longest gap (samples) bridged with NaN; longer gaps restart the stream
    history: int = 256  # how many recent seqs are remembered for duplicate detection
    next_seq: int | None = None
    next_sample: int | None = None
    _seen: deque[int] = field(default_factory=deque)
    _seen_set: set[int] = field(default_factory=set)

    def _remember(self, seq: int) -> None:
        self._seen.append(seq)
        self._seen_set.add(seq)
        while len(self._seen) > self.history:
            self._seen_set.discard(self._seen.popleft())

    def _start(self, seq: int, first_sample: int, n: int) -> None:
        self._seen.clear()
        self._seen_set.clear()
        self._remember(seq)
        self.next_seq = seq + 1
        self.next_sample = first_sample + n

    def check(self, seq: int, first_sample: int, n: int) -> Verdict:
        """Classify a chunk of `n` samples and update the state as if the verdict is obeyed."""
        if self.next_sample is None or self.next_seq is None:
            self._start(seq, first_sample, n)
            return Verdict(RESET)
        if seq == 0 and first_sample == 0 and self.next_sample > 0:
            self._start(seq, first_sample, n)
            return Verdict(
                RESET,
                events=(("gap", {"restart": True, "expected_seq": self.next_seq, "got_seq": seq}),),
            )
        end = first_sample + n
        if self.next_sample - end > self.max_fill:  # far in the past: a new stream
            detail = {
                "restart": True,
                "jump_back_samples": self.next_sample - end,
                "expected_seq": self.next_seq,
                "got_seq": seq,
            }
            self._start(seq, first_sample, n)
            return Verdict(RESET, events=(("gap", detail),))
        if end <= self.next_sample:
            if seq in self._seen_set:
                return Verdict(DROP, events=(("duplicate", {"seq": seq}),))
            self._remember(seq)
            return Verdict(
                DROP, events=(("out_of_order", {"seq": seq, "newest_seq": self.next_seq - 1}),)
            )
        events: list[tuple[str, dict[str, Any]]] = []
        fill = max(0, first_sample - self.next_sample)
        skip = max(0, self.next_sample - first_sample)
        if seq > self.next_seq or fill > 0:
            events.append(
                (
                    "gap",
                    {
                        "expected_seq": self.next_seq,
                        "got_seq": seq,
                        "missing_chunks": max(0, seq - self.next_seq),
                        "missing_samples": fill,
                    },
                )
            )
        if fill > self.max_fill:
            self._start(seq, first_sample, n)
            events[-1][1]["restart"] = True
            return Verdict(RESET, events=tuple(events))
        self._remember(seq)
        self.next_seq = max(self.next_seq, seq + 1)
        self.next_sample = end
        return Verdict(ACCEPT, fill=fill, skip=skip, events=tuple(events))
