"""Beat-class data: each record through the live detector path, detections labelled by matching.

The detector's own run-time code does the work in a separate process, `python -m
detector.offline` (QRS detector and beat segments, `OnnxScorer` and `PatientAdapter` exactly as
`DetectorEngine.score_signal` runs them, then `detector.classifier.beat_features`), and writes
one file per record in the `ecgcommon.model_contract.beat_data` schema: models/ reads the
detector's output, never imports it. Each detected beat has the AAMI class of the reference
beat within 150 ms (EC57 matching), or "" when it matches none (a false detection). The
expensive part is cached per record under var/cache keyed by data, model and code; features
always come from the current run-time code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecgcommon.model_contract.beat_data import MATCH_WINDOW_S, RecordBeats, match
from ecgcommon.records import resolve_data_dir
from models.dataset import CACHE_DIR, PROJECT_ROOT

__all__ = ["MATCH_WINDOW_S", "RecordBeats", "load_records", "match", "run_detector"]


def run_detector(
    command: str,
    names: Sequence[str],
    data_dir: str | Path | None,
    model_dir: Path | None,
    out_dir: Path,
    cache: bool = True,
) -> dict[str, Any]:
    """`python -m detector.offline <command>` over `names` into `out_dir`; its JSON index."""
    argv = [sys.executable, "-m", "detector.offline", command, "--records", *names]
    argv += ["--data-dir", str(resolve_data_dir(data_dir)), "--out-dir", str(out_dir)]
    if model_dir is not None:
        argv += ["--model-dir", str(model_dir)]
    if cache:
        argv += ["--cache-dir", str(CACHE_DIR)]
    done = subprocess.run(argv, cwd=PROJECT_ROOT, check=True, stdout=subprocess.PIPE, text=True)
    index: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return index


def load_records(
    names: Sequence[str],
    data_dir: str | Path | None = None,
    model_dir: Path | None = None,
    cache: bool = True,
) -> list[RecordBeats]:
    """The detector's labelled beats and classifier features of each record, in order."""
    with tempfile.TemporaryDirectory(prefix="beat-data-") as tmp:
        files = run_detector("beats", names, data_dir, model_dir, Path(tmp), cache)["files"]
        return [RecordBeats.load(Path(files[name]), name) for name in names]
