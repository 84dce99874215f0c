#!/usr/bin/env python3
"""Benchmark of the z3 model (a script, not a test): the whole `vfiospec prove` run,
its time per invariant, and each exploration of the documented candidate
properties at its default bound (depth 6).

    python benchmarks/model_bench.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import z3

from vfiospec.model import explorer, formula, prover
from vfiospec.model.schema import DEFAULT

PLATFORM_OF = {"no-device-bound": "vtd", "subrange-unregister-succeeds": "spapr", "copy-pins-twice": "vtd",
               "type1-unmap-bisects": "vtd", "mdev-never-full": "vtd"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--depth", type=int, default=6)
    a = ap.parse_args(argv)
    print(f"z3 {z3.get_version_string()}, python {platform.python_version()}, {os.cpu_count()} cpus")
    t0 = time.perf_counter()
    rep = prover.prove(DEFAULT)
    total = time.perf_counter() - t0
    n = len(rep.obligations)
    print(f"prove: {n} obligations, {sum(o.result == prover.PROVED for o in rep.obligations)} proved, "
          f"{total:.1f} s")
    per = rep.per_invariant_seconds()
    for inv, s in sorted(per.items(), key=lambda x: -x[1]):
        print(f"  {inv:<36} {s:7.2f} s")
    out = {"prove_seconds": round(total, 3), "obligations": n, "proved": rep.ok,
           "per_invariant": {k: round(v, 3) for k, v in per.items()}, "explore": {}}
    for prop in formula.CANDIDATES:
        t = time.perf_counter()
        r = explorer.explore(prop, a.depth, DEFAULT, PLATFORM_OF.get(prop))
        dt = time.perf_counter() - t
        what = f"violated at depth {r.depth}" if r.found else (f"unknown ({r.unknown})" if r.unknown else
                                                              f"holds up to depth {r.depth}")
        print(f"explore {prop:<32} {dt:7.1f} s  {what}")
        out["explore"][prop] = {"seconds": round(dt, 3), "found": r.found, "depth": r.depth}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
