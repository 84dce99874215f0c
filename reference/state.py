"""A read-only snapshot of the reference's abstract state: `snapshot(kernel) -> State`.

This is the abstract state of ../shared/design.md as plain frozen data, read
from the attributes each kernel-object module documents as its abstract state
(its module docstring).  Nothing here changes the kernel.  The z3 model's
runtime checker (vfiospec.model.runtime.check_state) evaluates the invariants on
it, and conformance runs can record it after each step.

A kind whose module is absent from the build (or whose objects were never
created) gives an empty section.

Identities: containers, iommufd contexts and iopt_pages have no number in the
kernel's uAPI; they are numbered here in the order they are first found (open
fds by fd number, then objects reachable from groups and devices).  Object IDs
of an iommufd context are its own (IOMMU_DESTROY ids).  Addresses and sizes are
bytes; accounting counters are pages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """A VFIO device: `cdev_bound` (bound through /dev/vfio/devices/vfioN), `ictx`
    (the iommufd context index it is bound to, by either path, or None), `attached`
    (the HWPT id its iommufd device is attached to, or None), `open_count`."""
    name: str
    group: int
    cdev_bound: bool
    ictx: int | None
    attached: int | None
    open_count: int
    emulated: bool = False


@dataclass(frozen=True)
class Group:
    """A VFIO group: its node is `open`; `container` (index) or `iommufd` (context
    index) set by SET_CONTAINER; `owner`: ("container", i), ("iommufd", i),
    ("driver", None) for a kernel driver using the DMA API, or None."""
    number: int
    type: str
    open: bool
    container: int | None
    iommufd: int | None
    owner: tuple | None


@dataclass(frozen=True)
class Container:
    """A VFIO container: `iommu` is the backend ("none", "type1", "type1v2",
    "spapr", "spapr_v2", "noiommu"); `enabled` (sPAPR); `v1_locked` pages a v1
    sPAPR ENABLE charged."""
    index: int
    iommu: str
    enabled: bool = False
    v1_locked: int = 0


@dataclass(frozen=True)
class Type1Mapping:
    container: int
    iova: int
    size: int
    vaddr: int
    locked: int          # pages charged to locked_vm


@dataclass(frozen=True)
class Ioas:
    ictx: int
    id: int


@dataclass(frozen=True)
class Hwpt:
    ictx: int
    id: int
    ioas: int            # the IOAS id
    auto: bool


@dataclass(frozen=True)
class IoptPages:
    """An iopt_pages: `uptr` (page aligned) and `npages`; `pinned` per page (1 when
    pinned, iommufd pins a page once); `access_pins` per page (in-kernel accesses);
    `account_mode` "none" | "user" | "mm"."""
    index: int
    uptr: int
    npages: int
    account_mode: str
    pinned: tuple[int, ...]
    access_pins: tuple[int, ...]


@dataclass(frozen=True)
class Area:
    ictx: int
    ioas: int            # the IOAS id
    iova: int
    length: int
    pages: int           # IoptPages.index
    first_index: int     # first page of the iopt_pages it maps
    last_index: int


@dataclass(frozen=True)
class Window:
    """A sPAPR DMA window: table slot `slot` of container `container`."""
    container: int
    slot: int
    start: int
    size: int
    page_size: int
    locked: int          # pages its table charges to locked_vm


@dataclass(frozen=True)
class Tce:
    container: int
    slot: int
    iova: int
    ua: int
    region: int | None   # Registration.index (v2), None for v1


@dataclass(frozen=True)
class Registration:
    """A pre-registered region of the mm: `containers` that hold it (empty: leaked)."""
    index: int
    ua: int
    size: int
    containers: tuple[int, ...]
    mapped: int          # TCEs mapping into it
    locked: int          # pages charged


@dataclass(frozen=True)
class MdevPool:
    """What a parent offers: mtty's port pool, or one type of a generic parent."""
    parent: str
    type: str | None     # None for mtty's shared pool
    available: int       # free units now
    total: int           # units at boot (platform)


@dataclass(frozen=True)
class Mdev:
    uuid: str
    pool: int            # MdevPool index
    units: int           # units it holds (mtty: nr_ports)
    live: bool           # still in mdev_list (False: removed, held by an open fd)


