"""Spec -> implementation: `vfiospec generate` runs TLC simulation and writes
trace-format v1 traces whose expectations are the spec's; they must replay
green on the reference (spec/generate.py, spec/traces.py).  sPAPR traces are
for the pseries guest as it is, and replay green at both kernel page sizes."""

import json

import pytest

from vfiospec.conformance.runner import run_trace
from vfiospec.conformance.targets import get_target
from vfiospec.conformance.trace import load_trace
from vfiospec.spec.cli import generate_main


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    assert generate_main(["--out", str(out), "-n", "3", "--depth", "18", "--seed", "11",
                          "--model", "type1", "--model", "iommufd", "--model", "mdev"]) == 0
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


def assert_green_on_the_reference(paths):
    ref = get_target("reference")
    for p in paths:
        res = run_trace(load_trace(p), ref)
        bad = [(s.index, s.call_text(), s.observed.brief()) for s in res.steps if s.verdict != "PASS"]
        assert res.verdict == "PASS", f"{p.name}: {bad}"


def test_generated_traces_replay_green_on_the_reference(generated):
    assert_green_on_the_reference(generated)


# ---------------------------------------------------------------- sPAPR
DDW = 1 << 59


@pytest.fixture(scope="module")
def generated_spapr(tmp_path_factory):
    """Seeds 712 and 713 give a v1 and a v2 behaviour (the shipped gen-spapr-s712/s713-d30)."""
    out = tmp_path_factory.mktemp("generated-spapr")
    assert generate_main(["--out", str(out), "-n", "2", "--depth", "30", "--seed", "712", "--model", "spapr"]) == 0
    return sorted(out.glob("*.json"))


def _num(v):
    return v if isinstance(v, int) else int(v, 0)


def test_generated_spapr_traces_are_for_the_pseries_guest(generated_spapr):
    from vfiospec.lane import pseries
    guest = pseries.guest_platform("4k")
    guest.pop("process")
    guest["groups"] = {"g0": guest["groups"]["g0"]}     # SpaprTce.tla has one group; the guest's first
    types = set()
    for p in generated_spapr:
        doc = json.loads(p.read_text())
        assert doc["vfiospec"] == 1 and doc["source"] == "generated" and doc["requirements"], p
        assert doc["platform"] == guest, p             # no process.page_size: both kernels
        for ps in ("4k", "64k"):
            assert pseries.platform_mismatch(doc["platform"], ps) is None
        load_trace(p)
        steps = [s for s in doc["steps"] if s["call"] == "ioctl"]
        types |= {s["arg"] for s in steps if s["cmd"] == "VFIO_SET_IOMMU" and s["expect"] == "ok"}
        for s in steps:
            arg = s.get("arg")
            if s["cmd"] == "VFIO_IOMMU_SPAPR_TCE_CREATE":
                assert arg == {"page_shift": 12, "window_size": "0x40000000", "levels": 1}
                if s["expect"] != "ok" and "ret" in s["expect"]:
                    assert _num(s["expect"]["out"]["start_addr"]) in (0, DDW)
                    assert set(s["save"]) == {"start_addr"}
            if s["cmd"] in ("VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA"):
                assert arg["size"] == "0x1000"
                assert arg["iova"].startswith("$win") or _num(arg["iova"]) in (0, DDW)
            if s["cmd"] in ("VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_SPAPR_REGISTER_MEMORY"):
                off = arg["vaddr"].partition("+")[2]
                assert not off or _num(off) % 0x10000 == 0      # 64K-aligned: valid on 64K kernels
    assert types == {"VFIO_SPAPR_TCE_IOMMU", "VFIO_SPAPR_TCE_v2_IOMMU"}


def test_generated_spapr_traces_replay_green_at_both_page_sizes(generated_spapr):
    from vfiospec.conformance.trace import parse_trace
    ref = get_target("reference")
    for p in generated_spapr:
        for ps in (4096, 65536):
            doc = json.loads(p.read_text())
            doc["platform"]["process"] = {"page_size": ps}
            res = run_trace(parse_trace(doc), ref)
            bad = [(s.index, s.call_text(), s.observed.brief()) for s in res.steps if s.verdict != "PASS"]
            assert res.verdict == "PASS", f"{p.name} at {ps}: {bad}"


