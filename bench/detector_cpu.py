"""The detector's CPU per bed-second, in process, robust to a loaded machine.

`make bench` measures the detector process from outside (MQTT, broker and load generator on the
same cores), so its figure moves with whatever else runs. This replays N beds x M seconds of
MIT-BIH (the load generator's records, 1 s chunks, the same streams) through the service's own
`DetectorEngine.handle`/`tick` on a fake clock (ticked at every batching deadline, as the
service's worker does) and counts the CPU time of this process (`time.process_time`: time
other programs take on the cores is not counted). It reports CPU microseconds per bed-second
of signal, the beds one core would carry (1e6 / that, MQTT excluded), and the same broken down
by stage (inclusive CPU of the engine's main calls, timed by wrappers). `--profile` adds the top
functions by own time under cProfile; `--dump` writes every publication, decoded, as JSON lines
(the output to compare before and after an optimisation: `--compare A B`); `--digest` prints
one SHA-256 over every publication's topic, payload bytes, QoS and retain flag, in order (the
strictest check: equal digests mean byte-identical output).

    python -m bench.detector_cpu --beds 200 --seconds 60
    python -m bench.detector_cpu --beds 50 --seconds 120 --dump /tmp/a.jsonl
    python -m bench.detector_cpu --compare /tmp/a.jsonl /tmp/b.jsonl
    python -m bench.detector_cpu --beds 100 --seconds 60 --digest
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import math
import os
import pstats
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ecgcommon import protocol, topics

T0 = 1_700_000_000.0
RECORDS = ("100", "101", "103", "105", "106", "119", "200", "208", "213", "221")  # loadgen's
WARD = "cpu"


class FakeClock:
    """The engine's wall clock: the replay's signal clock."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def build_engine(clock: Callable[[], float]) -> Any:
    """The engine as the service makes it (default config, its scorer and classifier), never
    started; the HTTP socket (port 0) is closed at once."""
    from detector.config import DetectorConfig
    from detector.service import DetectorService

    config = DetectorConfig(http_host="127.0.0.1", http_port=0, token="detector-cpu-not-served")
    service = DetectorService(config, registry=CollectorRegistry())
    service.http.server_close()
    engine = service.engine
    engine.wall = clock
    return engine


def messages(
    beds: int, seconds: float, chunk_s: float, records: list[str], data_dir: str | None
) -> list[tuple[float, str, bytes]]:
    """Every chunk of the replay, encoded up front (due time, topic, payload)."""
    from ecgcommon.records import load_record
    from streamer.core import Playback, Source, make_streams, schedule

    sources = [
        Source.from_record(load_record(n, data_dir, annotations=False, sampto=360 * 600))
        for n in records
    ]
    playback = Playback(T0, max_samples=int(round(seconds * sources[0].fs)))
    streams = make_streams(sources, WARD, beds, chunk_s, playback, stride_s=61.0)
    return [(T0 + m.due_s, m.topic, m.payload) for m in schedule(streams)]


class Stages:
    """Inclusive CPU time and calls of wrapped callables (process CPU, not wall time)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        inner = getattr(owner, attr)
        clock = time.process_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return inner(*args, **kwargs)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + clock() - t
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, inner))

    def reset(self) -> None:
        self.cpu.clear()
        self.calls.clear()

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument(engine: Any, stages: Stages) -> None:
    """Wrap the engine's main calls (stages; nested ones are included in their parents)."""
    import detector.engine as eng
    from detector.anomaly import PatientAdapter
    from detector.pipeline import Pipeline
    from detector.rhythms.analyser import RhythmAnalyser

    stages.wrap(eng, "decode_samples", "decode_samples")
    stages.wrap(Pipeline, "feed", "pipeline.feed (qrs, windows)")
    stages.wrap(RhythmAnalyser, "feed_samples", "rhythms.feed_samples (vf, quality)")
    stages.wrap(engine.scorer, "score", "scorer.score (onnx autoencoder)")
    stages.wrap(PatientAdapter, "process", "anomaly.process")
    stages.wrap(eng, "process_many", "anomaly.process_many (batch)")
    if engine.classifier is not None:
        stages.wrap(engine.classifier, "classify", "classifier.classify")
        stages.wrap(engine.classifier, "probabilities", "  classifier onnx+norm")
    stages.wrap(RhythmAnalyser, "feed_beats", "rhythms.feed_beats (vt, svt, af)")
    stages.wrap(eng, "encode_beats", "encode_beats")
    stages.wrap(eng, "encode_event", "encode_event")
    stages.wrap(engine, "_score", "engine._score (batch)")


