"""iommufd devices and accesses: the kernel API the VFIO side calls, and
IOMMU_GET_HW_INFO (drivers/iommu/iommufd/device.c).

State (what the invariants speak of):
  IommufdDevice (idev)   obj_id, vdev (the VfioDevice), igroup, users (1 + 1 held by
                         the VFIO driver until unbind), attached (bool)
  IommufdGroup (igroup)  per (ictx, iommu group): hwpt (the one HWPT every attached
                         device of the group uses) and devices (attached idevs)
  IommufdAccess          obj_id, vdev, ops, ioas (attached IOAS or None),
                         iova_alignment, pins [(iova, length)] outstanding
The VFIO driver's references: vdev.idev (set by the VFIO side).
"""

from __future__ import annotations

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

from . import pages as _pages
from .main import IommufdObject

VTD_HW_INFO_LEN = 24      # struct iommu_hw_info_vtd: flags, __reserved, cap_reg, ecap_reg


class IommufdGroup:
    """struct iommufd_group."""

    def __init__(self, ictx, group):
        self.ictx = ictx
        self.group = group
        self.hwpt = None
        self.devices: list = []


class IommufdDevice(IommufdObject):
    """struct iommufd_device."""

    type = "device"

    def __init__(self, ictx, vdev, igroup):
        super().__init__(ictx)
        self.vdev = vdev
        self.dev = vdev
        self.igroup = igroup
        self.attached = False

    def destroy(self) -> None:
        """iommufd_device_destroy: give DMA ownership back, drop the ctx."""
        self.vdev.group.device_release_dma_owner()
        self.ictx.users -= 1


def get_device(ictx, dev_id: int) -> IommufdDevice:
    """iommufd_get_device."""
    return ictx.get_object(dev_id, "device")


def iommufd_device_bind(ictx, vdev) -> IommufdDevice:
    """iommufd_device_bind: the device must sit behind an IOMMU (ENODEV), the platform
    must isolate MSI (EPERM without interrupt remapping), and DMA ownership of its
    group is claimed for this ictx (shared with other devices of the group bound to
    the same ictx, EPERM for another owner).  The returned idev has obj_id."""
    k = ictx.k
    group = getattr(vdev, "group", None)
    if group is None or group.type != "iommu":
        raise Errno("ENODEV", "IOMMUFD-BIND")
    if not k.platform.iommu.intremap:
        raise Errno("EPERM", "IOMMUFD-BIND-MSI-ISOLATION")
    group.device_claim_dma_owner(ictx)
    igroup = ictx.groups.get(group)
    if igroup is None:
        igroup = ictx.groups[group] = IommufdGroup(ictx, group)
    idev = ictx.object_alloc(IommufdDevice(ictx, vdev, igroup))
    ictx.users += 1          # iommufd_ctx_get
    idev.users += 1          # the calling driver is a user until unbind
    k.cover("IOMMUFD-BIND")
    return idev


def iommufd_device_unbind(idev: IommufdDevice) -> None:
    """iommufd_device_unbind: detach if still attached, then destroy the object."""
    if idev.attached:
        iommufd_device_detach(idev)
    idev.users -= 1
    ictx = idev.ictx
    if ictx.objects.get(idev.obj_id) is idev:
        idev.users = 0
        ictx.object_remove(idev)
    ictx.k.cover("IOMMUFD-UNBIND")


# ------------------------------------------------------------------ attach
def _hwpt_attach(hwpt, idev: IommufdDevice) -> None:
    """iommufd_hw_pagetable_attach: one HWPT per group (EINVAL otherwise); the
    device's reserved regions go into the IOAS (EADDRINUSE on a mapped area)."""
    ig = idev.igroup
    if ig.hwpt is not None and ig.hwpt is not hwpt:
        raise Errno("EINVAL", "IOMMUFD-ATTACH-GROUP-SAME-HWPT")
    hwpt.ioas.iopt.enforce_dev_resv_regions(idev.dev)
    if not ig.devices:
        ig.hwpt = hwpt
    hwpt.users += 1
    ig.devices.append(idev)
    idev.attached = True


def _hwpt_detach(idev: IommufdDevice):
    """iommufd_hw_pagetable_detach."""
    ig = idev.igroup
    hwpt = ig.hwpt
    ig.devices.remove(idev)
    if not ig.devices:
        ig.hwpt = None
    hwpt.ioas.iopt.remove_reserved_iova(idev.dev)
    idev.attached = False
    return hwpt


