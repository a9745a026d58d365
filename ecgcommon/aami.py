"""AAMI EC57 beat classes and the de Chazal (2004) inter-patient record split."""

from __future__ import annotations

import numpy as np

# MIT-BIH beat symbols grouped into the five AAMI EC57 classes.
AAMI_CLASSES: dict[str, tuple[str, ...]] = {
    "N": ("N", "L", "R", "e", "j"),
    "S": ("A", "a", "J", "S"),
    "V": ("V", "E"),
    "F": ("F",),
    "Q": ("/", "f", "Q"),
}
SYMBOL_TO_AAMI: dict[str, str] = {s: c for c, syms in AAMI_CLASSES.items() for s in syms}
BEAT_SYMBOLS: frozenset[str] = frozenset(SYMBOL_TO_AAMI)

# Records with paced beats are left out of both sets, as in de Chazal et al. 2004.
PACED_RECORDS: tuple[str, ...] = ("102", "104", "107", "217")
DS1: tuple[str, ...] = (
    "101",
    "106",
    "108",
    "109",
    "112",
    "114",
    "115",
    "116",
    "118",
    "119",
    "122",
    "124",
    "201",
    "203",
    "205",
    "207",
    "208",
    "209",
    "215",
    "220",
    "223",
    "230",
)
DS2: tuple[str, ...] = (
    "100",
    "103",
    "105",
    "111",
    "113",
    "117",
    "121",
    "123",
    "200",
    "202",
    "210",
    "212",
    "213",
    "214",
    "219",
    "221",
    "222",
    "228",
    "231",
    "232",
    "233",
    "234",
)


def aami_class(symbol: str) -> str | None:
    """The AAMI class of a MIT-BIH symbol, or None when it is not a beat."""
    return SYMBOL_TO_AAMI.get(symbol)


def beat_mask(symbols: np.ndarray) -> np.ndarray:
    """True where an annotation symbol is a beat (any AAMI class)."""
    return np.fromiter((s in BEAT_SYMBOLS for s in symbols), dtype=bool, count=len(symbols))


def aami_labels(symbols: np.ndarray) -> np.ndarray:
    """AAMI class letters for beat symbols ('' for non-beat annotations)."""
    return np.array([SYMBOL_TO_AAMI.get(s, "") for s in symbols], dtype="<U1")