def test_shipped_spapr_traces_are_reproducible(generated_spapr):
    """The shipped gen-spapr-s712/s713-d30 are what `vfiospec generate` writes today."""
    from vfiospec.conformance.run import shipped_traces_dir
    shipped = shipped_traces_dir() / "generated"
    for p in generated_spapr:
        assert json.loads(p.read_text()) == json.loads((shipped / p.name).read_text()), p.name


# ---------------------------------------------------------------- the x86 lane's guest
# spec/models/type1_guest (one group g0) and mdev_guest (mtty-2 with 12 instances):
# traces the x86 real-kernel lane runs (vfiospec/lane: trace_fits).
X86_FEATURES = {"container": "vfio", "iommufd": True, "cdev": True, "mtty": True, "series": "6.12", "thp": False}
X86_GUEST = {"mdev_parents": {"mtty": {"types": {"mtty-1": {"available_instances": 24},
                                                 "mtty-2": {"available_instances": 12}}}}}
GUEST_PLATFORMS = {
    "type1_guest": {"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}, "vfio_container": "vfio"},
    "mdev_guest": {"groups": {}, "mdev_parents": {"mtty": {"types": {"mtty-2": {"available_instances": 12}}}}},
}


@pytest.fixture(scope="module")
def generated_guest(tmp_path_factory):
    """Seeds 716 and 720: the shipped gen-type1_guest-s716-d30 and gen-mdev_guest-s720-d30."""
    out = tmp_path_factory.mktemp("generated-guest")
    for model, seed in (("type1_guest", 716), ("mdev_guest", 720)):
        assert generate_main(["--out", str(out), "-n", "1", "--depth", "30", "--seed", str(seed),
                              "--model", model]) == 0
    return sorted(out.glob("*.json"))


def _shipped_guest():
    from vfiospec.conformance.run import shipped_traces_dir
    return sorted((shipped_traces_dir() / "generated").glob("gen-*_guest-s*-d30.json"))


def test_variants_are_generators_but_not_the_default():
    from vfiospec.spec.generate import DEFAULT_MODELS, GENERATORS
    assert DEFAULT_MODELS == ["iommufd", "mdev", "spapr", "type1"]
    assert GENERATORS["type1_guest"] == "Type1" and GENERATORS["mdev_guest"] == "Mdev"
    assert "iommufd_bind_twice" not in GENERATORS


def test_generated_guest_traces_are_the_x86_guest(generated_guest):
    from vfiospec.lane import trace_fits
    assert [p.name for p in generated_guest] == ["gen-mdev_guest-s720-d30.json", "gen-type1_guest-s716-d30.json"]
    for p in generated_guest:
        doc = json.loads(p.read_text())
        model = p.name.split("-")[1]
        assert doc["vfiospec"] == 1 and doc["source"] == "generated" and doc["requirements"], p
        assert f"spec/models/{model} " in doc["description"]
        assert doc["platform"] == GUEST_PLATFORMS[model], p
        assert trace_fits(load_trace(p), X86_FEATURES, guest=X86_GUEST) == (True, "")


def test_generated_guest_traces_replay_green_on_the_reference(generated_guest):
    assert_green_on_the_reference(generated_guest)


def test_shipped_guest_traces_are_reproducible(generated_guest):
    shipped = {p.name: p for p in _shipped_guest()}
    for p in generated_guest:
        assert json.loads(p.read_text()) == json.loads(shipped[p.name].read_text()), p.name


def test_shipped_guest_traces_fit_the_x86_guest_and_replay_green():
    """All eight: four per variant, each fits the lane's guest and passes on the reference."""
    from vfiospec.lane import trace_fits
    shipped = _shipped_guest()
    assert sorted(p.name.split("-")[1] for p in shipped) == ["mdev_guest"] * 4 + ["type1_guest"] * 4
    ref = get_target("reference")
    for p in shipped:
        doc = json.loads(p.read_text())
        assert doc["platform"] == GUEST_PLATFORMS[p.name.split("-")[1]], p.name
        t = load_trace(p)
        assert trace_fits(t, X86_FEATURES, guest=X86_GUEST) == (True, ""), p.name
        assert run_trace(t, ref).verdict == "PASS", p.name