def hwpt_put(ictx, hwpt) -> None:
    """iommufd_hw_pagetable_put: an automatic HWPT goes with its last device."""
    if hwpt.auto_domain:
        ictx.put_and_try_destroy(hwpt)
        if ictx.objects.get(hwpt.obj_id) is not hwpt:
            ictx.k.cover("HWPT-AUTO-DESTROYED")
    else:
        hwpt.users -= 1


def _do_attach(idev, hwpt):
    if idev.attached:
        raise Errno("EBUSY", "CDEV-ATTACH-REPLACE")
    _hwpt_attach(hwpt, idev)
    return None


def _do_replace(idev, hwpt):
    """iommufd_device_do_replace: the whole group moves; same HWPT is a no-op;
    returns the old HWPT for the caller to put."""
    ig = idev.igroup
    if ig.hwpt is None:
        raise Errno("EINVAL", "IOMMUFD-REPLACE")
    if hwpt is ig.hwpt:
        idev.ictx.k.cover("IOMMUFD-REPLACE-SAME")
        return None
    old = ig.hwpt
    if old.ioas is not hwpt.ioas:
        done = []
        try:
            for cur in ig.devices:
                hwpt.ioas.iopt.enforce_dev_resv_regions(cur.dev)
                done.append(cur)
        except Errno:
            for cur in done:
                hwpt.ioas.iopt.remove_reserved_iova(cur.dev)
            raise
        for cur in ig.devices:
            old.ioas.iopt.remove_reserved_iova(cur.dev)
    ig.hwpt = hwpt
    n = len(ig.devices)
    hwpt.users += n
    old.users -= n - 1
    idev.ictx.k.cover("IOMMUFD-REPLACE")
    return old


def _auto_get_domain(idev, ioas, do_attach):
    """iommufd_device_auto_get_domain: reuse a compatible automatic HWPT of the IOAS
    (EINVAL means incompatible: try the next), else create one."""
    from .hw_pagetable import hwpt_abort, hwpt_paging_alloc
    ictx = idev.ictx
    for hwpt in list(ioas.hwpt_list):
        if not hwpt.auto_domain:
            continue
        try:
            old = do_attach(idev, hwpt)
        except Errno as e:
            if e.name == "EINVAL":
                continue
            raise
        ictx.k.cover("IOMMUFD-ATTACH-AUTO-HWPT-REUSE")
        return hwpt, old
    hwpt = hwpt_paging_alloc(ictx, ioas, idev, 0)
    try:
        old = do_attach(idev, hwpt)
    except Errno:
        hwpt_abort(hwpt)
        raise
    hwpt.auto_domain = True
    ictx.k.cover("IOMMUFD-ATTACH-AUTO-HWPT")
    return hwpt, old


def _change_pt(idev, pt_id: int, do_attach) -> int:
    """iommufd_device_change_pt: pt_id names an IOAS (automatic HWPT) or a paging
    HWPT; anything else EINVAL.  Returns the HWPT id (written back to pt_id)."""
    ictx = idev.ictx
    pt = ictx.get_object(pt_id)
    if pt.type == "hwpt_paging":
        old = do_attach(idev, pt)
        hwpt = pt
    elif pt.type == "ioas":
        hwpt, old = _auto_get_domain(idev, pt, do_attach)
    else:
        raise Errno("EINVAL", "IOMMUFD-ATTACH-PT-TYPE")
    if old is not None:
        hwpt_put(ictx, old)
    return hwpt.obj_id


def iommufd_device_attach(idev: IommufdDevice, pt_id: int) -> int:
    """iommufd_device_attach -> the HWPT id.  A device already attached: EBUSY."""
    hwpt_id = _change_pt(idev, pt_id, _do_attach)
    idev.ictx.k.cover("IOMMUFD-ATTACH")
    return hwpt_id


def iommufd_device_replace(idev: IommufdDevice, pt_id: int) -> int:
    """iommufd_device_replace (6.6+) -> the HWPT id.  Before 6.6 there is no replace:
    a second attach of an attached device is EBUSY (vfio_iommufd_physical_attach_ioas)."""
    if not idev.ictx.k.at_least(6, 6):
        raise Errno("EBUSY", "CDEV-ATTACH-REPLACE")
    return _change_pt(idev, pt_id, _do_replace)


def iommufd_device_detach(idev: IommufdDevice) -> None:
    """iommufd_device_detach: a no-op for a device that is not attached."""
    if not idev.attached:
        return
    hwpt = _hwpt_detach(idev)
    hwpt_put(idev.ictx, hwpt)
    idev.ictx.k.cover("IOMMUFD-DETACH")


