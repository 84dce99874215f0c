"""The property language of `vfiospec explore` (documented in model/README.md).

A property is a Python-like boolean expression over the abstract state, read
with `ast` and evaluated into a z3 formula; it claims something of every
reachable state (and of the action that led there).  Besides expressions, a
property can be an invariant ID (`INV-AREAS-DISJOINT`), its negation
(`not INV-AREAS-DISJOINT`), or a named candidate of CANDIDATES.

Names:
  state variables     bind[d][i], attached[d][h], gopen[g], gcont[g], qlive[q], alive[a],
                      aiova[a], opin[o][k], rlive[r], rva[r], tlive[t], avail[t], locked_vm, ...
                      (schema.VARS lists them all, with their meaning)
  pre.<var>           the same variable in the state before the last action
  last.action         the last action (compare with an action name: last.action == IoasCopy)
  last.errno          its errno (compare with OK, EINVAL, ENOENT, ...); last.ok is last.errno == OK
  last.<param>        a parameter of the last action (last.va, last.len, last.dst_ioas, ...)
  DEV, ICTX, GRP, CONT, IOAS, HWPT, AREA, OBJ, PAGES, MAP, WIN, TCE, REG, MTYPE, MDEV
                      the finite index ranges (for all(... for d in DEV))
  helpers             implies(a, b), all(...), any(...), sum(...), count(...), within(s1, l1, s2, l2),
                      disjoint(s1, l1, s2, l2), has_domain(q), bound(d), max_pin, inv("INV-...")
Operators: and, or, not, == != < <= > >=, + - *, x if c else y.
At depth 0 (the initial state) last.action is -1 (no action).
"""

from __future__ import annotations

import ast
from types import SimpleNamespace

import z3

from . import invariants as _inv
from . import transitions as _tr
from .schema import ERRNO_CODE, VARS, State, count, disjoint, total, within

# Named candidate properties (deliberately false ones included, as examples).
CANDIDATES = {
    "no-device-bound": (
        "not any(bind[d][i] for d in DEV for i in ICTX)",
        "no device is ever bound to an iommufd"),
    "subrange-unregister-succeeds": (
        "implies(last.action == UnregisterMemory and any(pre.rlive[r] and pre.rcont[r] == last.c and "
        "within(last.va, last.len, pre.rva[r], pre.rlen[r]) and not (last.va == pre.rva[r] and "
        "last.len == pre.rlen[r]) for r in REG), last.ok)",
        "an UNREGISTER_MEMORY of any sub-range of a registered region succeeds"),
    "copy-pins-twice": (
        "implies(last.action == IoasCopy and last.ok and has_domain(last.dst_ioas), max_pin == 2)",
        "after a COPY into an IOAS with a domain, a page's pin count reaches 2"),
    "type1-unmap-bisects": (
        "implies(last.action == UnmapDma and any(pre.mlive[m] and pre.mcont[m] == last.c and "
        "pre.miova[m] < last.iova and last.iova < pre.miova[m] + pre.mlen[m] for m in MAP), last.ok)",
        "a type1 v2 UNMAP_DMA starting inside a mapping succeeds"),
    "mdev-never-full": (
        "all(avail[t] > 0 for t in MTYPE) or all(mtotal[t] == 0 for t in MTYPE)",
        "an mdev parent that offers instances never runs out"),
}


class PropertyError(ValueError):
    pass


class _ToZ3(ast.NodeTransformer):
    def visit_BoolOp(self, node):
        self.generic_visit(node)
        fn = "_And" if isinstance(node.op, ast.And) else "_Or"
        return ast.copy_location(ast.Call(ast.Name(fn, ast.Load()), node.values, []), node)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.copy_location(ast.Call(ast.Name("_Not", ast.Load()), [node.operand], []), node)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1:
            return node
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            parts.append(ast.Compare(left, [op], [right]))
            left = right
        return ast.copy_location(ast.Call(ast.Name("_And", ast.Load()), parts, []), node)

    def visit_IfExp(self, node):
        self.generic_visit(node)
        return ast.copy_location(ast.Call(ast.Name("_If", ast.Load()), [node.test, node.body, node.orelse], []),
                                 node)

    def visit_Attribute(self, node):
        if node.attr.startswith("_"):
            raise PropertyError(f"no attribute {node.attr!r}")
        return self.generic_visit(node)

    def visit_Name(self, node):
        if node.id.startswith("__"):
            raise PropertyError(f"no name {node.id!r}")
        return node


