"""Bounded model checking from the initial state (`vfiospec explore`).

The transition relation is unrolled step by step (incrementally: depth 0, 1, ...),
so the first violation found is a shortest one.  Each step chooses one action of
transitions.ACTIONS and its parameters; `platform` restricts the run to one
platform kind (vtd or spapr) or leaves it to the solver.  A violation is
returned as the action sequence with every intermediate state, and written as a
trace (trace format v1) that replays on the reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import z3

from . import transitions as _tr
from .formula import compile_property
from .schema import DEFAULT, ERRNOS, Config, State
from .words import describe, describe_action, evaluate

PARAM_NAMES = sorted({p.name for a in _tr.ACTIONS for p in a.params})


@dataclass
class Step:
    action: str
    params: dict
    errno: str


@dataclass
class ExploreResult:
    property: str
    found: bool
    depth: int                      # depth of the violation, or the bound covered
    steps: list[Step] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)     # valuations s0 .. sN
    seconds: float = 0.0
    unknown: str = ""

    def words(self, cfg: Config = DEFAULT) -> str:
        if self.unknown:
            return f"{self.property}: UNKNOWN at depth {self.depth} ({self.unknown})"
        if not self.found:
            return (f"{self.property}: no violation within {self.depth} actions from the initial state "
                    f"(bound: depth {self.depth}, sizes {cfg})")
        lines = [f"{self.property}: VIOLATED after {self.depth} action(s):"]
        for k, st in enumerate(self.steps):
            lines.append(f"  {k + 1}. {describe_action(st.action, st.params)} -> {st.errno}")
        lines.append("  violating state:")
        lines += [f"    {x}" for x in describe(self.states[-1], cfg)]
        return "\n".join(lines)


def _eq_states(a: State, b: State):
    fa, fb = a.flat(), b.flat()
    return z3.And([fa[k] == fb[k] for k in fa])


def explore(prop: str, depth: int = 6, cfg: Config = DEFAULT, platform: str | None = None,
            timeout_ms: int = 120000, assume=None) -> ExploreResult:
    """Search for a state (within `depth` actions of Init) where `prop` is false."""
    fn = compile_property(prop)
    t0 = time.perf_counter()
    sol = z3.Solver()
    sol.set("timeout", timeout_ms)
    states = [State.fresh(cfg, "s0.")]
    sol.add(_tr.initial(states[0]))
    if platform is not None:
        sol.add(states[0].spapr if platform == "spapr" else z3.Not(states[0].spapr))
    if assume is not None:
        sol.add(assume(states[0]))
    acts, errs, params = [], [], []
    last = None
    for k in range(depth + 1):
        pre = states[k - 1] if k else None
        sol.push()
        sol.add(z3.Not(fn(pre, states[k], last)))
        r = sol.check()
        if r == z3.sat:
            m = sol.model()
            res = ExploreResult(prop, True, k, seconds=0.0)
            res.states = [evaluate(m, s) for s in states]
            for j in range(k):
                a = _tr.ACTIONS[m.eval(acts[j], model_completion=True).as_long()]
                pv = {p.name: m.eval(params[j][p.name], model_completion=True).as_long() for p in a.params}
                e = ERRNOS[m.eval(errs[j], model_completion=True).as_long()]
                res.steps.append(Step(a.name, pv, e))
            sol.pop()
            res.seconds = time.perf_counter() - t0
            return res
        if r == z3.unknown:
            sol.pop()
            return ExploreResult(prop, False, k, seconds=time.perf_counter() - t0, unknown=sol.reason_unknown())
        sol.pop()
        if k == depth:
            break
        # one more step
        s = states[k]
        nxt = State.fresh(cfg, f"s{k + 1}.")
        act = z3.Int(f"act{k}")
        err = z3.Int(f"err{k}")
        pk = {n: z3.Int(f"p{k}.{n}") for n in PARAM_NAMES}
        sol.add(act >= 0, act < len(_tr.ACTIONS))
        for i, a in enumerate(_tr.ACTIONS):
            out = _tr.transition(a, s, {p.name: pk[p.name] for p in a.params})
            sol.add(z3.Implies(act == i, z3.And(out.enabled, err == out.errno, _eq_states(nxt, out.post))))
        states.append(nxt)
        acts.append(act)
        errs.append(err)
        params.append(pk)
        last = {"action": act, "errno": err, "params": pk}
    return ExploreResult(prop, False, depth, seconds=time.perf_counter() - t0)
