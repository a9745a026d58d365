"""A faster `__init__` for the frozen dataclasses made once per beat, chunk or window.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` (its
own `__setattr__` refuses): about three times the cost of a plain assignment, and the
detector makes over a dozen such objects per bed-second. `direct_init` replaces that
`__init__` with one that writes the fields into the instance `__dict__` (as `copy` and
`pickle` do): the same parameters, defaults, default factories and field order; the class
stays frozen (assignment after construction still raises `FrozenInstanceError`).
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")

_NO_VALUE = object()  # a default-factory field's default: call the factory


def direct_init(cls: type[T]) -> type[T]:
    """Give the frozen dataclass `cls` an `__init__` that fills `__dict__` directly.

    Only plain frozen dataclasses qualify (every field in `__init__`, none keyword-only, no
    `__post_init__`, no `__slots__`): anything else raises TypeError, so that a later change
    to the class cannot silently lose behaviour the generated `__init__` had.
    """
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    if hasattr(cls, "__post_init__") or "__slots__" in cls.__dict__:
        raise TypeError(f"{cls.__name__} has __post_init__ or __slots__")
    env: dict[str, object] = {"_NO_VALUE": _NO_VALUE}
    params: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: init=False or kw_only fields")
        if f.default is not dataclasses.MISSING:
            env[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
            body.append(f"    d[{f.name!r}] = {f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_f_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_NO_VALUE")
            body.append(f"    d[{f.name!r}] = _f_{f.name}() if {f.name} is _NO_VALUE else {f.name}")
        else:
            params.append(f.name)
            body.append(f"    d[{f.name!r}] = {f.name}")
    lines = [f"def __init__(self, {', '.join(params)}):", "    d = self.__dict__", *body]
    exec("\n".join(lines), env)  # noqa: S102 - source built above from field names only
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign,assignment]
    return cls
