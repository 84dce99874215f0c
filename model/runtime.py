"""Runtime checking: every invariant evaluated on a concrete abstract state.

`check_state(state)` takes a snapshot of the reference (vfiospec.reference.state.State,
or any object with the same fields, e.g. the state a conformance run reconstructs
for a target), turns it into concrete values of the model's variables (z3
numerals, in a Config sized to fit the snapshot) and evaluates the very same
invariant functions the prover uses; z3.simplify reduces each to true or false.

Units: 4 KiB pages for addresses and sizes; the accounting counters are
converted from the kernel's pages to 4 KiB pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from . import invariants as _inv
from .schema import (IOMMU_NOIOMMU, IOMMU_NONE, IOMMU_SPAPR_V1, IOMMU_SPAPR_V2, IOMMU_TYPE1, IOMMU_TYPE1V2, VARS,
                     Config, State, _build)

UNIT = 4096
KINDS = {"none": IOMMU_NONE, "type1v2": IOMMU_TYPE1V2, "spapr_v2": IOMMU_SPAPR_V2, "type1": IOMMU_TYPE1,
         "spapr": IOMMU_SPAPR_V1, "noiommu": IOMMU_NOIOMMU}
MODES = {"none": 0, "user": 1, "mm": 2}
N_WIN = 2          # IOMMU_TABLE_GROUP_MAX_TABLES


@dataclass(frozen=True)
class Violation:
    invariant: str
    text: str
    source: str

    def __str__(self):
        return f"{self.invariant}: {self.text} [{self.source}]"


def _pad(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def valuation(st, at_least: Config | None = None) -> tuple[Config, dict]:
    """(Config, values): the snapshot as values of the model's variables (in a Config
    at least as large as `at_least`, which must have the same devices)."""
    ratio = max(1, st.page_size // UNIT)
    groups = [g for g in st.groups if any(d.group == g.number for d in st.devices)]
    gidx = {g.number: i for i, g in enumerate(groups)}
    gtype = {g.number: g.type for g in groups}
    devs = [d for d in st.devices if d.group in gidx]
    n_ictx = max(1, len(st.ictxs))
    n_cont = max(1, len(st.containers))
    ioas_idx = {(q.ictx, q.id): i for i, q in enumerate(st.ioas)}
    hw_idx = {(h.ictx, h.id): i for i, h in enumerate(st.hwpts)}
    # sizes rounded up to powers of two (the extra slots are empty), so that few
    # distinct Configs occur and their compiled invariants are shared (see compiled)
    cfg = Config(grp_of=tuple(gidx[d.group] for d in devs), n_ictx=_pad(n_ictx), n_cont=_pad(n_cont),
                 n_ioas=_pad(len(st.ioas)), n_hwpt=_pad(len(st.hwpts)), n_area=_pad(len(st.areas)),
                 n_obj=_pad(len(st.iopt_pages)), n_upages=_pad(max([p.npages for p in st.iopt_pages] + [1])),
                 n_map=_pad(len(st.type1)), n_win=N_WIN, n_tce=_pad(len(st.tces)),
                 n_reg=_pad(len(st.registrations)), n_mtype=_pad(len(st.mdev_pools)), n_mdev=_pad(len(st.mdevs)))
    if at_least is not None and at_least.grp_of == cfg.grp_of:
        cfg = Config(**{f: max(getattr(cfg, f), getattr(at_least, f)) if f != "grp_of" else cfg.grp_of
                        for f in Config.__dataclass_fields__})
    v = {}
    for name, (sort, shape, _) in VARS.items():
        v[name] = _build(cfg, shape, lambda idx, s=sort: False if s == "Bool" else 0)
    for di, d in enumerate(devs):
        v["demu"][di] = d.emulated or gtype.get(d.group) == "noiommu"
        if d.cdev_bound and d.ictx is not None:
            v["bind"][di][d.ictx] = True
        if d.attached is not None and (d.ictx, d.attached) in hw_idx:
            v["attached"][di][hw_idx[(d.ictx, d.attached)]] = True
    for gi, g in enumerate(groups):
        v["gopen"][gi] = g.open
        v["gcont"][gi] = -1 if g.container is None else g.container
        v["gictx"][gi] = -1 if g.iommufd is None else g.iommufd
        own = -1
        if g.owner and g.owner[0] == "container":
            own = g.owner[1]
        elif g.owner and g.owner[0] == "iommufd":
            own = cfg.n_cont + g.owner[1]
        v["gown"][gi] = own
    for c in st.containers:
        v["ciommu"][c.index] = KINDS.get(c.iommu, IOMMU_NONE)
        v["cen"][c.index] = c.enabled
        v["v1acct"][c.index] = c.v1_locked * ratio
    for qi, q in enumerate(st.ioas):
        v["qlive"][qi], v["qictx"][qi] = True, q.ictx
    for hi, h in enumerate(st.hwpts):
        v["hlive"][hi], v["hauto"][hi] = True, h.auto
        v["hioas"][hi] = ioas_idx.get((h.ictx, h.ioas), -1)
    for qi in range(len(st.ioas), cfg.n_ioas):
        v["qictx"][qi] = 0
    for ai, a in enumerate(st.areas):
        v["alive"][ai] = True
        v["aioas"][ai] = ioas_idx[(a.ictx, a.ioas)]
        v["aiova"][ai] = a.iova // UNIT
        v["alen"][ai] = a.last_index - a.first_index + 1
        v["aobj"][ai] = a.pages
        v["aoff"][ai] = a.first_index
    for o in st.iopt_pages:
        v["olive"][o.index] = True
        v["ova"][o.index] = o.uptr // UNIT
        v["olen"][o.index] = o.npages
        v["omode"][o.index] = MODES.get(o.account_mode, 1)
        for k in range(o.npages):
            v["opin"][o.index][k] = o.pinned[k]
            v["oacc"][o.index][k] = o.access_pins[k]
    for mi, m in enumerate(st.type1):
        v["mlive"][mi], v["mcont"][mi] = True, m.container
        v["miova"][mi], v["mlen"][mi] = m.iova // UNIT, -(-m.size // UNIT)
        v["mva"][mi], v["macct"][mi] = m.vaddr // UNIT, m.locked * ratio
    for w in st.windows:
        c, n = w.container, w.slot
        v["wlive"][c][n] = True
        v["wstart"][c][n], v["wsize"][c][n] = w.start // UNIT, w.size // UNIT
        v["wps"][c][n], v["wacct"][c][n] = max(1, w.page_size // UNIT), w.locked * ratio
    for ti, t in enumerate(st.tces):
        v["tlive"][ti], v["tcont"][ti], v["tnum"][ti] = True, t.container, t.slot
        v["tiova"][ti], v["tva"][ti] = t.iova // UNIT, t.ua // UNIT
        v["treg"][ti] = -1 if t.region is None else t.region
    for r in st.registrations:
        v["rlive"][r.index] = True
        v["rcont"][r.index] = r.containers[0] if r.containers else -1
        v["rva"][r.index], v["rlen"][r.index] = r.ua // UNIT, r.size // UNIT
    for pi, p in enumerate(st.mdev_pools):
        v["avail"][pi], v["mtotal"][pi] = p.available, p.total
    for ii, m in enumerate(st.mdevs):
        v["ilive"][ii], v["itype"][ii], v["icost"][ii] = True, m.pool, m.units
    # iommufd counts its pins in kernel pages (so do opin), the rest in 4 KiB units
    v.update(locked_vm=st.locked_vm * ratio, user_locked_vm=st.user_locked_vm, pinned_vm=st.pinned_vm,
             rlimit=st.rlimit_pages * ratio, cap=st.cap_ipc_lock, spapr=st.platform == "spapr", max_windows=N_WIN)
    return cfg, v


def concrete_state(cfg: Config, values: dict) -> State:
    """A State whose variables are z3 numerals."""
    def lift(x):
        if isinstance(x, list):
            return [lift(y) for y in x]
        return z3.BoolVal(x) if isinstance(x, bool) else z3.IntVal(x)
    return State(cfg, {name: lift(values[name]) for name in VARS})


def evaluate(inv, s: State) -> bool:
    """One invariant on a State of z3 numerals, by z3.simplify (the reference way)."""
    r = z3.simplify(inv(s))
    if z3.is_true(r):
        return True
    if z3.is_false(r):
        return False
    raise ValueError(f"{inv.id} did not evaluate to a constant on a concrete state: {r}")


# ---------------------------------------------------------------- compiled evaluation
# z3.simplify over thousands of snapshots is slow; instead each invariant formula,
# built once over a symbolic State of the snapshot's size, is translated node by
# node into straight-line Python (the same formula: every z3 operator has its
# Python counterpart below) and evaluated on the concrete values.
_OPS = {
    z3.Z3_OP_AND: lambda a: "all((" + ", ".join(a) + ",))" if a else "True",
    z3.Z3_OP_OR: lambda a: "any((" + ", ".join(a) + ",))" if a else "False",
    z3.Z3_OP_NOT: lambda a: f"(not {a[0]})", z3.Z3_OP_IMPLIES: lambda a: f"((not {a[0]}) or {a[1]})",
    z3.Z3_OP_ITE: lambda a: f"({a[1]} if {a[0]} else {a[2]})", z3.Z3_OP_EQ: lambda a: f"({a[0]} == {a[1]})",
    z3.Z3_OP_DISTINCT: lambda a: f"(len({{{', '.join(a)}}}) == {len(a)})",
    z3.Z3_OP_LE: lambda a: f"({a[0]} <= {a[1]})", z3.Z3_OP_LT: lambda a: f"({a[0]} < {a[1]})",
    z3.Z3_OP_GE: lambda a: f"({a[0]} >= {a[1]})", z3.Z3_OP_GT: lambda a: f"({a[0]} > {a[1]})",
    z3.Z3_OP_ADD: lambda a: "sum((" + ", ".join(a) + ",))" if a else "0", z3.Z3_OP_SUB: lambda a: "(" + " - ".join(a) + ")",
    z3.Z3_OP_MUL: lambda a: "_prod((" + ", ".join(a) + ",))", z3.Z3_OP_UMINUS: lambda a: f"(-{a[0]})",
    z3.Z3_OP_IDIV: lambda a: f"_div({a[0]}, {a[1]})", z3.Z3_OP_MOD: lambda a: f"_mod({a[0]}, {a[1]})",
    z3.Z3_OP_TRUE: lambda a: "True", z3.Z3_OP_FALSE: lambda a: "False",
}


def _div(a, b):
    """SMT-LIB div: floor for b > 0, ceiling-style for b < 0; 0 divisor is unspecified (0 here)."""
    if b == 0:
        return 0
    q = a // b if b > 0 else -(a // -b)
    return q


def _prod(xs):
    r = 1
    for x in xs:
        r *= x
    return r


def _mod(a, b):
    return a - b * _div(a, b) if b else a


def compile_terms(terms: list, names: dict):
    """A Python function v(dict key->value) -> [value of each term] for z3 terms whose
    free constants are the keys of `names` (z3 const -> flat key).  Shared subterms are
    computed once."""
    lines, memo, counter = [], {}, [0]
    const_key = {c.get_id(): k for c, k in names.items()}

    def go(e):
        eid = e.get_id()
        if eid in memo:
            return memo[eid]
        if z3.is_int_value(e):
            r = str(e.as_long())
        elif z3.is_const(e) and eid in const_key:
            r = f"v[{const_key[eid]!r}]"
        else:
            k = e.decl().kind()
            if k not in _OPS:
                raise ValueError(f"no Python counterpart for z3 operator {e.decl()}")
            args = [go(c) for c in e.children()]
            counter[0] += 1
            name = f"t{counter[0]}"
            lines.append(f"    {name} = {_OPS[k](args)}")
            r = name
        memo[eid] = r
        return r
    outs = [go(t) for t in terms]
    src = "def _f(v):\n" + "\n".join(lines) + "\n    return [" + ", ".join(outs) + "]\n"
    env = {"_div": _div, "_mod": _mod, "_prod": _prod}
    exec(compile(src, "<z3-terms>", "exec"), env)   # noqa: S102 (source generated from a z3 AST)
    return env["_f"]


def compile_formula(f, names: dict):
    """A Python function v -> bool for one z3 formula (see compile_terms)."""
    fn = compile_terms([f], names)
    return lambda v: bool(fn(v)[0])


_CACHE: dict = {}


def compiled(cfg: Config):
    """{invariant id: python function} for states of size cfg (cached)."""
    fns = _CACHE.get(cfg)
    if fns is None:
        s = State.fresh(cfg, "r.")
        names = {term: key for key, term in s.flat().items()}
        fns = {inv.id: compile_formula(inv(s), names) for inv in _inv.INVARIANTS}
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[cfg] = fns
    return fns


def _flat(cfg: Config, values: dict) -> dict:
    from .schema import _indices, key
    out = {}
    for name, (_, shape, _) in VARS.items():
        for idx in _indices(cfg, shape):
            x = values[name]
            for i in idx:
                x = x[i]
            out[key(name, idx)] = x
    return out


def check_values(cfg: Config, values: dict, invariants=None, exact: bool = False) -> list[Violation]:
    """Violated invariants; `exact` evaluates with z3.simplify instead of the compiled form."""
    out = []
    if exact:
        s = concrete_state(cfg, values)
        for inv in _inv.INVARIANTS:
            if (invariants is None or inv.id in invariants) and not evaluate(inv, s):
                out.append(Violation(inv.id, inv.doc, inv.source))
        return out
    fns = compiled(cfg)
    flat = _flat(cfg, values)
    for inv in _inv.INVARIANTS:
        if (invariants is None or inv.id in invariants) and not fns[inv.id](flat):
            out.append(Violation(inv.id, inv.doc, inv.source))
    return out


def check_state(state, invariants=None, exact: bool = False) -> list[Violation]:
    """The invariants `state` violates (empty when it satisfies all of them)."""
    cfg, values = valuation(state)
    return check_values(cfg, values, invariants, exact)


def check_states(states, invariants=None) -> list[list[Violation]]:
    """check_state for many snapshots at once: states with the same devices share one
    Config (the largest sizes among them), so the invariants are compiled once per
    device layout."""
    vals = [valuation(st) for st in states]
    big: dict = {}
    for cfg, _ in vals:
        cur = big.get(cfg.grp_of)
        big[cfg.grp_of] = cfg if cur is None else Config(
            **{f: max(getattr(cfg, f), getattr(cur, f)) if f != "grp_of" else cfg.grp_of
               for f in Config.__dataclass_fields__})
    out = []
    for st, (cfg, _) in zip(states, vals):
        c2, v2 = valuation(st, big[cfg.grp_of])
        out.append(check_values(c2, v2, invariants))
    return out
