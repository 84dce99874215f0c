"""Mediated devices (drivers/vfio/mdev/mdev_core.c) and the in-kernel DMA API a
vendor driver calls on them (vfio_pin_pages, vfio_unpin_pages, vfio_dma_rw of
drivers/vfio/vfio_main.c).

Parents and types come from `platform.mdev_parents`.  Creating an mdev (a UUID
written to a type's `create`, mdev_sysfs.py) probes the vendor driver (mtty.py):
mtty_init_dev takes its ports or fails with ENOSPC, which device_driver_attach
returns to the writer ("also return probe errors as normal negative errnos").
The new device is registered with vfio_register_emulated_iommu_dev: it gets an
IOMMU group of its own of type "emulated" (node /dev/vfio/N, N the lowest free
IOMMU group number) and a cdev vfioM (M the lowest free device index).

Abstract state (z3 invariant "mdev instances conserved"):

- `kernel.objects["mdevs"]`: {uuid: Mdev}, every mdev that exists (mdev_list);
- each `Mdev` holds `parent`, `type_name`, `vdev` (its VfioDevice, whose `name` is
  the UUID and whose `ops` is the vendor driver's MdevState) and `active`;
- the vendor counters `MttyParent.avail_ports` / `GenericParent.avail[type]`
  (mtty.py): for mtty, avail_ports + sum(nr_ports of live mdevs) is constant, for
  a generic parent avail[type] + live mdevs of the type is constant;
- `MdevState.pinned`: pages the vendor driver has pinned (mtty.py).

The device side of an mdev in a container or bound to iommufd is in
vfio/iommufd.py (an iommufd_access) and the type1 backend (emulated groups).
"""

from __future__ import annotations

from vfiospec.reference import dispatch
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

from . import mdev_sysfs  # noqa: F401  (registers the sysfs handlers)
from .mtty import MdevState, make_parent

IOMMU_READ, IOMMU_WRITE = 1 << 0, 1 << 1        # include/linux/iommu.h


class Mdev:
    """struct mdev_device."""

    def __init__(self, uuid: str, parent, type_name: str):
        self.uuid = uuid
        self.parent = parent
        self.type_name = type_name
        self.vdev = None
        self.active = False


def mdev_parents(kernel) -> dict:
    return kernel.objects["mdev_parents"]


def mdevs(kernel) -> dict:
    return kernel.objects["mdevs"]


@dispatch.on_boot
def _boot(kernel) -> None:
    """mdev_register_parent for every parent of the platform."""
    kernel.objects["mdev_parents"] = {name: make_parent(name, types)
                                      for name, types in kernel.platform.mdev_parents.items()}
    kernel.objects["mdevs"] = {}


# ---------------------------------------------------------------- create / remove
def _lowest_free(used) -> int:
    n = 0
    while n in used:
        n += 1
    return n


def mdev_device_create(kernel, parent, type_name: str, uuid: str) -> Mdev:
    """mdev_device_create: EEXIST for a UUID already in mdev_list, then the vendor
    driver's probe (vfio_alloc_device -> ops->init, vfio_register_emulated_iommu_dev)."""
    from vfiospec.reference.vfio import group as vfio_group
    from vfiospec.reference.vfio.vfio_main import VfioDevice
    table = mdevs(kernel)
    if uuid in table:
        raise Errno("EEXIST", "MDEV-CREATE-DUPLICATE")
    md = Mdev(uuid, parent, type_name)
    state = MdevState(kernel, parent, type_name)
    parent.init_dev(state)                         # mtty_init_dev: ENOSPC
    # vfio_register_emulated_iommu_dev: a new emulated IOMMU group and the cdev
    groups = vfio_group.groups(kernel)
    number = _lowest_free(groups)
    grp = vfio_group.VfioGroup(kernel, f"mdev-{uuid}", number, "emulated")
    index = _lowest_free({int(d.cdev_name[4:]) for d in kernel.devices.values()
                          if getattr(d, "cdev_name", None)})
    vdev = VfioDevice(kernel, uuid, uuid, grp, "vfio-mdev", f"vfio{index}", emulated=True)
    vdev.ops = state
    state.vdev = vdev
    grp.devices.append(vdev)
    vfio_group.register_group(kernel, grp)
    kernel.devices[uuid] = vdev
    md.vdev = vdev
    md.active = True
    table[uuid] = md
    kernel.cover("MDEV-EMULATED-GROUP")
    return md


