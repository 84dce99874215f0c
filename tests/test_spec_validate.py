"""Implementation -> spec: `vfiospec validate` checks a recorded run against the
TLA+ model with TLC; a reference run is accepted, a hand-made divergent trace
is rejected naming its step (spec/validate.py).  sPAPR traces are checked
against spec/models/spapr on the pseries platform."""

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from vfiospec.spec.validate import recorded_run, validate_doc

MAPF = ["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"]
IOASF = ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_WRITEABLE", "IOMMU_IOAS_MAP_READABLE"]

TYPE1 = {
    "vfiospec": 1, "name": "spec-type1-v2", "description": "v2: overlap EEXIST, bisect EINVAL, whole unmap",
    "platform": {"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}},
    "steps": [
        {"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
        {"call": "ioctl", "fd": "container", "cmd": "VFIO_GET_API_VERSION", "expect": {"ret": 0}},
        {"call": "open", "path": "/dev/vfio/{g0}", "as": "group"},
        {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container", "expect": "ok"},
        {"call": "ioctl", "fd": "container", "cmd": "VFIO_SET_IOMMU", "arg": "VFIO_TYPE1v2_IOMMU", "expect": "ok"},
        {"call": "mmap", "length": "0x4000", "as": "buf"},
        {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
         "arg": {"flags": MAPF, "vaddr": "buf", "iova": 0, "size": "0x2000"}, "expect": "ok"},
        {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
         "arg": {"flags": MAPF, "vaddr": "buf", "iova": "0x1000", "size": "0x2000"}, "expect": {"errno": "EEXIST"}},
        {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA",
         "arg": {"iova": 0, "size": "0x1000"}, "expect": {"errno": "EINVAL"}},
        {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA",
         "arg": {"iova": 0, "size": "0x4000"}, "expect": {"ret": 0, "out": {"size": "0x2000"}}},
    ]}

IOMMUFD = {
    "vfiospec": 1, "name": "spec-iommufd-copy-attach", "description": "bind, IOAS map/copy, attach, busy destroy",
    "platform": {"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}},
    "steps": [
        {"call": "open", "path": "/dev/iommu", "as": "iommufd"},
        {"call": "open", "path": "/dev/vfio/devices/{dev0.cdev}", "as": "dev0_cdev"},
        {"call": "mmap", "length": "0x2000", "as": "buf"},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_ALLOC", "arg": {"flags": 0}, "save": {"out_ioas_id": "ioas1"}},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_ALLOC", "arg": {"flags": 0}, "save": {"out_ioas_id": "ioas2"}},
        {"call": "ioctl", "fd": "dev0_cdev", "cmd": "VFIO_DEVICE_BIND_IOMMUFD", "arg": {"flags": 0, "iommufd": "iommufd"},
         "save": {"out_devid": "devid_dev0"}},
        {"call": "ioctl", "fd": "dev0_cdev", "cmd": "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "arg": {"flags": 0, "pt_id": "$ioas1"}},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_MAP",
         "arg": {"flags": IOASF, "ioas_id": "$ioas1", "user_va": "buf", "length": "0x1000", "iova": 0}},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_COPY",
         "arg": {"flags": IOASF, "dst_ioas_id": "$ioas2", "src_ioas_id": "$ioas1", "length": "0x1000",
                 "dst_iova": "0x1000", "src_iova": 0}},
        {"call": "open", "path": "/dev/vfio/{g0}", "as": "g0"},
        {"call": "ioctl", "fd": "dev0_cdev", "cmd": "VFIO_DEVICE_BIND_IOMMUFD", "arg": {"flags": 0, "iommufd": "iommufd"}},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_DESTROY", "arg": {"id": "$ioas1"}},
        {"call": "ioctl", "fd": "dev0_cdev", "cmd": "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "arg": {"flags": 0, "pt_id": "$ioas2"}},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_DESTROY", "arg": {"id": "$ioas1"}},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_UNMAP", "arg": {"ioas_id": "$ioas2", "iova": 0, "length": "0x2000"}},
        {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_DESTROY", "arg": {"id": "$devid_dev0"}},
    ]}


def _divergent_type1():
    d = copy.deepcopy(TYPE1)
    d["name"] = "spec-type1-v2-divergent"
    d["steps"][8]["expect"] = {"ret": 0, "out": {"size": "0x1000"}}     # claims a bisecting unmap succeeds
    return d


@pytest.fixture(scope="module")
def reports():
    runs = {"type1": TYPE1, "type1-bad": _divergent_type1(),
            "iommufd-ref": recorded_run(IOMMUFD, "reference")}
    bad = copy.deepcopy(runs["iommufd-ref"])
    bad["name"] = "spec-iommufd-bind-twice"
    bad["steps"][10]["result"] = {"ret": 0, "errno": None}               # a second bind that "succeeds"
    runs["iommufd-bad"] = bad
    with ThreadPoolExecutor(max_workers=2) as ex:
        futs = {k: ex.submit(validate_doc, d) for k, d in runs.items()}
        return {k: f.result() for k, f in futs.items()}, runs


def test_reference_consistent_type1_trace_is_accepted(reports):
    rep = reports[0]["type1"]
    assert rep.accepted, rep.text()
    assert rep.model == "type1" and rep.steps_checked == 7 and rep.skipped == [0, 1, 5]


def test_divergent_trace_is_rejected_naming_the_step(reports):
    rep = reports[0]["type1-bad"]
    assert not rep.accepted and rep.diverged_at == 8
    assert rep.spec_says == ["EINVAL"]
    assert "UnmapDma(size=1) -> EINVAL" in rep.enabled
    assert "UnmapDma(size=2) -> ok [out 2]" in rep.enabled
    assert "step 8 (ioctl VFIO_IOMMU_UNMAP_DMA" in rep.text()


def test_reference_run_is_accepted(reports):
    rep = reports[0]["iommufd-ref"]
    run = reports[1]["iommufd-ref"]
    # the recorded run holds the reference's own answers, not expectations
    assert run["steps"][9]["result"]["errno"] == "EBUSY" and run["steps"][10]["result"]["errno"] == "EINVAL"
    assert run["steps"][11]["result"]["errno"] == "EBUSY"
    assert rep.accepted, rep.text()
    assert rep.steps_checked == 13


def test_divergent_reference_run_is_rejected(reports):
    rep = reports[0]["iommufd-bad"]
    assert not rep.accepted and rep.diverged_at == 10
    assert rep.spec_says == ["EINVAL"]          # already bound (the group open failed)
    assert "Bind(dev='dev0') -> EINVAL" in rep.enabled
    assert "REJECTED spec-iommufd-bind-twice: step 10" in rep.text()


# ---------------------------------------------------------------- sPAPR
DDW = "0x800000000000000"
CREATE = {"page_shift": 12, "window_size": "0x40000000", "levels": 1}


def _spapr(cmd, arg=None, expect="ok", **kw):
    s = {"call": "ioctl", "fd": "container", "cmd": cmd}
    if arg is not None:
        s["arg"] = arg
    return {**s, "expect": expect, **kw}


SPAPR = {
    "vfiospec": 1, "name": "spec-spapr-v2-windows-leak",
    "description": "v2 on pseries: a region unregistered while mapped stays mappable; slot 0 beside a DDW is EPERM",
    "platform": {"kernel": "6.12", "iommu": {"kind": "spapr", "eeh": False}, "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}},
    "steps": [
        {"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
        {"call": "open", "path": "/dev/vfio/{g0}", "as": "g0"},
        {"call": "ioctl", "fd": "g0", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container", "expect": "ok"},
        {"call": "mmap", "length": "0x20000", "as": "buf"},
        _spapr("VFIO_SET_IOMMU", "VFIO_SPAPR_TCE_v2_IOMMU"),
        _spapr("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", {"vaddr": "buf", "size": "0x10000"}, {"errno": "EPERM"}),
        _spapr("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", {"vaddr": "buf", "size": "0x10000"}),
        _spapr("VFIO_IOMMU_MAP_DMA", {"flags": MAPF, "vaddr": "buf", "iova": 0, "size": "0x1000"}),
        _spapr("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", {"vaddr": "buf", "size": "0x10000"}),
        _spapr("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", {"vaddr": "buf", "size": "0x20000"}, {"errno": "EINVAL"}),
        _spapr("VFIO_IOMMU_SPAPR_TCE_CREATE", CREATE, {"ret": 0, "out": {"start_addr": DDW}}, save={"start_addr": "win"}),
        _spapr("VFIO_IOMMU_MAP_DMA", {"flags": MAPF, "vaddr": "buf", "iova": "$win", "size": "0x1000"}),
        _spapr("VFIO_IOMMU_SPAPR_TCE_REMOVE", {"start_addr": 0}),
        _spapr("VFIO_IOMMU_SPAPR_TCE_CREATE", CREATE, {"errno": "EPERM"}),
        _spapr("VFIO_IOMMU_SPAPR_TCE_REMOVE", {"start_addr": "$win"}),
        _spapr("VFIO_IOMMU_SPAPR_TCE_CREATE", CREATE, {"ret": 0, "out": {"start_addr": 0}}),
        _spapr("VFIO_IOMMU_MAP_DMA", {"flags": MAPF, "vaddr": "buf+0x10000", "iova": 0, "size": "0x1000"}, {"errno": "EINVAL"}),
        _spapr("VFIO_IOMMU_UNMAP_DMA", {"iova": DDW, "size": "0x1000"}, {"errno": "ENXIO"}),
    ]}


def _divergent_spapr():
    d = copy.deepcopy(SPAPR)
    d["name"] = "spec-spapr-leaked-unmappable"
    d["steps"][11]["expect"] = {"errno": "EINVAL"}     # claims the leaked region no longer maps
    return d


@pytest.fixture(scope="module")
def spapr_reports():
    shipped = Path(__file__).resolve().parent.parent / "conformance" / "traces"
    runs = {"hand": SPAPR, "bad": _divergent_spapr(), "ref": recorded_run(SPAPR, "reference"),
            "shipped": json.loads((shipped / "generated" / "gen-spapr-s714-d30.json").read_text()),
            "kernel": json.loads((shipped / "spapr-kernel" / "spapr-kernel-tce-create.json").read_text())}
    with ThreadPoolExecutor(max_workers=2) as ex:
        futs = {k: ex.submit(validate_doc, d) for k, d in runs.items()}
        return {k: f.result() for k, f in futs.items()}


def test_spapr_trace_is_accepted(spapr_reports):
    rep = spapr_reports["hand"]
    assert rep.accepted, rep.text()
    assert rep.model == "spapr" and rep.steps_checked == 14 and rep.skipped == [0, 1, 2, 3]


def test_spapr_reference_run_and_shipped_generated_trace_are_accepted(spapr_reports):
    for k in ("ref", "shipped"):
        rep = spapr_reports[k]
        assert rep.accepted and rep.model == "spapr", rep.text()


def test_divergent_spapr_trace_is_rejected_naming_the_step(spapr_reports):
    rep = spapr_reports["bad"]
    assert not rep.accepted and rep.diverged_at == 11
    assert rep.spec_says == ["ok"]
    assert "Map(iova=1) -> ok" in rep.enabled and "CreateWindow() -> ENOSPC" in rep.enabled
    assert "REJECTED spec-spapr-leaked-unmappable: step 11" in rep.text()


def test_spapr_steps_outside_the_model_are_unknown(spapr_reports):
    rep = spapr_reports["kernel"]           # a 64K-page window: the model's windows have 4K pages
    assert not rep.accepted and not rep.complete and rep.diverged_at is None
    assert "step 4 is outside the model: TCE_CREATE" in rep.note


# ---------------------------------------------------------------- model variants
def test_a_trace_is_checked_against_the_first_model_expressing_it():
    """Base first, then its variants: an mtty-2 trace needs mdev_guest (spec/models/mdev
    has mtty-1 only); a one-group type1 trace is expressed by type1 itself."""
    from vfiospec.conformance.run import shipped_traces_dir
    from vfiospec.spec.validate import pick_model, variants_of
    gen = shipped_traces_dir() / "generated"
    assert variants_of("mdev") == ["mdev", "mdev_guest"]
    assert variants_of("iommufd") == ["iommufd"]                  # not the broken iommufd_bind_twice
    docs = {n: json.loads((gen / f"{n}.json").read_text()) for n in
            ("gen-mdev_guest-s720-d30", "gen-mdev-s701-d30", "gen-type1_guest-s716-d30", "gen-type1-s702-d30")}
    assert pick_model("mdev", docs["gen-mdev_guest-s720-d30"]) == "mdev_guest"
    assert pick_model("mdev", docs["gen-mdev-s701-d30"]) == "mdev"
    assert pick_model("type1", docs["gen-type1_guest-s716-d30"]) == "type1"
    assert pick_model("type1", docs["gen-type1-s702-d30"]) == "type1"
    rep = validate_doc(docs["gen-mdev_guest-s720-d30"])
    assert rep.accepted and rep.model == "mdev_guest" and rep.steps_checked == 30, rep.text()
