"""The VFIO side of IOMMUFD (drivers/vfio/iommufd.c): binding a vfio device to an
iommufd context, attaching it to an IOAS/HWPT, and the noiommu special cases.

A vfio device is bound to iommufd either through its cdev (VFIO_DEVICE_BIND_IOMMUFD,
device_cdev.py) or through the group path with an iommufd "container"
(VFIO_GROUP_SET_CONTAINER(iommufd) then VFIO_GROUP_GET_DEVICE_FD, group.py).  A
physical device gets an `iommufd_device` (vfio_iommufd_physical_*), an emulated
(mdev) device an `iommufd_access` (vfio_iommufd_emulated_*).

Abstract state (read by reference/state.py and the z3 invariant "one bind per
device"), all on `VfioDevice`:

- `idev`: the iommufd_device (physical) or iommufd_access (emulated) while bound,
  else None.  Its `obj_id` is the devid the bind returned (`iommufd_devid`).
- `iommufd_ictx`: the iommufd context the device is bound to, else None.
- `iommufd_attached` (bool, vdev->iommufd_attached) and `iommufd_pt`: the id the
  attachment answered with (the HWPT id for a physical device, the IOAS id for an
  access), 0 when not attached.
- `iommufd_devid`: the object id of `idev` (0 when unbound).

A device is bound at most once: binding happens only at the device's first open
(open_count 0 -> 1, vfio_df_device_first_open) and unbinding at its last close.
"""

from __future__ import annotations

from vfiospec.reference.errors import Errno


def _idev_mod():
    from vfiospec.reference.iommufd import device as iommufd_device
    return iommufd_device


def _compat_mod():
    from vfiospec.reference.iommufd import vfio_compat
    return vfio_compat


def _init_state(vdev) -> None:
    for k, v in (("iommufd_ictx", None), ("iommufd_attached", False), ("iommufd_pt", 0),
                 ("iommufd_devid", 0)):
        if not hasattr(vdev, k):
            setattr(vdev, k, v)


def _obj_id(obj) -> int:
    return int(getattr(obj, "obj_id", getattr(obj, "id", 0)) or 0)


def _compat_ioas_id(ictx):
    """iommufd_vfio_compat_ioas_get_id: the compat IOAS id, or None (ENODEV)."""
    try:
        r = _compat_mod().iommufd_vfio_compat_ioas_get_id(ictx)
    except Errno:
        return None
    return r


# ---------------------------------------------------------------- vfio core side
def vfio_iommufd_device_has_compat_ioas(vdev, ictx) -> bool:
    """vfio_iommufd_device_has_compat_ioas: the ctx has a compat IOAS assigned."""
    return _compat_ioas_id(ictx) is not None


def vfio_df_iommufd_bind(df) -> None:
    """vfio_df_iommufd_bind: ops->bind_iommufd; a noiommu device binds nothing
    ("Returns 0 to permit device opening under noiommu mode", upstream b25e271b,
    in 6.12 stable)."""
    vdev = df.device
    _init_state(vdev)
    if vdev.is_noiommu():
        df.k.cover("VFIO-IOMMUFD-NOIOMMU-NO-BIND")
        return
    ops = vfio_iommufd_ops(vdev)
    df.devid = ops.bind_iommufd(vdev, df.iommufd)


def vfio_df_iommufd_unbind(df) -> None:
    """vfio_df_iommufd_unbind: ops->unbind_iommufd (detaches first), noiommu: nothing."""
    vdev = df.device
    _init_state(vdev)
    if vdev.is_noiommu():
        return
    vfio_iommufd_ops(vdev).unbind_iommufd(vdev)


def vfio_iommufd_compat_attach_ioas(vdev, ictx) -> None:
    """vfio_iommufd_compat_attach_ioas: the group path attaches the device to the
    ctx's compat IOAS at its first open (ENODEV without one); noiommu: nothing."""
    _init_state(vdev)
    if vdev.is_noiommu():
        return
    ioas_id = _compat_ioas_id(ictx)
    if ioas_id is None:
        raise Errno("ENODEV", "VFIO-IOMMUFD-COMPAT-ATTACH-IOAS")
    vfio_iommufd_ops(vdev).attach_ioas(vdev, ioas_id)
    vdev.k.cover("VFIO-IOMMUFD-COMPAT-ATTACH-IOAS")


def vfio_iommufd_ops(vdev):
    """The device driver's bind_iommufd/unbind_iommufd/attach_ioas/detach_ioas set:
    vfio-pci uses the physical ops, mdev vendor drivers the emulated ones."""
    return EMULATED if vdev.emulated else PHYSICAL