def replay(
    engine: Any,
    clock: FakeClock,
    msgs: list[tuple[float, str, bytes]],
    sink: Callable[[list[Any]], None],
    measure_from: float,
    on_measure: Callable[[], None],
) -> float:
    """Feed every message, tick at each batching deadline; CPU seconds from `measure_from`."""
    started = False
    cpu0 = time.process_time()
    for k, (now, topic, payload) in enumerate(msgs):
        if not started and now >= measure_from:
            started = True
            on_measure()
            cpu0 = time.process_time()
        clock.now = now
        sink(engine.handle(topic, payload, now))
        sink(engine.tick(now))
        horizon = msgs[k + 1][0] if k + 1 < len(msgs) else now + 1.0
        while (d := engine.next_deadline()) is not None and d < horizon:
            clock.now = d
            sink(engine.tick(d))
    sink(engine.flush(clock.now))
    return time.process_time() - cpu0


def decoded(pubs: list[Any]) -> Iterator[dict[str, Any]]:
    """Publications as JSON-ready dicts (beats one per line; watermarks kept)."""
    for p in pubs:
        t = topics.parse_topic(p.topic)
        if t.kind == "beats":
            msg = protocol.decode_beats_message(p.payload)
            if not msg.beats:
                yield {"k": "mark", "bed": t.bed, "until": msg.analysed_until}
            for b in msg.beats:
                yield {
                    "k": "beat",
                    "bed": b.bed,
                    "sample": b.sample,
                    "t": b.t,
                    "cls": b.cls,
                    "score": b.score,
                    "anomalous": b.anomalous,
                }
        elif t.kind == "events":
            ev = protocol.decode_event(p.payload)
            yield {
                "k": "event",
                "bed": ev.bed,
                "type": ev.type,
                "active": ev.active,
                "t": ev.t,
                "detail": ev.detail,
            }


def digest(pubs: list[Any]) -> str:
    """SHA-256 over every publication in order: topic, payload bytes, QoS and retain."""
    h = hashlib.sha256()
    for p in pubs:
        h.update(p.topic.encode() + b"\0" + p.payload + b"\0" + bytes([p.qos, p.retain]))
    return h.hexdigest()