# ------------------------------------------------------------------ GET_HW_INFO
def iommufd_get_hw_info(ictx, cmd) -> Result:
    """iommufd_get_hw_info: the VT-d register info (24 bytes) truncated or zero-padded
    to data_len; data_len returns the kernel's full length.  From 6.12 (read in
    linux-source 6.12.117) the low byte of the u32 after out_data_type is the output
    out_max_pasid_log2 and only `__u8 __reserved[3]` is checked."""
    reserved = cmd["__reserved"]
    if ictx.k.at_least(6, 12):
        reserved &= ~0xFF
    if cmd["flags"] or reserved:
        raise Errno("EOPNOTSUPP", "IOMMU-GET-HW-INFO-FLAGS")
    get_device(ictx, cmd["dev_id"])
    caps = 0
    if ictx.k.at_least(6, 7) and ictx.k.platform.iommu.dirty_tracking:
        caps |= uapi.CONSTANTS["IOMMU_HW_CAP_DIRTY_TRACKING"]
    ictx.k.cover("IOMMU-GET-HW-INFO")
    return Result(0, out={"data_len": VTD_HW_INFO_LEN,
                          "out_data_type": uapi.CONSTANTS["IOMMU_HW_INFO_TYPE_INTEL_VTD"],
                          "out_capabilities": caps,
                          # 6.12+: out_max_pasid_log2 = 0 (no PASID on the platform's devices)
                          **({"__reserved": cmd["__reserved"] & ~0xFF} if ictx.k.at_least(6, 12) else {})})


# ------------------------------------------------------------------ accesses
class IommufdAccess(IommufdObject):
    """struct iommufd_access (an emulated device's view of an IOAS)."""

    type = "access"

    def __init__(self, ictx, vdev, ops):
        super().__init__(ictx)
        self.vdev = vdev
        self.ops = ops
        self.ioas = None
        self.iova_alignment = ictx.k.page_size   # needs_pin_pages (vfio_user_ops)
        self.pins: list[tuple[int, int]] = []

    def destroy(self) -> None:
        if self.ioas is not None:
            _access_detach(self)
        self.ictx.users -= 1


def iommufd_access_create(ictx, vdev, ops) -> IommufdAccess:
    """iommufd_access_create: the driver holds a user reference until destroy."""
    acc = ictx.object_alloc(IommufdAccess(ictx, vdev, ops))
    ictx.users += 1
    acc.users += 1
    ictx.k.cover("IOMMUFD-ACCESS-CREATE")
    return acc


def iommufd_access_destroy(access: IommufdAccess) -> None:
    ictx = access.ictx
    access.users -= 1
    if ictx.objects.get(access.obj_id) is access:
        access.users = 0
        ictx.object_remove(access)


def _access_attach(access, ioas) -> None:
    """iopt_add_access: the access's alignment (PAGE_SIZE) joins the IOAS's
    (EADDRINUSE if existing areas do not conform)."""
    iopt = ioas.iopt
    iopt.accesses.append(access)
    try:
        iopt.calculate_iova_alignment()
    except Errno:
        iopt.accesses.remove(access)
        raise
    ioas.users += 1
    access.ioas = ioas


def _access_detach(access) -> None:
    """The leaving half of iommufd_access_change_ioas: the driver hears
    ops.unmap(0, ULONG_MAX) and must drop its pins (any it keeps are dropped)."""
    ioas = access.ioas
    if access.ops is not None and getattr(access.ops, "unmap", None):
        access.ops.unmap(0, (1 << 64) - 1)
    for iova, length in list(access.pins):
        iommufd_access_unpin_pages(access, iova, length)
    ioas.iopt.accesses.remove(access)
    ioas.iopt.calculate_iova_alignment()
    ioas.users -= 1
    access.ioas = None


def iommufd_access_attach(access: IommufdAccess, ioas_id: int) -> None:
    """iommufd_access_attach: EINVAL when already attached; ENOENT unless an IOAS."""
    if access.ioas is not None:
        raise Errno("EINVAL", "IOMMUFD-ACCESS-ATTACH")
    from .ioas import get_ioas
    _access_attach(access, get_ioas(access.ictx, ioas_id))
    access.ictx.k.cover("IOMMUFD-ACCESS-ATTACH")


