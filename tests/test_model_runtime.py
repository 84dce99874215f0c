"""Runtime checking: every invariant evaluated on the states the reference reaches
when it replays the shipped traces (conformance/traces/**), with the same z3
formulas the prover uses (vfiospec.model.runtime.check_state).

The default suite covers the type1, cdev, mdev and vfio-core traces; the sPAPR,
iommufd and compat traces (larger states, slower to compile) are the slow lane.
Violations the real kernel itself shows are listed in KNOWN with the reason."""

from __future__ import annotations

import dataclasses
import glob
import os

import pytest

from vfiospec.conformance import steps as S
from vfiospec.conformance.targets.reference import ReferenceSession
from vfiospec.conformance.trace import load_trace
from vfiospec.model import runtime
from vfiospec.reference import Kernel
from vfiospec.reference.state import State, snapshot

ROOT = os.path.join(os.path.dirname(__file__), "..", "conformance", "traces")

# (trace name, invariant): why the kernel's own state breaks it
KNOWN = {
    ("spapr-ddw-unsupported", "INV-ACCOUNTING-EQUALS-PINNED"):
        "tce_iommu_create_table charges locked_vm before the platform's create_table fails and never "
        "un-charges it (SPAPR-TCE-CREATE-FAILED-KEEPS-CHARGE): locked_vm exceeds what is pinned",
}


def _states(dirs):
    out = []
    for d in dirs:
        for p in sorted(glob.glob(os.path.join(ROOT, d, "*.json"))):
            t = load_trace(p)
            sess = ReferenceSession(t.platform)
            saved = {}
            leaked = False
            for i, st in enumerate(t.steps):
                try:
                    obs = sess.perform(S.normalize(st, saved))
                except Exception:
                    continue
                if obs.errno is None:
                    for fld, name in st.get("save", {}).items():
                        cur = obs.ret if fld == "ret" else obs.out
                        if fld != "ret":
                            for q in fld.split("."):
                                cur = cur.get(q) if isinstance(cur, dict) else None
                        saved[name] = cur
                leaked = leaked or "SPAPR-TCE-CREATE-FAILED-KEEPS-CHARGE" in obs.reqs
                out.append((t.name, i, sess.state(), leaked))
            sess.close()
    return out


def _check(dirs):
    states = _states(dirs)
    assert states
    results = runtime.check_states([s for _, _, s, _ in states])
    bad = []
    for (name, i, _, leaked), vs in zip(states, results):
        for v in vs:
            if leaked and v.invariant == "INV-ACCOUNTING-EQUALS-PINNED":
                continue        # the kernel's own leak, see KNOWN
            if (name, v.invariant) not in KNOWN:
                bad.append(f"{name} step {i}: {v}")
    assert not bad, "\n".join(bad[:20])
    return len(states)


def test_runtime_check_default_traces():
    assert _check(["type1", "cdev", "vfio-core"]) > 500


@pytest.mark.slow
def test_runtime_check_all_traces():
    _check(["mdev", "spapr", "spapr-kernel", "iommufd", "compat"])


def test_snapshot_of_fresh_kernel_is_empty_and_valid():
    st = snapshot(Kernel(None))
    assert isinstance(st, State)
    assert st.type1 == () and st.areas == () and st.windows == () and st.registrations == ()
    assert [d.name for d in st.devices] == ["dev0"]
    assert runtime.check_state(st) == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.locked_vm = 1


def _bound_state():
    sess = ReferenceSession({"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}},
                             "process": {"caps": [], "rlimit_memlock": 1 << 20}})
    for st in [{"call": "mmap", "length": 0x4000, "as": "buf"},
               {"call": "open", "path": "/dev/iommu", "as": "ictx"},
               {"call": "open", "path": "/dev/vfio/devices/{dev0.cdev}", "as": "cdev"},
               {"call": "ioctl", "fd": "cdev", "cmd": "VFIO_DEVICE_BIND_IOMMUFD", "arg": {"iommufd": "ictx"}},
               {"call": "ioctl", "fd": "ictx", "cmd": "IOMMU_IOAS_ALLOC", "arg": {}},
               {"call": "ioctl", "fd": "cdev", "cmd": "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "arg": {"pt_id": 2}},
               {"call": "ioctl", "fd": "ictx", "cmd": "IOMMU_IOAS_MAP",
                "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_READABLE"], "ioas_id": 2,
                        "user_va": "buf", "length": 0x4000, "iova": 0}}]:
        obs = sess.perform(S.normalize(st, {}))
        assert obs.errno is None, (st, obs.errno)
    return sess.state()


def test_runtime_check_catches_broken_states():
    st = _bound_state()
    assert st.devices[0].cdev_bound and st.areas and sum(st.iopt_pages[0].pinned) == 4
    assert runtime.check_state(st) == []
    ids = lambda s: {v.invariant for v in runtime.check_state(s)}   # noqa: E731
    assert "INV-ACCOUNTING-EQUALS-PINNED" in ids(dataclasses.replace(st, user_locked_vm=st.user_locked_vm + 1))
    p = st.iopt_pages[0]
    twice = dataclasses.replace(p, pinned=(2,) + p.pinned[1:])
    assert "INV-SINGLE-PIN-PER-PAGE" in ids(dataclasses.replace(st, iopt_pages=(twice,)))
    open_group = dataclasses.replace(st, groups=(dataclasses.replace(st.groups[0], open=True),))
    assert "INV-PATH-EXCLUSIVE" in ids(open_group)
    overlap = dataclasses.replace(st, areas=st.areas + (dataclasses.replace(st.areas[0], iova=0x1000),))
    assert "INV-AREAS-DISJOINT" in ids(overlap)
    low = dataclasses.replace(st, rlimit_pages=2)
    assert "INV-LOCKED-WITHIN-LIMIT" in ids(low)


def test_compiled_and_exact_evaluation_agree():
    st = _bound_state()
    for s in (st, dataclasses.replace(st, pinned_vm=0)):
        cfg, v = runtime.valuation(s)
        assert {x.invariant for x in runtime.check_values(cfg, v)} == \
            {x.invariant for x in runtime.check_values(cfg, v, exact=True)}
