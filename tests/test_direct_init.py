"""`direct_init` keeps a frozen dataclass's construction semantics, and the exact medians."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import dataclass, field

import numpy as np
import pytest

from detector.quality import column_medians
from ecgcommon.direct_init import direct_init


@dataclass(frozen=True)
class _Plain:
    a: int
    b: float = 1.5
    c: list[int] = field(default_factory=list)


@direct_init
@dataclass(frozen=True)
class _Direct:
    a: int
    b: float = 1.5
    c: list[int] = field(default_factory=list)


def test_same_construction_as_the_generated_init() -> None:
    for args, kwargs in (((1,), {}), ((1, 2.0), {}), ((1,), {"c": [3]}), ((), {"a": 4, "b": 0.0})):
        fast, plain = _Direct(*args, **kwargs), _Plain(*args, **kwargs)
        assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
        assert list(vars(fast)) == ["a", "b", "c"]
    assert _Direct(1).c is not _Direct(1).c  # a fresh default per instance
    assert repr(_Direct(1)) == "_Direct(a=1, b=1.5, c=[])"
    assert _Direct(1) == _Direct(1) and hash(_Direct(1, 2.0, ())) == hash(_Direct(1, 2.0, ()))
    with pytest.raises(TypeError):
        _Direct()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _Direct(1, 2.0, [], 4)  # type: ignore[call-arg]


def test_still_frozen_and_copyable() -> None:
    d = _Direct(1, 2.0, [3])
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.a = 2  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(d)) == d
    assert copy.deepcopy(d) == d
    assert dataclasses.replace(d, b=3.0) == _Direct(1, 3.0, [3])


def test_refuses_what_it_cannot_keep() -> None:
    with pytest.raises(TypeError):
        direct_init(dataclass(type("Mutable", (), {"__annotations__": {"a": int}})))

    @dataclass(frozen=True)
    class WithPost:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True)
    class KwOnly:
        a: int = field(kw_only=True)

    for cls in (WithPost, KwOnly):
        with pytest.raises(TypeError):
            direct_init(cls)


def test_column_medians_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for n in range(1, 70):
        for scale in (1e-3, 1.0, 1e3):
            rows = rng.standard_normal((n, 6)) * scale
            rows[: n // 3] = np.round(rows[: n // 3], 1) * 0.0  # ties and signed zeros
            assert column_medians(rows).tobytes() == np.median(rows, axis=0).tobytes()
    rows = rng.standard_normal((9, 6))
    rows[3, 2] = np.nan
    assert np.array_equal(column_medians(rows), np.median(rows, axis=0), equal_nan=True)
