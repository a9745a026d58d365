"""Old import path of the anomaly contract, kept while callers move (issue 11).

The features, `AnomalyConfig` and the per-patient adaptation now live in the neutral
`ecgcommon.model_contract` package, which `models/` imports too. New code imports from there;
these names stay for the detector's engine and service, the benches, fuzz and tests.
"""

from __future__ import annotations

from ecgcommon.model_contract.adapter import (
    PROFILES,
    TEMPLATE_REFRESH,
    AnomalyConfig,
    PatientAdapter,
    RunningMedian,
    process_many,
    record_features,
    record_scores,
)
from ecgcommon.model_contract.features import FEATURES, feature_vector, rhythm_from_row

__all__ = [
    "FEATURES",
    "PROFILES",
    "TEMPLATE_REFRESH",
    "AnomalyConfig",
    "PatientAdapter",
    "RunningMedian",
    "feature_vector",
    "process_many",
    "record_features",
    "record_scores",
    "rhythm_from_row",
]
