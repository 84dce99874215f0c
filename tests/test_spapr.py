"""sPAPR TCE backend: what traces cannot express (unreachable checks, state after
a call, locked_vm figures) and the state invariants over every shipped sPAPR
trace and over random call sequences."""

from __future__ import annotations

import bisect

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfiospec.conformance import steps as _steps
from vfiospec.conformance.replay import load_all
from vfiospec.conformance.targets.reference import ReferenceSession
from vfiospec.reference import Kernel
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Vma
from vfiospec.reference.powerpc import iommu_api
from vfiospec.reference.vfio.iommu_spapr_tce import TceContainer

TRACES = Path(__file__).resolve().parent.parent / "conformance" / "traces" / "spapr"
RW = 3
DDW64 = 0x800000000000000


def spapr(**kw):
    p = {"iommu": {"kind": "spapr", "eeh": False}}
    p.update(kw)
    return p


class Proc:
    """One process with a container and group g0 (and g1) set up."""

    def __init__(self, v2=True, platform=None):
        self.k = Kernel(platform or spapr())
        self.c = self.k.open("/dev/vfio/vfio").ret
        self.g = self.k.open("/dev/vfio/0").ret
        assert self.k.ioctl(self.g, "VFIO_GROUP_SET_CONTAINER", self.c).errno is None
        r = self.k.ioctl(self.c, "VFIO_SET_IOMMU", 7 if v2 else 2)
        assert r.errno is None, r.errno

    @property
    def tce(self) -> TceContainer:
        return self.k.files[self.c].container.iommu_data

    def io(self, cmd, **arg):
        from vfiospec.reference import uapi
        st_ = uapi.IOCTLS[cmd].struct
        full = {f.name: ({} if hasattr(f.type, "fields") else 0) for f in st_.fields} if st_ else {}
        full["argsz"] = st_.size if st_ else 0
        full.update(arg)
        return self.k.ioctl(self.c, cmd, full if st_ else None)

    def mmap(self, n, huge=False):
        return self.k.mmap(n, huge).ret


def regions(k):
    return list(iommu_api.mm_iommu(k).mems.values())


# ------------------------------------------------------------------ invariants
def check_invariants(k) -> None:
    """The sPAPR state invariants the z3 model states (module docstrings)."""
    reg = iommu_api.mm_iommu(k)
    mems = sorted(reg.mems.values(), key=lambda m: m.ua)
    for a, b in zip(mems, mems[1:]):
        assert a.end <= b.ua, "registrations identical or disjoint"
    tce_count = {id(m): 0 for m in mems}
    for f in k.files.values():
        c = getattr(getattr(f, "container", None), "iommu_data", None)
        if not isinstance(c, TceContainer):
            continue
        wins = [t for t in c.tables if t is not None]
        assert len(wins) <= k.platform.iommu.max_windows or not wins
        for i, a in enumerate(wins):
            for b in wins[i + 1:]:
                assert a.end <= b.start or b.end <= a.start, "windows disjoint"
        for t in wins:
            for e, tce in t.tces.items():
                iova = e << t.it_page_shift
                assert t.start <= iova < t.end and iova % t.page_size == 0, "TCE inside its window, aligned"
                assert tce.ua % t.page_size == 0
                if c.v2:
                    m = tce.mem
                    assert m is not None and reg.mems.get(m.ua) is m, "v2 TCE maps registered memory"
                    assert m.ua <= tce.ua and tce.ua + t.page_size <= m.end
                    tce_count[id(m)] += 1
                else:
                    assert tce.page is not None and tce.mem is None, "v1 TCE holds a pin"
        for m in c.prereg:
            assert reg.mems.get(m.ua) is m, "a container's registration is in the mm"
    for m in mems:
        assert m.mapped == 1 + tce_count[id(m)], "mapped counts the TCEs into the region"
        assert m.used >= 1, "a listed region has a reference (possibly leaked)"
    assert k.mm.locked_vm >= 0


@pytest.mark.parametrize("path", sorted(TRACES.glob("*.json")), ids=lambda p: p.stem)
def test_invariants_hold_after_every_step_of_the_shipped_traces(path):
    (trace,) = load_all([path])
    s = ReferenceSession(trace.platform)
    saved = {}
    for step in trace.steps:
        obs = s.perform(_steps.normalize(step, saved))
        for fld, name in step.get("save", {}).items():
            if obs.errno is None:
                saved[name] = obs.ret if fld == "ret" else obs.out.get(fld)
        check_invariants(s.kernel)
    s.close()
    check_invariants(s.kernel)