_ALLOWED = (ast.Expression, ast.BoolOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call, ast.Name, ast.Load,
            ast.Attribute, ast.Subscript, ast.Constant, ast.BinOp, ast.GeneratorExp, ast.comprehension,
            ast.Store, ast.And, ast.Or, ast.Not, ast.USub, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
            ast.Add, ast.Sub, ast.Mult, ast.Tuple, ast.List, ast.Index if hasattr(ast, "Index") else ast.Constant)


def _as_bool(x):
    return z3.BoolVal(x) if isinstance(x, bool) else x


def _state_ns(s: State):
    return SimpleNamespace(**{name: s.get(name) for name in VARS})


def compile_property(text: str):
    """fn(pre, s, last) -> z3 BoolRef for a property text."""
    text = text.strip()
    if text in CANDIDATES:
        text = CANDIDATES[text][0]
    neg = False
    t = text
    if t.startswith("not ") and t[4:].strip() in _inv.BY_ID:
        neg, t = True, t[4:].strip()
    if t in _inv.BY_ID:
        inv = _inv.BY_ID[t]
        return (lambda pre, s, last: z3.Not(inv(s))) if neg else (lambda pre, s, last: inv(s))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise PropertyError(f"not a property: {e.msg} at column {e.offset}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise PropertyError(f"{type(node).__name__} is not allowed in a property")
    tree = ast.fix_missing_locations(_ToZ3().visit(tree))
    code = compile(tree, "<property>", "eval")

    def fn(pre: State | None, s: State, last: dict | None):
        env = environment(pre, s, last)
        try:
            env["__builtins__"] = {}
            r = eval(code, env)   # noqa: S307 (restricted AST, no builtins; env as globals for generators)
        except NameError as e:
            raise PropertyError(f"{e}; see `vfiospec explore --help` for the names") from None
        r = _as_bool(r)
        if not z3.is_bool(r):
            raise PropertyError("the property is not a boolean expression")
        return r
    fn(None, State.fresh(_default_cfg(), "check."), None)   # fail early on bad names
    return fn


def _default_cfg():
    from .schema import DEFAULT
    return DEFAULT


def environment(pre: State | None, s: State, last: dict | None) -> dict:
    cfg = s.cfg
    env = {name: s.get(name) for name in VARS}
    env["pre"] = _state_ns(pre if pre is not None else s)
    if last is None:
        last = {"action": z3.IntVal(-1), "errno": z3.IntVal(-1), "params": {}}
    ns = {"action": last["action"], "errno": last["errno"], "ok": last["errno"] == 0}
    params = set(p.name for a in _tr.ACTIONS for p in a.params)
    for p in params:
        ns[p] = last["params"].get(p, z3.IntVal(0))
    env["last"] = SimpleNamespace(**ns)
    for i, a in enumerate(_tr.ACTIONS):
        env[a.name] = i
    env.update(ERRNO_CODE)
    env.update(DEV=range(cfg.n_dev), ICTX=range(cfg.n_ictx), GRP=range(cfg.n_grp), CONT=range(cfg.n_cont),
               IOAS=range(cfg.n_ioas), HWPT=range(cfg.n_hwpt), AREA=range(cfg.n_area), OBJ=range(cfg.n_obj),
               PAGES=range(cfg.n_upages), MAP=range(cfg.n_map), WIN=range(cfg.n_win), TCE=range(cfg.n_tce),
               REG=range(cfg.n_reg), MTYPE=range(cfg.n_mtype), MDEV=range(cfg.n_mdev))
    pins = [s.opin[o][k] for o in range(cfg.n_obj) for k in range(cfg.n_upages)]
    mx = z3.IntVal(0)
    for p in pins:
        mx = z3.If(p > mx, p, mx)
    env.update(
        _And=lambda *xs: z3.And([_as_bool(x) for x in xs]), _Or=lambda *xs: z3.Or([_as_bool(x) for x in xs]),
        _Not=lambda x: z3.Not(_as_bool(x)), _If=lambda c, a, b: z3.If(_as_bool(c), a, b),
        implies=lambda a, b: z3.Implies(_as_bool(a), _as_bool(b)),
        all=lambda xs: z3.And([_as_bool(x) for x in xs]), any=lambda xs: z3.Or([_as_bool(x) for x in xs]),
        sum=lambda xs: total(list(xs)), count=lambda xs: count([_as_bool(x) for x in xs]),
        within=within, disjoint=disjoint, has_domain=lambda q: _tr.has_domain(s, q),
        bound=lambda d: z3.Or(s.bind[d]), max_pin=mx, inv=lambda i: _inv.BY_ID[i](s),
        True_=True, False_=False)
    return env
