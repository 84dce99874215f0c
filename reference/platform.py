"""The simulated machine a trace runs on: the trace format's `platform` object with
its defaults (../shared/trace-format.md, "Platform")."""

from __future__ import annotations

from dataclasses import dataclass, field

from .numbers import parse_int

VFIO_DRIVERS = ("vfio-pci", "vfio-platform", "vfio-amba", "vfio-ccw", "vfio-ap", "vfio-fsl-mc", "vfio-cdx")


class PlatformError(ValueError):
    """A platform object that does not describe a machine; `field` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"platform.{field}: {message}")
        self.field = field


def parse_version(text: str) -> tuple[int, int]:
    parts = str(text).strip().split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise PlatformError("kernel", f"expected a version like \"6.12\", got {text!r}") from None
    return (major, minor)


@dataclass
class Iommu:
    kind: str = "vtd"
    pgsizes: list[int] = field(default_factory=lambda: [4096, 2 << 20, 1 << 30])
    aperture: tuple[int, int] = (0, (1 << 39) - 1)
    reserved: list[tuple[int, int]] = field(default_factory=lambda: [(0xFEE00000, 0xFEEFFFFF)])
    # sPAPR
    dma32_window: tuple[int, int] = (0, 1 << 30)
    max_windows: int = 2
    levels: int = 5
    ddw: bool = True
    eeh: bool = True
    # x86: interrupt remapping (intremap=on); without it SET_IOMMU / bind give EPERM
    intremap: bool = True
    dirty_tracking: bool = False
    # the IOMMU enforces cache coherency (iommu_capable IOMMU_CAP_CACHE_COHERENCY /
    # enforce_cache_coherency): QEMU's VT-d has no snoop control, so it does not
    coherent: bool = True
    # nested translation (IOMMU_HWPT_ALLOC_NEST_PARENT): QEMU's VT-d has none
    nesting: bool = True


@dataclass
class Device:
    name: str
    group: str
    driver: str | None          # vfio-pci, another driver, or None
    cdev: str | None = None     # vfioN
    mdev_type: str | None = None
    # a function-level/slot/bus reset the kernel can use (pci_dev reset_fn; vfio_pci_core's
    # vdev->reset_works): QEMU's edu device has none
    reset: bool = True
    # the PCI function as vfio-pci sees it (defaults: QEMU's edu device): BAR0-5 sizes (memory
    # BARs; 0 = absent), MSI vectors, MSI-X table size, an INTx pin, PCI Express
    bars: list[int] = field(default_factory=lambda: [1 << 20, 0, 0, 0, 0, 0])
    msi: int = 1
    msix: int = 0
    intx: bool = True
    pcie: bool = False

    @property
    def vfio(self) -> bool:
        return self.driver in VFIO_DRIVERS or self.driver == "vfio-mdev"


@dataclass
class Group:
    name: str
    number: int
    devices: list[str]
    noiommu: bool = False


@dataclass
class MdevType:
    name: str
    available_instances: int
    device_api: str = "vfio-pci"
    description: str = ""


@dataclass
class Platform:
    kernel: tuple[int, int] = (6, 12)
    iommu: Iommu = field(default_factory=Iommu)
    vfio_container: str = "vfio"
    groups: dict[str, Group] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    mdev_parents: dict[str, dict[str, MdevType]] = field(default_factory=dict)
    rlimit_memlock: int = 8 << 20
    caps: frozenset[str] = frozenset({"CAP_IPC_LOCK", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE"})
    page_size: int = 4096
    dma_entry_limit: int = 65535
    enable_unsafe_noiommu_mode: bool = False
    transparent_hugepage: bool = True      # CONFIG_TRANSPARENT_HUGEPAGE (caps iommufd's IOVA alignment)
    raw: dict = field(default_factory=dict)

    def at_least(self, major: int, minor: int = 0) -> bool:
        return self.kernel >= (major, minor)

    def has_cap(self, cap: str) -> bool:
        return cap in self.caps


_TOP = {"kernel", "iommu", "vfio_container", "groups", "mdev_parents", "process", "params"}
_IOMMU_KEYS = {"kind", "pgsizes", "aperture", "reserved", "dma32_window", "max_windows", "levels", "ddw",
               "eeh", "intremap", "dirty_tracking", "coherent", "nesting"}


_DEVICE_KEYS = {"driver", "reset", "bars", "msi", "msix", "intx", "pcie"}


def _pair(v, where):
    if not (isinstance(v, list) and len(v) == 2):
        raise PlatformError(where, "expected a list of two numbers")
    return (parse_int(v[0], where), parse_int(v[1], where))


def parse_platform(obj: dict | None) -> Platform:
    """Platform from a trace's `platform` object, defaults filled in."""
    obj = obj or {}
    if not isinstance(obj, dict):
        raise PlatformError("", "expected an object")
    for k in obj:
        if k not in _TOP:
            raise PlatformError(k, f"unknown key; expected one of {sorted(_TOP)}")
    p = Platform(raw=obj)
    if "kernel" in obj:
        p.kernel = parse_version(obj["kernel"])
    io = obj.get("iommu", {})
    if not isinstance(io, dict):
        raise PlatformError("iommu", "expected an object")
    for k in io:
        if k not in _IOMMU_KEYS:
            raise PlatformError(f"iommu.{k}", f"unknown key; expected one of {sorted(_IOMMU_KEYS)}")
    kind = io.get("kind", "vtd")
    if kind not in ("vtd", "spapr"):
        raise PlatformError("iommu.kind", f"expected \"vtd\" or \"spapr\", got {kind!r}")
    iommu = Iommu(kind=kind)
    if kind == "spapr":
        iommu.pgsizes = [4096, 65536, 2 << 20, 16 << 20]
        iommu.reserved = []
        iommu.levels = 1
    if "pgsizes" in io:
        iommu.pgsizes = [parse_int(x, "iommu.pgsizes") for x in io["pgsizes"]]
    if "aperture" in io:
        iommu.aperture = _pair(io["aperture"], "iommu.aperture")
    if "reserved" in io:
        iommu.reserved = [_pair(r, "iommu.reserved") for r in io["reserved"]]
    if "dma32_window" in io:
        iommu.dma32_window = _pair(io["dma32_window"], "iommu.dma32_window")
    for k in ("max_windows", "levels"):
        if k in io:
            setattr(iommu, k, parse_int(io[k], f"iommu.{k}"))
    for k in ("ddw", "eeh", "intremap", "dirty_tracking", "coherent", "nesting"):
        if k in io:
            if not isinstance(io[k], bool):
                raise PlatformError(f"iommu.{k}", "expected true or false")
            setattr(iommu, k, io[k])
    p.iommu = iommu
    vc = obj.get("vfio_container", "vfio")
    if vc not in ("vfio", "iommufd", None):
        raise PlatformError("vfio_container", f"expected \"vfio\" or \"iommufd\", got {vc!r}")
    p.vfio_container = vc
    groups = obj.get("groups", {"g0": {"devices": {"dev0": "vfio-pci"}}})
    if not isinstance(groups, dict):
        raise PlatformError("groups", "expected an object of group names")
    number = 0
    cdev = 0
    for gname, g in groups.items():
        if not isinstance(g, dict) or not isinstance(g.get("devices", {}), dict):
            raise PlatformError(f"groups.{gname}", "expected {\"devices\": {name: driver}}")
        for k in g:
            if k not in ("devices", "noiommu", "number"):
                raise PlatformError(f"groups.{gname}.{k}", "unknown key; expected devices, noiommu or number")
        devs = list(g.get("devices", {}))
        grp = Group(gname, parse_int(g.get("number", number), f"groups.{gname}.number"), devs,
                    bool(g.get("noiommu", False)))
        number = grp.number + 1
        p.groups[gname] = grp
        for d, drv in g.get("devices", {}).items():
            if d in p.devices:
                raise PlatformError(f"groups.{gname}.devices.{d}", "device named in two groups")
            reset = True
            if isinstance(drv, dict):
                extra = set(drv) - _DEVICE_KEYS
                if extra:
                    raise PlatformError(f"groups.{gname}.devices.{d}", f"unknown keys {sorted(extra)}; "
                                        f"expected {sorted(_DEVICE_KEYS)}")
                for k in ("reset", "intx", "pcie"):
                    if k in drv and not isinstance(drv[k], bool):
                        raise PlatformError(f"groups.{gname}.devices.{d}.{k}", "expected true or false")
                pci = {k: drv[k] for k in ("reset", "intx", "pcie") if k in drv}
                for k in ("msi", "msix"):
                    if k in drv:
                        pci[k] = parse_int(drv[k], f"groups.{gname}.devices.{d}.{k}")
                if "bars" in drv:
                    bars = [parse_int(x, f"groups.{gname}.devices.{d}.bars") for x in drv["bars"]]
                    if len(bars) > 6:
                        raise PlatformError(f"groups.{gname}.devices.{d}.bars", "at most 6 BARs")
                    pci["bars"] = bars + [0] * (6 - len(bars))
                reset = pci.pop("reset", True)
                drv = drv.get("driver")
            if drv is not None and not isinstance(drv, str):
                raise PlatformError(f"groups.{gname}.devices.{d}",
                                    "expected a driver name, null or {\"driver\": ..., \"reset\": bool}")
            dev = Device(d, gname, drv, reset=reset, **(pci if isinstance(g["devices"][d], dict) else {}))
            if dev.vfio:
                dev.cdev = f"vfio{cdev}"
                cdev += 1
            p.devices[d] = dev
    parents = obj.get("mdev_parents", {})
    for pname, par in parents.items():
        types = {}
        for tname, t in (par or {}).get("types", {}).items():
            types[tname] = MdevType(tname, parse_int(t.get("available_instances", 1),
                                                     f"mdev_parents.{pname}.types.{tname}.available_instances"),
                                    t.get("device_api", "vfio-pci"), t.get("description", ""))
        p.mdev_parents[pname] = types
    proc = obj.get("process", {})
    for k in proc:
        if k not in ("rlimit_memlock", "caps", "page_size"):
            raise PlatformError(f"process.{k}", "unknown key; expected rlimit_memlock, caps or page_size")
    if "rlimit_memlock" in proc:
        p.rlimit_memlock = parse_int(proc["rlimit_memlock"], "process.rlimit_memlock")
    if "caps" in proc:
        p.caps = frozenset(proc["caps"])
    if "page_size" in proc:
        p.page_size = parse_int(proc["page_size"], "process.page_size")
    params = obj.get("params", {})
    for k in params:
        if k not in ("dma_entry_limit", "enable_unsafe_noiommu_mode", "transparent_hugepage"):
            raise PlatformError(f"params.{k}", "unknown key; expected dma_entry_limit, enable_unsafe_noiommu_mode "
                                               "or transparent_hugepage")
    if "dma_entry_limit" in params:
        p.dma_entry_limit = parse_int(params["dma_entry_limit"], "params.dma_entry_limit")
    if "enable_unsafe_noiommu_mode" in params:
        p.enable_unsafe_noiommu_mode = bool(params["enable_unsafe_noiommu_mode"])
    if "transparent_hugepage" in params:
        p.transparent_hugepage = bool(params["transparent_hugepage"])
    return p
