"""How a bench (and the fuzzer) hands back its result: a JSON report file and a headline line.

One writer so every `reports/*.json` is made the same way (parent folders created, a final
newline) and a caller reading stdout finds the headline figures as one JSON object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_report(
    path: str | Path,
    report: Mapping[str, Any],
    headline: Sequence[str] = (),
    *,
    indent: int = 2,
    nan_as_null: bool = False,
    **dumps: Any,
) -> Path:
    """`report` as JSON at `path` (`indent` and `dumps` go to `json.dumps`; `nan_as_null`:
    non-finite numbers written as null, strict JSON), then, if asked, its `headline` keys
    printed as one JSON line; returns the path written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = _null_non_finite(report) if nan_as_null else report
    out.write_text(json.dumps(doc, indent=indent, **dumps) + "\n")
    if headline:
        print(json.dumps({k: report[k] for k in headline}), flush=True)
    return out


def _null_non_finite(obj: object) -> object:
    """`obj` with every non-finite float (in dicts and lists, at any depth) replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _null_non_finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_null_non_finite(v) for v in obj]
    return obj
