"""How well the live chain's VT candidate runs repeat their complexes (design of
`detector.rhythms.shapes`): every run that reaches the shape check, with its measure and
whether ventricular rhythm lies within +-2 s (the `vt_ppv` reference).

    python -m bench.vt_shapes 203 205 207 210 223 100:em:6 118:em:6 118:em:0 [--data-dir D]

A record may carry a nstdb noise and SNR (`name:noise:snr`, the noise stress of
`bench.arrhythmia`). The chain is the evaluation's (`bench.arrhythmia.chain.run_ward`), with
the analyser's measure recorded as it is asked (runs are judged again at every further beat).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from bench.arrhythmia.chain import T0, run_ward
from bench.arrhythmia.record import Task, _prepare
from bench.arrhythmia.score import _near
from detector.rhythms.analyser import RhythmAnalyser

MITDB = "../shared/data/mitdb"


def candidates(spec: str, data_dir: str, noise_dir: str | None) -> list[dict[str, Any]]:
    """The candidate runs of one record (`name[:noise:snr]`) with their measures."""
    name, *rest = spec.split(":")
    noise, snr = (rest[0], float(rest[1])) if len(rest) == 2 else (None, None)
    p = _prepare(Task(name=name, data_dir=data_dir, noise=noise, snr_db=snr, noise_dir=noise_dir))
    seen: list[tuple[float, float]] = []
    measure = RhythmAnalyser.run_alike

    def logged(self: RhythmAnalyser, run: list[Any]) -> float:
        r = measure(self, run)
        seen.append((run[0].t - T0, r))
        return r

    RhythmAnalyser.run_alike = logged  # type: ignore[method-assign]  # a design probe
    try:
        run_ward([p.record])
    finally:
        RhythmAnalyser.run_alike = measure  # type: ignore[method-assign]
    vent = p.ref.of("vt", "vt_short", "vf", "vrun")
    return [{"t": round(t, 2), "r": r, "true": _near(t, vent)} for t, r in seen]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+")
    ap.add_argument("--data-dir", default=MITDB)
    ap.add_argument("--noise-dir", default=None)
    a = ap.parse_args(argv)
    for spec in a.records:
        rows = candidates(spec, a.data_dir, a.noise_dir)
        for c in rows:
            print(f"{spec:12s} {c['t']:9.2f} {c['r']:5.2f} {'true' if c['true'] else 'false'}")
        for truth in (True, False):
            rs = [c["r"] for c in rows if c["true"] is truth and math.isfinite(c["r"])]
            if rs:
                where = "in" if truth else "outside"
                print(
                    f"{spec}: {len(rs)} runs {where} ventricular rhythm: "
                    f"{min(rs):.2f}..{max(rs):.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
