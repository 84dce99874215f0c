"""`vfiospec prove` and `vfiospec explore`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import explorer, formula, prover
from .schema import DEFAULT, VARS


def prove_main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="vfiospec prove",
        description="Prove every invariant inductive over every abstract action with z3: Init => Inv and "
                    "Inv /\\ Action => Inv' (Inv = all invariants).  Exit 0 only when every obligation is "
                    "proved; a counterexample or a solver unknown/timeout is a failure.")
    ap.add_argument("--invariant", action="append", metavar="ID", help="only this invariant (repeatable)")
    ap.add_argument("--action", action="append", metavar="NAME", help="only this action (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per obligation (default 60 s)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-obligation lines")
    a = ap.parse_args(argv)

    def on_result(o):
        if not a.quiet and o.result != prover.PROVED:
            print(o.words(), flush=True)

    rep = prover.prove(DEFAULT, a.invariant, a.action, int(a.timeout * 1000), on_result=on_result)
    if not rep.obligations:
        print("vfiospec prove: no obligation matches --invariant/--action", file=sys.stderr)
        return 2
    print(prover.table(rep))
    n_inv = len({o.invariant for o in rep.obligations})
    n_act = len({o.action for o in rep.obligations})
    proved = sum(o.result == prover.PROVED for o in rep.obligations)
    cex = sum(o.result == prover.CEX for o in rep.obligations)
    unk = sum(o.result == prover.UNKNOWN for o in rep.obligations)
    print(f"\n{n_inv} invariants x {n_act} actions (Init included) = {len(rep.obligations)} obligations: "
          f"{proved} proved, {cex} counterexample(s), {unk} unknown; {rep.seconds:.1f} s")
    print(f"bounds: {DEFAULT}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"seconds": rep.seconds, "obligations": [
                {"invariant": o.invariant, "action": o.action, "result": o.result, "seconds": round(o.seconds, 4),
                 "counterexample": o.counterexample, "reason": o.reason} for o in rep.obligations]}, f, indent=1)
    if not rep.ok:
        for o in rep.failures():
            print(f"FAILED: {o.invariant} x {o.action}: {o.result}", file=sys.stderr)
        return 1
    return 0


EXPLORE_EPILOG = """\
PROPERTY is an invariant ID (INV-AREAS-DISJOINT), its negation (not INV-...),
a named candidate, or an expression over the abstract state (model/README.md).
Named candidates:
""" + "\n".join(f"  {k:<30} {v[1]}" for k, v in formula.CANDIDATES.items()) + """

State variables: """ + ", ".join(VARS) + """
Also: pre.<var>, last.action, last.errno, last.ok, last.<param>, the ranges DEV ICTX GRP CONT
IOAS HWPT AREA OBJ PAGES MAP WIN TCE REG MTYPE MDEV, and implies(), within(), disjoint(),
has_domain(q), bound(d), max_pin, count(), sum(), all(), any(), inv("ID").
"""


def explore_main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="vfiospec explore", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Bounded model checking of PROPERTY from the initial state (z3).  On a violation the "
                    "shortest action sequence is printed and, with --out, written as a trace that replays "
                    "on the reference; otherwise the bound covered is printed.",
        epilog=EXPLORE_EPILOG)
    ap.add_argument("property", metavar="PROPERTY")
    ap.add_argument("--depth", type=int, default=6, help="actions from the initial state (default 6)")
    ap.add_argument("--platform", choices=["vtd", "spapr", "any"], default="any",
                    help="restrict to one platform kind (default: the solver picks)")
    ap.add_argument("--out", metavar="TRACE", help="write the violation as a trace file")
    ap.add_argument("--name", help="the trace's name (default: explore-<property>)")
    ap.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per solver call (default 300 s)")
    a = ap.parse_args(argv)
    try:
        formula.compile_property(a.property)
    except formula.PropertyError as e:
        print(f"vfiospec explore: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res = explorer.explore(a.property, a.depth, DEFAULT, None if a.platform == "any" else a.platform,
                           int(a.timeout * 1000))
    print(res.words(DEFAULT))
    print(f"({time.perf_counter() - t0:.1f} s)")
    if res.unknown:
        return 3
    if not res.found:
        return 0
    if a.out:
        from .tracegen import to_trace
        name = a.name or ("explore-" + "".join(ch if ch.isalnum() else "-" for ch in a.property.lower())[:60]
                          ).strip("-")
        desc = formula.CANDIDATES.get(a.property, (None, a.property))[1]
        doc = to_trace(name, f"A violation of the property: {desc} (found by vfiospec explore, depth "
                             f"{res.depth}).", res.steps, res.states, DEFAULT)
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"trace written to {a.out} ({len(doc['steps'])} steps); replay it with "
              f"`vfiospec replay {a.out} --target reference`")
    return 1
