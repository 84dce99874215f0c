"""VFIO groups: /dev/vfio/$GROUP and /dev/vfio/noiommu-$GROUP (drivers/vfio/group.c),
with the DMA ownership of the IOMMU group they stand for (drivers/iommu/iommu.c)."""

from __future__ import annotations

from vfiospec.reference import dispatch, uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import File, Result

from .vfio_main import DeviceFile


class VfioGroup:
    """struct vfio_group plus the ownership fields of its struct iommu_group."""

    def __init__(self, kernel, name: str, number: int, type_: str):
        self.k = kernel
        self.name = name
        self.number = number
        self.type = type_                 # "iommu" | "noiommu" | "emulated"
        self.devices = []                 # VfioDevice registered with VFIO
        self.iommu_devices = []           # platform devices of the iommu_group
        self.opened_file = None
        self.container = None             # vfio.container.Container
        self.container_users = 0
        self.iommufd = None               # iommufd ctx set by SET_CONTAINER with an iommufd
        self.cdev_device_open_cnt = 0
        # iommu_group DMA ownership (iommu_group_claim_dma_owner / iommu_device_claim_dma_owner)
        self.owner = None
        self.owner_cnt = 0

    # ------------------------------------------------------- DMA ownership
    def kernel_driver_users(self) -> int:
        """Devices bound to a kernel driver that uses the DMA API claim the group's
        default domain (iommu_device_use_default_domain)."""
        return sum(1 for d in self.iommu_devices if d.driver is not None and not d.vfio)

    def dma_owner_claimed(self) -> bool:
        """iommu_group_dma_owner_claimed: owner_cnt != 0."""
        return self.owner is not None or self.kernel_driver_users() > 0

    def claim_dma_owner(self, owner) -> None:
        """iommu_group_claim_dma_owner: exclusive; EPERM when anyone holds the group."""
        if self.dma_owner_claimed():
            raise Errno("EPERM", "GROUP-DMA-OWNER-EXCLUSIVE")
        self.owner = owner
        self.owner_cnt = 1

    def release_dma_owner(self) -> None:
        self.owner = None
        self.owner_cnt = 0

    def device_claim_dma_owner(self, owner) -> None:
        """iommu_device_claim_dma_owner: shared by the same owner, EPERM for another."""
        if self.kernel_driver_users() > 0:
            raise Errno("EPERM", "IOMMUFD-BIND-DMA-OWNER")
        if self.owner is not None and self.owner_cnt:
            if self.owner is not owner:
                raise Errno("EPERM", "IOMMUFD-BIND-DMA-OWNER")
            self.owner_cnt += 1
            return
        self.owner = owner
        self.owner_cnt = 1

    def device_release_dma_owner(self) -> None:
        self.owner_cnt -= 1
        if self.owner_cnt <= 0:
            self.owner = None
            self.owner_cnt = 0

    # ------------------------------------------------------- state
    def has_iommu(self) -> bool:
        """vfio_group_has_iommu: a container or an iommufd is set."""
        return self.container is not None or self.iommufd is not None

    @property
    def node(self) -> str:
        return f"noiommu-{self.number}" if self.type == "noiommu" else str(self.number)

    # ------------------------------------------------------- device path
    def df_group_open(self, df: DeviceFile) -> None:
        """vfio_df_group_open."""
        device = df.device
        if not self.has_iommu():
            raise Errno("EINVAL", "GROUP-GET-DEVICE-FD-NO-CONTAINER")
        df.iommufd = self.iommufd
        if df.iommufd is not None and device.is_noiommu() and device.open_count == 0:
            from . import iommufd as vfio_iommufd
            if not self.k.capable("CAP_SYS_RAWIO") or vfio_iommufd.vfio_iommufd_device_has_compat_ioas(device, df.iommufd):
                raise Errno("EPERM", "NOIOMMU-IOMMUFD-COMPAT-IOAS")
        self.df_open(df)
        if df.iommufd is not None and device.open_count == 1:
            from . import iommufd as vfio_iommufd
            try:
                vfio_iommufd.vfio_iommufd_compat_attach_ioas(device, df.iommufd)
            except Errno:
                self.df_close(df)
                raise
        df.access_granted = True

    def df_open(self, df: DeviceFile) -> None:
        """vfio_df_open: only the group path opens a device more than once."""
        device = df.device
        if device.open_count != 0 and df.group is None:
            raise Errno("EINVAL", "CDEV-SINGLE-OPEN")
        device.open_count += 1
        if device.open_count == 1:
            try:
                self.df_device_first_open(df)
            except Errno:
                device.open_count -= 1
                raise

    def df_device_first_open(self, df: DeviceFile) -> None:
        """vfio_df_device_first_open: bind to the iommufd, or use the container."""
        if df.iommufd is not None:
            from . import iommufd as vfio_iommufd
            vfio_iommufd.vfio_df_iommufd_bind(df)
        elif df.group is not None:
            self.use_container()

    def df_close(self, df: DeviceFile) -> None:
        """vfio_df_close / vfio_df_device_last_close."""
        device = df.device
        if device.open_count == 1 and getattr(device.ops, "close_device", None) is not None:
            device.ops.close_device()
        device.open_count -= 1
        if device.open_count == 0:
            if df.iommufd is not None:
                from . import iommufd as vfio_iommufd
                vfio_iommufd.vfio_df_iommufd_unbind(df)
            elif df.group is not None:
                self.unuse_container()

    def df_group_close(self, df: DeviceFile) -> None:
        """vfio_df_group_close, at the release of a group-path device file."""
        self.df_close(df)
        df.iommufd = None

    def use_container(self) -> None:
        """vfio_group_use_container: the first open of a device pins the group file."""
        c = self.container
        if c.iommu_driver is None:
            raise Errno("EINVAL", "GROUP-GET-DEVICE-FD-NO-IOMMU")
        if self.type == "noiommu" and not self.k.capable("CAP_SYS_RAWIO"):
            raise Errno("EPERM", "NOIOMMU-RAWIO")
        self.opened_file.extra_refs += 1
        self.container_users += 1

    def unuse_container(self) -> None:
        self.container_users -= 1
        self.k.drop_ref(self.opened_file)


