"""The runtime invariant check's fast path (the invariants' z3 formulas compiled to
Python, vfiospec.model.runtime.check_values) agrees with z3's own evaluation of
the same formulas (z3.simplify on a concrete state), on every distinct state the
reference reaches on the shipped traces and on perturbed copies of them (which
violate invariants, so both sides are exercised on true and false)."""

from __future__ import annotations

import copy
import random

import pytest

z3 = pytest.importorskip("z3")

from vfiospec.conformance import steps as S  # noqa: E402
from vfiospec.conformance.replay import load_all  # noqa: E402
from vfiospec.conformance.run import shipped_traces_dir  # noqa: E402
from vfiospec.conformance.targets.reference import ReferenceSession  # noqa: E402
from vfiospec.model import invariants as I  # noqa: E402
from vfiospec.model import runtime as R  # noqa: E402
from vfiospec.model.schema import VARS  # noqa: E402


def _exact(cfg, values) -> set[str]:
    """The invariants z3 itself evaluates to false on the concrete state."""
    s = R.concrete_state(cfg, values)
    return {inv.id for inv in I.INVARIANTS if not R.evaluate(inv, s)}


def _fast(cfg, values) -> set[str]:
    return {v.invariant for v in R.check_values(cfg, values)}


def _reached_states(limit_traces: int = 60) -> list:
    """Distinct snapshots of the reference after each step of (some) shipped traces."""
    seen = {}
    for t in load_all([shipped_traces_dir()])[:limit_traces]:
        s = ReferenceSession(t.parsed_platform)
        saved = {}
        try:
            for step, norm, _ in t.prepared():
                try:
                    o = s.perform(norm if norm is not None else S.normalize(step, saved))
                except Exception:
                    continue
                if o.errno is None:
                    for fld, name in step.get("save", {}).items():
                        saved[name] = o.ret if fld == "ret" else (o.out or {}).get(fld)
                st = s.state()
                seen.setdefault(st, None)
        finally:
            s.close()
    return list(seen)


def _leaves(v, path=()):
    if isinstance(v, list):
        for i, x in enumerate(v):
            yield from _leaves(x, path + (i,))
    else:
        yield path


def _perturb(values: dict, rng: random.Random) -> dict | None:
    v = copy.deepcopy(values)
    names = [n for n in VARS if list(_leaves(v[n]))]
    name = rng.choice(names)
    paths = list(_leaves(v[name]))
    if not paths or paths == [()] and isinstance(v[name], list):
        return None
    path = rng.choice(paths)
    if path == ():
        old = v[name]
        v[name] = (not old) if isinstance(old, bool) else old + rng.choice([-3, -1, 1, 2, 7])
        return v
    cur = v[name]
    for i in path[:-1]:
        cur = cur[i]
    old = cur[path[-1]]
    cur[path[-1]] = (not old) if isinstance(old, bool) else old + rng.choice([-3, -1, 1, 2, 7])
    return v


def _small(cfg) -> bool:
    """Small enough for z3.simplify to evaluate quickly (the cost grows with the pages of iopt_pages)."""
    return cfg.n_upages <= 16 and cfg.n_area <= 6 and cfg.n_map <= 6 and cfg.n_tce <= 16 and cfg.n_obj <= 4


def test_compiled_check_agrees_with_z3_on_reached_and_perturbed_states():
    rng = random.Random(7)
    states = []
    for st in _reached_states():
        cfg, values = R.valuation(st)
        if _small(cfg):
            states.append((st, cfg, values))
    assert len(states) >= 20, "the shipped traces should reach a variety of states"
    states = rng.sample(states, min(len(states), 40))
    checked = violated = 0
    for st, cfg, values in states:
        assert _fast(cfg, values) == _exact(cfg, values), st
        checked += 1
        for _ in range(2):
            pv = _perturb(values, rng)
            if pv is None:
                continue
            fast, exact = _fast(cfg, pv), _exact(cfg, pv)
            assert fast == exact, (st, fast, exact)
            checked += 1
            violated += bool(exact)
    # the perturbations must break invariants often, or the comparison proves little
    assert violated >= checked // 10, (violated, checked)
