"""The requirement registry: every ID the reference raises or covers is registered,
every registered ID is pinned by a shipped trace, every trace names registered IDs,
and every shipped trace passes on the reference."""

import re
from pathlib import Path

import pytest

from vfiospec.conformance.replay import load_all
from vfiospec.conformance.run import shipped_traces_dir
from vfiospec.conformance.runner import run_trace
from vfiospec.conformance.targets import get_target
from vfiospec.requirements import load

ROOT = Path(__file__).resolve().parent.parent
# every requirement-shaped string literal (AREA-WORDS): raised, covered or passed on
USE = re.compile(r'"([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)"')


@pytest.fixture(scope="module")
def traces():
    return load_all([shipped_traces_dir()])


def test_registry_loads_with_every_field():
    reqs = load()
    assert len(reqs) > 40
    for r in reqs.values():
        assert r.text and r.seed and r.kernel, r.id


def test_every_id_the_reference_uses_is_registered():
    reqs = load()
    used = set()
    for p in (ROOT / "reference").rglob("*.py"):
        used |= {m.group(1) for m in USE.finditer(p.read_text())}
    missing = sorted(used - set(reqs))
    assert not missing, f"used in reference/ but not in reference/requirements/*.toml: {missing}"


def test_every_trace_names_registered_ids(traces):
    reqs = load()
    bad = {t.name: sorted(set(t.requirements) - set(reqs)) for t in traces if set(t.requirements) - set(reqs)}
    assert not bad, bad


def test_every_registered_id_has_a_trace(traces):
    named = {r for t in traces for r in t.requirements}
    missing = sorted(set(load()) - named)
    assert not missing, f"requirements with no shipped trace naming them: {missing}"


def test_every_shipped_trace_passes_on_the_reference(traces):
    target = get_target("reference")
    failing = {}
    for t in traces:
        r = run_trace(t, target)
        if r.verdict != "PASS":
            failing[t.name] = [f"step {s.index}: {s.call_text()}: {s.reason or s.observed.brief()}"
                               for s in r.steps if s.verdict != "PASS"][:3] or [r.error]
    assert not failing, failing
