"""The VFIO device cdev, /dev/vfio/devices/vfioN (drivers/vfio/device_cdev.c).

An open cdev fd gives no access to the device until VFIO_DEVICE_BIND_IOMMUFD binds
it to an iommufd (vfio_device_fops_cdev_open: "device access via the fd opened by
this function is blocked until .open_device() is called successfully during
BIND_IOMMUFD").  The bind claims DMA ownership through iommufd, so the cdev path,
the group path and the legacy container exclude each other.

Abstract state (z3 invariants "one bind per device" and "exclusivity of group path,
cdev path and legacy container"):

- `DeviceFile.access_granted`, `.iommufd` (the ctx it holds a reference on,
  iommufd_ctx_from_fd) and `.devid` for each cdev fd (`DeviceFile.group is None`);
- `VfioDevice.cdev_opened` (a cdev fd is bound) and `VfioDevice.open_count`
  (both paths; the cdev path only ever takes it from 0 to 1, vfio_df_open);
- `VfioGroup.cdev_device_open_cnt`: bound (or binding) cdev fds of the group's
  devices (vfio_device_block_group); the group node cannot be opened while it is
  non-zero, and a bind fails while `VfioGroup.opened_file` is set;
- the device's iommufd binding itself: `VfioDevice.idev`, `.iommufd_ictx`,
  `.iommufd_attached`, `.iommufd_pt` (see vfio/iommufd.py);
- `ictx.users` counts the VFIO side's references on the iommufd context.
"""

from __future__ import annotations

from vfiospec.reference import dispatch, uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

from .vfio_main import DeviceFile


# ---------------------------------------------------------------- the node
@dispatch.on_open(r"/dev/vfio/devices/(vfio[0-9]+)")
def vfio_device_fops_cdev_open(kernel, m) -> DeviceFile:
    """vfio_device_fops_cdev_open: any number of opens, no access yet.  The node
    exists for every registered device except noiommu ones ("cdev does not support
    noiommu device", vfio.h vfio_device_add), and only from v6.6
    (CONFIG_VFIO_DEVICE_CDEV)."""
    name = m.group(1)
    dev = next((d for d in kernel.devices.values() if getattr(d, "cdev_name", None) == name
                and not getattr(d, "unregistered", False)), None)
    if dev is None or not kernel.at_least(6, 6):
        raise Errno("ENOENT", "CDEV-NODE")
    if dev.is_noiommu():
        raise Errno("ENOENT", "CDEV-NOIOMMU-NO-NODE")
    kernel.cover("CDEV-OPEN")
    return DeviceFile(kernel, dev, group=None)


# ---------------------------------------------------------------- block_group
def vfio_device_block_group(device) -> None:
    """group.c vfio_device_block_group: EBUSY while the group node is open."""
    g = device.group
    if g.opened_file is not None:
        raise Errno("EBUSY", "CDEV-GROUP-EXCLUSIVE")
    g.cdev_device_open_cnt += 1


def vfio_device_unblock_group(device) -> None:
    device.group.cdev_device_open_cnt -= 1


def iommufd_ctx_from_fd(kernel, fd: int):
    """iommufd/main.c iommufd_ctx_from_fd: EBADF for a closed fd, EBADFD for a file
    that is not an iommufd (a VFIO container is not one; /dev/vfio/vfio provided by
    IOMMUFD is).  Takes a reference on the ctx (`users`)."""
    f = kernel.files.get(fd)
    if f is None:
        raise Errno("EBADF", "CDEV-BIND-BADF")
    if getattr(f, "kind", None) != "iommufd":
        raise Errno("EBADFD", "CDEV-BIND-NOT-IOMMUFD")
    ictx = f.ictx
    ictx.users += 1
    return ictx


def iommufd_ctx_put(ictx) -> None:
    ictx.users -= 1