# ---------------------------------------------------------------- physical
class _Physical:
    """vfio_iommufd_physical_*: the device is an iommufd_device (iommufd_device_bind)."""

    @staticmethod
    def bind_iommufd(vdev, ictx) -> int:
        """vfio_iommufd_physical_bind: iommufd_device_bind; returns the devid."""
        idev = _idev_mod().iommufd_device_bind(ictx, vdev)
        vdev.idev = idev
        vdev.iommufd_ictx = ictx
        vdev.iommufd_devid = _obj_id(idev)
        vdev.iommufd_attached = False
        vdev.iommufd_pt = 0
        return vdev.iommufd_devid

    @staticmethod
    def unbind_iommufd(vdev) -> None:
        """vfio_iommufd_physical_unbind: detach if attached, then iommufd_device_unbind."""
        if vdev.idev is None:
            return
        if vdev.iommufd_attached:
            _idev_mod().iommufd_device_detach(vdev.idev)
            vdev.iommufd_attached = False
            vdev.iommufd_pt = 0
        _idev_mod().iommufd_device_unbind(vdev.idev)
        vdev.idev = None
        vdev.iommufd_ictx = None
        vdev.iommufd_devid = 0

    @staticmethod
    def attach_ioas(vdev, pt_id: int) -> int:
        """vfio_iommufd_physical_attach_ioas: iommufd_device_attach, or
        iommufd_device_replace when already attached (v6.6+; EBUSY before)."""
        if vdev.idev is None:
            raise Errno("EINVAL")     # WARN_ON(!vdev->iommufd_device): unreachable
        m = _idev_mod()
        if vdev.iommufd_attached:
            if not vdev.k.at_least(6, 6):
                raise Errno("EBUSY", "CDEV-ATTACH-REPLACE")
            hwpt = m.iommufd_device_replace(vdev.idev, pt_id)
            vdev.k.cover("CDEV-ATTACH-REPLACE")
        else:
            hwpt = m.iommufd_device_attach(vdev.idev, pt_id)
        vdev.iommufd_attached = True
        vdev.iommufd_pt = int(hwpt) if hwpt is not None else pt_id
        return vdev.iommufd_pt

    @staticmethod
    def detach_ioas(vdev) -> None:
        """vfio_iommufd_physical_detach_ioas: a no-op when not attached."""
        if vdev.idev is None or not vdev.iommufd_attached:
            return
        _idev_mod().iommufd_device_detach(vdev.idev)
        vdev.iommufd_attached = False
        vdev.iommufd_pt = 0


class _VfioUserOps:
    """vfio_user_ops (struct iommufd_access_ops): needs_pin_pages, and unmap ->
    vfio_emulated_unmap -> the vendor driver's dma_unmap."""

    needs_pin_pages = True

    def __init__(self, vdev):
        self.data = vdev

    def unmap(self, iova: int, length: int) -> None:
        """vfio_emulated_unmap."""
        ops = self.data.ops
        if ops is not None and getattr(ops, "dma_unmap", None) is not None:
            ops.dma_unmap(iova, length)


class _Emulated:
    """vfio_iommufd_emulated_*: the device is an iommufd_access (iommufd_access_create)."""

    @staticmethod
    def bind_iommufd(vdev, ictx) -> int:
        """vfio_iommufd_emulated_bind: iommufd_access_create; the devid is the access id."""
        access = _idev_mod().iommufd_access_create(ictx, vdev, _VfioUserOps(vdev))
        vdev.idev = access
        vdev.iommufd_ictx = ictx
        vdev.iommufd_devid = _obj_id(access)
        vdev.iommufd_attached = False
        vdev.iommufd_pt = 0
        vdev.k.cover("MDEV-IOMMUFD-ACCESS")
        return vdev.iommufd_devid

    @staticmethod
    def unbind_iommufd(vdev) -> None:
        """vfio_iommufd_emulated_unbind: iommufd_access_destroy."""
        if vdev.idev is None:
            return
        _idev_mod().iommufd_access_destroy(vdev.idev)
        vdev.idev = None
        vdev.iommufd_ictx = None
        vdev.iommufd_devid = 0
        vdev.iommufd_attached = False
        vdev.iommufd_pt = 0

    @staticmethod
    def attach_ioas(vdev, pt_id: int) -> int:
        """vfio_iommufd_emulated_attach_ioas: iommufd_access_attach, or
        iommufd_access_replace when attached (v6.6+; EBUSY before).  pt_id is
        left as given (an access attaches to an IOAS, no HWPT is made)."""
        m = _idev_mod()
        if vdev.iommufd_attached:
            if not vdev.k.at_least(6, 6):
                raise Errno("EBUSY", "CDEV-ATTACH-REPLACE")
            m.iommufd_access_replace(vdev.idev, pt_id)
            vdev.k.cover("CDEV-ATTACH-REPLACE")
        else:
            m.iommufd_access_attach(vdev.idev, pt_id)
        vdev.iommufd_attached = True
        vdev.iommufd_pt = pt_id
        return pt_id

    @staticmethod
    def detach_ioas(vdev) -> None:
        """vfio_iommufd_emulated_detach_ioas: a no-op when not attached."""
        if vdev.idev is None or not vdev.iommufd_attached:
            return
        _idev_mod().iommufd_access_detach(vdev.idev)
        vdev.iommufd_attached = False
        vdev.iommufd_pt = 0


PHYSICAL = _Physical()
EMULATED = _Emulated()
