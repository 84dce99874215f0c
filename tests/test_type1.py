"""The type1 backend (reference/vfio/iommu_type1.py): what traces cannot express —
exact locked_vm figures, rb-tree shapes, CAP_IPC_LOCK captured at MAP time, a vendor
driver that does not unpin, and the cost of MAP/UNMAP as mappings pile up."""

from __future__ import annotations

import time

import pytest

from vfiospec.reference import Kernel, uapi
from vfiospec.reference.vfio.iommu_type1 import KernelOops, Type1

C = uapi.CONSTANTS
RW = C["VFIO_DMA_MAP_FLAG_READ"] | C["VFIO_DMA_MAP_FLAG_WRITE"]
LAST = (1 << 64) - 4096
UUID = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
MTTY = {"mtty": {"types": {"mtty-1": {"available_instances": 24}}}}


def arg(cmd: str, **fields) -> dict:
    st = uapi.IOCTLS[cmd].struct
    out = {f.name: 0 for f in st.fields}
    out["argsz"] = st.size
    out.update(fields)
    return out


class Proc:
    """One simulated process with a type1 container."""

    def __init__(self, platform=None, iommu="VFIO_TYPE1v2_IOMMU", groups=("g0",), mdev=False):
        self.k = Kernel(platform or {})
        self.container = self.k.open("/dev/vfio/vfio").ret
        self.groups = {}
        if mdev:
            r = self.k.sysfs_write("/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-1/create", UUID)
            assert r.errno is None, r
            self.k.name_mdev("m0", UUID)
            self.mdev = self.k.devices["m0"]
            self._add_group("m0", self.mdev.group.number)
        for g in groups:
            self._add_group(g, self.k.platform.groups[g].number)
        assert self.ioctl("VFIO_SET_IOMMU", C[iommu]).errno is None

    def _add_group(self, name, number):
        fd = self.k.open(f"/dev/vfio/{number}").ret
        assert self.k.ioctl(fd, "VFIO_GROUP_SET_CONTAINER", self.container).errno is None
        self.groups[name] = fd

    @property
    def t1(self) -> Type1:
        return self.k.files[self.container].container.iommu_data

    def ioctl(self, cmd, a):
        return self.k.ioctl(self.container, cmd, a)

    def map(self, iova, size, vaddr, flags=RW):
        return self.ioctl("VFIO_IOMMU_MAP_DMA", arg("VFIO_IOMMU_MAP_DMA", flags=flags, iova=iova, size=size, vaddr=vaddr))

    def unmap(self, iova, size, flags=0):
        return self.ioctl("VFIO_IOMMU_UNMAP_DMA", arg("VFIO_IOMMU_UNMAP_DMA", flags=flags, iova=iova, size=size))


def test_TYPE1_MAP_PIN_ACCOUNT_locked_vm_figures():
    p = Proc()
    buf = p.k.mmap(16 * 4096).ret
    assert p.map(0, 16 * 4096, buf).errno is None
    assert p.k.mm.locked_vm == 16
    assert p.map(1 << 20, 16 * 4096, buf).errno is None           # same memory, counted again
    assert p.k.mm.locked_vm == 32
    assert p.unmap(0, 16 * 4096).out["size"] == 16 * 4096
    assert p.k.mm.locked_vm == 16


def test_TYPE1_RELEASE_UNACCOUNTS_on_last_group():
    p = Proc()
    buf = p.k.mmap(8 * 4096).ret
    p.map(0, 8 * 4096, buf)
    p.map(1 << 20, 4 * 4096, buf)
    assert p.k.mm.locked_vm == 12
    assert p.k.ioctl(p.groups["g0"], "VFIO_GROUP_UNSET_CONTAINER", None).errno is None
    assert p.k.mm.locked_vm == 0


