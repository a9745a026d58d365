"""Hostile inputs: mutations of valid wire messages, uploads and topics, plus hypothesis strategies.

The mutator is plain `random` (fast: tens of thousands of inputs a second); the strategies let
hypothesis build structured JSON with extreme values. Both aim at the limits of
`ecgcommon.limits`: rates, chunk sizes, names, timestamps, sample indices, JSON numbers, nesting.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

from ecgcommon import protocol
from ecgcommon.protocol import BeatResult, Event, SampleChunk, Status

KINDS = ("samples", "beats", "events", "status")
# Values that have broken parsers somewhere: huge, tiny, negative, non-finite, wrong types.
EXTREMES: tuple[object, ...] = (
    0,
    -1,
    1,
    2**31,
    2**32,
    2**63,
    2**64,
    -(2**63),
    10**400,
    1e308,
    -1e308,
    1e-320,
    0.5,
    100_000,
    1e6,
    99.9,
    1000.0001,
    "",
    "x" * 300,
    None,
    True,
    False,
    [],
    {},
    [1, [2, [3]]],
    "NaN",
    "∞",
    "\x00",
    "ecg/v1/#",
)
RAW_EXTREMES: tuple[bytes, ...] = (
    b"1" * 5000,
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"[" * 50_000,
    b"{" * 1000,
    b'"\\ud800"',
    b"0x10",
    b"1_000",
)


def seeds(now: float) -> dict[str, list[bytes]]:
    """Valid payloads of every kind, the starting points of the mutations."""
    rng = np.random.default_rng(0)
    raw = np.rint(np.sin(np.arange(180) / 10.0) * 200).astype(np.int16)[:, None]
    chunk = SampleChunk(3, 540, now, 360.0, 200.0, "mV", ("MLII",), raw)
    two = SampleChunk(
        0,
        0,
        now,
        250.0,
        100.0,
        "mV",
        ("I", "II"),
        rng.integers(-300, 300, (50, 2)).astype(np.int16),
    )
    beat = BeatResult("01", 900, now, 0.8, 75.0, 0.3, 1.0, False, "w:01:900", cls="N")
    return {
        "samples": [
            protocol.encode_samples(chunk),
            protocol.encode_samples(two),
            protocol.encode_samples_json(chunk),
        ],
        "beats": [protocol.encode_beats([beat], analysed_until=now), protocol.encode_beats([])],
        "events": [
            protocol.encode_event(Event("01", "lead_off", True, now, {"lead": "MLII"})),
            protocol.encode_event(Event("01", "clock_skew", False, now)),
        ],
        "status": [protocol.encode_status(Status("offline", now, "dev")), b"online"],
    }


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 2 and buf:  # delete a run
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 3:  # truncate
            del buf[pos:]
        elif op == 4 and len(buf) >= 8:  # overwrite a header-sized word with an extreme
            i = rng.randrange(len(buf) - 7)
            buf[i : i + 8] = rng.choice(
                [b"\xff" * 8, b"\x00" * 8, b"\x7f\xf0" + b"\x00" * 6, b"\x00" * 7 + b"\x80"]
            )
        else:  # splice in a raw extreme
            buf[pos:pos] = rng.choice(RAW_EXTREMES)
    return bytes(buf)


def _mutate_json(rng: random.Random, data: bytes) -> bytes:
    try:
        doc = json.loads(data)
    except ValueError:
        return _mutate_bytes(rng, data)
    if not isinstance(doc, dict):
        return _mutate_bytes(rng, data)
    target = doc
    if "beats" in doc and doc["beats"] and rng.random() < 0.7:
        target = doc["beats"][0]
    keys = list(target) or ["x"]
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(keys)
        op = rng.randrange(4)
        if op == 0:
            target[key] = rng.choice(EXTREMES)
        elif op == 1:
            target.pop(key, None)
        elif op == 2:  # a long list (only of a scalar: the payload stays a few MB at most)
            value = target.get(key)
            long = isinstance(value, list | dict)
            n = 20_000 if rng.random() < 0.05 else rng.choice([2, 10, 100])
            target[key] = [0 if long or isinstance(value, str) else value] * n
        else:
            target[rng.choice(["extra", key + "_", "__proto__"])] = rng.choice(EXTREMES)
    if rng.random() < 0.3:  # timestamps far from the receiver's clock
        for k in ("t", "t0", "analysed_until"):
            if k in target:
                target[k] = time.time() + rng.choice([1e6, -3600.0, -1e9, 2**40, 30.5])
    text = json.dumps(doc, default=str, allow_nan=True)
    if rng.random() < 0.2:  # a raw extreme JSON cannot carry (10**400 as digits, NaN)
        text = text.replace("1", rng.choice(["1" * 500, "NaN", "1e999", "[[[[[[1]]]]]]"]), 1)
    return text.encode()


def mutate(rng: random.Random, kind: str, seed_payloads: dict[str, list[bytes]]) -> bytes:
    """One hostile payload for `kind`: a mutated seed, random bytes, or an empty payload."""
    r = rng.random()
    if r < 0.03:
        return b""
    if r < 0.08:
        return rng.randbytes(rng.randint(1, 300))
    base = rng.choice(seed_payloads[kind])
    if base[:1] == b"{" and rng.random() < 0.8:
        return _mutate_json(rng, base)
    return _mutate_bytes(rng, base)


def bed_name(rng: random.Random, good: tuple[str, ...] = ()) -> str:
    """A bed level: a real bed, a junk but valid name, or one the limits refuse."""
    r = rng.random()
    if good and r < 0.1:
        return rng.choice(good)
    if r < 0.6:
        return f"junk{rng.randrange(100_000)}"
    return rng.choice(
        [
            "",
            "a" * 65,
            "bed:1",
            "bed 1",
            "béd",
            "-x",
            "..",
            "+",
            "#",
            "\x00",
            "a/b",
            "ok",
            "x" * rng.randint(1, 64),
        ]
    )


def topic(rng: random.Random, ward: str, bed: str, kind: str) -> str:
    """Mostly well-formed topics, some not (wrong version, levels, kinds, wards)."""
    r = rng.random()
    if r < 0.85:
        return f"ecg/v1/{ward}/{bed}/{kind}"
    return rng.choice(
        [
            f"ecg/v2/{ward}/{bed}/{kind}",
            f"ecg/v1/{ward}/{bed}",
            f"ecg/v1/other/{bed}/{kind}",
            f"ecg/v1/{ward}/{bed}/{kind}/x",
            f"ecg/v1/{ward}/{bed}/alarms",
            "ecg",
            "",
        ]
    )


def upload(rng: random.Random) -> tuple[dict[str, bytes], str | None]:
    """A hostile upload: a CSV (with or without a rate) or a WFDB header with its signal."""
    n = rng.choice([3, 100, 1200, 5000])
    values = "\n".join(f"{np.sin(i / 20):.3f}" for i in range(n))
    if rng.random() < 0.5:
        csv = f"# fs = {rng.choice(['360', '1e6', '-5', 'nan', '99.99', '1000', ''])}\n{values}\n"
        data = _mutate_bytes(rng, csv.encode()) if rng.random() < 0.5 else csv.encode()
        return {rng.choice(["a.csv", "a.txt", "a.dat", "a.exe", ""]): data}, rng.choice(
            [None, "360", "100000", "abc", "1e400", "0"]
        )
    fs = rng.choice(["360", "100000", "0", "-1", "1e999", "abc"])
    hea = f"rec 1 {fs} {n}\nrec.dat 16 200 11 1024 0 0 0 MLII\n".encode()
    dat = np.rint(np.sin(np.arange(n) / 20) * 200).astype("<i2").tobytes()
    if rng.random() < 0.5:
        hea = _mutate_bytes(rng, hea)
    if rng.random() < 0.5:
        dat = _mutate_bytes(rng, dat)
    return {"rec.hea": hea, "rec.dat": dat}, None


# ---------------------------------------------------------------- hypothesis strategies

_scalar = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
    st.sampled_from(EXTREMES[:12]),
)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def _doc(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={k: st.one_of(v, _scalar) for k, v in fields.items()})


_now = time.time()
_times = st.one_of(st.floats(_now - 120, _now + 5), st.sampled_from([_now + 1e6, _now - 3600, 0.0]))
SAMPLE_DOC = _doc(
    {
        "seq": st.integers(-5, 2**33),
        "first_sample": st.integers(-5, 2**64),
        "t0": _times,
        "fs": st.one_of(st.floats(0, 2e5), st.sampled_from([360, 100_000, 99.99, 1000])),
        "gain": st.floats(allow_nan=True),
        "units": st.sampled_from(["mV", "uV", "V", "furlong"]),
        "leads": st.lists(st.text(max_size=4), max_size=3),
        "samples": st.lists(st.floats(-1e3, 1e3) | st.integers(-(2**40), 2**40), max_size=50),
    }
)
BEAT_DOC = _doc(
    {
        "bed": st.sampled_from(["01", "02", "junk1", ""]),
        "beat_id": st.text(max_size=10),
        "sample": st.integers(-(2**64), 2**64),
        "t": _times,
        "rr_s": st.floats(-1, 10),
        "hr_bpm": st.floats(-10, 1e4),
        "score": st.floats(allow_nan=True),
        "threshold": st.floats(allow_nan=True),
        "anomalous": st.booleans(),
        "cls": st.sampled_from(["N", "S", "V", "F", "Q", "Z"]),
    }
)
EVENT_DOC = _doc(
    {
        "bed": st.sampled_from(["01", "02", "junk1"]),
        "type": st.sampled_from([*protocol.EVENT_TYPES, "lead_restored", "device_online", "boom"]),
        "active": st.booleans(),
        "t": _times,
        "detail": st.dictionaries(st.text(max_size=5), _scalar, max_size=3),
    }
)
STATUS_DOC = _doc(
    {
        "state": st.sampled_from(["online", "offline", "sleep"]),
        "t": _times,
        "device": st.text(max_size=10),
    }
)


def message_strategy() -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, payload) with structured hostile JSON, or hostile bytes."""
    beats = st.builds(
        lambda b, u: {"beats": b, "analysed_until": u},
        st.lists(BEAT_DOC, max_size=3),
        st.one_of(_times, _scalar),
    )
    docs = st.one_of(
        st.tuples(st.just("samples"), SAMPLE_DOC),
        st.tuples(st.just("beats"), beats),
        st.tuples(st.just("beats"), BEAT_DOC),
        st.tuples(st.just("events"), EVENT_DOC),
        st.tuples(st.just("status"), STATUS_DOC),
    )
    as_json = docs.map(lambda kd: (kd[0], json.dumps(kd[1], default=str).encode()))
    as_bytes = st.tuples(st.sampled_from(KINDS), st.binary(max_size=200))
    nested = st.tuples(st.sampled_from(KINDS), _json.map(lambda d: json.dumps(d).encode()))
    return st.one_of(as_json, as_json, as_bytes, nested)


DECODERS: dict[str, Callable[[bytes], object]] = {
    "samples": protocol.decode_samples,
    "beats": protocol.decode_beats_message,
    "events": protocol.decode_event,
    "status": protocol.decode_status,
}