def compare(a: Path, b: Path, tol: float) -> int:
    """Compare two dumps: exact on classes, event types, flags and beat samples; numbers
    within `tol` (relative or absolute). Prints a summary; 0 when they agree."""

    def load(p: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for line in p.read_text().splitlines():
            d = json.loads(line)
            out.setdefault((d["k"], d["bed"]), []).append(d)
        return out

    def close(x: Any, y: Any) -> bool:
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(close(x[k], y[k]) for k in x)
        if isinstance(x, float) and isinstance(y, float | int):
            return math.isclose(x, y, rel_tol=tol, abs_tol=tol) or (x != x and y != y)
        return bool(x == y)

    da, db = load(a), load(b)
    diffs = 0
    counts: dict[str, int] = {}
    exact = 0
    for key in sorted(set(da) | set(db)):
        ra, rb = da.get(key, []), db.get(key, [])
        counts[key[0]] = counts.get(key[0], 0) + len(ra)
        if len(ra) != len(rb):
            print(f"{key}: {len(ra)} vs {len(rb)} rows")
            diffs += 1
            continue
        for x, y in zip(ra, rb, strict=True):
            if x == y:
                exact += 1
            elif not close(x, y):
                diffs += 1
                if diffs <= 20:
                    print(f"differ: {x}\n    vs: {y}")
    total = sum(counts.values())
    print(f"{total} rows {counts}: {exact} identical, {diffs} differ beyond {tol:g}")
    return 1 if diffs else 0


class Sampler:
    """A statistical profiler: on every SIGPROF (process CPU time), the Python stack is
    counted, inclusive (each function once per sample) and own (the innermost frame, which
    holds the time of the C calls it makes). Unlike cProfile it does not slow small calls
    down more than big ones, so the shares are those of the unprofiled run."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.incl: Counter[str] = Counter()
        self.own: Counter[str] = Counter()
        self.n = 0

    def _tick(self, _sig: int, frame: Any) -> None:
        self.n += 1
        seen: set[str] = set()
        first = True
        while frame is not None:
            code = frame.f_code
            key = f"{'/'.join(code.co_filename.rsplit('/', 2)[-2:])}:{code.co_name}"
            if first:
                self.own[key] += 1
                first = False
            if key not in seen:
                self.incl[key] += 1
                seen.add(key)
            frame = frame.f_back

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._tick)
        signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def table(self, top: int) -> list[dict[str, Any]]:
        n = max(1, self.n)
        return [
            {"function": k, "inclusive": round(c / n, 4), "own": round(self.own[k] / n, 4)}
            for k, c in self.incl.most_common(top)
        ]


@contextmanager
def profiled(path: str | None) -> Iterator[cProfile.Profile | None]:
    if not path:
        yield None
        return
    prof = cProfile.Profile()
    yield prof
    prof.dump_stats(path)


def report(
    a: argparse.Namespace, cpu: float, stages: Stages, sampler: Sampler | None = None
) -> None:
    """Print the figures (and the profile's top functions); write them as JSON if asked."""
    bed_s = a.beds * a.seconds
    per = cpu / bed_s * 1e6
    by_stage = sorted(stages.cpu.items(), key=lambda kv: -kv[1])
    doc: dict[str, Any] = {
        "beds": a.beds,
        "seconds": a.seconds,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_bed_s": round(per, 1),
        "beds_per_core_engine_only": round(1e6 / per),
        "profiled": bool(a.profile),
        "stages_us_per_bed_s": {k: round(v / bed_s * 1e6, 1) for k, v in by_stage},
        "calls": dict(stages.calls),
    }
    if sampler is not None:
        doc["sampled"] = {"samples": sampler.n, "functions": sampler.table(a.top)}
    print(
        f"{a.beds} beds x {a.seconds:g} s: {cpu:.2f} s CPU = {per:.1f} us per bed-second "
        f"(~{1e6 / per:.0f} beds per core, engine only, MQTT excluded)"
    )
    for k, v in doc["stages_us_per_bed_s"].items():
        print(f"  {v:8.1f} us/bed-s  {stages.calls[k]:8d} calls  {k}")
    if a.profile:
        pstats.Stats(a.profile).sort_stats("tottime").print_stats(a.top)
    if sampler is not None:
        print(f"sampled ({sampler.n} samples of process CPU): inclusive, own")
        for row in doc["sampled"]["functions"]:
            print(f"  {row['inclusive']:6.1%} {row['own']:6.1%}  {row['function']}")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--beds", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0, help="measured signal seconds")
    p.add_argument("--warmup-s", type=float, default=20.0, help="before measuring (learning)")
    p.add_argument("--chunk-s", type=float, default=1.0)
    p.add_argument("--records", nargs="*", default=list(RECORDS))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dump", default=None, help="write every publication, decoded (JSON lines)")
    p.add_argument("--digest", action="store_true", help="SHA-256 of every publication's bytes")
    p.add_argument("--profile", default=None, help="cProfile the measured part into this file")
    p.add_argument("--sample", action="store_true", help="statistical profile (SIGPROF)")
    p.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions of the measured part only, under valgrind --tool=callgrind "
        "--instr-atstart=no --zero-before=getppid --dump-before=getpgrp (load-proof)",
    )
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None)
    p.add_argument("--tol", type=float, default=1e-9)
    a = p.parse_args(argv)
    if a.compare:
        return compare(Path(a.compare[0]), Path(a.compare[1]), a.tol)

    msgs = messages(a.beds, a.warmup_s + a.seconds, a.chunk_s, a.records, a.data_dir)
    clock = FakeClock()
    engine = build_engine(clock)
    stages = Stages()
    instrument(engine, stages)
    kept: list[Any] = []  # decoded after the replay, so that decoding is not timed

    def sink(pubs: list[Any]) -> None:
        if a.dump or a.digest:
            kept.extend(pubs)

    sampler = Sampler() if a.sample else None
    with profiled(a.profile) as prof:

        def start() -> None:
            if a.callgrind:  # instrument from here (the warm-up ran uninstrumented: fast)
                subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True)
                os.getppid()  # valgrind --zero-before=getppid: count from here
            stages.reset()
            if prof is not None:
                prof.enable()
            if sampler is not None:
                sampler.start()

        cpu = replay(engine, clock, msgs, sink, T0 + a.warmup_s, start)
        if prof is not None:
            prof.disable()
        if sampler is not None:
            sampler.stop()
        if a.callgrind:
            os.getpgrp()  # valgrind --dump-before=getpgrp: the measured part's counts
    stages.restore()
    if a.dump:
        with open(a.dump, "w") as out:
            for row in decoded(kept):
                out.write(json.dumps(row, sort_keys=True) + "\n")
    if a.digest:
        print(f"{len(kept)} publications, sha256 {digest(kept)}")
    report(a, cpu, stages, sampler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
