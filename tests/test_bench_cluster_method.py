"""The scaling figure's arithmetic in `make bench-cluster` (bench/cluster/__main__.py)."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_main_reports_the_matched_trials_as_the_headline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole bench's wiring, its trials replaced by a linear worker (no servers started):
    the search runs until a load fails, and the headline comes from the matched trials."""
    import bench.cluster.__main__ as bc

    def fake_trial(_cluster: object, n: int, beds: int, _args: object, _work: Path) -> dict:
        return {
            "workers": n,
            "beds": beds,
            "worker_cores": n * 0.05 + 0.002 * beds,
            "sustained": beds / n <= 200,
            "latency_s": {"p50": 0.05, "p99": 0.2},
            "nats_server_cores": 0.3,
            "msgs_per_s": beds * 2.0,
        }

    failover = {"waits_s": [3.0], "gap_events": 0, "beats_missing": 0, "duplicate_beats": 0}
    failover |= {"false_alarms": [], "stall_alarms": []}
    monkeypatch.setattr(bc, "capacity_trial", fake_trial)
    monkeypatch.setattr(bc, "failover_run", lambda *_: failover)
    monkeypatch.setattr(
        bc, "trial", lambda *_: {"latency_s": {"p50": 0.04}, "detector_cpu_cores": 0.1}
    )
    monkeypatch.setattr(bc.NatsCluster, "__post_init__", lambda self: None)
    monkeypatch.setattr(bc.NatsCluster, "start", lambda self: None)
    monkeypatch.setattr(bc.NatsCluster, "stop", lambda self: None)
    out = tmp_path / "cluster.json"
    assert bc.main(["--out", str(out), "--workers", "1,2"]) == 0
    report = json.loads(out.read_text())
    assert report["workers"]["1"]["beds"] == 200  # 400 failed twice: the search stopped
    assert report["workers"]["2"]["beds"] == 400
    # 1 worker with 50 beds: 0.15 cores; 2 workers with 100 beds: 0.3 cores
    assert report["scaling_efficiency_2_workers"] == pytest.approx(1.0)
    assert report["scaling"]["efficiency_equal_total_beds"] == pytest.approx(0.15 / 0.2)
    assert report["scaling"]["cost_model"]["fixed_cores_1_worker"] == pytest.approx(0.05)
    matched = [r for r in report["runs"] if "matched" in r]
    assert len(matched) == 4 * 3


def test_fixed_cost_fit_uses_the_loaded_points_only() -> None:
    from bench.cluster.fixed_cost import fit

    # idle is cheaper than the loaded line's intercept: it must not pull the fit down
    medians = {0: 0.014, 8: 0.05 + 8 * 0.0016, 50: 0.05 + 50 * 0.0016}
    got = fit(medians)
    assert got is not None
    assert got["fixed_cores"] == pytest.approx(0.05)
    assert got["cores_per_bed"] == pytest.approx(0.0016)
    assert fit({0: 0.014, 8: 0.06}) is None