@dataclass(frozen=True)
class State:
    platform: str                       # "vtd" | "spapr"
    page_size: int
    cap_ipc_lock: bool
    rlimit_pages: int
    locked_vm: int
    user_locked_vm: int
    pinned_vm: int
    devices: tuple[Device, ...] = ()
    groups: tuple[Group, ...] = ()
    containers: tuple[Container, ...] = ()
    ictxs: tuple[int, ...] = ()          # context indexes
    live_ids: tuple[tuple[int, tuple[int, ...]], ...] = ()   # (ictx, object ids)
    type1: tuple[Type1Mapping, ...] = ()
    ioas: tuple[Ioas, ...] = ()
    hwpts: tuple[Hwpt, ...] = ()
    iopt_pages: tuple[IoptPages, ...] = ()
    areas: tuple[Area, ...] = ()
    windows: tuple[Window, ...] = ()
    tces: tuple[Tce, ...] = ()
    registrations: tuple[Registration, ...] = ()
    mdev_pools: tuple[MdevPool, ...] = ()
    mdevs: tuple[Mdev, ...] = ()


class _Ids:
    def __init__(self):
        self.ids: dict[int, int] = {}
        self.objs: list = []

    def __call__(self, obj) -> int | None:
        if obj is None:
            return None
        k = id(obj)
        if k not in self.ids:
            self.ids[k] = len(self.objs)
            self.objs.append(obj)
        return self.ids[k]


def _iommu_kind(container) -> str:
    d = getattr(container, "iommu_data", None)
    if d is None:
        return "none"
    name = type(d).__name__
    if name == "Type1":
        return "type1v2" if getattr(d, "v2", False) else "type1"
    if name == "TceContainer":
        return "spapr_v2" if getattr(d, "v2", False) else "spapr"
    if getattr(d, "noiommu", False):
        return "noiommu"
    return name


