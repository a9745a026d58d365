"""Rhythm detectors of one bed (VT, SVT, AF, VF), composed by `RhythmAnalyser`."""

from __future__ import annotations

from typing import Any

from detector.rhythms.events import EpisodeChange, RhythmBeat

__all__ = ["AnalyserConfig", "EpisodeChange", "RhythmAnalyser", "RhythmBeat"]


def __getattr__(name: str) -> Any:
    # the analyser imports detector.quality, which imports this package's modules: load it lazily
    if name in ("AnalyserConfig", "RhythmAnalyser"):
        from detector.rhythms import analyser

        return getattr(analyser, name)
    raise AttributeError(name)
