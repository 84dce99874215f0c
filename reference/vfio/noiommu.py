"""The no-IOMMU backend, vfio_noiommu_ops (drivers/vfio/container.c)."""

from __future__ import annotations

from vfiospec.reference.errors import Errno
from vfiospec.reference.uapi import CONSTANTS

from .container import IommuDriver, register_iommu_driver


@register_iommu_driver
class NoIommu(IommuDriver):
    name = "vfio-noiommu"
    noiommu = True

    @staticmethod
    def check_extension_static(kernel, arg: int) -> int:
        """vfio_noiommu_ioctl: 1 for VFIO_NOIOMMU_IOMMU while the module parameter is on."""
        return int(kernel.platform.enable_unsafe_noiommu_mode and arg == CONSTANTS["VFIO_NOIOMMU_IOMMU"])

    def __init__(self, kernel, container, arg):
        """vfio_noiommu_open: CAP_SYS_RAWIO or EPERM."""
        if not kernel.capable("CAP_SYS_RAWIO"):
            raise Errno("EPERM", "NOIOMMU-RAWIO")
        super().__init__(kernel, container, arg)

    def ioctl(self, cmd, arg):
        if cmd == "VFIO_CHECK_EXTENSION":
            return self.check_extension(arg)
        raise Errno("ENOTTY", "NOIOMMU-NO-IOCTLS")