# ------------------------------------------------------------------ unreachable checks
def test_SPAPR_NO_GROUP():
    p = Proc(v2=True)
    t = p.tce
    grp = t.group_list[0]
    t.detach_group(grp)          # the backend alone, as the container never leaves it
    for cmd, arg in (("VFIO_IOMMU_SPAPR_TCE_GET_INFO", {"argsz": 32}),
                     ("VFIO_IOMMU_SPAPR_TCE_CREATE", {"argsz": 40, "page_shift": 16, "window_size": 1 << 30, "levels": 1}),
                     ("VFIO_IOMMU_SPAPR_TCE_REMOVE", {"argsz": 16, "start_addr": 0})):
        with pytest.raises(Errno) as e:
            t.ioctl(cmd, arg)
        assert (e.value.name, e.value.req) == ("ENXIO", "SPAPR-NO-GROUP")
    v1 = Proc(v2=False).tce
    v1.detach_group(v1.group_list[0])
    with pytest.raises(Errno) as e:
        v1.ioctl("VFIO_IOMMU_ENABLE", None)
    assert (e.value.name, e.value.req) == ("ENODEV", "SPAPR-NO-GROUP")


def test_SPAPR_MM_OWNER():
    p = Proc(v2=True)
    buf = p.mmap(0x10000)
    assert p.tce.mm is None
    assert p.io("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", vaddr=buf, size=0x10000).ret == 0
    assert p.tce.mm is p.k.mm
    p.tce.mm = iommu_api  # any other mm object
    r = p.io("VFIO_IOMMU_SPAPR_TCE_GET_INFO")
    assert r.errno == "EPERM" and "SPAPR-MM-OWNER" in r.reqs
    assert p.k.ioctl(p.c, "VFIO_CHECK_EXTENSION", 7).ret == 1


def test_SPAPR_ATTACH_SAME_GROUP_and_INCOMPATIBLE():
    p = Proc(v2=True, platform=spapr(groups={"g0": {"devices": {"dev0": "vfio-pci"}},
                                             "g1": {"devices": {"dev1": "vfio-pci"}}}))
    t = p.tce
    g0 = t.group_list[0]
    with pytest.raises(Errno) as e:
        t.attach_group(g0)
    assert (e.value.name, e.value.req) == ("EBUSY", "SPAPR-ATTACH-SAME-GROUP")
    from vfiospec.reference.powerpc import iommu as ppc
    from vfiospec.reference.vfio.group import groups
    g1 = groups(p.k)[1]
    ppc.table_group(p.k, g1).ops = "powernv-ioda2"
    g1f = p.k.open("/dev/vfio/1").ret
    r = p.k.ioctl(g1f, "VFIO_GROUP_SET_CONTAINER", p.c)
    assert r.errno == "EPERM" and "SPAPR-ATTACH-INCOMPATIBLE" in r.reqs
    assert g1.owner is None, "the failed attach released the DMA ownership"


# ------------------------------------------------------------------ state after calls
def test_SPAPR_PREREG_UNREGISTER_MAPPED_state():
    p = Proc(v2=True, platform=spapr(process={"caps": [], "rlimit_memlock": 1 << 30}))
    buf = p.mmap(0x100000)
    assert p.io("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", vaddr=buf, size=0x100000).ret == 0
    base = p.k.mm.locked_vm
    assert base == 256 + 0                # 1 MiB of 4K pages, no window table yet
    assert p.io("VFIO_IOMMU_MAP_DMA", flags=RW, vaddr=buf, iova=0, size=0x10000).ret == 0
    (m,) = regions(p.k)
    assert (m.used, m.mapped, m.tces) == (1, 17, 16)
    r = p.io("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", vaddr=buf, size=0x100000)
    assert r.ret == 0 and "SPAPR-PREREG-UNREGISTER-MAPPED" in r.reqs
    assert regions(p.k) == [m] and (m.used, m.mapped) == (1, 17), "a registration with live mappings stays"
    assert p.tce.prereg == [], "the container's reference is gone"
    assert p.io("VFIO_IOMMU_UNMAP_DMA", iova=0, size=0x10000).ret == 0
    assert (m.used, m.mapped) == (1, 1) and regions(p.k) == [m], "leaked: nobody holds the reference"
    locked = p.k.mm.locked_vm
    p.k.close_all()
    assert regions(p.k) == [m], "still listed at exit (the kernel's mmu_context.c WARN)"
    assert p.k.mm.locked_vm == 256, f"only the leaked region stays charged, got {locked} -> {p.k.mm.locked_vm}"