def iommufd_access_replace(access: IommufdAccess, ioas_id: int) -> None:
    """iommufd_access_replace (6.6+): ENOENT when not attached; same IOAS is a no-op;
    the new IOAS is joined before the old is left (failure keeps the old)."""
    from .ioas import get_ioas
    if not access.ictx.k.at_least(6, 6):
        raise Errno("EBUSY", "CDEV-ATTACH-REPLACE")
    if access.ioas is None:
        raise Errno("ENOENT", "IOMMUFD-ACCESS-REPLACE")
    new = get_ioas(access.ictx, ioas_id)
    if new is access.ioas:
        return
    old = access.ioas
    _access_attach(access, new)
    access.ioas = old
    _access_detach(access)
    access.ioas = new
    access.ictx.k.cover("IOMMUFD-ACCESS-REPLACE")


def iommufd_access_detach(access: IommufdAccess) -> None:
    if access.ioas is not None:
        _access_detach(access)


def _access_areas(access, iova: int, length: int, write: bool):
    if not length:
        raise Errno("EINVAL", "IOMMUFD-ACCESS-ARGS")
    last = iova + length - 1
    if last >= 1 << 64:
        raise Errno("EOVERFLOW", "IOMMUFD-ACCESS-ARGS")
    if access.ioas is None:
        raise Errno("ENOENT", "IOMMUFD-ACCESS-NOT-MAPPED")
    runs = access.ioas.iopt.contig_areas(iova, last)
    if runs is None:
        raise Errno("ENOENT", "IOMMUFD-ACCESS-NOT-MAPPED")
    for area, cur, end in runs:
        if area.prevent_access:
            raise Errno("EINVAL", "IOMMUFD-ACCESS-ARGS")
        if write and not (area.iommu_prot & 2):
            raise Errno("EPERM", "IOMMUFD-ACCESS-PERM")
    return runs


def iommufd_access_pin_pages(access: IommufdAccess, iova: int, length: int, write: bool) -> int:
    """iommufd_access_pin_pages: PAGE_SIZE aligned, fully mapped (ENOENT), writable
    for a write (EPERM); returns the number of pages pinned.  Pinning shares the
    iopt_pages with the domains (a page is pinned once)."""
    ps = access.ictx.k.page_size
    runs = _access_areas(access, iova, length, write)
    for area, cur, end in runs:
        if area.start_byte_of(cur) % ps or (end != area.last and (area.start_byte_of(end) + 1) % ps):
            raise Errno("EINVAL", "IOMMUFD-ACCESS-ARGS")
    done = []
    try:
        for area, cur, end in runs:
            _pages.area_add_access(area, area.index(cur), area.index(end))
            done.append((area, cur, end))
    except Errno:
        for area, cur, end in done:
            _pages.area_remove_access(area, area.index(cur), area.index(end))
        raise
    access.pins.append((iova, length))
    access.ictx.k.cover("IOMMUFD-ACCESS-PIN")
    return sum(area.index(end) - area.index(cur) + 1 for area, cur, end in runs)


def iommufd_access_unpin_pages(access: IommufdAccess, iova: int, length: int) -> None:
    """iommufd_access_unpin_pages: undo one pin_pages of exactly this range."""
    if (iova, length) not in access.pins or access.ioas is None:
        return
    access.pins.remove((iova, length))
    runs = access.ioas.iopt.contig_areas(iova, iova + length - 1) or []
    for area, cur, end in runs:
        _pages.area_remove_access(area, area.index(cur), area.index(end))
    access.ictx.k.cover("IOMMUFD-ACCESS-UNPIN")


def iommufd_access_rw(access: IommufdAccess, iova: int, length: int, write: bool) -> int:
    """iommufd_access_rw: the range must be mapped (ENOENT) and writable for a write
    (EPERM); the user memory must still be there (EFAULT)."""
    runs = _access_areas(access, iova, length, write)
    for area, cur, end in runs:
        p = area.pages
        if not p.user_covered(area.index(cur), area.index(end)):
            raise Errno("EFAULT", "IOMMUFD-ACCESS-RW")
    access.ictx.k.cover("IOMMUFD-ACCESS-RW")
    return 0


def access_notify_unmap(iopt, iova: int, length: int) -> None:
    """iommufd_access_notify_unmap: every access on this IOAS hears ops.unmap(iova,
    length) and must unpin what it holds in the range."""
    for acc in list(iopt.accesses):
        if acc.ops is not None and getattr(acc.ops, "unmap", None):
            acc.ops.unmap(iova, length)
    iopt.k.cover("IOMMUFD-ACCESS-UNMAP-NOTIFY")
