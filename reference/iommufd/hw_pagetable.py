"""Paging HWPTs (drivers/iommu/iommufd/hw_pagetable.c).

State (what the invariants speak of):
  HwptPaging.ioas         the IOAS whose areas the domain maps
  HwptPaging.domain       the iommu_domain (io_pagetable.Domain), in ioas.iopt.domains
  HwptPaging.auto_domain  created by attaching a device to an IOAS: destroyed when
                          its last device leaves
  HwptPaging.users        1 + attached devices (EBUSY on destroy)
  HwptPaging.nest_parent, dirty_tracking
Nested HWPTs (IOMMU_HWPT_DATA_VTD_S1 and friends) are not modelled.
"""

from __future__ import annotations

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

from .io_pagetable import Domain
from .main import IommufdObject

C = uapi.CONSTANTS
NEST_PARENT = C["IOMMU_HWPT_ALLOC_NEST_PARENT"]
DIRTY_TRACKING = C["IOMMU_HWPT_ALLOC_DIRTY_TRACKING"]


class HwptPaging(IommufdObject):
    """struct iommufd_hwpt_paging."""

    type = "hwpt_paging"

    def __init__(self, ictx, ioas, flags: int):
        super().__init__(ictx)
        self.ioas = ioas
        self.domain = Domain(ictx.k, self)
        self.auto_domain = False
        self.nest_parent = bool(flags & NEST_PARENT)
        self.dirty_tracking = bool(flags & DIRTY_TRACKING)
        self.enforce_cache_coherency = True
        self.in_list = False

    def destroy(self) -> None:
        """iommufd_hwpt_paging_destroy: leave the IOAS (unpin if last domain)."""
        if self.in_list:
            self.ioas.hwpt_list.remove(self)
            self.ioas.iopt.table_remove_domain(self.domain)
            self.in_list = False
        self.ioas.users -= 1


def hwpt_paging_alloc(ictx, ioas, idev, flags: int) -> HwptPaging:
    """iommufd_hwpt_paging_alloc: a new domain added to the IOAS at once
    (iopt_table_add_domain: aperture reserved, alignment raised, areas pinned)."""
    k = ictx.k
    valid = NEST_PARENT
    if k.at_least(6, 7):
        valid |= DIRTY_TRACKING
    if flags & ~valid:
        raise Errno("EOPNOTSUPP", "HWPT-ALLOC-FLAGS")
    if (flags & DIRTY_TRACKING) and not k.platform.iommu.dirty_tracking:
        raise Errno("EOPNOTSUPP", "HWPT-ALLOC-DIRTY-UNSUPPORTED")
    if (flags & NEST_PARENT) and not k.platform.iommu.nesting:
        # intel_iommu_domain_alloc_user: nested_parent && !nested_supported(iommu)
        raise Errno("EOPNOTSUPP", "HWPT-ALLOC-NEST-PARENT-UNSUPPORTED")
    hwpt = ictx.object_alloc(HwptPaging(ictx, ioas, flags))
    ioas.users += 1
    try:
        ioas.iopt.table_add_domain(hwpt.domain)
    except Errno:
        ioas.users -= 1
        ictx.object_abort(hwpt)
        raise
    ioas.hwpt_list.append(hwpt)
    hwpt.in_list = True
    return hwpt


def hwpt_abort(hwpt: HwptPaging) -> None:
    """iommufd_object_abort_and_destroy of an unfinished HWPT."""
    hwpt.ictx.object_abort(hwpt)
    hwpt.destroy()


def iommufd_hwpt_alloc(ictx, cmd) -> Result:
    """iommufd_hwpt_alloc (6.6+)."""
    from .device import get_device
    if cmd["__reserved"]:
        raise Errno("EOPNOTSUPP", "HWPT-ALLOC-RESERVED")
    dt, dl = cmd["data_type"], cmd["data_len"]
    if (dt == C["IOMMU_HWPT_DATA_NONE"] and dl) or (dt != C["IOMMU_HWPT_DATA_NONE"] and not dl):
        raise Errno("EINVAL", "HWPT-ALLOC-DATA")
    idev = get_device(ictx, cmd["dev_id"])
    try:
        pt = ictx.get_object(cmd["pt_id"])
    except Errno:
        # iommufd_hwpt_alloc: IS_ERR(pt_obj) -> rc = -EINVAL (not the lookup's ENOENT)
        raise Errno("EINVAL", "HWPT-ALLOC-PT-TYPE") from None
    if pt.type == "ioas":
        if dt != C["IOMMU_HWPT_DATA_NONE"]:
            raise Errno("EOPNOTSUPP", "HWPT-ALLOC-DATA")
        hwpt = hwpt_paging_alloc(ictx, pt, idev, cmd["flags"])
        ictx.k.cover("HWPT-ALLOC")
        return Result(0, out={"out_hwpt_id": hwpt.obj_id})
    if pt.type == "hwpt_paging" and ictx.k.at_least(6, 7):
        # iommufd_hwpt_nested_alloc: driver data required (EOPNOTSUPP), and a
        # NEST_PARENT, non-automatic parent (EINVAL)
        if (cmd["flags"] & ~C["IOMMU_HWPT_FAULT_ID_VALID"]) or not dl:
            raise Errno("EOPNOTSUPP", "HWPT-ALLOC-DATA")
        if pt.auto_domain or not pt.nest_parent:
            raise Errno("EINVAL", "HWPT-ALLOC-NESTED-PARENT")
        from vfiospec.reference.errors import Unmodelled as Unsupported
        raise Unsupported("nested HWPTs (driver data) are not modelled by the reference")
    raise Errno("EINVAL", "HWPT-ALLOC-PT-TYPE")
