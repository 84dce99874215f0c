"""`vfiospec replay PATH... --target T`: run trace files and judge them.

Exit status: 0 every trace passed; 1 some trace failed, errored or was
unsupported; 2 bad input (a trace that does not parse or validate)."""

from __future__ import annotations

import argparse
import json
import sys

from .judge import describe
from .junit import junit_xml, write_atomic
from .runner import run_trace
from .targets import TargetError, get_target
from .trace import TraceError, find_traces, load_trace


def load_all(paths):
    files = find_traces(paths)
    if not files:
        raise TraceError(" ".join(map(str, paths)), None, "", "no trace files found (expected *.json files)")
    traces = [load_trace(p) for p in files]
    seen = {}
    for t in traces:
        if t.name in seen:
            raise TraceError(t.path, None, "name", f"trace name {t.name!r} is also used by {seen[t.name]}")
        seen[t.name] = t.path
    return traces


def summary_lines(results) -> list[str]:
    lines = []
    for r in results:
        if r.verdict == "PASS":
            continue
        lines.append(f"{r.verdict} {r.trace.name} ({r.trace.path})" + (f": {r.error}" if r.error else ""))
        for s in r.steps:
            if s.verdict in ("FAIL", "ERROR", "UNSUPPORTED"):
                lines.append(f"  step {s.index} {s.verdict}: {s.call_text()}")
                lines.append(f"    expected: {describe(s.expected)}")
                lines.append(f"    observed: {s.observed.brief()}")
                if s.reason and s.verdict == "FAIL":
                    lines.append(f"    {s.reason}")
    counts = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    steps = sum(len(r.steps) for r in results)
    lines.append(f"{len(results)} traces, {steps} steps: " +
                 ", ".join(f"{counts.get(v, 0)} {v.lower()}" for v in ("PASS", "FAIL", "ERROR", "UNSUPPORTED")))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="vfiospec replay", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", metavar="PATH", help="a trace file or a directory of them")
    ap.add_argument("--target", default="reference", help="reference | exec:COMMAND | linux[:CONFIG] | mutant:NAME")
    ap.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per trace)")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    a = ap.parse_args(argv)
    try:
        traces = load_all(a.paths)
    except TraceError as e:
        print(f"vfiospec replay: {e}", file=sys.stderr)
        return 2
    try:
        target = get_target(a.target)
    except TargetError as e:
        print(f"vfiospec replay: {e}", file=sys.stderr)
        return 2
    results = []
    try:
        for t in traces:
            r = run_trace(t, target)
            results.append(r)
            if not a.quiet:
                print(f"{r.verdict:<11} {t.name}")
    except KeyboardInterrupt:
        print("interrupted: writing the results so far", file=sys.stderr)
    finally:
        target.shutdown()
        if a.junit:
            write_atomic(a.junit, junit_xml(results))
        if a.json:
            write_atomic(a.json, json.dumps({"target": a.target, "traces": [r.to_json() for r in results]},
                                            indent=1, default=str))
    print("\n".join(summary_lines(results)))
    ok = len(results) == len(traces) and all(r.verdict == "PASS" for r in results)
    return 0 if ok else 1