def test_SPAPR_PREREG_ACCOUNTING_and_SHARED():
    k = Kernel(spapr(groups={"g0": {"devices": {"dev0": "vfio-pci"}}, "g1": {"devices": {"dev1": "vfio-pci"}}}))
    cs = []
    for n in (0, 1):
        c = k.open("/dev/vfio/vfio").ret
        g = k.open(f"/dev/vfio/{n}").ret
        k.ioctl(g, "VFIO_GROUP_SET_CONTAINER", c)
        k.ioctl(c, "VFIO_SET_IOMMU", 7)
        cs.append(c)
    buf = k.mmap(0x200000).ret
    arg = {"argsz": 24, "flags": 0, "vaddr": buf, "size": 0x200000}
    assert k.ioctl(cs[0], "VFIO_IOMMU_SPAPR_REGISTER_MEMORY", arg).ret == 0
    assert k.mm.locked_vm == 512
    assert k.ioctl(cs[1], "VFIO_IOMMU_SPAPR_REGISTER_MEMORY", arg).ret == 0
    assert k.mm.locked_vm == 512, "shared: charged once"
    (m,) = regions(k)
    assert m.used == 2
    assert k.ioctl(cs[0], "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", arg).ret == 0
    assert k.mm.locked_vm == 512 and m.used == 1
    assert k.ioctl(cs[1], "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", arg).ret == 0
    assert k.mm.locked_vm == 0 and regions(k) == []


def test_SPAPR_PREREG_PARTIAL_PIN_undoes_everything():
    p = Proc(v2=True)
    buf = p.mmap(0x4000)
    r = p.io("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", vaddr=buf + 0x2000, size=0x4000)
    assert r.errno is None and r.ret == 2 and "SPAPR-PREREG-PARTIAL-PIN" in r.reqs
    assert regions(p.k) == [] and p.k.mm.locked_vm == 0 and not p.tce.enabled


def test_SPAPR_V1_ENABLE_ACCOUNTING_figures():
    p = Proc(v2=False)
    buf = p.mmap(0x10000)
    assert p.io("VFIO_IOMMU_ENABLE").ret == 0
    assert p.k.mm.locked_vm == (1 << 30) >> 12
    assert p.io("VFIO_IOMMU_MAP_DMA", flags=RW, vaddr=buf, iova=0, size=0x10000).ret == 0
    assert p.k.mm.locked_vm == ((1 << 30) >> 12) + (((1 << 30) >> 9) >> 12), "default window's table charged at MAP"
    t = p.tce.tables[0]
    assert len(t.tces) == 16 and all(x.page == x.ua for x in t.tces.values()), "one pin per TCE (SPAPR-V1-MAP-PINS)"
    assert p.io("VFIO_IOMMU_DISABLE").ret == 0
    assert p.k.mm.locked_vm == 512 and len(t.tces) == 16, "DISABLE keeps TCEs and the table"
    p.k.close_all()
    assert p.k.mm.locked_vm == 0


def test_SPAPR_V1_ENABLE_ACCOUNTING_64k_kernel():
    p = Proc(v2=False, platform=spapr(process={"page_size": 65536}))
    assert p.io("VFIO_IOMMU_ENABLE").ret == 0
    assert p.k.mm.locked_vm == (1 << 30) >> 16


def test_SPAPR_TCE_CREATE_FAILED_KEEPS_CHARGE_figures():
    p = Proc(v2=True)
    assert p.io("VFIO_IOMMU_SPAPR_TCE_REMOVE", start_addr=0).ret == 0
    r = p.io("VFIO_IOMMU_SPAPR_TCE_CREATE", page_shift=12, window_size=0x3F000000, levels=1)
    assert r.errno == "EINVAL" and "SPAPR-TCE-CREATE-FAILED-KEEPS-CHARGE" in r.reqs
    assert p.k.mm.locked_vm == (0x3F000000 >> 9) >> 12
    assert p.tce.tables == [None, None]


def test_SPAPR_TCE_REMOVE_clears_and_uncharges():
    p = Proc(v2=True)
    buf = p.mmap(0x200000, huge=True)
    assert p.io("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", vaddr=buf, size=0x200000).ret == 0
    r = p.io("VFIO_IOMMU_SPAPR_TCE_CREATE", page_shift=16, window_size=1 << 30, levels=1)
    assert r.out["start_addr"] == DDW64
    assert p.io("VFIO_IOMMU_MAP_DMA", flags=RW, vaddr=buf, iova=DDW64, size=0x200000).ret == 0
    (m,) = regions(p.k)
    assert m.mapped == 1 + 32
    before = p.k.mm.locked_vm
    assert p.io("VFIO_IOMMU_SPAPR_TCE_REMOVE", start_addr=DDW64 + 0x10000).ret == 0
    assert m.mapped == 1
    assert before - p.k.mm.locked_vm == ((1 << 30) >> 13) >> 12


