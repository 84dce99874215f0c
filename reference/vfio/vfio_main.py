"""VFIO devices and device files (drivers/vfio/vfio_main.c).

A `VfioDevice` is a device registered with VFIO (vfio_register_group_dev /
vfio_register_emulated_iommu_dev); a `DeviceFile` is one open of it, through the
group (VFIO_GROUP_GET_DEVICE_FD) or through its cdev (/dev/vfio/devices/vfioN)."""

from __future__ import annotations

from vfiospec.reference import dispatch
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import File, Result

VFIO_PCI_NUM_REGIONS = 9      # BAR0-5, ROM, CONFIG, VGA
VFIO_PCI_NUM_IRQS = 5         # INTX, MSI, MSIX, ERR, REQ


class VfioDevice:
    """struct vfio_device: `open_count` counts opens across both paths."""

    def __init__(self, kernel, logical: str, name: str, group, driver: str, cdev_name: str | None,
                 emulated: bool = False):
        self.k = kernel
        self.logical = logical
        self.name = name                 # PCI address or mdev UUID
        self.group = group               # vfio.group.VfioGroup
        self.driver = driver
        self.cdev_name = cdev_name       # vfioN, or None without a cdev
        self.emulated = emulated
        self.open_count = 0
        self.cdev_opened = False
        self.idev = None                 # the iommufd device (or access) while bound
        self.ops = None                  # vendor driver callbacks (mdev: dma_unmap)

    def is_noiommu(self) -> bool:
        return self.group.type == "noiommu"


class DeviceFile(File):
    """struct vfio_device_file."""

    kind = "vfio-device"

    def __init__(self, kernel, device: VfioDevice, group=None):
        super().__init__(kernel)
        self.device = device
        self.group = group               # set on the group path only
        self.access_granted = False
        self.iommufd = None              # the iommufd ctx (cdev bind or group with iommufd)
        self.devid = 0

    def ioctl(self, cmd: str, arg):
        if cmd == "VFIO_DEVICE_BIND_IOMMUFD":
            from . import device_cdev
            return device_cdev.vfio_df_ioctl_bind_iommufd(self, arg)
        if not self.access_granted:
            raise Errno("EINVAL", "CDEV-NO-ACCESS-BEFORE-BIND")
        if self.group is None and cmd in ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", "VFIO_DEVICE_DETACH_IOMMUFD_PT"):
            from . import device_cdev
            if cmd == "VFIO_DEVICE_ATTACH_IOMMUFD_PT":
                return device_cdev.vfio_df_ioctl_attach_pt(self, arg)
            return device_cdev.vfio_df_ioctl_detach_pt(self, arg)
        handler = _DEVICE_IOCTLS.get(cmd)
        if handler is None:
            # vfio-pci's ioctl: unknown commands are ENOTTY
            raise Errno("ENOTTY", "DEVICE-UNKNOWN-IOCTL")
        return handler(self, arg)

    def release(self) -> None:
        """vfio_device_fops_release: close through the path that opened it."""
        if self.group is not None:
            self.group.df_group_close(self)
        else:
            from . import device_cdev
            device_cdev.vfio_df_unbind_iommufd(self)


def _get_info(df: DeviceFile, arg) -> Result:
    """vfio_pci_ioctl_get_info: argsz < minsz -> EINVAL."""
    from vfiospec.reference import uapi
    st = uapi.vfio_device_info
    if arg["argsz"] < st.minsz:
        raise Errno("EINVAL", "DEVICE-GET-INFO-ARGSZ")
    out = dict(arg)
    # VFIO_DEVICE_FLAGS_RESET only when vdev->reset_works (pci_dev has a reset method)
    out["flags"] = uapi.CONSTANTS["VFIO_DEVICE_FLAGS_PCI"] | (
        uapi.CONSTANTS["VFIO_DEVICE_FLAGS_RESET"] if _can_reset(df) else 0)
    out["num_regions"] = VFIO_PCI_NUM_REGIONS
    out["num_irqs"] = VFIO_PCI_NUM_IRQS
    df.k.cover("DEVICE-GET-INFO")
    return Result(0, out=out)


def _can_reset(df: DeviceFile) -> bool:
    """vdev->reset_works (vfio_pci_core_enable: !pci_reset_function probe): the platform's
    device `reset` (QEMU's edu device has none)."""
    d = df.k.platform.devices.get(df.device.logical)
    return d is None or d.reset


def _reset(df: DeviceFile, arg) -> Result:
    """vfio_pci_ioctl_reset: without vdev->reset_works, EINVAL."""
    if not _can_reset(df):
        raise Errno("EINVAL", "DEVICE-RESET-UNSUPPORTED")
    df.k.cover("DEVICE-RESET")
    return Result(0)