def test_TYPE1_MAP_RLIMIT_MEMLOCK_cap_captured_at_map_time():
    """dma->lock_cap is captured at MAP: a deferred pin of a mapping made with
    CAP_IPC_LOCK ignores the limit after the capability is gone; a mapping made
    without it does not."""
    p = Proc({"mdev_parents": MTTY, "process": {"caps": ["CAP_IPC_LOCK"], "rlimit_memlock": 4096}},
             groups=(), mdev=True)
    buf = p.k.mmap(4 * 4096).ret
    assert p.map(0, 4 * 4096, buf).errno is None
    dfd = p.k.ioctl(p.groups["m0"], "VFIO_GROUP_GET_DEVICE_FD", UUID)
    assert dfd.errno is None
    p.k.platform.caps = frozenset()
    assert p.t1.pin_pages(p.mdev, 0, 3, 3) == 3
    assert p.k.mm.locked_vm == 3
    assert p.map(1 << 20, 2 * 4096, buf).errno is None
    r = p.k.kapi("vfio_pin_pages", {"device": "m0", "iova": 1 << 20, "npage": 1, "prot": 3})
    assert r.errno == "ENOMEM"
    assert p.k.mm.locked_vm == 3
    p.t1.unpin_pages(p.mdev, 0, 3)
    assert p.k.mm.locked_vm == 0


def test_TYPE1_ATTACH_REPLAY_does_not_count_mdev_pins_twice():
    """vfio_pin_pages_remote skips pages with a vfio_pfn; reaccount keeps only them."""
    p = Proc({"mdev_parents": MTTY}, groups=(), mdev=True)
    buf = p.k.mmap(8 * 4096).ret
    p.map(0, 8 * 4096, buf)
    assert p.k.ioctl(p.groups["m0"], "VFIO_GROUP_GET_DEVICE_FD", UUID).errno is None
    assert p.t1.pin_pages(p.mdev, 4096, 2, 1) == 2
    assert p.k.mm.locked_vm == 2
    g0 = p.k.open(f"/dev/vfio/{p.k.platform.groups['g0'].number}").ret
    assert p.k.ioctl(g0, "VFIO_GROUP_SET_CONTAINER", p.container).errno is None
    assert p.k.mm.locked_vm == 8
    assert p.k.ioctl(g0, "VFIO_GROUP_UNSET_CONTAINER", None).errno is None   # reaccount
    assert p.k.mm.locked_vm == 2
    assert p.t1.iova_list == [[0, (1 << 64) - 1]]
    p.t1.unpin_pages(p.mdev, 4096, 2)
    assert p.k.mm.locked_vm == 0


@pytest.mark.parametrize("order", ["last-first", "last-second", "many"])
def test_TYPE1_MAP_LAST_PAGE_MDEV_any_tree_shape(order):
    """Whatever the position of the last-page mapping among the others, every unmap
    finds its mapping (6.12's wrapped end made the search miss it)."""
    p = Proc({"mdev_parents": MTTY}, groups=(), mdev=True)
    buf = p.k.mmap(4096).ret
    iovas = [LAST, 0] if order == "last-first" else [0, LAST] if order == "last-second" else \
        [LAST] + [i * 4096 for i in range(64)] + [LAST - 4096 * (i + 2) for i in range(64)]
    for iova in iovas:
        assert p.map(iova, 4096, buf).errno is None
    assert p.map(LAST, 4096, buf).errno == "EEXIST"
    for iova in reversed(iovas):
        r = p.unmap(iova, 4096)
        assert (r.errno, r.out["size"]) == (None, 4096)
    assert not p.t1.dmas and not p.t1.starts


class _StubbornOps:
    """A vendor driver whose dma_unmap does not unpin."""

    def __init__(self):
        self.calls = []

    def dma_unmap(self, iova, length):
        self.calls.append((iova, length))


def test_TYPE1_UNMAP_NOTIFY_PINNED_driver_that_keeps_pins_oopses():
    p = Proc({"mdev_parents": MTTY}, groups=(), mdev=True)
    buf = p.k.mmap(4096).ret
    p.map(0, 4096, buf)
    assert p.k.ioctl(p.groups["m0"], "VFIO_GROUP_GET_DEVICE_FD", UUID).errno is None
    stub = _StubbornOps()
    p.mdev.ops = stub
    assert p.t1.pin_pages(p.mdev, 0, 1, 1) == 1
    with pytest.raises(KernelOops):
        p.t1.do_unmap(0, 0, 4096)
    assert len(stub.calls) == 11                    # the first try and 10 retries
    assert stub.calls[0] == (0, 4096)


def test_TYPE1_UNMAP_VADDR_ROLLBACK_restores_marks():
    p = Proc()
    buf = p.k.mmap(3 * 4096).ret
    for i in range(3):
        p.map(i * 4096, 4096, buf + i * 4096)
    assert p.unmap(2 * 4096, 4096, C["VFIO_DMA_UNMAP_FLAG_VADDR"]).out["size"] == 4096
    r = p.unmap(0, 3 * 4096, C["VFIO_DMA_UNMAP_FLAG_VADDR"])
    assert r.errno == "EINVAL" and not r.out
    assert [p.t1.dmas[i * 4096].vaddr_invalid for i in range(3)] == [False, False, True]
    assert p.t1.vaddr_invalid_count == 1