def mdev_device_remove(kernel, md: Mdev) -> None:
    """mdev_device_remove -> the vendor's remove -> vfio_unregister_group_dev.  The
    kernel waits in vfio_unregister_group_dev until every fd of the device is
    closed: a single-threaded trace that removes an open mdev would hang, so the
    reference refuses to simulate it."""
    from vfiospec.reference.vfio import group as vfio_group
    if not md.active:
        raise Errno("EAGAIN")      # mid-create/remove: not reachable from one thread
    vdev = md.vdev
    if _device_fd_open(kernel, vdev):
        # a device fd (group path, or a cdev fd bound or not: it holds a
        # registration reference) keeps vfio_unregister_group_dev waiting
        from vfiospec.reference.errors import Unmodelled as Unsupported
        raise Unsupported("removing an mdev whose device fd is open blocks in "
                          "vfio_unregister_group_dev until the fd is closed")
    md.active = False
    grp = vdev.group
    # vfio_device_remove_group: the last device of the emulated group takes it away
    if grp.container is not None:
        grp.container.detach_group(grp)
    grp.devices.remove(vdev)
    grp.iommu_group_gone = True          # group->iommu_group = NULL: an open group file is dead
    vfio_group.groups(kernel).pop(grp.number, None)
    vdev.unregistered = True
    for alias in [a for a, d in kernel.devices.items() if d is vdev]:
        del kernel.devices[alias]
    del mdevs(kernel)[md.uuid]
    md.parent.release_dev(vdev.ops)                # mtty_release_dev
    kernel.cover("MDEV-REMOVE-RETURNS-INSTANCE")


def _device_fd_open(kernel, vdev) -> bool:
    return vdev.open_count > 0 or any(getattr(f, "device", None) is vdev for f in kernel.files.values())


# ---------------------------------------------------------------- kAPI (vfio_main.c)
def _max_entries(kernel) -> int:
    """VFIO_PIN_PAGES_MAX_ENTRIES = PAGE_SIZE / sizeof(unsigned long)."""
    return kernel.page_size // 8


def _has_container(vdev) -> bool:
    """vfio_device_has_container: opened through a group in a VFIO container."""
    return vdev.group is not None and vdev.group.container is not None


def vfio_pin_pages(vdev, iova: int, npage: int, prot: int) -> int:
    """vfio_pin_pages: EINVAL for npage 0 or a device not open or a driver without
    dma_unmap; container: E2BIG above VFIO_PIN_PAGES_MAX_ENTRIES, ENOTTY when the
    backend has no pin_pages, else the backend's answer; iommufd access: pin
    npage pages from the page holding iova; returns npage."""
    k = vdev.k
    if npage <= 0 or vdev.open_count == 0:
        raise Errno("EINVAL", "MDEV-PIN-INVALID")
    if vdev.ops is None or getattr(vdev.ops, "dma_unmap", None) is None:
        raise Errno("EINVAL", "MDEV-PIN-INVALID")
    if _has_container(vdev):
        c = vdev.group.container
        if npage > _max_entries(k):
            raise Errno("E2BIG", "MDEV-PIN-E2BIG")
        backend = c.iommu_data
        if backend is None or not hasattr(backend, "pin_pages"):
            raise Errno("ENOTTY")   # an mdev cannot join a backend without pin_pages (spapr, noiommu refuse its group)
        ret = backend.pin_pages(vdev, iova, npage, prot)
        k.cover("MDEV-PIN-CONTAINER")
        return npage if ret is None else ret
    if getattr(vdev, "idev", None) is not None and vdev.emulated:
        from vfiospec.reference.iommufd import device as iommufd_device
        if iova >= 1 << 64:
            raise Errno("EINVAL", "MDEV-PIN-INVALID")
        ps = k.page_size
        iommufd_device.iommufd_access_pin_pages(vdev.idev, iova - iova % ps, npage * ps,
                                                bool(prot & IOMMU_WRITE))
        k.cover("MDEV-PIN-IOMMUFD")
        return npage
    raise Errno("EINVAL", "MDEV-PIN-INVALID")


def vfio_unpin_pages(vdev, iova: int, npage: int, check_open: bool = True) -> None:
    """vfio_unpin_pages: void; misuse (device not open, npage out of range) is a
    WARN_ON and does nothing."""
    k = vdev.k
    if check_open and vdev.open_count == 0:
        return
    if vdev.ops is None or getattr(vdev.ops, "dma_unmap", None) is None:
        return
    if _has_container(vdev):
        if npage <= 0 or npage > _max_entries(k):
            return
        backend = vdev.group.container.iommu_data
        if backend is not None and hasattr(backend, "unpin_pages"):
            backend.unpin_pages(vdev, iova, npage)
        return
    if getattr(vdev, "idev", None) is not None and vdev.emulated:
        from vfiospec.reference.iommufd import device as iommufd_device
        ps = k.page_size
        iommufd_device.iommufd_access_unpin_pages(vdev.idev, iova - iova % ps, npage * ps)


