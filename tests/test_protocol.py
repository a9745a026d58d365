"""Wire format: round trips of every payload, and decoders that only ever raise DecodeError."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgcommon.protocol import (
    HEADER,
    MAGIC,
    MISSING_SAMPLE,
    BadField,
    BadJSON,
    BadMagic,
    BeatResult,
    DecodeError,
    Event,
    SampleChunk,
    Status,
    Truncated,
    UnsupportedVersion,
    decode_beats,
    decode_beats_message,
    decode_event,
    decode_samples,
    decode_status,
    encode_beats,
    encode_event,
    encode_samples,
    encode_samples_json,
    encode_status,
)


def _chunk(n: int = 90, leads: tuple[str, ...] = ("MLII", "V5"), seed: int = 0) -> SampleChunk:
    rng = np.random.default_rng(seed)
    samples = rng.integers(-32768, 32767, size=(n, len(leads)), dtype=np.int16)
    return SampleChunk(
        seq=7,
        first_sample=123_456,
        t0=1_700_000_000.25,
        fs=360.0,
        gain=200.0,
        units="mV",
        leads=leads,
        samples=samples,
    )


def _same(a: SampleChunk, b: SampleChunk) -> None:
    assert (a.seq, a.first_sample, a.t0, a.fs, a.gain, a.units, a.leads) == (
        b.seq,
        b.first_sample,
        b.t0,
        b.fs,
        b.gain,
        b.units,
        b.leads,
    )
    np.testing.assert_array_equal(a.samples, b.samples)


@pytest.mark.parametrize("leads", [("MLII",), ("MLII", "V5"), ("I", "II", "III")])
def test_binary_round_trip(leads: tuple[str, ...]) -> None:
    chunk = _chunk(leads=leads)
    payload = encode_samples(chunk)
    assert payload[:4] == MAGIC
    # header + units + lead names + 2 bytes per sample, nothing else
    names = 1 + len("mV") + sum(1 + len(x) for x in leads)
    assert len(payload) == HEADER.size + names + 2 * chunk.samples.size
    back = decode_samples(payload)
    _same(chunk, back)
    assert back.samples.dtype == np.int16
    np.testing.assert_allclose(back.physical(), chunk.samples / 200.0)


@pytest.mark.parametrize("leads", [("MLII",), ("MLII", "V5")])
def test_json_round_trip(leads: tuple[str, ...]) -> None:
    chunk = _chunk(n=20, leads=leads)
    payload = encode_samples_json(chunk)
    assert payload[:1] == b"{"
    back = decode_samples(payload)
    _same(chunk, back)


def test_json_for_simple_devices_defaults_and_floats() -> None:
    back = decode_samples(b' {"seq":0,"first_sample":0,"t0":1.5,"fs":250,"samples":[0.1,-0.2]}')
    assert back.gain == 1.0 and back.units == "mV" and back.leads == ("ECG",)
    np.testing.assert_allclose(back.physical()[:, 0], [0.1, -0.2])
    assert back.duration_s == pytest.approx(2 / 250)


def test_typed_errors_say_what_is_wrong() -> None:
    good = encode_samples(_chunk())
    with pytest.raises(BadMagic):
        decode_samples(b"XXXX" + good[4:])
    with pytest.raises(UnsupportedVersion) as ver:
        decode_samples(good[:4] + bytes([9]) + good[5:])
    assert ver.value.reason == "unsupported_version"
    with pytest.raises(Truncated):
        decode_samples(good[:-1])
    with pytest.raises(Truncated):
        decode_samples(good[:20])
    with pytest.raises(BadField) as extra:
        decode_samples(good + b"\x00\x00")
    assert extra.value.field == "samples" and extra.value.reason == "bad_samples"
    bad_fs = bytearray(good)
    struct.pack_into("<d", bad_fs, 28, float("nan"))  # fs is the 2nd double after seq/first
    with pytest.raises(BadField) as fs_err:
        decode_samples(bytes(bad_fs))
    assert fs_err.value.field == "fs" and "fs" in str(fs_err.value)
    with pytest.raises(BadJSON):
        decode_samples(b"{not json")
    with pytest.raises(BadField) as missing:
        decode_samples(b'{"seq":1,"first_sample":0,"t0":0,"samples":[1]}')
    assert missing.value.field == "fs" and "missing" in str(missing.value)
    with pytest.raises(BadField) as ragged:
        decode_samples(b'{"seq":1,"first_sample":0,"t0":0,"fs":360,"samples":[[1,2],[3]]}')
    assert ragged.value.field == "samples"
    with pytest.raises(BadField) as strings:
        decode_samples(b'{"seq":1,"first_sample":0,"t0":0,"fs":360,"samples":["1"]}')
    assert strings.value.field == "samples"
    with pytest.raises(BadField) as wrong_leads:
        decode_samples(
            b'{"seq":1,"first_sample":0,"t0":0,"fs":360,"leads":["a","b"],"samples":[1,2]}'
        )
    assert wrong_leads.value.field == "samples"
    with pytest.raises(Truncated):
        decode_samples(b"")


def test_encoder_refuses_what_binary_cannot_carry() -> None:
    chunk = _chunk()
    floats = SampleChunk(**{**chunk.__dict__, "samples": chunk.samples.astype(float) / 200})
    with pytest.raises(ValueError):
        encode_samples(floats)


def test_beats_round_trip() -> None:
    beats = [
        BeatResult("3", 1000, 1.7e9, None, None, 0.1, 0.5, False, "w:3:1000"),
        BeatResult(
            "3",
            1300,
            1.7e9 + 0.83,
            0.8333,
            72.0,
            0.9,
            0.5,
            True,
            "w:3:1300",
            label="V",
            errors=(0.1, 0.25, 0.5),
        ),
    ]
    back = decode_beats(encode_beats(beats))
    assert back[0] == beats[0]
    assert back[1].errors == (0.1, 0.25, 0.5) and back[1].anomalous and back[1].label == "V"
    assert back[1].hr_bpm == 72.0 and back[1].rr_s == 0.8333
    single = json.dumps({k: v for k, v in json.loads(encode_beats(beats[:1]))["beats"][0].items()})
    assert decode_beats(single) == beats[:1]
    with pytest.raises(BadField) as err:
        decode_beats(b'{"beats":[{"bed":"1"}]}')
    assert err.value.reason.startswith("bad_")


def test_event_and_status_round_trip() -> None:
    ev = Event("5", "gap", True, 1.7e9, {"missing": 3, "from_seq": 10})
    assert decode_event(encode_event(ev)) == ev
    st_ = Status("offline", 1.7e9, "streamer-5")
    assert decode_status(encode_status(st_)) == st_
    assert decode_status(b"online").state == "online"
    assert math.isnan(decode_status(b"online").t)
    with pytest.raises(BadField):
        decode_status(b'{"state":"sleeping"}')
    with pytest.raises(BadJSON):
        decode_event(b"[1,2]")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_raise_decode_error(payload: bytes) -> None:
    for decode in (decode_samples, decode_beats, decode_event, decode_status):
        try:
            decode(payload)
        except DecodeError as exc:
            assert exc.reason and str(exc)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_frames_only_raise_decode_error(data: st.DataObject) -> None:
    frame = bytearray(encode_samples(_chunk(n=8, seed=data.draw(st.integers(0, 5)))))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        chunk = decode_samples(bytes(frame[:cut]))
    except DecodeError as exc:
        assert exc.reason
    else:
        assert chunk.samples.shape == (chunk.n_samples, len(chunk.leads))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "seq",
                "first_sample",
                "t0",
                "fs",
                "gain",
                "units",
                "leads",
                "samples",
                "bed",
                "beats",
                "type",
                "t",
                "state",
                "score",
                "errors",
            ]
        ),
        _json_values,
    )
)
def test_fuzz_json_documents_only_raise_decode_error(doc: dict) -> None:
    payload = json.dumps(doc).encode()
    for decode in (decode_samples, decode_beats, decode_event, decode_status):
        try:
            decode(payload)
        except DecodeError as exc:
            assert exc.reason


def test_beats_message_carries_the_analysis_watermark() -> None:
    msg = decode_beats_message(encode_beats([], analysed_until=1700000000.25))
    assert msg.beats == [] and msg.analysed_until == pytest.approx(1700000000.25)
    assert decode_beats_message(encode_beats([])).analysed_until is None
    with pytest.raises(DecodeError):
        decode_beats_message(b'{"beats": [], "analysed_until": "soon"}')


def test_missing_sample_reads_as_nan_in_that_lead_only() -> None:
    raw = np.array([[100, -5], [MISSING_SAMPLE, 7], [-32767, MISSING_SAMPLE]], dtype=np.int16)
    chunk = SampleChunk(0, 0, 1.7e9, 360.0, 200.0, "mV", ("MLII", "V5"), raw)
    back = decode_samples(encode_samples(chunk)).physical()
    assert back[0].tolist() == [0.5, -0.025]
    assert math.isnan(back[1, 0]) and back[1, 1] == 0.035
    assert back[2, 0] == -32767 / 200.0 and math.isnan(back[2, 1])
