"""Runs of consecutive beats of one class at a fast rate: VT (V beats) and SVT (S beats).

A run starts when `min_beats` consecutive beats of the class have arrived and their mean rate
(from the RR intervals inside the run) is at least `min_rate_bpm`; its onset is the first beat
of the run. It ends at the first beat of another class, or when the rate inside the run falls
below the limit, and then the end time is the last beat of the run. A beat in artifact (`noisy`)
starts nothing, unless the config allows an *organised* run there: `organised_beats` beats of
the class whose two-beat spans all lie within `organised_spread` of their median. Slow VT is
wide and large against the lead's clean past, so the quality index calls it artifact (mitdb
223: 55 s of VT under `noisy`), while the beats artifact makes are irregular.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from detector.rhythms.events import EpisodeChange, RhythmBeat, check_config


@dataclass(frozen=True)
class RunConfig:
    """Which beats make the run and how many at what rate."""

    episode: str
    classes: tuple[str, ...]
    min_beats: int = 5
    min_rate_bpm: float = 100.0
    rate_beats: int = 4  # the rate is the mean over this many most recent RR intervals
    organised_spread: float = 0.0  # > 0: a regular run may start in artifact (module doc)
    organised_beats: int = 8
    regular_spread: float = 0.0  # > 0: a run starts only when its two-beat spans are regular

    def __post_init__(self) -> None:
        skip = ("episode", "classes", "organised_spread", "organised_beats", "regular_spread")
        check_config(self, skip=skip)
        if self.min_beats < 2 or not self.classes:
            raise ValueError("RunConfig.min_beats must be >= 2 and classes not empty")
        if not (self.organised_spread >= 0 and self.organised_beats >= 4):
            raise ValueError("RunConfig.organised_spread must be >= 0 and organised_beats >= 4")
        if not self.regular_spread >= 0:
            raise ValueError("RunConfig.regular_spread must be >= 0")


VT = RunConfig("vt", ("V",), organised_spread=0.15)
# VT judged as the beats arrive, before their quality verdict: a regular run only
VT_EARLY = RunConfig("vt", ("V",), regular_spread=0.15)
SVT = RunConfig("svt", ("S",))


class BeatRunDetector:
    """One bed's run detector; feed beats in time order."""

    def __init__(
        self, config: RunConfig, check: Callable[[list[RhythmBeat]], bool] | None = None
    ) -> None:
        self.config = config
        self.check = check  # a last say on a run about to start (RhythmAnalyser: its shapes)
        self.run: list[RhythmBeat] = []
        self.active = False
        self.last_t = float("-inf")

    def _rate(self) -> float | None:
        """Mean rate (bpm) over the most recent RR intervals inside the run."""
        run = self.run
        k = min(self.config.rate_beats, len(run) - 1)
        if k < 1:
            return None
        span = run[-1].t - run[-1 - k].t
        return 60.0 * k / span if span > 0 else None

    def _end(self) -> list[EpisodeChange]:
        out: list[EpisodeChange] = []
        if self.active:
            first, last = self.run[0], self.run[-1]
            span = last.t - first.t
            hr = round(60.0 * (len(self.run) - 1) / span, 1) if span > 0 else None
            out.append(
                EpisodeChange(
                    self.config.episode,
                    False,
                    last.t,
                    {"beats": len(self.run), "onset_t": first.t, "hr_bpm": hr},
                )
            )
        self.active = False
        self.run = []
        return out

    def feed(self, beat: RhythmBeat, noisy: bool = False) -> list[EpisodeChange]:
        """One beat (its class set); returns the episode's start or end, if any."""
        if not beat.valid or beat.t <= self.last_t:
            return []
        self.last_t = beat.t
        if beat.cls not in self.config.classes:
            return self._end()
        if noisy and not self.active:
            return self._organised_start(beat)
        self.run.append(beat)
        rate = self._rate()
        fast = rate is not None and rate >= self.config.min_rate_bpm
        if self.active:
            if not fast:
                self.run.pop()
                out = self._end()
                self.run = [beat]
                return out
            return []
        if len(self.run) > self.config.min_beats:
            self.run = self.run[-self.config.min_beats :]
        if (
            len(self.run) >= self.config.min_beats
            and rate is not None
            and fast
            and self._run_fast()
            and self._regular(self.config.regular_spread)
            and (self.check is None or self.check(self.run))
        ):
            self.active = True
            return [
                EpisodeChange(
                    self.config.episode,
                    True,
                    self.run[0].t,
                    {
                        "beats": len(self.run),
                        "onset_t": self.run[0].t,
                        "hr_bpm": None if rate is None else round(rate, 1),  # fast: not None
                        "detected_t": beat.t,
                    },
                )
            ]
        return []

    def _organised_start(self, beat: RhythmBeat) -> list[EpisodeChange]:
        """A beat in artifact: the run starts only when it is organised (module doc)."""
        c = self.config
        if c.organised_spread <= 0:
            self.run = []
            return []
        self.run = [*self.run[-(c.organised_beats - 1) :], beat]
        if len(self.run) < c.organised_beats or not self._run_fast():
            return []
        if not self._regular(c.organised_spread) or (
            self.check is not None and not self.check(self.run)
        ):
            return []
        t = [b.t for b in self.run]
        self.active = True
        first = self.run[0]
        hr = 60.0 * (len(t) - 1) / (t[-1] - t[0])
        detail = {"beats": len(self.run), "onset_t": first.t, "hr_bpm": round(hr, 1)}
        return [
            EpisodeChange(
                c.episode, True, first.t, {**detail, "detected_t": beat.t, "organised": True}
            )
        ]

    def _regular(self, spread: float) -> bool:
        """Every two-beat span of the run lies within `spread` of their median (alternans-proof);
        always true for spread 0."""
        if spread <= 0:
            return True
        t = [b.t for b in self.run]
        spans = sorted(t[i + 2] - t[i] for i in range(len(t) - 2))
        if not spans:
            return False
        med = spans[len(spans) // 2]
        return med > 0 and max(abs(x - med) for x in spans) <= spread * med

    def _run_fast(self) -> bool:
        """Mean rate over the whole candidate run is at least the limit."""
        span = self.run[-1].t - self.run[0].t
        return span > 0 and 60.0 * (len(self.run) - 1) / span >= self.config.min_rate_bpm

    def close(self) -> list[EpisodeChange]:
        """End an active run (stream restart, lead lost)."""
        return self._end()


class VTDetector(BeatRunDetector):
    """Ventricular tachycardia: >= 5 consecutive V beats at >= 100 bpm."""

    def __init__(self, config: RunConfig = VT) -> None:
        super().__init__(config)


class SVTDetector(BeatRunDetector):
    """Supraventricular tachycardia: >= 5 consecutive S beats at >= 100 bpm (never VT)."""

    def __init__(self, config: RunConfig = SVT) -> None:
        super().__init__(config)


class EpisodeUnion:
    """One episode from two detectors of it (VT judged as beats arrive, and again once their
    quality is known): it starts with the first detector to start and ends when neither is
    active. A start whose onset the union has already reported and ended is the same run seen
    again by the later detector: it and its end are swallowed."""

    def __init__(self) -> None:
        self.on: dict[str, bool] = {}
        self.swallowed: set[str] = set()
        self.active = False
        self.last_end = float("-inf")

    def merge(self, source: str, changes: list[EpisodeChange]) -> list[EpisodeChange]:
        """The changes of detector `source`, as the union's changes."""
        out: list[EpisodeChange] = []
        for ch in changes:
            if ch.active:
                if not self.active and ch.t <= self.last_end:
                    self.swallowed.add(source)
                    continue
                self.on[source] = True
                if not self.active:
                    self.active = True
                    out.append(ch)
                continue
            if source in self.swallowed:
                self.swallowed.discard(source)
                continue
            self.on[source] = False
            if self.active and not any(self.on.values()):
                self.active = False
                self.last_end = ch.t
                out.append(ch)
        return out
