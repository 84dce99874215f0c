"""IOMMUFD reference behaviour that traces cannot express: bytes past the struct
(E2BIG), the accounting counters, pin counts, the in-kernel access API, and
properties of the IOVA the kernel picks."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfiospec.conformance import steps as S
from vfiospec.reference import Kernel
from vfiospec.reference.errors import Errno
from vfiospec.reference.iommufd import device, vfio_compat
from vfiospec.reference.iommufd.io_pagetable import ULONG_MAX

PAGE = 0x1000
NOCAP = {"process": {"caps": [], "rlimit_memlock": "0x100000"}}
TWO = {"process": {"caps": [], "rlimit_memlock": "0x100000"},
       "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}, "g1": {"devices": {"dev1": "vfio-pci"}}}}
FRW = ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_READABLE", "IOMMU_IOAS_MAP_WRITEABLE"]


class Proc:
    """A kernel and a /dev/iommu fd, with ioctls in trace words."""

    def __init__(self, platform=None, path="/dev/iommu"):
        self.k = Kernel(platform or {})
        self.fd = self.k.open(path).ret
        self.ictx = self.k.files[self.fd].ictx

    def io(self, cmd, arg=None, fd=None, **extra):
        s = S.normalize({"call": "ioctl", "fd": "x", "cmd": cmd, "arg": arg or {}}, {})
        a = dict(s["arg"])
        a.update(extra)
        return self.k.ioctl(self.fd if fd is None else fd, cmd, a)

    def ioas(self):
        return self.io("IOMMU_IOAS_ALLOC").out["out_ioas_id"]

    def map(self, ioas, iova, length, va):
        return self.io("IOMMU_IOAS_MAP", {"ioas_id": ioas, "flags": FRW, "user_va": va, "length": length, "iova": iova})

    def bind_attach(self, name, pt):
        idev = device.iommufd_device_bind(self.ictx, self.k.devices[name])
        return idev, device.iommufd_device_attach(idev, pt)


def test_IOMMUFD_IOCTL_SIZE_TAIL():
    p = Proc()
    assert p.io("IOMMU_IOAS_ALLOC", {"size": 64}, __tail__=bytes(52)).errno is None
    r = p.io("IOMMU_IOAS_ALLOC", {"size": 64}, __tail__=bytes(51) + b"\x01")
    assert r.errno == "E2BIG" and "IOMMUFD-IOCTL-SIZE-TAIL" in r.reqs
    # a non-zero tail with the exact size is not looked at
    assert p.io("IOMMU_IOAS_ALLOC", {"size": 12}, __tail__=b"\x01").errno is None


def test_IOMMUFD_IOCTL_SIZE_SHORT_fields_past_size_read_as_zero():
    p = Proc()
    a = p.ioas()
    buf = p.k.mmap(PAGE).ret
    # size ends before iova: iova reads as 0 even though the caller passed one
    r = p.io("IOMMU_IOAS_MAP", {"size": 32, "ioas_id": a, "flags": FRW, "user_va": buf, "length": PAGE, "iova": 0x5000})
    assert r.errno == "EINVAL"
    r = p.io("IOMMU_HWPT_ALLOC", {"size": 24, "dev_id": 1, "pt_id": a, "data_len": 8})
    assert r.errno == "ENOENT"          # data_len past size is zero: no EINVAL for it


def test_IOMMUFD_PIN_ONCE():
    p = Proc(TWO)
    a, b = p.ioas(), p.ioas()
    p.bind_attach("dev0", a)
    idev1 = device.iommufd_device_bind(p.ictx, p.k.devices["dev1"])
    p.io("IOMMU_HWPT_ALLOC", {"dev_id": idev1.obj_id, "pt_id": a})
    device.iommufd_device_attach(idev1, b)
    buf = p.k.mmap(0x40000).ret
    assert p.map(a, 0x100000, 0x40000, buf).errno is None
    assert p.k.user_locked_vm == 64 and p.k.mm.pinned_vm == 64
    assert len(p.ictx.objects[a].iopt.domains) == 2
    r = p.io("IOMMU_IOAS_COPY", {"flags": FRW, "dst_ioas_id": b, "src_ioas_id": a, "length": 0x40000,
                                 "dst_iova": 0x100000, "src_iova": 0x100000})
    assert r.errno is None
    assert p.k.user_locked_vm == 64 and p.k.mm.pinned_vm == 64
    area = p.ictx.objects[b].iopt.areas[0x100000]
    assert area.pages is p.ictx.objects[a].iopt.areas[0x100000].pages and area.pages.npinned == 64
    p.io("IOMMU_IOAS_UNMAP", {"ioas_id": a, "iova": 0, "length": "U64_MAX"})
    assert p.k.user_locked_vm == 64           # b still holds them
    p.io("IOMMU_IOAS_UNMAP", {"ioas_id": b, "iova": 0, "length": "U64_MAX"})
    assert p.k.user_locked_vm == 0 and p.k.mm.pinned_vm == 0


def test_IOMMUFD_PIN_SEPARATE_MAPS():
    p = Proc(NOCAP)
    a = p.ioas()
    p.bind_attach("dev0", a)
    buf = p.k.mmap(0x10000).ret
    p.map(a, 0x100000, 0x10000, buf)
    p.map(a, 0x200000, 0x10000, buf)
    assert p.k.user_locked_vm == 32 and p.k.mm.pinned_vm == 32


def test_IOAS_MAP_LAZY_nothing_pinned_without_domain():
    p = Proc(NOCAP)
    a = p.ioas()
    buf = p.k.mmap(0x200000).ret
    assert p.map(a, 0x100000, 0x200000, buf).errno is None
    assert p.k.user_locked_vm == 0 and p.k.mm.pinned_vm == 0


def test_IOMMUFD_ACCOUNT_USER_RLIMIT_leaves_nothing_pinned():
    p = Proc(NOCAP)
    a = p.ioas()
    buf = p.k.mmap(0x200000).ret
    p.map(a, 0x100000, 0xff000, buf)
    p.map(a, 0x300000, 0x2000, buf + 0xff000)
    idev = device.iommufd_device_bind(p.ictx, p.k.devices["dev0"])
    with pytest.raises(Errno) as e:
        device.iommufd_device_attach(idev, a)
    assert e.value.name == "ENOMEM"
    assert p.k.user_locked_vm == 0 and p.k.mm.pinned_vm == 0
    assert not p.ictx.objects[a].iopt.domains and not p.ictx.objects[a].hwpt_list


def test_IOMMUFD_ACCOUNT_NONE():
    p = Proc({"process": {"caps": ["CAP_IPC_LOCK"], "rlimit_memlock": "0x1000"}})
    a = p.ioas()
    p.bind_attach("dev0", a)
    buf = p.k.mmap(0x10000).ret
    assert p.map(a, 0x100000, 0x10000, buf).errno is None
    assert p.k.user_locked_vm == 0 and p.k.mm.locked_vm == 0 and p.k.mm.pinned_vm == 16


@pytest.mark.parametrize("how", ["rlimit_mode", "vfio_node"])
def test_IOMMUFD_ACCOUNT_MM(how):
    plat = {"process": {"caps": ["CAP_SYS_RESOURCE"], "rlimit_memlock": "0x100000"}}
    if how == "vfio_node":
        plat["vfio_container"] = "iommufd"
        p = Proc(plat, "/dev/vfio/vfio")
    else:
        p = Proc(plat)
        assert p.io("IOMMU_OPTION", {"option_id": 0, "op": 0, "val64": 1}).errno is None
    a = p.ioas()
    p.bind_attach("dev0", a)
    buf = p.k.mmap(0x10000).ret
    p.map(a, 0x100000, 0x10000, buf)
    assert p.k.mm.locked_vm == 16 and p.k.user_locked_vm == 0 and p.k.mm.pinned_vm == 16


def test_IOMMUFD_RELEASE_LEAF_FIRST_unpins_everything():
    p = Proc(NOCAP)
    a = p.ioas()
    idev = device.iommufd_device_bind(p.ictx, p.k.devices["dev0"])
    p.io("IOMMU_HWPT_ALLOC", {"dev_id": idev.obj_id, "pt_id": a})
    buf = p.k.mmap(0x10000).ret
    p.map(a, 0x100000, 0x10000, buf)
    assert p.k.user_locked_vm == 16
    assert p.k.close(p.fd).errno is None
    assert p.ictx.file.closed is False            # the bound device holds the ctx
    device.iommufd_device_unbind(idev)
    assert p.ictx.file.closed and not p.ictx.objects
    assert p.k.user_locked_vm == 0 and p.k.mm.pinned_vm == 0
    assert p.k.devices["dev0"].group.owner is None


def test_IOMMUFD_BIND_DMA_OWNER():
    p = Proc()
    q_fd = p.k.open("/dev/iommu").ret
    other = p.k.files[q_fd].ictx
    device.iommufd_device_bind(p.ictx, p.k.devices["dev0"])
    with pytest.raises(Errno) as e:
        device.iommufd_device_bind(other, p.k.devices["dev0"])
    assert e.value.name == "EPERM"


class _Ops:
    def __init__(self, access_box, unpin):
        self.box = access_box
        self.unpin = unpin
        self.calls = []

    def unmap(self, iova, length):
        self.calls.append((iova, length))
        if self.unpin:
            acc = self.box[0]
            for pin in list(acc.pins):
                device.iommufd_access_unpin_pages(acc, *pin)


@pytest.mark.parametrize("unpin", [True, False])
def test_IOMMUFD_ACCESS_UNMAP_NOTIFY(unpin):
    p = Proc(NOCAP)
    a = p.ioas()
    box = []
    ops = _Ops(box, unpin)
    acc = device.iommufd_access_create(p.ictx, p.k.devices["dev0"], ops)
    box.append(acc)
    device.iommufd_access_attach(acc, a)
    buf = p.k.mmap(0x4000).ret
    p.map(a, 0x10000, 0x4000, buf)
    assert device.iommufd_access_pin_pages(acc, 0x11000, 0x2000, True) == 2
    assert p.k.user_locked_vm == 2
    r = p.io("IOMMU_IOAS_UNMAP", {"ioas_id": a, "iova": 0x10000, "length": 0x4000})
    assert ops.calls == [(0x10000, 0x4000)]
    if unpin:
        assert r.errno is None and r.out["length"] == 0x4000 and p.k.user_locked_vm == 0
    else:
        assert r.errno == "EDEADLK" and 0x10000 in p.ictx.objects[a].iopt.areas


def test_IOMMUFD_ACCESS_ARGS_and_NOT_MAPPED():
    p = Proc()
    a = p.ioas()
    acc = device.iommufd_access_create(p.ictx, p.k.devices["dev0"], None)
    with pytest.raises(Errno) as e:
        device.iommufd_access_rw(acc, 0, 4, False)
    assert e.value.name == "ENOENT"                # no IOAS attached
    device.iommufd_access_attach(acc, a)
    with pytest.raises(Errno) as e:
        device.iommufd_access_pin_pages(acc, 0, 0, False)
    assert e.value.name == "EINVAL"
    with pytest.raises(Errno) as e:
        device.iommufd_access_attach(acc, a)
    assert e.value.name == "EINVAL"


def test_IOMMUFD_REPLACE_before_6_6_is_EBUSY():
    p = Proc({"kernel": "6.5"})
    a = p.ioas()
    idev, _ = p.bind_attach("dev0", a)
    with pytest.raises(Errno) as e:
        device.iommufd_device_replace(idev, a)
    assert e.value.name == "EBUSY"


@pytest.mark.parametrize("ver,succeeds", [("6.2", False), ("6.5", False), ("6.6", True), ("6.11", False),
                                          ("6.12", True), ("6.16", False), ("6.17", True), ("6.18", True),
                                          ("7.3", True)])
def test_COMPAT_UNMAP_EMPTY_version_boundary(ver, succeeds):
    p = Proc({"kernel": ver, "vfio_container": "iommufd"}, "/dev/vfio/vfio")
    vfio_compat.iommufd_vfio_compat_ioas_create(p.ictx)
    r = p.io("VFIO_IOMMU_UNMAP_DMA", {"iova": 0x1000, "size": 0x1000})
    assert (r.errno is None) == succeeds
    assert r.out["size"] == 0


def test_COMPAT_SET_IOMMU_NOIOMMU_needs_rawio():
    p = Proc({"process": {"caps": []}, "vfio_container": "iommufd"}, "/dev/vfio/vfio")
    vfio_compat.iommufd_vfio_compat_set_no_iommu(p.ictx)
    r = p.k.ioctl(p.fd, "VFIO_SET_IOMMU", 8)
    assert r.errno == "EPERM"


def test_IOMMU_VFIO_IOAS_compat_ioas_get_id():
    p = Proc()
    with pytest.raises(Errno) as e:
        vfio_compat.iommufd_vfio_compat_ioas_get_id(p.ictx)
    assert e.value.name == "ENODEV"
    vfio_compat.iommufd_vfio_compat_ioas_create(p.ictx)
    assert vfio_compat.iommufd_vfio_compat_ioas_get_id(p.ictx) == 1


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 64), st.integers(0, 15), st.booleans()), min_size=1, max_size=12),
       st.booleans())
def test_IOAS_MAP_AUTO_IOVA_properties(maps, domain):
    """Kernel-chosen IOVAs: never 0, never overlapping, outside reserved ranges,
    aligned to min(roundup_pow_of_two(length), lowest bit of user_va) with user_va's
    page offset kept."""
    p = Proc()
    a = p.ioas()
    if domain:
        p.bind_attach("dev0", a)
    buf = p.k.mmap(0x100000, hugepage=True).ret
    iopt = p.ictx.objects[a].iopt
    got = []
    for pages, off_pages, odd in maps:
        length = pages * PAGE
        va = buf + off_pages * PAGE + (0x800 if odd and not domain else 0)
        r = p.io("IOMMU_IOAS_MAP", {"ioas_id": a, "flags": ["IOMMU_IOAS_MAP_READABLE"], "user_va": va, "length": length})
        assert r.errno is None, r.errno
        iova = r.out["iova"]
        align = min(1 << (length - 1).bit_length(), va & -va)
        assert iova != 0 and iova % PAGE == va % PAGE
        assert (iova - va % PAGE) % max(align, 1) == 0 or align < PAGE
        for s, l in got:
            assert iova + length - 1 < s or iova > l
        for s, l, _ in iopt.reserved:
            assert iova + length - 1 < s or iova > l
        got.append((iova, iova + length - 1))
    assert sorted(iopt.starts) == iopt.starts and len(iopt.starts) == len(got)


def test_io_pagetable_lookups_with_10000_areas():
    """Interval lookups on the sorted area table at 10,000 areas."""
    p = Proc()
    a = p.ioas()
    buf = p.k.mmap(PAGE).ret
    iopt = p.ictx.objects[a].iopt
    for i in range(10000):
        assert p.map(a, (2 * i + 2) * PAGE, PAGE, buf).errno is None
    assert iopt.area_iter_first(2 * PAGE + 5, 2 * PAGE + 5).iova == 2 * PAGE
    assert iopt.area_iter_first(3 * PAGE, 3 * PAGE) is None
    assert iopt.area_iter_first(3 * PAGE, 4 * PAGE).iova == 4 * PAGE
    assert [x.iova for x in iopt.areas_in(19999 * PAGE, 20001 * PAGE)] == [20000 * PAGE]
    assert iopt.area_iter_first(ULONG_MAX, ULONG_MAX) is None
