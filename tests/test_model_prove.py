"""`vfiospec prove`: the inductive proofs, and that they fail when an action is weakened.

The full run (every invariant x every action: 725 obligations, 22 s on 2 cores
when the machine is otherwise idle, ~2 min under load) is in the default suite;
CI also runs it as `vfiospec prove`.  A light run (Init and four actions) gives a
quick signal, and weakened actions must be caught."""

from __future__ import annotations

import z3

from vfiospec.model import cli, prover
from vfiospec.model import invariants as I
from vfiospec.model import transitions as T

LIGHT_ACTIONS = ["Bind", "IoasCopy", "UnregisterMemory", "MdevCreate"]


def test_invariants_have_ids_docs_and_sources():
    ids = [i.id for i in I.INVARIANTS]
    assert len(ids) == len(set(ids))
    for inv in I.INVARIANTS:
        assert inv.id.startswith("INV-") and inv.doc and inv.source, inv.id
    for wanted in ("INV-ONE-BIND-PER-DEVICE", "INV-PATH-EXCLUSIVE", "INV-ONE-HWPT-PER-GROUP",
                   "INV-SINGLE-PIN-PER-PAGE", "INV-ACCOUNTING-EQUALS-PINNED", "INV-TCE-IN-WINDOW", "INV-TCE-ALIGNED",
                   "INV-WINDOWS-DISJOINT", "INV-WINDOWS-MAX", "INV-PREREG-IDENTICAL-OR-DISJOINT",
                   "INV-V2-MAP-FROM-PREREG", "INV-PREREG-MAPPED-STAYS", "INV-AREAS-DISJOINT",
                   "INV-LOCKED-WITHIN-LIMIT", "INV-NO-DANGLING-OBJECT", "INV-MDEV-CONSERVED",
                   "INV-ONE-ATTACH-PER-DEVICE"):
        assert wanted in I.BY_ID


def test_actions_name_registered_requirements():
    from vfiospec import requirements
    reg = requirements.load()
    for a in T.ACTIONS:
        assert a.reqs, a.name
        missing = [r for r in a.reqs if r not in reg]
        assert not missing, (a.name, missing)


def test_prove_light():
    rep = prover.prove(actions=LIGHT_ACTIONS)
    assert rep.ok, "\n\n".join(o.words() for o in rep.failures())
    assert len(rep.obligations) == len(I.INVARIANTS) * (len(LIGHT_ACTIONS) + 1)


def test_prove_all(capsys):
    rc = cli.prove_main(["-q"])
    out = capsys.readouterr().out
    assert rc == 0, out
    n = len(I.INVARIANTS) * (len(T.ACTIONS) + 1)
    assert f"= {n} obligations: {n} proved" in out


def test_weakened_copy_repins_is_caught(monkeypatch, capsys):
    """A COPY that pins the shared pages again (as a second MAP would) breaks
    single-pin-per-page: prove names the invariant and the action."""
    monkeypatch.setitem(T.REPIN, "IoasCopy", lambda old, needed: z3.If(needed, old + 1, 0))
    rc = cli.prove_main(["--action", "IoasCopy", "--invariant", "INV-SINGLE-PIN-PER-PAGE"])
    out = capsys.readouterr()
    assert rc == 1
    assert "INV-SINGLE-PIN-PER-PAGE x IoasCopy: COUNTEREXAMPLE" in out.out
    assert "before (satisfies every invariant)" in out.out and "action: IoasCopy(" in out.out
    assert "FAILED: INV-SINGLE-PIN-PER-PAGE x IoasCopy" in out.err


def test_weakened_unregister_is_caught(monkeypatch):
    """An UNREGISTER that frees a region TCEs still map (the EBUSY not honoured)
    breaks prereg-mapped-stays."""
    def put_regions_weak(s, which):
        cfg = s.cfg
        return s.updated(rcont=[z3.If(which[r], -1, s.rcont[r]) for r in range(cfg.n_reg)],
                         rlive=[z3.And(s.rlive[r], z3.Not(which[r])) for r in range(cfg.n_reg)],
                         locked_vm=s.locked_vm - T.total([z3.If(z3.And(which[r], s.rlive[r]), s.rlen[r], 0)
                                                          for r in range(cfg.n_reg)]))
    monkeypatch.setattr(T, "put_regions", put_regions_weak)
    rep = prover.prove(actions=["UnregisterMemory"], include_init=False)
    failed = {(o.invariant, o.action) for o in rep.failures()}
    assert ("INV-PREREG-MAPPED-STAYS", "UnregisterMemory") in failed


def test_weakened_bind_is_caught(monkeypatch):
    """A bind that forgets the second-bind check breaks one-bind-per-device."""
    orig = T._bind

    def bind_weak(s, p):
        ch, st, en = orig(s, p)
        ch.items = [(c, e) for c, e in ch.items if e != "EINVAL"]
        return ch, st, en
    monkeypatch.setattr(T, "ACTIONS", [a if a.name != "Bind" else T.ActionDef(
        a.name, a.reqs, a.params, bind_weak, a.doc, a.platform) for a in T.ACTIONS])
    rep = prover.prove(actions=["Bind"], include_init=False)
    failed = {(o.invariant, o.action) for o in rep.failures()}
    assert ("INV-ONE-BIND-PER-DEVICE", "Bind") in failed


def test_unknown_is_a_failure():
    rep = prover.ProofReport([prover.Obligation("INV-X", "Bind", prover.UNKNOWN, 1.0, reason="timeout")])
    assert not rep.ok
    assert "unknown" in prover.table(rep) or "?" in prover.table(rep)