def snapshot(kernel) -> State:
    """The abstract state of `kernel` now."""
    conts, ctxs, pages_ids, regs = _Ids(), _Ids(), _Ids(), _Ids()
    files = [kernel.files[fd] for fd in sorted(kernel.files)]
    for f in files:
        if getattr(f, "kind", None) == "vfio-container":
            conts(f.container)
        if getattr(f, "kind", None) == "iommufd":
            ctxs(f.ictx)
    groups_obj = kernel.objects.get("vfio_groups", {})
    for g in groups_obj.values():
        conts(g.container)
        ctxs(g.iommufd)
    for d in kernel.devices.values():
        ctxs(getattr(d, "iommufd_ictx", None))

    # ------------------------------------------------ groups and devices
    groups = []
    for num in sorted(groups_obj):
        g = groups_obj[num]
        owner = None
        if g.owner is not None:
            if getattr(g.owner, "group_list", None) is not None:
                owner = ("container", conts(g.owner))
            else:
                owner = ("iommufd", ctxs(g.owner))
        elif g.kernel_driver_users():
            owner = ("driver", None)
        groups.append(Group(num, g.type, g.opened_file is not None, conts(g.container), ctxs(g.iommufd), owner))
    devices = []
    seen = set()
    for d in list(kernel.devices.values()):
        if id(d) in seen:
            continue
        seen.add(id(d))
        idev = getattr(d, "idev", None)
        attached = None
        if idev is not None and getattr(d, "iommufd_attached", False) and getattr(idev, "igroup", None) is not None:
            hw = idev.igroup.hwpt       # physical devices; an access attaches to an IOAS, not a HWPT
            attached = hw.obj_id if hw is not None else None
        logical = getattr(d, "logical", d.name)
        devices.append(Device(logical, d.group.number, bool(getattr(d, "cdev_opened", False)),
                              ctxs(getattr(d, "iommufd_ictx", None)), attached, d.open_count,
                              bool(getattr(d, "emulated", False))))

    # ------------------------------------------------ containers and backends
    containers, type1, windows, tces = [], [], [], []
    for ci, c in enumerate(conts.objs):
        data = getattr(c, "iommu_data", None)
        kind = _iommu_kind(c)
        enabled = bool(getattr(data, "enabled", False))
        # tce_iommu_disable un-charges locked_pages but leaves the field as it was
        containers.append(Container(ci, kind, enabled,
                                    int(getattr(data, "locked_pages", 0) or 0) if enabled else 0))
        if kind in ("type1", "type1v2"):
            for iova in sorted(data.dmas):
                m = data.dmas[iova]
                type1.append(Type1Mapping(ci, m.iova, m.size, m.vaddr, int(getattr(m, "locked_vm", 0))))
        if kind in ("spapr", "spapr_v2"):
            for slot, t in enumerate(data.tables):
                if t is None:
                    continue
                windows.append(Window(ci, slot, t.start, t.size, t.page_size,
                                      t.allocated_size // kernel.page_size))
                for e in sorted(t.tces):
                    tce = t.tces[e]
                    tces.append(Tce(ci, slot, e << t.it_page_shift, tce.ua, regs(tce.mem)))

    # ------------------------------------------------ sPAPR registrations
    registrations = []
    mm_iommu = kernel.objects.get("mm_iommu")
    if mm_iommu is not None:
        for ua in sorted(mm_iommu.mems):
            regs(mm_iommu.mems[ua])
    for ri, mem in enumerate(regs.objs):
        holders = tuple(ci for ci, c in enumerate(conts.objs)
                        if _iommu_kind(c) == "spapr_v2" and any(x is mem for x in c.iommu_data.prereg))
        registrations.append(Registration(ri, mem.ua, mem.size, holders, mem.tces, int(mem.locked)))

    # ------------------------------------------------ iommufd
    ioas_l, hwpts, areas, live = [], [], [], []
    for xi, ictx in enumerate(ctxs.objs):
        objs = getattr(ictx, "objects", {})
        live.append((xi, tuple(sorted(objs))))
        for oid in sorted(objs):
            o = objs[oid]
            t = getattr(o, "type", "")
            if t == "ioas":
                ioas_l.append(Ioas(xi, oid))
                iopt = o.iopt
                for iova in sorted(iopt.areas):
                    a = iopt.areas[iova]
                    pi = pages_ids(a.pages)
                    areas.append(Area(xi, oid, a.iova, a.length, pi, a.first_index, a.last_index))
            elif t.startswith("hwpt"):
                parent = getattr(o, "ioas", None)
                hwpts.append(Hwpt(xi, oid, getattr(parent, "obj_id", 0), bool(getattr(o, "auto_domain", False))))
    iopt_pages = []
    for pi, p in enumerate(pages_ids.objs):
        pinned = [0] * p.npages
        for a in p.domain_areas:
            for k in range(a.first_index, a.last_index + 1):
                if 0 <= k < p.npages:
                    pinned[k] = 1
        acc = [0] * p.npages
        for k, n in p.access_pins.items():
            if 0 <= k < p.npages:
                acc[k] = n
                pinned[k] = 1
        iopt_pages.append(IoptPages(pi, p.uptr, p.npages, p.account_mode, tuple(pinned), tuple(acc)))

    # ------------------------------------------------ mdev
    pools, mdevs = [], []
    parents = kernel.objects.get("mdev_parents", {})
    pool_of = {}
    try:
        from vfiospec.reference.mdev.mtty import nr_ports_of
    except ImportError:          # pragma: no cover - mdev module absent
        nr_ports_of = None
    for pname, par in parents.items():
        types = kernel.platform.mdev_parents.get(pname, {})
        if getattr(par, "is_mtty", False):
            total = max((t.available_instances * nr_ports_of(n) for n, t in types.items()), default=0)
            pool_of[(pname, None)] = len(pools)
            pools.append(MdevPool(pname, None, par.avail_ports, total))
        else:
            for tname, t in types.items():
                pool_of[(pname, tname)] = len(pools)
                pools.append(MdevPool(pname, tname, par.avail.get(tname, 0), t.available_instances))
    live_uuids = set(kernel.objects.get("mdevs", {}))
    states = []
    for uuid, m in kernel.objects.get("mdevs", {}).items():
        states.append((uuid, m.parent, m.type_name, getattr(getattr(m, "vdev", None), "ops", None), True))
    for f in files:   # removed mdevs still held open: their units come back at release
        d = getattr(f, "device", None)
        if d is not None and getattr(d, "emulated", False) and d.name not in live_uuids and not f.closed:
            ops = getattr(d, "ops", None)
            if ops is not None and all(s[3] is not ops for s in states):
                states.append((d.name, ops.parent, ops.type_name, ops, False))
    for uuid, parent, tname, ops, is_live in states:
        pname = getattr(parent, "name", parent)
        key = (pname, None) if getattr(parent, "is_mtty", False) else (pname, tname)
        if key in pool_of:
            mdevs.append(Mdev(uuid, pool_of[key], int(getattr(ops, "nr_ports", 1) or 0), is_live))

    io = kernel.platform.iommu
    return State(
        platform=io.kind, page_size=kernel.page_size, cap_ipc_lock=kernel.capable("CAP_IPC_LOCK"),
        rlimit_pages=kernel.platform.rlimit_memlock // kernel.page_size,
        locked_vm=kernel.mm.locked_vm, user_locked_vm=kernel.user_locked_vm, pinned_vm=kernel.mm.pinned_vm,
        devices=tuple(devices), groups=tuple(groups), containers=tuple(containers), ictxs=tuple(range(len(ctxs.objs))),
        live_ids=tuple(live), type1=tuple(type1), ioas=tuple(ioas_l), hwpts=tuple(hwpts),
        iopt_pages=tuple(iopt_pages), areas=tuple(areas), windows=tuple(windows), tces=tuple(tces),
        registrations=tuple(registrations), mdev_pools=tuple(pools), mdevs=tuple(mdevs))
