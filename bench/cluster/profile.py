"""Where a NATS worker's CPU goes: `n` workers under `beds` beds in real time on a 3-node
loopback cluster, each worker under cProfile (`--cprofile-out`), then the top functions.

    python -m bench.cluster.profile --workers 1 --beds 100 [--worker-arg=--max-wait-s=0.25]

It prints each trial's line as `make bench-cluster` does (worker-cores: process CPU time of
the workers, which cProfile inflates) and the functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import tempfile
from pathlib import Path

from bench.cluster.__main__ import capacity_trial
from bench.cluster.engine import NatsCluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--beds", type=int, default=100)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--chunk-s", type=float, default=0.5)
    p.add_argument("--warmup-s", type=float, default=8.0)
    p.add_argument("--measure-s", type=float, default=15.0)
    p.add_argument("--checkpoint-s", type=float, default=5.0)
    p.add_argument("--top", type=int, default=30, help="functions listed per ordering")
    p.add_argument("--no-profile", action="store_true", help="the same trial, not profiled")
    p.add_argument("--worker-arg", action="append", default=[], help="a flag for every worker")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ecg-cluster-profile-"))
    if not args.no_profile:
        args.worker_arg = [*args.worker_arg, "--cprofile-out", str(work / "{worker}.prof")]
    cluster = NatsCluster(work, n=3)
    cluster.start()
    try:
        capacity_trial(cluster, args.workers, args.beds, args, work)
    finally:
        cluster.stop()
    for path in sorted(work.glob("*.prof.*")):  # one file per worker and thread
        print(f"== {path.name}", flush=True)
        stats = pstats.Stats(str(path))
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumtime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
