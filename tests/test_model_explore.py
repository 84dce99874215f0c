"""`vfiospec explore`: bounded model checking finds violations of deliberately false
properties and writes them as traces that replay on the reference to the violating
state; a true property reports the bound it covered."""

from __future__ import annotations

import json

import pytest

from vfiospec.conformance.runner import run_trace
from vfiospec.conformance.targets.reference import ReferenceTarget
from vfiospec.conformance.trace import load_trace
from vfiospec.model import cli, crosscheck, explorer, formula, runtime
from vfiospec.model.schema import DEFAULT
from vfiospec.model.tracegen import to_trace

FALSE_PROPERTIES = [
    ("no-device-bound", "vtd", 1, "Bind"),
    ("subrange-unregister-succeeds", "spapr", 5, "UnregisterMemory"),
    ("copy-pins-twice", "vtd", 5, "IoasCopy"),
]


class _Final(ReferenceTarget):
    """The reference target, keeping the last session's final state."""

    def begin(self, trace):
        s = super().begin(trace)
        orig = s.close

        def close():
            self.final = s.state()
            self.bufs = dict(s.bufs)
            orig()
        s.close = close
        return s


@pytest.mark.parametrize("prop,platform,depth,last", FALSE_PROPERTIES)
def test_false_property_found_and_replays(prop, platform, depth, last, tmp_path, capsys):
    out = tmp_path / f"{prop}.json"
    rc = cli.explore_main([prop, "--platform", platform, "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 1, text
    assert f"VIOLATED after {depth} action(s)" in text
    doc = json.loads(out.read_text())
    assert doc["vfiospec"] == 1 and doc["source"] == "generated"
    assert run_trace(load_trace(out), ReferenceTarget()).verdict == "PASS"
    # the same, step by step: the reference ends in the violating state the model found
    r = explorer.explore(prop, depth, DEFAULT, platform)
    assert r.found and r.steps[-1].action == last
    path = tmp_path / "again.json"
    path.write_text(json.dumps(to_trace("again", "x", r.steps, r.states, DEFAULT)))
    target = _Final()
    res = run_trace(load_trace(path), target)
    assert res.verdict == "PASS", [(s.index, s.reason) for s in res.failed]
    cfg, v = runtime.valuation(target.final, DEFAULT)
    base = target.bufs["buf"] // runtime.UNIT
    for name, live in (("ova", "olive"), ("mva", "mlive"), ("rva", "rlive"), ("tva", "tlive")):
        v[name] = [x - base if l else 0 for x, l in zip(v[name], v[live])]
    assert crosscheck.canonical(cfg, v) == crosscheck.canonical(DEFAULT, r.states[-1])


def test_true_invariant_reports_bound(capsys):
    rc = cli.explore_main(["INV-AREAS-DISJOINT", "--depth", "2", "--platform", "vtd"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "no violation within 2 actions" in out and "bound: depth 2" in out


def test_negated_invariant_and_formula():
    r = explorer.explore("not INV-ONE-BIND-PER-DEVICE", 0, DEFAULT, "vtd")
    assert r.found and r.depth == 0          # the initial state satisfies the invariant
    r = explorer.explore("locked_vm == 0 or cap", 4, DEFAULT, "vtd")
    assert r.found and r.depth == 4 and r.steps[-1].action == "MapDma"


def test_bad_property_is_refused(capsys):
    assert cli.explore_main(["no_such_name > 1"]) == 2
    assert "no_such_name" in capsys.readouterr().err
    with pytest.raises(formula.PropertyError):
        formula.compile_property("__import__('os')")
