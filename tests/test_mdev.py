"""mdev behaviours traces cannot express: vendor-driver internals, the SET_IRQS
ioctl (not in the trace uAPI table yet), blocking removal, the instance-conservation
invariant under random create/remove sequences, and the parsers."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfiospec.reference import Kernel
from vfiospec.reference.errors import Errno
from vfiospec.reference.mdev import mdev_core
from vfiospec.reference.mdev.mdev_sysfs import guid_parse, kstrtoul

U0 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
TYPES = "/sys/class/mdev_bus/mtty/mdev_supported_types"
MTTY = {"mdev_parents": {"mtty": {"types": {"mtty-1": {"available_instances": 24},
                                            "mtty-2": {"available_instances": 12}}}}}


def _create(k, uuid=U0, t="mtty-1"):
    r = k.sysfs_write(f"{TYPES}/{t}/create", uuid)
    assert r.errno is None, r
    return k.devices[uuid]


def _open_in_type1(k, vdev):
    c = k.open("/dev/vfio/vfio").ret
    g = k.open(f"/dev/vfio/{vdev.group.number}").ret
    assert k.ioctl(g, "VFIO_GROUP_SET_CONTAINER", c).errno is None
    assert k.ioctl(c, "VFIO_SET_IOMMU", 3).errno is None
    d = k.ioctl(g, "VFIO_GROUP_GET_DEVICE_FD", vdev.name)
    assert d.errno is None, d
    return c, g, d.ret


def _set_irqs(k, fd, **kw):
    arg = {"argsz": 20, "flags": 0, "index": 0, "start": 0, "count": 0}
    arg.update(kw)
    return k.ioctl(fd, "VFIO_DEVICE_SET_IRQS", arg)


def test_MTTY_SET_IRQS_msix_err_req_are_enotty():
    """mtty_set_irqs: MSI-X, ERR and REQ -> ENOTTY; MSI mask/unmask -> ENOTTY."""
    k = Kernel(MTTY)
    vdev = _create(k)
    _, _, fd = _open_in_type1(k, vdev)
    # before GET_INFO dev_info.num_irqs is 0: vfio_set_irqs_validate_and_prepare fails
    assert _set_irqs(k, fd, index=2, flags=0x21).errno == "EINVAL"
    assert k.ioctl(fd, "VFIO_DEVICE_GET_INFO", {"argsz": 24}).errno is None
    for index in (2, 3, 4):
        assert _set_irqs(k, fd, index=index, flags=0x21).errno == "ENOTTY"
    assert _set_irqs(k, fd, index=1, flags=0x09, count=1).errno == "ENOTTY"      # MSI mask
    assert _set_irqs(k, fd, index=5, flags=0x21).errno == "EINVAL"               # index >= max
    assert _set_irqs(k, fd, argsz=19, index=2, flags=0x21).errno == "EINVAL"
    assert _set_irqs(k, fd, index=0, flags=0x40).errno == "EINVAL"               # unknown flag
    # INTx trigger with an eventfd: -1 disables, a closed fd is EBADF, a non-eventfd EINVAL
    assert _set_irqs(k, fd, argsz=24, index=0, flags=0x24, count=1, data=[-1]).errno is None
    assert _set_irqs(k, fd, argsz=24, index=0, flags=0x24, count=1, data=[999]).errno == "EBADF"
    assert _set_irqs(k, fd, argsz=24, index=0, flags=0x24, count=1, data=[fd]).errno == "EINVAL"
    assert _set_irqs(k, fd, argsz=23, index=0, flags=0x24, count=1, data=[-1]).errno == "EINVAL"


def test_MDEV_PIN_INVALID_without_dma_unmap():
    """vfio_pin_pages: a driver without ops->dma_unmap may not pin (EINVAL), as the
    real mtty (which has none) would see."""
    k = Kernel(MTTY)
    vdev = _create(k)
    c, _, _ = _open_in_type1(k, vdev)
    buf = k.mmap(0x10000).ret
    assert k.ioctl(c, "VFIO_IOMMU_MAP_DMA", {"argsz": 32, "flags": 3, "vaddr": buf, "iova": 0,
                                              "size": 0x10000}).errno is None
    assert k.kapi("vfio_pin_pages", {"device": U0, "iova": 0, "npage": 1, "prot": 3}).ret == 1

    class NoDmaUnmap:
        pass
    saved, vdev.ops = vdev.ops, NoDmaUnmap()
    r = k.kapi("vfio_pin_pages", {"device": U0, "iova": 0x1000, "npage": 1, "prot": 3})
    assert r.errno == "EINVAL" and "MDEV-PIN-INVALID" in r.reqs
    vdev.ops = saved


def test_MDEV_DMA_UNMAP_UNPINS_bookkeeping():
    """The vendor driver's record and type1's pfn_list agree, and an unmap leaves both empty."""
    k = Kernel(MTTY)
    vdev = _create(k)
    c, _, _ = _open_in_type1(k, vdev)
    buf = k.mmap(0x100000).ret
    assert k.ioctl(c, "VFIO_IOMMU_MAP_DMA", {"argsz": 32, "flags": 3, "vaddr": buf, "iova": 0x100000,
                                              "size": 0x100000}).errno is None
    for iova, n in ((0x100000, 4), (0x101000, 2), (0x180000, 1)):
        assert k.kapi("vfio_pin_pages", {"device": U0, "iova": iova, "npage": n, "prot": 3}).ret == n
    # a type1 unpin of a sub-range splits the driver's record
    k.kapi("vfio_unpin_pages", {"device": U0, "iova": 0x102000, "npage": 1})
    pages = vdev.ops.pinned_pages()
    type1 = k.files[c].container.iommu_data
    pfns = {iova: n for d in type1.dmas.values() for iova, n in d.pfn_list.items()}
    assert pages == pfns == {0x100000: 1, 0x101000: 2, 0x102000: 1, 0x103000: 1, 0x180000: 1}
    r = k.ioctl(c, "VFIO_IOMMU_UNMAP_DMA", {"argsz": 24, "flags": 0, "iova": 0x100000, "size": 0x100000})
    assert r.errno is None and r.out["size"] == 0x100000
    assert vdev.ops.pinned == [] and not type1.dmas


def test_MDEV_DMA_UNMAP_UNPINS_at_close_device():
    """close_device unpins what the driver still holds: after the last device fd of a
    cdev-bound mdev closes, the access holds no pins."""
    k = Kernel(MTTY)
    vdev = _create(k)
    ictx_fd = k.open("/dev/iommu").ret
    cdev = k.open(f"/dev/vfio/devices/{vdev.cdev_name}").ret
    assert k.ioctl(cdev, "VFIO_DEVICE_BIND_IOMMUFD", {"argsz": 16, "flags": 0, "iommufd": ictx_fd,
                                                      "out_devid": 0}).errno is None
    ioas = k.ioctl(ictx_fd, "IOMMU_IOAS_ALLOC", {"size": 12, "flags": 0, "out_ioas_id": 0}).out["out_ioas_id"]
    assert k.ioctl(cdev, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", {"argsz": 16, "flags": 0, "pt_id": ioas,
                                                           "pasid": 0}).errno is None
    buf = k.mmap(0x10000).ret
    assert k.ioctl(ictx_fd, "IOMMU_IOAS_MAP", {"size": 40, "flags": 7, "ioas_id": ioas, "__reserved": 0,
                                               "user_va": buf, "length": 0x10000, "iova": 0}).errno is None
    access = vdev.idev
    assert k.kapi("vfio_pin_pages", {"device": U0, "iova": 0, "npage": 3, "prot": 3}).ret == 3
    assert access.pins and vdev.ops.pinned
    k.close(cdev)
    assert vdev.ops.pinned == [] and access.pins == [] and vdev.idev is None


def test_MDEV_REMOVE_open_device_is_unsupported():
    """vfio_unregister_group_dev waits for the device fd: the reference refuses to
    simulate the hang rather than answer something the kernel never does."""
    from vfiospec.reference.errors import Unmodelled as Unsupported
    k = Kernel(MTTY)
    vdev = _create(k)
    k.open(f"/dev/vfio/devices/{vdev.cdev_name}")
    with pytest.raises(Unsupported):
        k.sysfs_write(f"/sys/bus/mdev/devices/{U0}/remove", "1")


def test_MDEV_EMULATED_GROUP_numbers_reused():
    """Group and cdev numbers are the lowest free ones (ida_alloc)."""
    k = Kernel({**MTTY, "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}})
    a = _create(k, "00000000-0000-0000-0000-00000000000a")
    b = _create(k, "00000000-0000-0000-0000-00000000000b")
    assert (a.group.number, a.cdev_name, b.group.number, b.cdev_name) == (1, "vfio1", 2, "vfio2")
    assert a.group.type == "emulated" and a.emulated and a.name == "00000000-0000-0000-0000-00000000000a"
    k.sysfs_write("/sys/bus/mdev/devices/00000000-0000-0000-0000-00000000000a/remove", "1")
    assert k.open("/dev/vfio/1").errno == "ENOENT"
    assert k.open("/dev/vfio/devices/vfio1").errno == "ENOENT"
    c = _create(k, "00000000-0000-0000-0000-00000000000c")
    assert (c.group.number, c.cdev_name) == (1, "vfio1")


def test_MDEV_CREATE_name_mdev_alias():
    """kernel.name_mdev binds the `as` name of the create write to the new mdev."""
    k = Kernel(MTTY)
    vdev = _create(k)
    k.name_mdev("m0", U0)
    assert k.device_by_logical("m0") is vdev and k.devices[U0] is vdev


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["create", "remove"]), st.integers(0, 5), st.sampled_from(["mtty-1", "mtty-2"])),
                max_size=30))
def test_MDEV_AVAILABLE_INSTANCES_conserved(ops):
    """Invariant "mdev instances conserved": free ports + ports held by live mdevs is
    the initial pool, and available_instances is free ports // ports per instance."""
    k = Kernel({"mdev_parents": {"mtty": {"types": {"mtty-1": {"available_instances": 5},
                                                    "mtty-2": {"available_instances": 2}}}}})
    parent = k.objects["mdev_parents"]["mtty"]
    pool = parent.avail_ports
    for op, i, t in ops:
        uuid = f"00000000-0000-0000-0000-{i:012x}"
        if op == "create":
            r = k.sysfs_write(f"{TYPES}/{t}/create", uuid)
            assert r.errno in (None, "EEXIST", "ENOSPC")
        else:
            r = k.sysfs_write(f"/sys/bus/mdev/devices/{uuid}/remove", "1")
            assert r.errno in (None, "ENOENT")
        held = sum(md.vdev.ops.nr_ports for md in mdev_core.mdevs(k).values())
        assert parent.avail_ports + held == pool
        for tn, n in (("mtty-1", 1), ("mtty-2", 2)):
            assert k.sysfs_read(f"{TYPES}/{tn}/available_instances").ret == parent.avail_ports // n