def vfio_dma_rw(vdev, iova: int, length: int, write: bool) -> int:
    """vfio_dma_rw: EINVAL for length 0 or a device not open; container: ENOTTY
    without a backend dma_rw; iommufd access: iommufd_access_rw."""
    k = vdev.k
    if length <= 0 or vdev.open_count == 0:
        raise Errno("EINVAL", "MDEV-DMA-RW-INVALID")
    if _has_container(vdev):
        backend = vdev.group.container.iommu_data
        if backend is None or not hasattr(backend, "dma_rw"):
            raise Errno("ENOTTY", "MDEV-DMA-RW-NO-BACKEND")
        backend.dma_rw(vdev, iova, length, write)
        k.cover("MDEV-DMA-RW")
        return 0
    if getattr(vdev, "idev", None) is not None and vdev.emulated:
        from vfiospec.reference.iommufd import device as iommufd_device
        iommufd_device.iommufd_access_rw(vdev.idev, iova, length, bool(write))
        k.cover("MDEV-DMA-RW")
        return 0
    raise Errno("EINVAL", "MDEV-DMA-RW-INVALID")


def _kapi_device(kernel, args):
    name = str(args.get("device", "")).strip()
    if name.startswith("{") and name.endswith("}"):
        name = name[1:-1]
    vdev = kernel.device_by_logical(name)
    if vdev is None:
        vdev = next((d for d in kernel.devices.values() if getattr(d, "name", None) == name.lower()), None)
    if vdev is None:
        raise Errno("ENODEV")        # the trace names no device: not a kernel behaviour
    return vdev


def _prot(v) -> int:
    if isinstance(v, list):
        names = {"IOMMU_READ": IOMMU_READ, "IOMMU_WRITE": IOMMU_WRITE, "READ": IOMMU_READ, "WRITE": IOMMU_WRITE}
        return sum(names[n] for n in v)
    if isinstance(v, str):
        return {"IOMMU_READ": IOMMU_READ, "IOMMU_WRITE": IOMMU_WRITE}.get(v) or int(v, 0)
    return int(v or 0)


@dispatch.on_kapi("vfio_pin_pages")
def _kapi_pin(kernel, args) -> Result:
    """The vendor driver pins: on success it records the pages (MdevState.pinned)."""
    vdev = _kapi_device(kernel, args)
    iova, npage = int(args.get("iova", 0)), int(args.get("npage", 0))
    ret = vfio_pin_pages(vdev, iova, npage, _prot(args.get("prot", IOMMU_READ | IOMMU_WRITE)))
    vdev.ops.record_pin(iova, npage)
    return Result(ret)


@dispatch.on_kapi("vfio_unpin_pages")
def _kapi_unpin(kernel, args) -> Result:
    vdev = _kapi_device(kernel, args)
    iova, npage = int(args.get("iova", 0)), int(args.get("npage", 0))
    if vdev.open_count and 0 < npage and vdev.ops is not None:
        vfio_unpin_pages(vdev, iova, npage)
        vdev.ops.record_unpin(iova, npage, exact_only=not _has_container(vdev))
    kernel.cover("MDEV-UNPIN")
    return Result(0)


@dispatch.on_kapi("vfio_dma_rw")
def _kapi_dma_rw(kernel, args) -> Result:
    vdev = _kapi_device(kernel, args)
    w = args.get("write", False)
    return Result(vfio_dma_rw(vdev, int(args.get("iova", 0)), int(args.get("length", 0)),
                              bool(w) if not isinstance(w, str) else w.lower() in ("1", "true")))


# ---------------------------------------------------------------- device ioctls
def _install_device_ioctls() -> None:
    """Route the device ioctls an mdev vendor driver implements to its ops
    (vfio_device_fops_unl_ioctl -> device->ops->ioctl); other devices keep the
    handler vfio_main had, or ENOTTY."""
    from vfiospec.reference.vfio import vfio_main
    for cmd in ("VFIO_DEVICE_GET_INFO", "VFIO_DEVICE_GET_REGION_INFO", "VFIO_DEVICE_GET_IRQ_INFO",
                "VFIO_DEVICE_SET_IRQS", "VFIO_DEVICE_RESET"):
        prev = vfio_main._DEVICE_IOCTLS.get(cmd)
        if getattr(prev, "_mdev_route", False):
            continue

        def route(df, arg, _cmd=cmd, _prev=prev):
            ops = df.device.ops
            if ops is not None and hasattr(ops, "ioctl"):
                return ops.ioctl(df, _cmd, arg)
            if _prev is None:
                raise Errno("ENOTTY", "DEVICE-UNKNOWN-IOCTL")
            return _prev(df, arg)
        route._mdev_route = True
        vfio_main.register_device_ioctl(cmd, route)


_install_device_ioctls()
