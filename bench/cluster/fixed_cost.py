"""A NATS worker's CPU at a few small loads: what it costs idle, and fixed + per bed once loaded.

    python -m bench.cluster.fixed_cost --beds 0,8,50 --trials 3 [--worker-arg=--max-wait-s=0.25]

One worker (the bench's own start-up: `bench.cluster.scenario.start_worker`) owns every
partition of a 3-node loopback cluster; for each load, `--trials` times, the load generator
streams that many beds (none at 0: leases, membership, consumers and the tick loop alone) and
the worker's CPU (user + system) and the nodes' CPU are read over `--measure-s`. It prints
each trial, then the median per load and a least-squares line over the loaded ones (cores =
fixed + per_bed x beds). No latency criterion: these loads are far below a worker's limit.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.__main__ import proc_cpu_s
from bench.cluster.__main__ import _loadgen
from bench.cluster.engine import NatsCluster
from bench.cluster.scenario import start_worker, wait_owned
from ecgcommon.subjects import PARTITIONS


def one_trial(
    cluster: NatsCluster, beds: int, args: argparse.Namespace, work: Path, name: str
) -> dict[str, float]:
    """One worker at `beds` beds: its cores and the nodes' cores over the measured window."""
    ward = f"fixed{beds}{name}"
    wid = f"{ward}-0"
    servers = [n.url for n in cluster.nodes]
    extra = ["--max-beds", str(beds + 16), *args.worker_arg]
    worker = start_worker(
        cluster.bus, wid, ward, work / f"{wid}.log", checkpoint_s=args.checkpoint_s, extra=extra
    )
    gen: subprocess.Popen | None = None
    try:
        if not wait_owned(servers, ward, PARTITIONS, {wid}, 90):
            raise RuntimeError("the worker did not take its partitions")
        if beds:
            total = args.warmup_s + args.measure_s + 2.0
            port = cluster.nodes[0].mqtt_port
            gen = _loadgen(port, ward, beds, args.chunk_s, total, time.time() + 0.5, args.data_dir)
        time.sleep(args.warmup_s)
        nodes = [n.proc.pid for n in cluster.nodes if n.proc is not None]
        cpu0, ncpu0, t0 = proc_cpu_s(worker.pid), sum(map(proc_cpu_s, nodes)), time.monotonic()
        time.sleep(args.measure_s)
        wall = time.monotonic() - t0
        cores = (proc_cpu_s(worker.pid) - cpu0) / wall
        nats_cores = (sum(map(proc_cpu_s, nodes)) - ncpu0) / wall
        if gen is not None:
            gen.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGINT)
        worker.wait(30)
    return {"beds": beds, "worker_cores": cores, "nats_server_cores": nats_cores}


def fit(medians: dict[int, float]) -> dict[str, float] | None:
    """cores = fixed + per_bed x beds over the loaded points (beds > 0); None with fewer than 2."""
    loaded = sorted(b for b in medians if b > 0)
    if len(loaded) < 2:
        return None
    per_bed, fixed = np.polyfit(loaded, [medians[b] for b in loaded], 1)
    return {"fixed_cores": float(fixed), "cores_per_bed": float(per_bed)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--beds", default="0,8,50", help="loads, each measured --trials times")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--chunk-s", type=float, default=0.5)
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--measure-s", type=float, default=15.0)
    p.add_argument("--checkpoint-s", type=float, default=5.0)
    p.add_argument("--worker-arg", action="append", default=[], help="a flag for the worker")
    args = p.parse_args(argv)
    loads = [int(x) for x in args.beds.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ecg-cluster-fixed-"))
    cluster = NatsCluster(work, n=3)
    cluster.start()
    trials: dict[int, list[dict[str, float]]] = {b: [] for b in loads}
    try:
        for t in range(args.trials):  # interleaved: every load gets the same weather
            for beds in loads:
                r = one_trial(cluster, beds, args, work, f"t{t}")
                trials[beds].append(r)
                print(
                    f"{beds:4d} beds: worker {r['worker_cores']:.3f} cores, "
                    f"nats {r['nats_server_cores']:.3f} cores",
                    flush=True,
                )
    finally:
        cluster.stop()
    medians = {b: float(np.median([r["worker_cores"] for r in rs])) for b, rs in trials.items()}
    print(json.dumps({"median_worker_cores": medians, "fit": fit(medians), "trials": trials}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
