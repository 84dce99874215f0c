"""The mdev vendor drivers of the simulated machine: the mtty sample
(samples/vfio-mdev/mtty.c) for a parent named `mtty`, and a generic driver for any
other parent of `platform.mdev_parents`.

Abstract state (z3 invariant "mdev instances conserved"):

- `MttyParent.avail_ports`: mtty's global `mdev_avail_ports` (MAX_MTTYS = 24 on a
  real machine; here max(available_instances * nr_ports) over the platform's mtty
  types).  Each mtty mdev holds `nr_ports` of them from mtty_init_dev until
  mtty_release_dev; `available_instances` of a type is avail_ports // nr_ports.
- `GenericParent.avail[type]`: the per-type instance counter of a generic parent;
  each mdev holds one.
- `MdevState.pinned`: [(page-aligned IOVA, npage)], the vfio_pin_pages calls the
  vendor driver made and has not undone (`pinned_pages()` gives {page: count});
  its `dma_unmap` callback unpins them, and so does its close_device.

Deviation, on purpose: the real mtty has no `dma_unmap` and never pins (so on a
real kernel vfio_pin_pages on an mtty device fails with EINVAL, "!ops->dma_unmap").
The simulation's vendor driver is mtty *plus* the pinning behaviour of a driver
that does DMA (i915-gvt, vfio-ccw, vfio-ap): it pins when a trace's `kapi` step
says so and unpins in dma_unmap.  `kapi` steps are simulation-only, so no trace
that a real kernel runs can tell the difference.
"""

from __future__ import annotations

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

VFIO_PCI_NUM_REGIONS = 9
VFIO_PCI_NUM_IRQS = 5
VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX = 0, 1, 2
VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX = 3, 4
VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR1_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX = 0, 1, 7
MTTY_CONFIG_SPACE_SIZE = 0xFF
MTTY_IO_BAR_SIZE = 0x8
MTTY_VFIO_PCI_OFFSET_SHIFT = 40

VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE = 1 << 0, 1 << 1
VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE = 1 << 0, 1 << 1
VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_NORESIZE = 1 << 2, 1 << 3
VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD = 1 << 0, 1 << 1, 1 << 2
VFIO_IRQ_SET_DATA_TYPE_MASK = 0x7
VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 3, 1 << 4, 1 << 5
VFIO_IRQ_SET_ACTION_TYPE_MASK = 0x38
U32_MAX = (1 << 32) - 1

MTTY_PRETTY = {1: "Single port serial", 2: "Dual port serial"}


def nr_ports_of(type_name: str) -> int:
    """mtty_types[]: sysfs_name "1" -> 1 port, "2" -> 2 ports."""
    tail = type_name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() and int(tail) > 0 else 1


# ---------------------------------------------------------------- parents
class MttyParent:
    """The mtty parent device (mtty_dev) with its shared port pool."""

    is_mtty = True
    device_api = "vfio-pci"          # VFIO_DEVICE_API_PCI_STRING

    def __init__(self, name: str, types: dict):
        self.name = name
        self.types = types           # type dir name -> platform MdevType
        self.avail_ports = max((t.available_instances * nr_ports_of(n) for n, t in types.items()), default=0)

    def get_available(self, type_name: str) -> int:
        """mtty_get_available: free ports / ports per instance."""
        return self.avail_ports // nr_ports_of(type_name)

    def pretty_name(self, type_name: str) -> str:
        return MTTY_PRETTY.get(nr_ports_of(type_name), type_name)

    def description(self, type_name: str):
        """mtty has no show_description: the attribute is not visible."""
        return None

    def init_dev(self, state: "MdevState") -> None:
        """mtty_init_dev: take nr_ports from the pool, else ENOSPC."""
        n = nr_ports_of(state.type_name)
        if self.avail_ports < n:
            raise Errno("ENOSPC", "MDEV-CREATE-NO-INSTANCES")
        self.avail_ports -= n
        state.nr_ports = n

    def release_dev(self, state: "MdevState") -> None:
        """mtty_release_dev: the ports come back when the vfio_device is released."""
        self.avail_ports += state.nr_ports


class GenericParent:
    """A parent other than mtty: each type offers its own number of instances."""

    is_mtty = False

    def __init__(self, name: str, types: dict):
        self.name = name
        self.types = types
        self.avail = {n: t.available_instances for n, t in types.items()}
        self.device_api = next((t.device_api for t in types.values()), "vfio-pci")

    def get_available(self, type_name: str) -> int:
        return self.avail[type_name]

    def pretty_name(self, type_name: str) -> str:
        prefix = self.name + "-"
        return type_name[len(prefix):] if type_name.startswith(prefix) else type_name

    def description(self, type_name: str):
        return self.types[type_name].description or None

    def init_dev(self, state: "MdevState") -> None:
        if self.avail[state.type_name] <= 0:
            raise Errno("ENOSPC", "MDEV-CREATE-NO-INSTANCES")
        self.avail[state.type_name] -= 1
        state.nr_ports = 1

    def release_dev(self, state: "MdevState") -> None:
        self.avail[state.type_name] += 1