class GroupFile(File):
    kind = "vfio-group"

    def __init__(self, kernel, group: VfioGroup):
        super().__init__(kernel)
        self.group = group
        self.extra_refs = 0

    def ioctl(self, cmd: str, arg):
        fn = {
            "VFIO_GROUP_GET_DEVICE_FD": self.get_device_fd,
            "VFIO_GROUP_GET_STATUS": self.get_status,
            "VFIO_GROUP_SET_CONTAINER": self.set_container,
            "VFIO_GROUP_UNSET_CONTAINER": self.unset_container,
        }.get(cmd)
        if fn is None:
            raise Errno("ENOTTY", "GROUP-UNKNOWN-IOCTL")
        return fn(arg)

    def get_status(self, arg) -> Result:
        """vfio_group_ioctl_get_status."""
        if arg["argsz"] < uapi.vfio_group_status.minsz:
            raise Errno("EINVAL", "GROUP-GET-STATUS-ARGSZ")
        g = self.group
        if getattr(g, "iommu_group_gone", False):
            raise Errno("ENODEV", "GROUP-IOMMU-GROUP-GONE")
        flags = 0
        if g.has_iommu():
            flags = uapi.CONSTANTS["VFIO_GROUP_FLAGS_CONTAINER_SET"] | uapi.CONSTANTS["VFIO_GROUP_FLAGS_VIABLE"]
        elif not g.dma_owner_claimed():
            flags = uapi.CONSTANTS["VFIO_GROUP_FLAGS_VIABLE"]
        self.k.cover("GROUP-GET-STATUS")
        return Result(0, out={**arg, "flags": flags})

    def set_container(self, fd) -> Result:
        """vfio_group_ioctl_set_container."""
        k = self.k
        g = self.group
        f = k.files.get(fd)
        if f is None:
            raise Errno("EBADF", "GROUP-SET-CONTAINER-BADF")
        if g.has_iommu():
            raise Errno("EINVAL", "GROUP-SET-CONTAINER-ALREADY")
        if getattr(g, "iommu_group_gone", False):
            raise Errno("ENODEV", "GROUP-IOMMU-GROUP-GONE")
        if getattr(f, "kind", None) == "vfio-container":
            f.container.attach_group(g)
            k.cover("GROUP-SET-CONTAINER")
            return Result(0)
        if getattr(f, "kind", None) == "iommufd":
            from vfiospec.reference.iommufd import vfio_compat
            ictx = f.ictx
            if g.type == "noiommu":
                vfio_compat.iommufd_vfio_compat_set_no_iommu(ictx)
            else:
                vfio_compat.iommufd_vfio_compat_ioas_create(ictx)
            g.iommufd = ictx
            ictx.users += 1
            k.cover("GROUP-SET-CONTAINER-IOMMUFD")
            return Result(0)
        if not k.at_least(6, 2):
            # before iommufd could stand in for a container (v6.2) an fd that is not a
            # container fell through vfio_container_from_file with ret = -EINVAL
            raise Errno("EINVAL", "GROUP-SET-CONTAINER-NOT-CONTAINER-PRE-IOMMUFD")
        raise Errno("EBADFD", "GROUP-SET-CONTAINER-NOT-CONTAINER")

    def unset_container(self, arg) -> Result:
        """vfio_group_ioctl_unset_container."""
        g = self.group
        if not g.has_iommu():
            raise Errno("EINVAL", "GROUP-UNSET-CONTAINER-NONE")
        if g.container is not None:
            if g.container_users != 1:
                raise Errno("EBUSY", "GROUP-UNSET-CONTAINER-BUSY")
            g.container.detach_group(g)
        if g.iommufd is not None:
            g.iommufd.users -= 1
            g.iommufd = None
        self.k.cover("GROUP-UNSET-CONTAINER")
        return Result(0)

    def get_device_fd(self, name: str) -> Result:
        """vfio_group_ioctl_get_device_fd: the device by name, opened through the group."""
        g = self.group
        dev = next((d for d in g.devices if d.name == name), None)
        if dev is None:
            raise Errno("ENODEV", "GROUP-GET-DEVICE-FD-UNKNOWN")
        df = DeviceFile(self.k, dev, group=g)
        g.df_group_open(df)
        fd = self.k.install_fd(df)
        self.k.cover("GROUP-GET-DEVICE-FD")
        return Result(fd)

    def release(self) -> None:
        """vfio_group_fops_release: detach from the container or iommufd."""
        g = self.group
        if g.container is not None:
            g.container.detach_group(g)
        if g.iommufd is not None:
            g.iommufd.users -= 1
            g.iommufd = None
        g.opened_file = None


