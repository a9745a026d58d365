"""`encode_beats` writes its JSON directly: the same bytes as the dict path it replaced."""

from __future__ import annotations

import random

import numpy as np

from ecgcommon.protocol import _COMPACT, BeatResult, beat_to_dict, decode_beats, encode_beats


def _number(rng: random.Random) -> float:
    return rng.choice(
        [
            float("nan"),
            float("inf"),
            -float("inf"),
            float(np.float64(rng.uniform(-1e6, 1e6))),
            np.float64(rng.uniform(-10.0, 10.0)),  # a numpy float (rounded by numpy's round)
            rng.uniform(-1e-6, 1e-6),
            rng.uniform(-1e4, 1e12),
            0.1 + 0.2,
        ]
    )


def _beat(rng: random.Random, k: int) -> BeatResult:
    return BeatResult(
        bed=rng.choice(["b1", 'b\u00e9\u2603"\\x', "3"]),
        sample=rng.randint(-5, 10**12),
        t=_number(rng),
        rr_s=rng.choice([None, _number(rng)]),
        hr_bpm=rng.choice([None, _number(rng), 72]),
        score=_number(rng),
        threshold=_number(rng),
        anomalous=rng.random() < 0.5,
        beat_id=f"w:b:{k}",
        label=rng.choice([None, "N", "V"]),
        errors=rng.choice([None, (), tuple(_number(rng) for _ in range(5))]),
        cls=rng.choice([None, "N", "Q"]),
    )


def test_direct_json_equals_the_dict_path() -> None:
    rng = random.Random(3)
    for k in range(3000):
        beats = [_beat(rng, k) for _ in range(rng.randint(0, 3))]
        until, since = rng.choice([None, _number(rng)]), rng.choice([None, _number(rng)])
        doc: dict[str, object] = {"beats": [beat_to_dict(b) for b in beats]}
        if until is not None:
            doc["analysed_until"] = round(float(until), 4)
        if since is not None:
            doc["analysed_from"] = round(float(since), 4)
        want = _COMPACT.encode(doc).encode()
        assert encode_beats(beats, analysed_until=until, analysed_from=since) == want


def test_unusual_field_types_take_the_dict_path() -> None:
    beat = BeatResult("b", np.int64(7), 1.5, None, None, 0.5, 0.9, np.bool_(True), "w:b:7")  # type: ignore[arg-type]  # numpy scalars where ints and bools belong
    try:
        want: bytes | type[TypeError] = _COMPACT.encode({"beats": [beat_to_dict(beat)]}).encode()
    except TypeError:
        want = TypeError
    try:
        got: bytes | type[TypeError] = encode_beats([beat])
    except TypeError:
        got = TypeError
    assert got == want
    ok = BeatResult("b", 7, 1.5, 0.8, 75.0, 0.5, 0.9, True, "w:b:7", cls="V")
    assert decode_beats(encode_beats([ok])) == [ok]
