"""Running a trace against a target and judging each step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import steps as _steps
from .judge import ERROR, FAIL, PASS, UNSUPPORTED, Observed, describe, judge
from vfiospec.reference.errors import Unmodelled

from .targets.base import Target, TargetError, Unsupported
from .trace import Trace


@dataclass
class StepResult:
    index: int
    step: dict
    expected: object
    observed: Observed
    verdict: str
    reason: str = ""

    def call_text(self) -> str:
        s = self.step
        c = s["call"]
        if c == "ioctl":
            arg = s.get("arg")
            return f"ioctl({s['fd']}, {s['cmd']}" + (f", {arg}" if arg is not None else "") + ")"
        if c == "open":
            return f"open({s['path']!r}) as {s['as']}"
        if c == "close":
            return f"close({s['fd']})"
        if c == "mmap":
            return f"mmap({s['length']}) as {s['as']}"
        if c == "munmap":
            return f"munmap({s['addr']})"
        if c == "write":
            return f"write({s['path']!r}, {s['data']!r})"
        if c == "read":
            return f"read({s['path']!r})"
        if c == "kapi":
            return f"{s['fn']}({', '.join(f'{k}={v}' for k, v in s.items() if k not in ('call', 'fn', 'expect', 'save'))})"
        return c

    def to_json(self) -> dict:
        return {"index": self.index, "call": self.call_text(), "verdict": self.verdict, "reason": self.reason,
                "expected": describe(self.expected), "observed": self.observed.to_json(),
                "requirements": sorted(set(self.observed.reqs))}


@dataclass
class TraceResult:
    trace: Trace
    target: str
    steps: list[StepResult] = field(default_factory=list)
    verdict: str = PASS
    error: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.verdict in (FAIL, ERROR)]

    def to_json(self) -> dict:
        return {"name": self.trace.name, "path": self.trace.path, "target": self.target, "verdict": self.verdict,
                "requirements": self.trace.requirements, "error": self.error, "seconds": round(self.seconds, 6),
                "steps": [s.to_json() for s in self.steps]}


def overall(verdicts) -> str:
    vs = set(verdicts)
    for v in (ERROR, FAIL, UNSUPPORTED):
        if v in vs:
            return v
    return PASS


def run_trace(trace: Trace, target: Target, on_step=None) -> TraceResult:
    """Run every step of `trace` on a fresh session of `target`."""
    t0 = time.perf_counter()
    res = TraceResult(trace, target.name)
    try:
        session = target.begin(trace)
    except Unsupported as e:
        res.verdict, res.error = UNSUPPORTED, str(e)
        res.seconds = time.perf_counter() - t0
        return res
    except TargetError as e:
        res.verdict, res.error = ERROR, str(e)
        res.seconds = time.perf_counter() - t0
        return res
    saved: dict = {}
    stop = False
    ref = None
    if target.name != "reference" and any("expect" not in st for st in trace.steps):
        from .targets.reference import ReferenceSession
        ref = ReferenceSession(trace.parsed_platform)    # differential: steps without expect
    try:
        for i, (step, norm, exp) in enumerate(trace.prepared()):
            if stop:
                break
            try:
                if norm is None:
                    norm = _steps.normalize(step, saved)
                obs = session.perform(norm)
            except Unmodelled as e:
                obs = Observed(ret=None, unsupported=str(e))
            except TargetError as e:
                obs = Observed(ret=None, error=str(e))
            except _steps.UndefinedName as e:
                obs = Observed(ret=None, error=f"undefined saved value {e.args[0]}")
            except Exception as e:   # a broken target must not stop the run
                obs = Observed(ret=None, error=f"{type(e).__name__}: {e}")
            if ref is not None:
                try:
                    robs = ref.perform(norm)
                except Exception as e:
                    robs = Observed(ret=None, error=f"reference: {type(e).__name__}: {e}")
                if exp is None and obs.unsupported is None and obs.error is None and robs.error is None:
                    exp = {"errno": robs.errno} if robs.errno else "ok"
            verdict, reason = judge(exp, obs, saved)
            sr = StepResult(i, step, exp, obs, verdict, reason)
            res.steps.append(sr)
            if on_step:
                on_step(sr)
            save = step.get("save")
            if save and obs.errno is None and obs.error is None and obs.unsupported is None:
                for fld, name in save.items():
                    if fld == "ret":
                        saved[name] = obs.ret
                    else:
                        cur = obs.out
                        for p in fld.split("."):
                            cur = cur.get(p) if isinstance(cur, dict) else None
                        saved[name] = cur
            if verdict in (FAIL, ERROR) and trace.stop_on_fail:
                stop = True
    finally:
        try:
            session.close()
        except Exception:
            pass
        if ref is not None:
            ref.close()
    res.verdict = overall(s.verdict for s in res.steps) if res.steps else PASS
    res.seconds = time.perf_counter() - t0
    return res