def test_MDEV_CREATE_BAD_UUID_parser():
    assert guid_parse(U0.upper() + "\n") == U0
    assert guid_parse(U0 + "Z") == U0
    for bad in (U0[:35], U0.replace("-", "_", 1), "g" + U0[1:], U0[:8] + "0" + U0[9:]):
        with pytest.raises(Errno):
            guid_parse(bad)


def test_MDEV_REMOVE_VALUE_kstrtoul():
    assert [kstrtoul(s) for s in ("0", "1\n", "+7", "0x10", "010", "18446744073709551615")] == \
        [0, 1, 7, 16, 8, (1 << 64) - 1]
    for bad in ("", "\n", "-1", "1 ", " 1", "0x", "09", "1\n\n", "18446744073709551616", "1a"):
        with pytest.raises(ValueError):
            kstrtoul(bad)


def test_MDEV_PIN_CONTAINER_pinning_deferred_to_vendor():
    """In a container holding only emulated groups, MAP_DMA pins and accounts nothing;
    each page a vendor driver pins is accounted once, and given back on unpin."""
    k = Kernel({**MTTY, "process": {"caps": []}})
    vdev = _create(k)
    c, _, _ = _open_in_type1(k, vdev)
    buf = k.mmap(0x100000).ret
    assert k.ioctl(c, "VFIO_IOMMU_MAP_DMA", {"argsz": 32, "flags": 3, "vaddr": buf, "iova": 0,
                                              "size": 0x100000}).errno is None
    assert k.mm.locked_vm == 0
    assert k.kapi("vfio_pin_pages", {"device": U0, "iova": 0, "npage": 4, "prot": 3}).ret == 4
    assert k.kapi("vfio_pin_pages", {"device": U0, "iova": 0x1000, "npage": 1, "prot": 3}).ret == 1
    assert k.mm.locked_vm == 4
    k.kapi("vfio_unpin_pages", {"device": U0, "iova": 0, "npage": 4})
    assert k.mm.locked_vm == 1 and vdev.ops.pinned_pages() == {0x1000: 1}
