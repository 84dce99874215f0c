"""Inductive proofs: `Init => Inv` and `Inv /\\ Action => Inv'` for every invariant x action.

Inv is the conjunction of every invariant (the auxiliary ones included), so the
obligation for invariant I and action A is: no state satisfying Inv and no
parameters enabling A lead to a post-state violating I.  z3 answers unsat
(proved), sat (a counterexample to induction: two states and the action), or
unknown (a failure, never a pass).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import z3

from . import invariants as _inv
from . import transitions as _tr
from .schema import DEFAULT, ERRNOS, Config, State
from .words import describe, describe_action, evaluate

PROVED, CEX, UNKNOWN = "proved", "counterexample", "unknown"


@dataclass
class Obligation:
    invariant: str
    action: str          # an action name, or "Init"
    result: str
    seconds: float
    counterexample: dict | None = None    # {"pre": [...], "post": [...], "action": str}
    reason: str = ""

    def words(self) -> str:
        if self.result == PROVED:
            return f"{self.invariant} x {self.action}: proved"
        if self.result == UNKNOWN:
            return f"{self.invariant} x {self.action}: unknown ({self.reason})"
        cx = self.counterexample
        lines = [f"{self.invariant} x {self.action}: COUNTEREXAMPLE — the action breaks the invariant"]
        if self.action == "Init":
            lines.append("  the initial state:")
            lines += [f"    {x}" for x in cx["post"]]
            return "\n".join(lines)
        lines.append("  before (satisfies every invariant):")
        lines += [f"    {x}" for x in cx["pre"]]
        lines.append(f"  action: {cx['action']}")
        lines.append("  after (violates " + self.invariant + "):")
        lines += [f"    {x}" for x in cx["post"]]
        return "\n".join(lines)


@dataclass
class ProofReport:
    obligations: list[Obligation] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.result == PROVED for o in self.obligations)

    def failures(self) -> list[Obligation]:
        return [o for o in self.obligations if o.result != PROVED]

    def per_invariant_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for o in self.obligations:
            out[o.invariant] = out.get(o.invariant, 0.0) + o.seconds
        return out


def _solver(timeout_ms: int) -> z3.Solver:
    s = z3.SolverFor("QF_LIA")
    s.set("timeout", timeout_ms)
    return s


def prove(cfg: Config = DEFAULT, invariants=None, actions=None, timeout_ms: int = 60000,
          include_init: bool = True, on_result=None) -> ProofReport:
    """Check every obligation; `invariants`/`actions` restrict the set (default: all)."""
    invs = [i for i in _inv.INVARIANTS if invariants is None or i.id in invariants]
    acts = [a for a in _tr.ACTIONS if actions is None or a.name in actions]
    rep = ProofReport()
    t0 = time.perf_counter()

    def record(o):
        rep.obligations.append(o)
        if on_result:
            on_result(o)

    if include_init:
        s = State.fresh(cfg, "s.")
        sol = _solver(timeout_ms)
        sol.add(_tr.initial(s))
        for inv in invs:
            t = time.perf_counter()
            sol.push()
            sol.add(z3.Not(inv(s)))
            r = sol.check()
            dt = time.perf_counter() - t
            if r == z3.unsat:
                record(Obligation(inv.id, "Init", PROVED, dt))
            elif r == z3.sat:
                v = evaluate(sol.model(), s)
                record(Obligation(inv.id, "Init", CEX, dt, {"pre": [], "post": describe(v, cfg), "action": "Init"}))
            else:
                record(Obligation(inv.id, "Init", UNKNOWN, dt, reason=sol.reason_unknown()))
            sol.pop()

    for act in acts:
        s = State.fresh(cfg, "s.")
        p = act.param_terms("p.")
        out = _tr.transition(act, s, p)
        sol = _solver(timeout_ms)
        sol.add(_inv.conjunction(s))
        sol.add(out.enabled)
        for inv in invs:
            t = time.perf_counter()
            sol.push()
            sol.add(z3.Not(inv(out.post)))
            r = sol.check()
            dt = time.perf_counter() - t
            if r == z3.unsat:
                record(Obligation(inv.id, act.name, PROVED, dt))
            elif r == z3.sat:
                m = sol.model()
                pre, post = evaluate(m, s), evaluate(m, out.post)
                params = {k: m.eval(v, model_completion=True).as_long() for k, v in p.items()}
                e = m.eval(out.errno, model_completion=True).as_long()
                record(Obligation(inv.id, act.name, CEX, dt, {
                    "pre": describe(pre, cfg), "post": describe(post, cfg),
                    "action": describe_action(act.name, params, e), "errno": ERRNOS[e]}))
            else:
                record(Obligation(inv.id, act.name, UNKNOWN, dt, reason=sol.reason_unknown()))
            sol.pop()
    rep.seconds = time.perf_counter() - t0
    return rep


def table(rep: ProofReport) -> str:
    """invariant x action table: P proved, X counterexample, ? unknown."""
    acts = []
    for o in rep.obligations:
        if o.action not in acts:
            acts.append(o.action)
    invs = []
    for o in rep.obligations:
        if o.invariant not in invs:
            invs.append(o.invariant)
    cell = {(o.invariant, o.action): o.result for o in rep.obligations}
    sym = {PROVED: "P", CEX: "X", UNKNOWN: "?"}
    lines = ["columns: " + "  ".join(f"{k + 1}={a}" for k, a in enumerate(acts)), ""]
    w = max(len(i) for i in invs) if invs else 10
    lines.append(" " * (w + 1) + " ".join(f"{k + 1:>2}" for k in range(len(acts))))
    for i in invs:
        lines.append(f"{i:<{w}} " + " ".join(f"{sym.get(cell.get((i, a)), '-'):>2}" for a in acts))
    return "\n".join(lines)