def test_SPAPR_MAP_PAGE_SIZE_eperm_when_pageshift_outgrows_pages():
    """mm_iommu_do_alloc keeps the huge shift for normal pages after huge ones;
    tce_page_is_contained then refuses a 64K IOMMU page over 4K pages (EPERM)."""
    p = Proc(v2=True)
    base = 0x7F4000000000
    for start, huge in ((base, True), (base + 0x200000, False)):   # contiguous, unlike mmap's
        p.k.mm.vmas[start] = Vma(start, 0x200000, hugepage=huge)
        if hasattr(p.k.mm, "starts"):
            bisect.insort(p.k.mm.starts, start)
    assert p.io("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", vaddr=base, size=0x400000).ret == 0
    (m,) = regions(p.k)
    assert m.pageshift == 21
    start = p.io("VFIO_IOMMU_SPAPR_TCE_CREATE", page_shift=16, window_size=1 << 30, levels=1).out["start_addr"]
    assert p.io("VFIO_IOMMU_MAP_DMA", flags=RW, vaddr=base, iova=start, size=0x10000).ret == 0
    r = p.io("VFIO_IOMMU_MAP_DMA", flags=RW, vaddr=base + 0x200000, iova=start + 0x10000, size=0x10000)
    assert r.errno == "EPERM" and "SPAPR-MAP-PAGE-SIZE" in r.reqs


def test_SPAPR_V2_MAP_PREREG_ONLY_nothing_left_on_failure():
    p = Proc(v2=True)
    buf = p.mmap(0x20000)
    assert p.io("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", vaddr=buf, size=0x10000).ret == 0
    r = p.io("VFIO_IOMMU_MAP_DMA", flags=RW, vaddr=buf, iova=0, size=0x20000)
    assert r.errno == "EINVAL"
    assert p.tce.tables[0].tces == {}
    (m,) = regions(p.k)
    assert m.mapped == 1


def test_EEH_PE_OP_state_per_group():
    from vfiospec.reference.vfio import vfio_spapr_eeh as eeh
    p = Proc(v2=True, platform={"iommu": {"kind": "spapr", "eeh": True}})
    arg = lambda op, **kw: {"argsz": 40, "flags": 0, "op": op, "err": kw or {"type": 0, "func": 0, "addr": 0, "mask": 0}}
    assert p.k.ioctl(p.c, "VFIO_EEH_PE_OP", arg(9, type=0, func=1, addr=0, mask=0)).ret == 0
    pe = p.k.objects["eeh_pe"][0]
    assert (pe.mmio_enabled, pe.dma_enabled) == (False, False)
    assert p.k.ioctl(p.c, "VFIO_EEH_PE_OP", arg(6)).ret == 0
    assert pe.reset_active and pe.cfg_blocked
    assert p.k.ioctl(p.c, "VFIO_EEH_PE_OP", arg(4)).ret == eeh.C["VFIO_EEH_PE_STATE_RESET"]


# ------------------------------------------------------------------ random sequences
OPS = st.sampled_from(["reg", "unreg", "map", "unmap", "create", "remove", "close"])


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(OPS, st.integers(0, 3), st.integers(0, 7), st.integers(1, 4), st.sampled_from([12, 16, 21])),
                max_size=25))
def test_invariants_hold_under_random_v2_sequences(ops):
    p = Proc(v2=True, platform=spapr(process={"page_size": 4096}))
    bufs = [p.mmap(0x400000, huge=bool(i % 2)) for i in range(2)]
    starts = [0, DDW64]
    for op, b, off, n, shift in ops:
        ua = bufs[b % 2] + off * 0x10000
        if op == "reg":
            p.io("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", vaddr=ua, size=n * 0x80000)
        elif op == "unreg":
            p.io("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", vaddr=ua, size=n * 0x80000)
        elif op == "map":
            p.io("VFIO_IOMMU_MAP_DMA", flags=RW, vaddr=ua, iova=starts[b % 2] + off * 0x10000, size=n * 0x10000)
        elif op == "unmap":
            p.io("VFIO_IOMMU_UNMAP_DMA", iova=starts[b % 2] + off * 0x10000, size=n * 0x10000)
        elif op == "create":
            p.io("VFIO_IOMMU_SPAPR_TCE_CREATE", page_shift=shift, window_size=1 << (26 + n), levels=1)
        elif op == "remove":
            p.io("VFIO_IOMMU_SPAPR_TCE_REMOVE", start_addr=starts[b % 2])
        elif op == "close" and b == 0:
            p.k.close_all()
            check_invariants(p.k)
            return
        check_invariants(p.k)