VFIO_PCI_ROM_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_VGA_REGION_INDEX = 6, 7, 8
VFIO_PCI_OFFSET_SHIFT = 40
REGION_READ, REGION_WRITE, REGION_MMAP = 1, 2, 4          # VFIO_REGION_INFO_FLAG_*
IRQ_EVENTFD, IRQ_MASKABLE, IRQ_AUTOMASKED, IRQ_NORESIZE = 1, 2, 4, 8   # VFIO_IRQ_INFO_*


def _pci(df: DeviceFile):
    from vfiospec.reference.platform import Device
    return df.k.platform.devices.get(df.device.logical) or Device(df.device.logical, "", df.device.driver)


def _get_region_info(df: DeviceFile, arg) -> Result:
    """vfio_pci_ioctl_get_region_info: argsz < offsetofend(offset) -> EINVAL; offset is
    index << 40; config space READ|WRITE (256 bytes, 4096 on PCIe); a memory BAR
    READ|WRITE|MMAP with its size (flags 0 when absent); the ROM (none here: size 0,
    flags 0); VGA and any further index -> EINVAL (no VGA, no device-specific regions)."""
    from vfiospec.reference import uapi
    if arg["argsz"] < uapi.vfio_region_info.minsz:
        raise Errno("EINVAL", "DEVICE-GET-REGION-INFO")
    idx = arg["index"]
    pci = _pci(df)
    out = dict(arg)
    out["cap_offset"] = 0
    if idx == VFIO_PCI_CONFIG_REGION_INDEX:
        out.update(size=4096 if pci.pcie else 256, flags=REGION_READ | REGION_WRITE)
    elif idx < 6:
        size = pci.bars[idx]
        out.update(size=size, flags=(REGION_READ | REGION_WRITE | REGION_MMAP) if size else 0)
    elif idx == VFIO_PCI_ROM_REGION_INDEX:
        out.update(size=0, flags=0)
    else:
        raise Errno("EINVAL", "DEVICE-GET-REGION-INFO")
    out["offset"] = idx << VFIO_PCI_OFFSET_SHIFT
    df.k.cover("DEVICE-GET-REGION-INFO")
    return Result(0, out=out)


def _get_irq_info(df: DeviceFile, arg) -> Result:
    """vfio_pci_ioctl_get_irq_info: argsz < offsetofend(count) or index >= 5 -> EINVAL; ERR
    only on PCI Express (else EINVAL); flags EVENTFD, plus MASKABLE|AUTOMASKED for INTx,
    NORESIZE for the others; count from vfio_pci_get_irq_count (INTx: a pin, MSI: the
    vectors, MSI-X: the table size, ERR and REQ: 1)."""
    from vfiospec.reference import uapi
    idx = arg["index"]
    pci = _pci(df)
    if arg["argsz"] < uapi.vfio_irq_info.minsz or idx >= VFIO_PCI_NUM_IRQS:
        raise Errno("EINVAL", "DEVICE-GET-IRQ-INFO")
    if idx == 3 and not pci.pcie:
        raise Errno("EINVAL", "DEVICE-GET-IRQ-INFO")
    count = [int(pci.intx), pci.msi, pci.msix, 1, 1][idx]
    flags = IRQ_EVENTFD | ((IRQ_MASKABLE | IRQ_AUTOMASKED) if idx == 0 else IRQ_NORESIZE)
    df.k.cover("DEVICE-GET-IRQ-INFO")
    return Result(0, out={**arg, "flags": flags, "count": count})


_DEVICE_IOCTLS = {
    "VFIO_DEVICE_GET_INFO": _get_info,
    "VFIO_DEVICE_GET_REGION_INFO": _get_region_info,
    "VFIO_DEVICE_GET_IRQ_INFO": _get_irq_info,
    "VFIO_DEVICE_RESET": _reset,
}


def register_device_ioctl(cmd: str, fn) -> None:
    """Let a device-kind module (mdev vendor driver, vfio-pci extras) add an ioctl."""
    _DEVICE_IOCTLS[cmd] = fn


@dispatch.on_boot
def _boot(kernel) -> None:
    """Platform devices bound to a vfio driver are registered with VFIO at boot."""
    from .group import VfioGroup
    p = kernel.platform
    kernel.objects["vfio_groups"] = {}
    for i, (gname, g) in enumerate(p.groups.items()):
        grp = VfioGroup(kernel, gname, g.number, "noiommu" if g.noiommu else "iommu")
        kernel.objects["vfio_groups"][g.number] = grp
        for dname in g.devices:
            d = p.devices[dname]
            grp.iommu_devices.append(d)
            if d.vfio:
                dev = VfioDevice(kernel, dname, _pci_name(list(p.devices).index(dname)), grp, d.driver, d.cdev)
                grp.devices.append(dev)
                kernel.devices[dname] = dev


def _pci_name(i: int) -> str:
    return f"0000:00:{i + 3:02x}.0"
