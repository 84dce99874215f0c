"""Spec -> implementation: `vfiospec generate` runs TLC simulation and writes
trace-format v1 traces whose expectations are the spec's; they must replay
green on the reference (spec/generate.py, spec/traces.py)."""

import json

import pytest

from vfiospec.conformance.runner import run_trace
from vfiospec.conformance.targets import get_target
from vfiospec.conformance.trace import load_trace
from vfiospec.spec.cli import generate_main


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    assert generate_main(["--out", str(out), "-n", "3", "--depth", "18", "--seed", "11"]) == 0
    return sorted(out.glob("*.json"))


def test_generated_traces_are_trace_format_v1(generated):
    assert len(generated) == 3
    assert {p.name.split("-")[1] for p in generated} == {"type1", "iommufd", "mdev"}
    for p in generated:
        doc = json.loads(p.read_text())
        assert doc["vfiospec"] == 1 and doc["source"] == "generated"
        assert doc["requirements"], p
        load_trace(p)                      # the conformance loader's schema and semantic checks
        judged = [s for s in doc["steps"] if "expect" in s]
        assert len(judged) >= 10, p        # 18 abstract steps, a few dropped at most
        for s in judged:
            e = s["expect"]
            assert e == "ok" or "errno" in e or "ret" in e or "data" in e


def test_generated_traces_replay_green_on_the_reference(generated):
    ref = get_target("reference")
    for p in generated:
        res = run_trace(load_trace(p), ref)
        bad = [(s.index, s.call_text(), s.observed.brief()) for s in res.steps if s.verdict != "PASS"]
        assert res.verdict == "PASS", f"{p.name}: {bad}"