def test_TYPE1_UNMAP_failure_writes_nothing_back():
    p = Proc()
    r = p.unmap(0x800, 4096)
    assert r.errno == "EINVAL" and r.out == {}


def test_TYPE1_V1_UNMAP_OFFSET_ZERO_keeps_later_mappings():
    p = Proc(iommu="VFIO_TYPE1_IOMMU")
    buf = p.k.mmap(2 * 4096).ret
    p.map(0, 2 * 4096, buf)
    p.map(2 * 4096, 4096, buf)
    assert p.unmap(4096, 2 * 4096).out["size"] == 0
    assert sorted(p.t1.dmas) == [0, 2 * 4096]


def _cost(n: int, own_buffers: bool, reps: int = 300) -> float:
    """Seconds per MAP+UNMAP pair with n live mappings (each of its own buffer, or all
    of one buffer)."""
    p = Proc({"params": {"dma_entry_limit": 65535}})
    one = p.k.mmap(4096).ret
    for i in range(n):
        buf = p.k.mmap(4096).ret if own_buffers else one
        assert p.map(i * 2 * 4096, 4096, buf).errno is None
    base = (n + 1) * 2 * 4096
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for j in range(reps):
            iova = base if j % 2 else 4096            # a hole at the end, a hole at the start
            p.map(iova, 4096, one)
            p.unmap(iova, 4096)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


@pytest.mark.parametrize("own_buffers", [False, True])
def test_TYPE1_MAP_cost_does_not_grow_with_mappings(own_buffers):
    """MAP/UNMAP look mappings (and the user memory behind them) up by bisection:
    10 -> 10,000 live mappings must not make a call more than a few times slower
    (a scan per call would be ~1000x)."""
    small, large = _cost(10, own_buffers), _cost(10_000, own_buffers)
    assert large < small * 8, (small, large)


def test_TYPE1_DIRTY_PAGES_START_bitmap_too_large():
    """vfio_dma_bitmap_alloc refuses more than DIRTY_BITMAP_PAGES_MAX (INT_MAX) pages:
    a map made while tracking fails with EINVAL and is removed; START with such a
    mapping fails too."""
    p = Proc({"iommu": {"aperture": ["0x0", "0xffffffffffff"]}})
    big = (1 << 31) * 4096
    buf = p.k.mmap(big).ret
    dp = lambda flag: p.ioctl("VFIO_IOMMU_DIRTY_PAGES", arg("VFIO_IOMMU_DIRTY_PAGES", flags=C[flag]))
    base = 1 << 44                                   # above the MSI window
    assert dp("VFIO_IOMMU_DIRTY_PAGES_FLAG_START").errno is None
    r = p.map(base, big, buf)
    assert r.errno == "EINVAL" and "TYPE1-DIRTY-PAGES-START" in r.reqs
    assert not p.t1.dmas and p.k.mm.locked_vm == 0 and p.t1.dma_avail == 65535
    assert p.map(base, big - 4096, buf).errno is None
    assert dp("VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP").errno is None
    assert p.unmap(base, big).out["size"] == big - 4096
    assert p.map(base, big, buf).errno is None
    assert dp("VFIO_IOMMU_DIRTY_PAGES_FLAG_START").errno == "EINVAL"


def test_TYPE1_MAP_VADDR_UNMAPPED_covered_agrees_with_mm():
    """The backend's bisecting view of the user memory gives kernel.mm.covered's answer
    through mmaps and munmaps (deterministic pseudo-random walk)."""
    import random
    rnd = random.Random(1)
    p = Proc()
    bufs = []
    for step in range(400):
        if bufs and rnd.random() < 0.3:
            b = bufs.pop(rnd.randrange(len(bufs)))
            p.k.munmap(b)
        else:
            bufs.append(p.k.mmap(4096 * rnd.randint(1, 4)).ret)
        base = p.k.mm.BASE + 4096 * rnd.randint(0, 400)
        length = 4096 * rnd.randint(1, 8)
        assert p.t1._covered(base, length) == p.k.mm.covered(base, length), step