def make_parent(name: str, types: dict):
    return MttyParent(name, types) if name == "mtty" else GenericParent(name, types)


# ---------------------------------------------------------------- one mdev
class MdevState:
    """struct mdev_state: the vendor driver's per-mdev data, installed as the
    VfioDevice's `ops` (its vfio_device_ops: ioctl, dma_unmap)."""

    def __init__(self, kernel, parent, type_name: str):
        self.k = kernel
        self.parent = parent
        self.type_name = type_name
        self.nr_ports = 0
        self.vdev = None
        self.dev_info_num_irqs = 0       # mdev_state->dev_info, filled by GET_INFO only
        self.irq_index = -1
        self.pinned: list[tuple[int, int]] = []

    # ------------------------------------------------- DMA (simulation extension)
    def record_pin(self, iova: int, npage: int) -> None:
        """Remember a successful vfio_pin_pages as (first page IOVA, npage)."""
        ps = self.k.page_size
        self.pinned.append((iova - iova % ps, npage))

    def record_unpin(self, iova: int, npage: int, exact_only: bool) -> None:
        """Forget a vfio_unpin_pages.  Through iommufd only an exact earlier pin is
        undone (iopt_pages_get_exact_access); through type1 pages are unpinned one
        by one (vfio_unpin_page_external), so a sub-range splits a record."""
        ps = self.k.page_size
        base = iova - iova % ps
        if (base, npage) in self.pinned:
            self.pinned.remove((base, npage))
            return
        if exact_only:
            return
        for p in range(base, base + npage * ps, ps):
            for i, (b, n) in enumerate(self.pinned):
                if b <= p < b + n * ps:
                    del self.pinned[i]
                    if p > b:
                        self.pinned.append((b, (p - b) // ps))
                    if p + ps < b + n * ps:
                        self.pinned.append((p + ps, (b + n * ps - p - ps) // ps))
                    break

    def pinned_pages(self) -> dict:
        """{page IOVA: pin count}, the pages this driver holds."""
        ps = self.k.page_size
        out: dict[int, int] = {}
        for b, n in self.pinned:
            for i in range(n):
                out[b + i * ps] = out.get(b + i * ps, 0) + 1
        return out

    def dma_unmap(self, iova: int, length: int) -> None:
        """vfio_device_ops.dma_unmap: unpin every pin this driver made that touches
        [iova, iova + length), each exactly as it was pinned (what type1's
        vfio_notify_dma_unmap and iommufd's access unmap callback require before
        the IOVA goes away)."""
        from . import mdev_core
        ps = self.k.page_size
        end = iova + length
        hit = [(b, n) for b, n in self.pinned if b < end and b + n * ps > iova]
        for b, n in hit:
            self.pinned.remove((b, n))
            mdev_core.vfio_unpin_pages(self.vdev, b, n, check_open=False)
        self.k.cover("MDEV-DMA-UNMAP-UNPINS")

    def close_device(self) -> None:
        """mtty_close: interrupts disabled; a driver that pins unpins everything it
        still holds when the device closes (vfio_df_device_last_close calls
        close_device before the device leaves its container or iommufd)."""
        from . import mdev_core
        self.irq_index = -1
        for b, n in list(self.pinned):
            mdev_core.vfio_unpin_pages(self.vdev, b, n, check_open=False)
        self.pinned.clear()

    # ------------------------------------------------- ioctls (mtty_ioctl)
    def ioctl(self, df, cmd: str, arg) -> Result:
        fn = {
            "VFIO_DEVICE_GET_INFO": self.get_info,
            "VFIO_DEVICE_GET_REGION_INFO": self.get_region_info,
            "VFIO_DEVICE_GET_IRQ_INFO": self.get_irq_info,
            "VFIO_DEVICE_SET_IRQS": self.set_irqs,
            "VFIO_DEVICE_RESET": self.reset,
        }.get(cmd)
        if fn is None:
            raise Errno("ENOTTY", "DEVICE-UNKNOWN-IOCTL")
        return fn(arg)

    def get_info(self, arg) -> Result:
        """mtty_ioctl VFIO_DEVICE_GET_INFO: flags PCI (no RESET flag), 9 regions,
        5 irqs; remembered in mdev_state->dev_info."""
        if arg["argsz"] < uapi.vfio_device_info.minsz:
            raise Errno("EINVAL", "MTTY-GET-INFO-ARGSZ")
        out = dict(arg)
        out["flags"] = uapi.CONSTANTS["VFIO_DEVICE_FLAGS_PCI"]
        out["num_regions"] = VFIO_PCI_NUM_REGIONS
        out["num_irqs"] = VFIO_PCI_NUM_IRQS
        self.dev_info_num_irqs = VFIO_PCI_NUM_IRQS
        self.k.cover("MTTY-GET-INFO")
        return Result(0, out=out)

    def get_region_info(self, arg) -> Result:
        """mtty_get_region_info: index >= VFIO_PCI_NUM_REGIONS -> EINVAL; config 0xff,
        BAR0 8 bytes, BAR1 8 bytes for a dual-port mtty, others 0; offset index << 40."""
        if arg["argsz"] < uapi.vfio_region_info.minsz:
            raise Errno("EINVAL", "MTTY-REGION-INFO-ARGSZ")
        idx = arg["index"]
        if idx >= VFIO_PCI_NUM_REGIONS:
            raise Errno("EINVAL", "MTTY-REGION-INFO-INDEX")
        size = 0
        if idx == VFIO_PCI_CONFIG_REGION_INDEX:
            size = MTTY_CONFIG_SPACE_SIZE
        elif idx == VFIO_PCI_BAR0_REGION_INDEX:
            size = MTTY_IO_BAR_SIZE
        elif idx == VFIO_PCI_BAR1_REGION_INDEX and self.nr_ports == 2:
            size = MTTY_IO_BAR_SIZE
        out = dict(arg)
        out.update(size=size, offset=idx << MTTY_VFIO_PCI_OFFSET_SHIFT,
                   flags=VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE)
        self.k.cover("MTTY-REGION-INFO")
        return Result(0, out=out)

    def get_irq_info(self, arg) -> Result:
        """mtty_ioctl VFIO_DEVICE_GET_IRQ_INFO: argsz, then index >= dev_info.num_irqs
        (0 until GET_INFO ran on this mdev) -> EINVAL; mtty_get_irq_info: only INTx
        and MSI -> else EINVAL."""
        if arg["argsz"] < uapi.vfio_irq_info.minsz:
            raise Errno("EINVAL", "MTTY-IRQ-INFO-ARGSZ")
        idx = arg["index"]
        if idx >= self.dev_info_num_irqs:
            raise Errno("EINVAL", "MTTY-IRQ-INFO-BEFORE-GET-INFO" if self.dev_info_num_irqs == 0
                        else "MTTY-IRQ-INFO-INDEX")
        if idx not in (VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX):
            raise Errno("EINVAL", "MTTY-IRQ-INFO-INDEX")
        flags = VFIO_IRQ_INFO_EVENTFD
        if idx == VFIO_PCI_INTX_IRQ_INDEX:
            flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED
        else:
            flags |= VFIO_IRQ_INFO_NORESIZE
        out = dict(arg)
        out.update(flags=flags, count=1)
        self.k.cover("MTTY-IRQ-INFO")
        return Result(0, out=out)

    def set_irqs(self, arg) -> Result:
        """mtty_ioctl VFIO_DEVICE_SET_IRQS: vfio_set_irqs_validate_and_prepare(hdr,
        dev_info.num_irqs, VFIO_PCI_NUM_IRQS), then mtty_set_irqs: MSI-X, ERR and REQ
        -> ENOTTY, MSI mask/unmask -> ENOTTY."""
        argsz, flags = arg["argsz"], arg.get("flags", 0)
        index, start, count = arg.get("index", 0), arg.get("start", 0), arg.get("count", 0)
        minsz = 20                                   # offsetofend(struct vfio_irq_set, count)
        num_irqs = self.dev_info_num_irqs
        if (argsz < minsz or index >= VFIO_PCI_NUM_IRQS or count >= U32_MAX - start
                or flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)):
            raise Errno("EINVAL")
        if start >= num_irqs or start + count > num_irqs:
            raise Errno("EINVAL")
        dtype = flags & VFIO_IRQ_SET_DATA_TYPE_MASK
        size = {VFIO_IRQ_SET_DATA_NONE: 0, VFIO_IRQ_SET_DATA_BOOL: 1, VFIO_IRQ_SET_DATA_EVENTFD: 4}.get(dtype)
        if size is None or (size and argsz - minsz < count * size):
            raise Errno("EINVAL")
        data = list(arg.get("data", []) or [])
        action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK
        if index in (VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX):
            raise Errno("ENOTTY")
        is_this = self.irq_index == index
        noirq = self.irq_index not in (VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX)
        if index == VFIO_PCI_MSI_IRQ_INDEX and action in (VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_UNMASK):
            raise Errno("ENOTTY")
        if action in (VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_UNMASK):
            if not is_this or start != 0 or count != 1:
                raise Errno("EINVAL")
            if dtype == VFIO_IRQ_SET_DATA_EVENTFD:
                raise Errno("ENOTTY")
            return Result(0)
        if action == VFIO_IRQ_SET_ACTION_TRIGGER:
            if is_this and count == 0 and dtype == VFIO_IRQ_SET_DATA_NONE:
                self.irq_index = -1
                return Result(0)
            if not (is_this or noirq) or start != 0 or count != 1:
                raise Errno("EINVAL")
            if dtype == VFIO_IRQ_SET_DATA_EVENTFD:
                if is_this:
                    self.irq_index = -1
                fd = int(data[0]) if data else -1
                if fd < 0:
                    return Result(0)
                # eventfd_ctx_fdget: the simulated process has no eventfds
                if fd not in self.k.files:
                    raise Errno("EBADF")
                raise Errno("EINVAL")
            if not is_this:
                raise Errno("EINVAL")
        return Result(0)

    def reset(self, arg) -> Result:
        """mtty_reset: always 0."""
        self.k.cover("MTTY-RESET")
        return Result(0)
