"""The VFIO container, /dev/vfio/vfio (drivers/vfio/container.c), and the IOMMU
backend interface (struct vfio_iommu_driver_ops)."""

from __future__ import annotations

from vfiospec.reference import dispatch
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import File, Result


class IommuDriver:
    """struct vfio_iommu_driver_ops.  `check_extension_static` is ops->ioctl(NULL,
    VFIO_CHECK_EXTENSION); `open` returns the backend instance (iommu_data)."""

    name = "iommu"
    noiommu = False

    @staticmethod
    def available(kernel) -> bool:
        return True

    @staticmethod
    def check_extension_static(kernel, arg: int) -> int:
        return 0

    def __init__(self, kernel, container, arg: int):
        self.k = kernel
        self.container = container

    def check_extension(self, arg: int) -> int:
        return self.check_extension_static(self.k, arg)

    def attach_group(self, group) -> None:
        pass

    def detach_group(self, group) -> None:
        pass

    def ioctl(self, cmd: str, arg) -> Result:
        raise Errno("ENOTTY", "CONTAINER-BACKEND-UNKNOWN-IOCTL")

    def release(self) -> None:
        pass


_DRIVERS: list[type[IommuDriver]] = []


def register_iommu_driver(cls: type[IommuDriver]) -> type[IommuDriver]:
    """vfio_register_iommu_driver (list_add: the last registered is asked first)."""
    _DRIVERS.insert(0, cls)
    return cls


def drivers(kernel) -> list[type[IommuDriver]]:
    return [d for d in _DRIVERS if d.available(kernel)]


class Container:
    """struct vfio_container."""

    def __init__(self, kernel):
        self.k = kernel
        self.group_list = []
        self.iommu_driver: type[IommuDriver] | None = None
        self.iommu_data: IommuDriver | None = None
        self.noiommu = False

    def driver_allowed(self, driver) -> bool:
        """vfio_iommu_driver_allowed: a noiommu container takes only the noiommu driver."""
        return self.noiommu == driver.noiommu

    def check_extension(self, arg: int) -> int:
        """vfio_container_ioctl_check_extension."""
        if self.iommu_driver is None:
            ret = 0
            for d in drivers(self.k):
                if self.group_list and not self.driver_allowed(d):
                    continue
                ret = d.check_extension_static(self.k, arg)
                if ret > 0:
                    break
            self.k.cover("CONTAINER-CHECK-EXTENSION-NO-IOMMU")
            return ret
        self.k.cover("CONTAINER-CHECK-EXTENSION-IOMMU")
        return self.iommu_data.check_extension(arg)

    def set_iommu(self, arg: int) -> Result:
        """vfio_ioctl_set_iommu: the first backend that claims `arg` and attaches every group."""
        if not self.group_list:
            raise Errno("EINVAL", "CONTAINER-SET-IOMMU-NO-GROUP")
        if self.iommu_driver is not None:
            raise Errno("EINVAL", "CONTAINER-SET-IOMMU-TWICE")
        err = Errno("ENODEV", "CONTAINER-SET-IOMMU-UNSUPPORTED")
        for d in drivers(self.k):
            if not self.driver_allowed(d):
                continue
            if d.check_extension_static(self.k, arg) <= 0:
                continue
            try:
                data = d(self.k, self, arg)
            except Errno as e:
                err = e
                continue
            attached = []
            try:
                for g in self.group_list:
                    data.attach_group(g)
                    attached.append(g)
            except Errno as e:
                for g in reversed(attached):
                    data.detach_group(g)
                data.release()
                err = e
                continue
            self.iommu_driver, self.iommu_data = d, data
            self.k.cover("CONTAINER-SET-IOMMU")
            return Result(0)
        raise err

    def attach_group(self, group) -> None:
        """vfio_container_attach_group."""
        k = self.k
        if group.type == "noiommu" and not k.capable("CAP_SYS_RAWIO"):
            raise Errno("EPERM", "NOIOMMU-RAWIO")
        if self.group_list and self.noiommu != (group.type == "noiommu"):
            raise Errno("EPERM", "CONTAINER-NOIOMMU-MIX")
        if group.type == "iommu":
            group.claim_dma_owner(self)
        if self.iommu_data is not None:
            try:
                self.iommu_data.attach_group(group)
            except Errno:
                if group.type == "iommu":
                    group.release_dma_owner()
                raise
        group.container = self
        group.container_users = 1
        self.noiommu = group.type == "noiommu"
        self.group_list.append(group)

    def detach_group(self, group) -> None:
        """vfio_group_detach_container: the last group out releases the backend."""
        if self.iommu_data is not None:
            self.iommu_data.detach_group(group)
        if group.type == "iommu":
            group.release_dma_owner()
        group.container = None
        group.container_users = 0
        self.group_list.remove(group)
        if self.iommu_data is not None and not self.group_list:
            self.iommu_data.release()
            self.iommu_driver = None
            self.iommu_data = None
            self.k.cover("CONTAINER-LAST-GROUP-RELEASES-IOMMU")


class ContainerFile(File):
    kind = "vfio-container"

    def __init__(self, kernel):
        super().__init__(kernel)
        self.container = Container(kernel)

    def ioctl(self, cmd: str, arg):
        """vfio_fops_unl_ioctl: unknown commands go to the backend, EINVAL without one."""
        c = self.container
        if cmd == "VFIO_GET_API_VERSION":
            self.k.cover("CONTAINER-API-VERSION")
            return Result(0)
        if cmd == "VFIO_CHECK_EXTENSION":
            return Result(c.check_extension(arg))
        if cmd == "VFIO_SET_IOMMU":
            return c.set_iommu(arg)
        if c.iommu_data is None:
            raise Errno("EINVAL", "CONTAINER-IOCTL-BEFORE-SET-IOMMU")
        return c.iommu_data.ioctl(cmd, arg)


@dispatch.on_open(r"/dev/vfio/vfio")
def _open_container(kernel, m):
    """/dev/vfio/vfio: the VFIO container, or iommufd's emulation of it."""
    if kernel.platform.vfio_container == "iommufd":
        from vfiospec.reference.iommufd import main as iommufd_main
        return iommufd_main.open_iommufd(kernel, compat=True)
    if kernel.platform.vfio_container is None:
        raise Errno("ENOENT", "CONTAINER-NODE")
    kernel.cover("CONTAINER-OPEN")
    return ContainerFile(kernel)