# ---------------------------------------------------------------- ioctls
def vfio_df_ioctl_bind_iommufd(df: DeviceFile, arg) -> Result:
    """vfio_df_ioctl_bind_iommufd."""
    k = df.k
    device = df.device
    st = uapi.vfio_device_bind_iommufd
    if arg["argsz"] < st.minsz or arg["flags"] or arg["iommufd"] < 0:
        if arg["argsz"] < st.minsz:
            raise Errno("EINVAL", "CDEV-BIND-ARGSZ")
        if arg["flags"]:
            raise Errno("EINVAL", "CDEV-BIND-FLAGS")
        raise Errno("EINVAL", "CDEV-BIND-NEGATIVE-IOMMUFD")
    if df.group is not None:
        raise Errno("EINVAL", "CDEV-BIND-GROUP-FD")
    vfio_device_block_group(device)
    try:
        if df.access_granted:
            raise Errno("EINVAL", "CDEV-BIND-TWICE")
        df.iommufd = iommufd_ctx_from_fd(k, arg["iommufd"])
        try:
            device.group.df_open(df)          # vfio_df_open: single open, then bind
        except Errno:
            iommufd_ctx_put(df.iommufd)
            df.iommufd = None
            raise
    except Errno:
        vfio_device_unblock_group(device)
        raise
    device.cdev_opened = True
    df.access_granted = True
    k.cover("CDEV-BIND")
    return Result(0, out={**arg, "out_devid": df.devid})


def vfio_df_unbind_iommufd(df: DeviceFile) -> None:
    """vfio_df_unbind_iommufd, at the release of a cdev fd: close the device (which
    detaches and unbinds it from iommufd), drop the ctx, unblock the group."""
    if not df.access_granted:
        return
    device = df.device
    if device.open_count == 1 and getattr(device.ops, "close_device", None) is not None:
        # vfio_df_device_last_close: ops->close_device before the unbind (idempotent,
        # so harmless once group.py's df_close calls it for both paths)
        device.ops.close_device()
    device.group.df_close(df)
    iommufd_ctx_put(df.iommufd)
    device.cdev_opened = False
    vfio_device_unblock_group(device)
    df.k.cover("CDEV-UNBIND-ON-CLOSE")


def _pasid_unsupported(df) -> None:
    """6.15+: VFIO_DEVICE_[AT|DE]TACH_PASID needs ops->pasid_[at|de]tach_ioas: an mdev
    vendor driver has none (EOPNOTSUPP).  vfio-pci has them; PASID attach of a
    physical device is not modelled."""
    if df.device.emulated:
        raise Errno("EOPNOTSUPP", "CDEV-ATTACH-PASID-UNSUPPORTED")
    from vfiospec.reference.errors import Unmodelled as Unsupported
    raise Unsupported("PASID attach of a physical device is not modelled")


def _check_pt_arg(df: DeviceFile, arg, st, pasid_name: str, argsz_req: str, flags_req: str) -> None:
    """The checks vfio_df_ioctl_attach_pt and vfio_df_ioctl_detach_pt share: argsz, then
    flags (only the PASID flag, and only from 6.15), then PASID support."""
    if arg["argsz"] < st.minsz:
        raise Errno("EINVAL", argsz_req)
    flags = arg["flags"]
    pasid_flag = uapi.CONSTANTS[pasid_name]
    if flags & ~pasid_flag or (flags and not df.k.at_least(6, 15)):
        raise Errno("EINVAL", flags_req)
    if flags & pasid_flag:
        _pasid_unsupported(df)


def vfio_df_ioctl_attach_pt(df: DeviceFile, arg) -> Result:
    """vfio_df_ioctl_attach_pt: ops->attach_ioas writes the attached id back into pt_id."""
    from . import iommufd as vfio_iommufd
    _check_pt_arg(df, arg, uapi.vfio_device_attach_iommufd_pt, "VFIO_DEVICE_ATTACH_PASID",
                  "CDEV-ATTACH-ARGSZ", "CDEV-ATTACH-FLAGS")
    device = df.device
    pt = vfio_iommufd.vfio_iommufd_ops(device).attach_ioas(device, arg["pt_id"])
    df.k.cover("CDEV-ATTACH")
    return Result(0, out={**arg, "pt_id": pt})


def vfio_df_ioctl_detach_pt(df: DeviceFile, arg) -> Result:
    """vfio_df_ioctl_detach_pt: always 0 once the struct is valid (no-op when not attached)."""
    from . import iommufd as vfio_iommufd
    _check_pt_arg(df, arg, uapi.vfio_device_detach_iommufd_pt, "VFIO_DEVICE_DETACH_PASID",
                  "CDEV-DETACH-ARGSZ", "CDEV-DETACH-FLAGS")
    device = df.device
    vfio_iommufd.vfio_iommufd_ops(device).detach_ioas(device)
    df.k.cover("CDEV-DETACH")
    return Result(0, out=dict(arg))
