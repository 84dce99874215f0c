"""`vfiospec run`: the main job.  The shipped traces, generated traces where
available, and stateful exploration in each mode the target supports, judged
with waivers, reported incrementally.

Exit status: 0 conformant; 1 non-conformant (a FAIL or ERROR, or under --strict a
stale waiver); 2 usage or bad input (a trace, waiver file or option); 3 harness
error (the target cannot be started, or the run was interrupted)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import resources
from pathlib import Path

from .judge import ERROR, FAIL, XFAIL
from .replay import load_all
from .report import Report
from .runner import overall, run_trace
from .targets import TargetError, get_target
from .trace import TraceError
from .waivers import WaiverError, apply, load_waivers, result_word


def shipped_traces_dir() -> Path:
    return Path(str(resources.files("vfiospec.conformance").joinpath("traces")))


class Progress:
    def __init__(self, stream=sys.stderr):
        self.s = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.s.write("\r\033[K" + text[:150])
            self.s.flush()
        elif force or now - self.last > 5:
            self.s.write(text + "\n")
            self.s.flush()
            self.last = now

    def done(self) -> None:
        if self.tty:
            self.s.write("\n")


def judge_with_waivers(tr, waivers, ctx_base) -> dict:
    """A trace result as JSON, FAIL steps (and ERROR steps where the target died
    answering: observed "crash") matched against the waivers."""
    d = tr.to_json()
    for s, sj in zip(tr.steps, d["steps"]):
        if s.verdict != FAIL and not (s.verdict == ERROR and s.observed.error is not None):
            continue
        exp = s.expected
        exp_word = "ok" if exp in ("ok", None) or (isinstance(exp, dict) and "errno" not in exp) else (
            exp["errno"] if isinstance(exp["errno"], str) else exp["errno"][0])
        step = s.step
        ctx = {**ctx_base, "trace": tr.trace.name,
               "call": step.get("cmd") if step["call"] == "ioctl" else step["call"],
               "requirements": set(tr.trace.requirements) | set(s.observed.reqs), "expected": exp_word}
        verdict, w = apply(waivers, ctx, result_word(s.observed.errno, s.observed.error))
        sj["verdict"] = verdict if (verdict, s.verdict) != (FAIL, ERROR) else ERROR
        if w is not None:
            sj["waiver"] = w.id
            if verdict == FAIL:
                sj["reason"] += f" (differs from waiver {w.id}, which expects {w.observed})"
    d["verdict"] = overall(sj["verdict"] for sj in d["steps"]) if d["steps"] else d["verdict"]
    # a waived divergence, and at most steps left undone after it (the target died)
    if d["verdict"] in ("PASS", "UNSUPPORTED") and any(sj["verdict"] == XFAIL for sj in d["steps"]):
        d["verdict"] = XFAIL
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="vfiospec run", description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="reference", help="reference | exec:COMMAND | linux[:CONFIG] | mutant:NAME")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds for stateful exploration (all modes)")
    ap.add_argument("--report-dir", default="vfiospec-report", help="where the reports go")
    ap.add_argument("--traces", nargs="*", default=None, metavar="PATH",
                    help="trace files/directories (default: the shipped traces)")
    ap.add_argument("--waivers", metavar="FILE", help="a waiver file (TOML)")
    ap.add_argument("--strict", action="store_true", help="a stale waiver fails the run")
    ap.add_argument("--seed", type=int, default=0, help="the stateful exploration's seed")
    ap.add_argument("--modes", default="", help="comma-separated stateful modes (default: all the target supports)")
    ap.add_argument("--no-stateful", action="store_true", help="traces only")
    a = ap.parse_args(argv)
    try:
        traces = load_all(a.traces if a.traces is not None else [shipped_traces_dir()])
        waivers = load_waivers(a.waivers) if a.waivers else []
    except (TraceError, WaiverError) as e:
        print(f"vfiospec run: {e}", file=sys.stderr)
        return 2
    try:
        target = get_target(a.target)
        desc = target.describe()
    except TargetError as e:
        print(f"vfiospec run: {e}", file=sys.stderr)
        return 3
    kernel = (target.platform or {}).get("kernel", "per trace (simulated)")
    report = Report(a.report_dir, {"target": a.target, "target_description": desc, "kernel": kernel,
                                   "seed": a.seed, "budget": a.budget, "traces": len(traces),
                                   "waivers": a.waivers, "command": "vfiospec run " + " ".join(argv or sys.argv[1:])})
    report.waivers = waivers
    progress = Progress()
    failures = 0
    rc = None
    try:
        for i, t in enumerate(traces):
            tr = run_trace(t, target)
            ctx = {"target": a.target, "kernel": t.parsed_platform.kernel, "mode": "traces"}
            d = judge_with_waivers(tr, waivers, ctx)
            report.add_trace(d)
            failures += d["verdict"] in ("FAIL", "ERROR")
            progress.show(f"[traces] {i + 1}/{len(traces)} {t.name}  failures {failures}")
        progress.show(f"[traces] {len(traces)} run, failures {failures}", force=True)
        if not a.no_stateful:
            try:
                from . import stateful
            except ImportError as e:
                report.statement["stateful"] = f"SKIPPED: stateful exploration unavailable ({e})"
                print(f"vfiospec run: stateful exploration SKIPPED: {e}", file=sys.stderr)
            else:
                modes = [m for m in (a.modes.split(",") if a.modes else stateful.modes_for(target)) if m]
                per_mode = a.budget / max(len(modes), 1)
                for m in modes:
                    res = stateful.run_mode(m, a.target, per_mode, a.seed, waivers,
                                            report_dir=a.report_dir, target_obj=target,
                                            progress=lambda txt, m=m: progress.show(f"[{m}] {txt}"))
                    report.add_stateful(res)
                    failures += res["verdict"] in ("FAIL", "ERROR")
                    progress.show(f"[{m}] {res['verdict']}: {res.get('steps', 0)} steps, "
                                  f"{len(res.get('failures', []))} failures", force=True)
    except KeyboardInterrupt:
        report.interrupted = True
        print("\nvfiospec run: interrupted; the reports hold what was found so far", file=sys.stderr)
        rc = 3
    finally:
        progress.done()
        target.shutdown()
        report.write()
    d = report.to_json()
    s = d["summary"]
    stale = [w["id"] for w in d["waivers"] if w["stale"]]
    print(f"vfiospec run: {'conformant' if s['conformant'] else 'NOT conformant'} — {s['pass']} passed, "
          f"{s['fail']} failed, {s['error']} errors, {s['unsupported']} unsupported, {s['xfail']} waived"
          + (f"; stale waivers: {', '.join(stale)}" if stale else ""))
    print(f"reports: {os.path.abspath(a.report_dir)}/{{report.json,junit.xml,report.html,summary.md}}")
    if rc is not None:
        return rc
    if not s["conformant"] or (a.strict and stale):
        return 1
    return 0