def groups(kernel) -> dict:
    return kernel.objects["vfio_groups"]


@dispatch.on_open(r"/dev/vfio/(noiommu-)?([0-9]+)")
def _open_group(kernel, m) -> GroupFile:
    """vfio_group_fops_open."""
    number = int(m.group(2))
    g = groups(kernel).get(number)
    noiommu = bool(m.group(1))
    if g is None or (g.type == "noiommu") != noiommu or not g.devices:
        raise Errno("ENOENT", "GROUP-NODE")
    if g.type == "noiommu" and not kernel.platform.enable_unsafe_noiommu_mode:
        raise Errno("ENOENT", "NOIOMMU-MODE-OFF")
    if g.type == "noiommu" and not kernel.capable("CAP_SYS_RAWIO"):
        raise Errno("EPERM", "NOIOMMU-RAWIO")
    if g.cdev_device_open_cnt:
        raise Errno("EBUSY", "CDEV-GROUP-EXCLUSIVE")
    if g.opened_file is not None:
        raise Errno("EBUSY", "GROUP-SINGLE-OPEN")
    f = GroupFile(kernel, g)
    g.opened_file = f
    kernel.cover("GROUP-OPEN")
    return f


def register_group(kernel, group: VfioGroup) -> None:
    """A group created at run time (an mdev's emulated group)."""
    groups(kernel)[group.number] = group


def next_group_number(kernel) -> int:
    return max(groups(kernel), default=-1) + 1
