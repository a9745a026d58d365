"""The scaling figure's arithmetic in `make bench-cluster` (bench/cluster/__main__.py)."""

from __future__ import annotations

import pytest

from bench.cluster.__main__ import cost_model, matched_plan, search_efficiency


def test_matched_plan_keeps_beds_per_worker_and_total_beds_apart() -> None:
    plan = matched_plan(50)
    assert plan == {"1": (1, 50), "1_double": (1, 100), "2": (2, 100), "2_equal_total": (2, 50)}


def test_cost_model_recovers_a_linear_worker() -> None:
    # a worker costing 0.04 cores fixed + 0.002 per bed, exactly
    def cores(workers: int, beds: int) -> float:
        return workers * 0.04 + 0.002 * beds

    b = 50
    model = cost_model({k: cores(*wb) for k, wb in matched_plan(b).items()}, b)
    assert model["cores_per_bed_1_worker"] == pytest.approx(0.002)
    assert model["fixed_cores_1_worker"] == pytest.approx(0.04)
    assert model["cores_per_bed_2_workers"] == pytest.approx(0.002)
    assert model["fixed_cores_per_worker_2_workers"] == pytest.approx(0.04)


def test_search_efficiency_is_beds_per_worker_core_2_over_1() -> None:
    workers = {"1": {"beds": 400, "worker_cores": 0.5}, "2": {"beds": 400, "worker_cores": 0.8}}
    assert search_efficiency(workers) == pytest.approx((400 / 0.8) / (400 / 0.5))
    assert search_efficiency({"1": {"beds": 0, "worker_cores": None}}) is None
