"""Abstract actions of the TLA+ models <-> trace-format v1 steps.

Each model's action records ``lastCall`` (the call and its abstract arguments),
``lastResult`` (errno name or "ok") and ``lastOut`` (an output, in pages or
counts).  A *concretizer* turns a behaviour (the list of states TLC prints)
into uAPI steps with expectations; see ../shared/trace-format.md.

IOVA page p is ``iova = p * 0x1000``; user page u is ``buf + u * 0x1000`` of one
anonymous ``mmap`` made in the prologue.
"""

from __future__ import annotations

import copy

PAGE = 0x1000
U32_MAX = "U32_MAX"     # an object id no IOAS has (ST-vfio attach_invalid_pt_fails)


def hx(n: int) -> str:
    return hex(n)


def expect_of(result: str, out: dict | None = None):
    if result != "ok":
        return {"errno": result}
    if out:
        return {"ret": 0, "out": out}
    return "ok"


class Uncertain(Exception):
    """A step whose kernel answer the spec does not pin down: left out of generated traces."""


# Requirement IDs (reference/requirements/*.toml) each abstract action exercises,
# by (op, result); "*" matches any result.
REQUIREMENTS = {
    ("OpenGroup", "ok"): ["GROUP-OPEN"], ("OpenGroup", "EBUSY"): ["GROUP-SINGLE-OPEN"],
    ("CloseGroup", "*"): ["GROUP-OPEN"],
    ("SetContainer", "ok"): ["GROUP-SET-CONTAINER"], ("SetContainer", "EINVAL"): ["GROUP-SET-CONTAINER-ALREADY"],
    ("UnsetContainer", "ok"): ["GROUP-UNSET-CONTAINER"], ("UnsetContainer", "EINVAL"): ["GROUP-UNSET-CONTAINER-NONE"],
    ("SetIommu", "ok"): ["CONTAINER-SET-IOMMU"], ("SetIommu", "EINVAL"): [],
    ("MapDma", "ok"): ["TYPE1-MAP"], ("MapDma", "EEXIST"): ["TYPE1-MAP-OVERLAP"],
    ("MapDma", "EINVAL"): ["CONTAINER-IOCTL-BEFORE-SET-IOMMU"], ("UnmapDma", "EINVAL:none"): ["CONTAINER-IOCTL-BEFORE-SET-IOMMU"],
    ("UnmapDma", "ok"): ["TYPE1-UNMAP"], ("UnmapDma", "EINVAL"): ["TYPE1-UNMAP-NO-BISECT"],
    ("Bind", "ok"): ["CDEV-BIND"], ("Bind", "EINVAL"): ["CDEV-BIND-TWICE"], ("Bind", "EBUSY"): ["CDEV-GROUP-EXCLUSIVE"],
    ("Attach", "ok"): ["CDEV-ATTACH", "IOMMUFD-ATTACH-AUTO-HWPT"], ("Attach", "EINVAL"): ["CDEV-NO-ACCESS-BEFORE-BIND"],
    ("Attach", "ENOENT"): ["IOMMUFD-OBJECT-ENOENT"],
    ("Detach", "ok"): ["CDEV-DETACH"], ("Detach", "EINVAL"): ["CDEV-NO-ACCESS-BEFORE-BIND"],
    ("DestroyDevice", "*"): ["IOMMUFD-UNBIND"],
    ("IoasAlloc", "*"): ["IOAS-ALLOC"], ("IoasDestroy", "ok"): ["IOMMUFD-OBJECT-ENOENT"],
    ("IoasDestroy", "ENOENT"): ["IOMMUFD-OBJECT-ENOENT"], ("IoasDestroy", "EBUSY"): ["IOMMUFD-OBJECT-ENOENT"],
    ("IoasMap", "ok"): ["IOAS-MAP-FIXED", "IOMMUFD-PIN-ONCE"], ("IoasMap", "EEXIST"): ["IOAS-MAP-OVERLAP"],
    ("IoasMap", "ENOENT"): ["IOMMUFD-OBJECT-ENOENT"],
    ("IoasUnmap", "ok"): ["IOAS-UNMAP"], ("IoasUnmap", "ENOENT"): ["IOAS-UNMAP-SPLIT-ENOENT"],
    ("IoasCopy", "ok"): ["IOAS-COPY-SHARES-PAGES", "IOMMUFD-PIN-ONCE"], ("IoasCopy", "ENOENT"): ["IOAS-COPY-SRC-HOLE"],
    ("IoasCopy", "EEXIST"): ["IOAS-MAP-OVERLAP"],
    ("Create", "ok"): ["MDEV-CREATE"], ("Create", "EEXIST"): ["MDEV-CREATE-DUPLICATE"],
    ("Create", "ENOSPC"): ["MDEV-CREATE-NO-INSTANCES"], ("Remove", "*"): ["MDEV-REMOVE", "MDEV-REMOVE-RETURNS-INSTANCE"],
    ("ReadAvailable", "*"): ["MDEV-AVAILABLE-INSTANCES"],
}


def requirements_of(op: str, result: str, table: dict | None = None) -> list[str]:
    table = REQUIREMENTS if table is None else table
    return table.get((op, result)) or table.get((op, "*")) or []


class Concretizer:
    """Builds the steps of one trace from a behaviour of one model."""
    model = ""
    requirements: dict | None = None      # (op, result) -> IDs; None: REQUIREMENTS
    note = ""                             # how abstract values became concrete, for the description

    def __init__(self, consts: dict):
        self.consts = consts
        self.steps: list[dict] = []
        self.reqs: list[str] = []
        self.dropped: list[str] = []

    def platform(self) -> dict:
        raise NotImplementedError

    def prologue(self) -> list[dict]:
        return []

    def action(self, call: dict, result: str, out: int, pre: dict, post: dict) -> list[dict]:
        raise NotImplementedError

    def build(self, states: list[dict]) -> list[dict]:
        steps = list(self.prologue())
        for pre, post in zip(states, states[1:]):
            call, result, out = post["lastCall"], post["lastResult"], post["lastOut"]
            try:
                new = self.action(call, result, out, pre, post)
            except Uncertain as why:
                self.dropped.append(f"{call['op']} -> {result}: {why}")
                continue
            for r in requirements_of(call["op"], result, self.requirements):
                if r not in self.reqs:
                    self.reqs.append(r)
            steps.extend(new)
        self.reqs = list(dict.fromkeys(self.reqs))
        self.steps = steps
        return steps


# ---------------------------------------------------------------- Type1
class Type1Concretizer(Concretizer):
    model = "type1"

    def __init__(self, consts):
        super().__init__(consts)
        self.fd = {}          # group -> current fd name
        self.opens = {}       # group -> opens so far (fresh fd names)

    def platform(self):
        groups = sorted(self.consts["Groups"])
        # Type1.tla is VFIO's own container (IOMMUFD's emulation answers otherwise)
        return {"groups": {g: {"devices": {f"dev{g[1:]}": "vfio-pci"}} for g in groups}, "vfio_container": "vfio"}

    def prologue(self):
        return [{"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
                {"call": "mmap", "length": hx(self.consts["NPages"] * PAGE), "as": "buf"}]

    def _fresh(self, g):
        k = self.opens.get(g, 0)
        self.opens[g] = k + 1
        return g if k == 0 else f"{g}_{k}"

    def action(self, c, res, out, pre, post):
        op, g = c["op"], c["group"]
        if op == "SetIommu" and res == "EINVAL":
            # which of the two EINVALs of vfio_ioctl_set_iommu this is
            self.reqs.append("CONTAINER-SET-IOMMU-TWICE" if pre["iommu"] != "none" else "CONTAINER-SET-IOMMU-NO-GROUP")
        if op == "OpenGroup":
            name = self._fresh(g)
            if res == "ok":
                self.fd[g] = name
            return [{"call": "open", "path": f"/dev/vfio/{{{g}}}", "as": name, "expect": expect_of(res)}]
        if op == "CloseGroup":
            return [{"call": "close", "fd": self.fd[g], "expect": "ok"}]
        if op == "SetContainer":
            return [{"call": "ioctl", "fd": self.fd[g], "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container",
                     "expect": expect_of(res)}]
        if op == "UnsetContainer":
            return [{"call": "ioctl", "fd": self.fd[g], "cmd": "VFIO_GROUP_UNSET_CONTAINER", "expect": expect_of(res)}]
        if op == "SetIommu":
            t = {"v1": "VFIO_TYPE1_IOMMU", "v2": "VFIO_TYPE1v2_IOMMU"}[c["type"]]
            return [{"call": "ioctl", "fd": "container", "cmd": "VFIO_SET_IOMMU", "arg": t, "expect": expect_of(res)}]
        if op == "MapDma":
            return [{"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
                     "arg": {"flags": ["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"],
                             "vaddr": f"buf+{hx(c['iova'] * PAGE)}" if c["iova"] else "buf",
                             "iova": hx(c["iova"] * PAGE), "size": hx(c["size"] * PAGE)},
                     "expect": expect_of(res)}]
        if op == "UnmapDma":
            return [{"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA",
                     "arg": {"iova": hx(c["iova"] * PAGE), "size": hx(c["size"] * PAGE)},
                     "expect": expect_of(res, {"size": hx(out * PAGE)} if res == "ok" else None)}]
        raise Uncertain(f"no uAPI mapping for {op}")


# ---------------------------------------------------------------- IOMMUFD
class IommufdConcretizer(Concretizer):
    model = "iommufd"

    def __init__(self, consts):
        super().__init__(consts)
        self.gfd = {}
        self.opens = {}

    @staticmethod
    def group_of(d):
        return "g" + d[3:]

    def platform(self):
        devs = sorted(self.consts["Devices"])
        return {"groups": {self.group_of(d): {"devices": {d: "vfio-pci"}} for d in devs}}

    def prologue(self):
        steps = [{"call": "open", "path": "/dev/iommu", "as": "iommufd"}]
        for d in sorted(self.consts["Devices"]):
            steps.append({"call": "open", "path": f"/dev/vfio/devices/{{{d}.cdev}}", "as": f"{d}_cdev"})
        steps.append({"call": "mmap", "length": hx(self.consts["NPages"] * PAGE), "as": "buf"})
        return steps

    @staticmethod
    def ioas_id(slot, state):
        return f"$ioas{slot}" if slot in state["ioas"] else U32_MAX

    def action(self, c, res, out, pre, post):
        op, d, s = c["op"], c["dev"], c["ioas"]
        if op == "OpenGroup":
            g = self.group_of(d)
            k = self.opens.get(g, 0)
            self.opens[g] = k + 1
            name = g if k == 0 else f"{g}_{k}"
            if res == "ok":
                self.gfd[g] = name
            return [{"call": "open", "path": f"/dev/vfio/{{{g}}}", "as": name, "expect": expect_of(res)}]
        if op == "CloseGroup":
            return [{"call": "close", "fd": self.gfd[self.group_of(d)], "expect": "ok"}]
        if op == "Bind":
            step = {"call": "ioctl", "fd": f"{d}_cdev", "cmd": "VFIO_DEVICE_BIND_IOMMUFD",
                    "arg": {"flags": 0, "iommufd": "iommufd"}, "expect": expect_of(res)}
            if res == "ok":
                step["save"] = {"out_devid": f"devid_{d}"}
            return [step]
        if op == "Attach":
            return [{"call": "ioctl", "fd": f"{d}_cdev", "cmd": "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                     "arg": {"flags": 0, "pt_id": self.ioas_id(s, pre)}, "expect": expect_of(res)}]
        if op == "Detach":
            return [{"call": "ioctl", "fd": f"{d}_cdev", "cmd": "VFIO_DEVICE_DETACH_IOMMUFD_PT",
                     "arg": {"flags": 0}, "expect": expect_of(res)}]
        if op == "DestroyDevice":
            return [{"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_DESTROY", "arg": {"id": f"$devid_{d}"},
                     "expect": expect_of(res)}]
        if op == "IoasAlloc":
            return [{"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_ALLOC", "arg": {"flags": 0},
                     "save": {"out_ioas_id": f"ioas{s}"}, "expect": "ok"}]
        if op == "IoasDestroy":
            return [{"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_DESTROY", "arg": {"id": self.ioas_id(s, pre)},
                     "expect": expect_of(res)}]
        if op == "IoasMap":
            return [{"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_MAP",
                     "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_WRITEABLE", "IOMMU_IOAS_MAP_READABLE"],
                             "ioas_id": self.ioas_id(s, pre),
                             "user_va": f"buf+{hx(c['iova'] * PAGE)}" if c["iova"] else "buf",
                             "length": hx(c["size"] * PAGE), "iova": hx(c["iova"] * PAGE)},
                     "expect": expect_of(res)}]
        if op == "IoasUnmap":
            if res == "ENOENT" and s in pre["ioas"] and not any(
                    a_iova <= c["iova"] + c["size"] - 1 and c["iova"] <= a_iova + a_size - 1
                    for a_iova, a_size in _areas(pre, s)):
                # iopt_unmap_iova_range on an empty range: ENOENT in the source read
                # (kernel-semantics #74), 0 after commit afb47765f923 (#105).
                raise Uncertain("IOAS_UNMAP of an empty range: ENOENT or 0 depending on afb47765f923")
            return [{"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_UNMAP",
                     "arg": {"ioas_id": self.ioas_id(s, pre), "iova": hx(c["iova"] * PAGE), "length": hx(c["size"] * PAGE)},
                     "expect": expect_of(res, {"length": hx(out * PAGE)} if res == "ok" else None)}]
        if op == "IoasCopy":
            return [{"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_COPY",
                     "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_WRITEABLE", "IOMMU_IOAS_MAP_READABLE"],
                             "dst_ioas_id": self.ioas_id(c["dst"], pre), "src_ioas_id": self.ioas_id(s, pre),
                             "length": hx(c["size"] * PAGE), "dst_iova": hx(c["dst_iova"] * PAGE),
                             "src_iova": hx(c["iova"] * PAGE)},
                     "expect": expect_of(res)}]
        raise Uncertain(f"no uAPI mapping for {op}")


def _areas(state, slot):
    """[(iova, size)] of an IOAS slot in a parsed state (areas is a tuple or dict by slot)."""
    areas = state["areas"]
    got = areas[slot - 1] if isinstance(areas, tuple) else areas[slot]
    return [(dict(a)["iova"], dict(a)["size"]) for a in got]


# ---------------------------------------------------------------- mdev
UUIDS = {f"m{k}": f"5e1e0e1d-0000-4000-8000-{k:012x}" for k in range(16)}
MTTY = "/sys/class/mdev_bus/mtty/mdev_supported_types"


class MdevConcretizer(Concretizer):
    model = "mdev"

    def platform(self):
        return {"groups": {}, "mdev_parents": {"mtty": {"types": {t: {"available_instances": self.consts["Total"]}
                                                                 for t in sorted(self.consts["Types"])}}}}

    def action(self, c, res, out, pre, post):
        op, t, u = c["op"], c["type"], c["uuid"]
        if op == "Create":
            step = {"call": "write", "path": f"{MTTY}/{t}/create", "data": UUIDS[u], "expect": expect_of(res)}
            if res == "ok":
                step["as"] = u
            return [step]
        if op == "Remove":
            return [{"call": "write", "path": f"/sys/bus/mdev/devices/{{{u}}}/remove", "data": "1", "expect": "ok"}]
        if op == "ReadAvailable":
            return [{"call": "read", "path": f"{MTTY}/{t}/available_instances", "expect": {"data": str(out)}}]
        raise Uncertain(f"no uAPI mapping for {op}")


# ---------------------------------------------------------------- sPAPR TCE
# The platform of the generated sPAPR traces: the ppc64le pseries guest under QEMU
# (vfiospec/lane/pseries.py: guest_platform, without process.page_size, so the
# traces run on both its 4K and 64K kernels, and with the model's one group: g0).
SPAPR_PLATFORM = {"kernel": "6.12",
                  "iommu": {"kind": "spapr", "dma32_window": [0, "0x40000000"],
                            "pgsizes": [4096, 65536, 2097152, 16777216],
                            "max_windows": 2, "levels": 1, "ddw": True, "eeh": False},
                  "vfio_container": "vfio",
                  "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}},
                  "params": {"transparent_hugepage": False}}
SPAPR_DMA32_SIZE = 0x40000000
SPAPR_DDW_START = 1 << 59           # QEMU spapr PHB dma64_win_addr: every dynamic window
SPAPR_WINDOW_START = {0: 0, 1: SPAPR_DDW_START}   # slot 0: the default window, restored at 0
SPAPR_IOMMU_PAGE = 0x1000           # 4K IOMMU pages: valid on 4K and 64K kernels
SPAPR_USER_PAGE = 0x10000           # a user page of the model: 64K, aligned on both kernels
# TCE_CREATE's arguments: 4K pages of tce32_size make slot 0 the default window
# (pseries is_default_window_request) and slot 1 a dynamic window at 1 << 59.
SPAPR_CREATE_ARG = {"page_shift": 12, "window_size": hex(SPAPR_DMA32_SIZE), "levels": 1}
SPAPR_TYPES = {"v1": "VFIO_SPAPR_TCE_IOMMU", "v2": "VFIO_SPAPR_TCE_v2_IOMMU"}

SPAPR_REQUIREMENTS = {
    ("SetIommu", "ok"): ["SPAPR-SET-IOMMU"], ("SetIommu", "EINVAL"): ["CONTAINER-SET-IOMMU-TWICE"],
    ("Enable", "ok"): ["SPAPR-V1-ENABLE-ACCOUNTING"], ("Enable", "EBUSY"): ["SPAPR-V1-ENABLE-TWICE"],
    ("Enable", "ENOTTY"): ["SPAPR-V2-NO-ENABLE"],
    ("Register", "ok"): ["SPAPR-PREREG-REGISTER"], ("Register", "EBUSY"): ["SPAPR-PREREG-TWICE"],
    ("Register", "EINVAL"): ["SPAPR-PREREG-OVERLAP"], ("Register", "ENOTTY"): ["SPAPR-V1-NO-V2-IOCTLS"],
    ("Unregister", "ok"): ["SPAPR-PREREG-EXACT-UNREGISTER"], ("Unregister", "ENOENT"): ["SPAPR-PREREG-EXACT-UNREGISTER"],
    ("Unregister", "EPERM"): ["SPAPR-PREREG-UNREGISTER-NO-MM"], ("Unregister", "ENOTTY"): ["SPAPR-V1-NO-V2-IOCTLS"],
    ("Map", "ok"): ["SPAPR-MAP"], ("Map", "EPERM"): ["SPAPR-MAP-NOT-ENABLED"],
    ("Map", "ENXIO"): ["SPAPR-MAP-OUTSIDE-WINDOWS"], ("Map", "EINVAL"): ["SPAPR-V2-MAP-PREREG-ONLY"],
    ("Unmap", "ok"): ["SPAPR-UNMAP"], ("Unmap", "EPERM"): ["SPAPR-MAP-NOT-ENABLED"],
    ("Unmap", "ENXIO"): ["SPAPR-MAP-OUTSIDE-WINDOWS"],
    ("CreateWindow", "ok"): ["SPAPR-TCE-CREATE"], ("CreateWindow", "ENOSPC"): ["SPAPR-TCE-CREATE-MAX-WINDOWS"],
    ("CreateWindow", "EPERM"): ["SPAPR-TCE-CREATE-PLATFORM-START"], ("CreateWindow", "ENOTTY"): ["SPAPR-V1-NO-V2-IOCTLS"],
    ("RemoveWindow", "ok"): ["SPAPR-TCE-REMOVE"], ("RemoveWindow", "EINVAL"): ["SPAPR-TCE-REMOVE-NO-WINDOW"],
    ("RemoveWindow", "ENOTTY"): ["SPAPR-V1-NO-V2-IOCTLS"],
}


def spapr_window_of(page: int, niova: int) -> int:
    """The window slot holding abstract IOVA page `page` (SpaprTce.tla WinPages)."""
    return 0 if page < niova // 2 else 1


def spapr_iova(page: int, niova: int) -> int:
    """Bus address of abstract IOVA page `page`: its window's start plus the page's
    offset in that window, in 4K IOMMU pages."""
    w = spapr_window_of(page, niova)
    first = 0 if w == 0 else niova // 2
    return SPAPR_WINDOW_START[w] + (page - first) * SPAPR_IOMMU_PAGE


class SpaprConcretizer(Concretizer):
    """SpaprTce.tla -> uAPI steps on one container with group g0 attached
    (drivers/vfio/vfio_iommu_spapr_tce.c: tce_iommu_ioctl).  IOVA page p is
    ``spapr_iova(p)`` (window 0 at 0, window 1 at 1 << 59, 4K IOMMU pages), user
    page u is ``buf + u * 0x10000``; a MAP/UNMAP covers one 4K IOMMU page."""
    model = "spapr"
    requirements = SPAPR_REQUIREMENTS

    def __init__(self, consts):
        super().__init__(consts)
        self.win_name: dict[int, str] = {}    # live window slot -> name saving its start_addr
        self.creates = 0
        self.pending = False                  # the default window is pending (tce_iommu_create_default_window)

    @property
    def note(self):
        n = self.consts["NIova"]

        def pages(a, b):
            return f"page {a}" if a == b else f"pages {a}..{b}"
        return (f"An IOVA page is one 4K IOMMU page: {pages(0, n // 2 - 1)} in the default window at bus "
                f"address 0, {pages(n // 2, n - 1)} in the dynamic window TCE_CREATE places at 1 << 59 "
                f"(pseries under QEMU); user pages are 64K, so the trace runs on 4K and 64K kernels.")

    def platform(self):
        return copy.deepcopy(SPAPR_PLATFORM)

    @staticmethod
    def _mapped(state, r) -> bool:
        """SpaprTce.tla Mapped(r): a live TCE maps a user page of region r."""
        tces = state["tces"]
        users = tces.values() if isinstance(tces, dict) else tces
        return any(u != -1 and r["ua"] <= u < r["ua"] + r["n"] for u in users)

    def prologue(self):
        return [{"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
                {"call": "open", "path": "/dev/vfio/{g0}", "as": "g0", "expect": "ok"},
                {"call": "ioctl", "fd": "g0", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container", "expect": "ok"},
                {"call": "mmap", "length": hx(self.consts["NUser"] * SPAPR_USER_PAGE), "as": "buf"}]

    def _addr(self, page: int):
        """IOVA of a page, as the saved start of its live window when it is that start."""
        iova = spapr_iova(page, self.consts["NIova"])
        w = spapr_window_of(page, self.consts["NIova"])
        if iova == SPAPR_WINDOW_START[w] and w in self.win_name:
            return f"${self.win_name[w]}"
        return hx(iova)

    @staticmethod
    def _ua(u: int) -> str:
        return f"buf+{hx(u * SPAPR_USER_PAGE)}" if u else "buf"

    def _req(self, *ids):
        self.reqs.extend(ids)

    def _c(self, cmd, arg=None, expect="ok", **extra):
        s = {"call": "ioctl", "fd": "container", "cmd": cmd}
        if arg is not None:
            s["arg"] = arg
        s["expect"] = expect
        s.update(extra)
        return s

    def action(self, c, res, out, pre, post):
        op = c["op"]
        v2 = pre["iommu"] == "v2"
        if op == "SetIommu":
            if res == "ok":
                self.pending = True
                self._req("SPAPR-DEFAULT-WINDOW-PENDING")
            return [self._c("VFIO_SET_IOMMU", SPAPR_TYPES[c["type"]], expect_of(res))]
        if op == "Enable":
            return [self._c("VFIO_IOMMU_ENABLE", expect=expect_of(res))]
        if op in ("Register", "Unregister"):
            r = dict(c["reg"])
            if op == "Register" and res == "ok":
                self._req("SPAPR-V2-ENABLED-BY-REGISTER" if not pre["enabled"] else "SPAPR-PREREG-REGISTER")
                if r in [dict(x) for x in pre["leaked"]]:
                    self._req("SPAPR-PREREG-UNREGISTER-MAPPED")
            if op == "Unregister" and res == "ok" and self._mapped(pre, r):
                self._req("SPAPR-PREREG-UNREGISTER-MAPPED")     # tce_iommu_unregister_pages: 0, stays pinned
            cmd = "VFIO_IOMMU_SPAPR_REGISTER_MEMORY" if op == "Register" else "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY"
            return [self._c(cmd, {"vaddr": self._ua(r["ua"]), "size": hx(r["n"] * SPAPR_USER_PAGE)}, expect_of(res))]
        if op in ("Map", "Unmap"):
            if pre["enabled"] and self.pending:
                self.pending = False           # MAP/UNMAP create the pending default window
            p = c["iova"]
            if op == "Map":
                if res == "ok":
                    self._req("SPAPR-V2-MAP-PREREG-ONLY" if v2 else "SPAPR-V1-MAP-PINS")
                return [self._c("VFIO_IOMMU_MAP_DMA",
                                {"flags": ["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"],
                                 "vaddr": self._ua(c["ua"]), "iova": self._addr(p), "size": hx(SPAPR_IOMMU_PAGE)},
                                expect_of(res))]
            return [self._c("VFIO_IOMMU_UNMAP_DMA", {"iova": self._addr(p), "size": hx(SPAPR_IOMMU_PAGE)},
                            expect_of(res))]
        if op == "CreateWindow":
            if not v2:
                return [self._c("VFIO_IOMMU_SPAPR_TCE_CREATE", dict(SPAPR_CREATE_ARG), expect_of(res))]
            self.pending = False
            if res != "ok":
                return [self._c("VFIO_IOMMU_SPAPR_TCE_CREATE", dict(SPAPR_CREATE_ARG), expect_of(res))]
            w = out                            # the slot the window took (SpaprTce.tla CreateWindow)
            self.creates += 1
            name = f"win{self.creates}"
            self.win_name[w] = name
            return [self._c("VFIO_IOMMU_SPAPR_TCE_CREATE", dict(SPAPR_CREATE_ARG),
                            {"ret": 0, "out": {"start_addr": hx(SPAPR_WINDOW_START[w])}},
                            save={"start_addr": name})]
        if op == "RemoveWindow":
            w = c["window"]
            if res == "ok" and w == 0 and self.pending:
                self.pending = False
                self._req("SPAPR-TCE-REMOVE-PENDING-DEFAULT")
            start = f"${self.win_name[w]}" if w in self.win_name else hx(SPAPR_WINDOW_START[w])
            if res == "ok":
                self.win_name.pop(w, None)
            return [self._c("VFIO_IOMMU_SPAPR_TCE_REMOVE", {"start_addr": start}, expect_of(res))]
        raise Uncertain(f"no uAPI mapping for {op}")


CONCRETIZERS = {"type1": Type1Concretizer, "iommufd": IommufdConcretizer, "mdev": MdevConcretizer,
                "spapr": SpaprConcretizer}


def base_model(model: str) -> str:
    """The model a variant is of: type1_guest -> type1, iommufd_bind_twice -> iommufd."""
    return model.split("_")[0]


def behaviour_steps(trace) -> list[dict]:
    """States of a TLC counterexample / simulation, without the generator's counter."""
    return [s for _, s in trace]


def counterexample_text(res, man) -> str:
    """The counterexample as lines: one per step, the call, its result and the state change."""
    lines = [f"counterexample ({res.violated or res.outcome}), {len(res.trace)} states:"]
    prev = None
    for k, (label, st) in enumerate(res.trace, 1):
        call = st.get("lastCall", {})
        args = ", ".join(f"{a}={v!r}" for a, v in call.items() if a != "op" and v not in ("", 0))
        change = ""
        if prev is not None:
            diff = [f"{v}: {prev[v]!r} -> {st[v]!r}" for v in st
                    if v not in ("lastCall", "lastResult", "lastOut") and st[v] != prev.get(v)]
            change = ("; " + "; ".join(diff)) if diff else ""
        lines.append(f"  {k}. {call.get('op', label)}({args}) -> {st.get('lastResult', '?')}{change}")
        prev = st
    return "\n".join(lines)


def counterexample_trace(res, man, name=None) -> dict:
    """A TLC counterexample as a trace-format v1 document (when the model maps to uAPI steps)."""
    base = base_model(man["model"])
    consts = man.get("constants")
    if consts is None:
        from .generate import read_constants
        from .tlc import MODELS_DIR
        consts = read_constants((MODELS_DIR / man["model"] / man["config"]).read_text())
    conc = CONCRETIZERS[base](consts)
    states = behaviour_steps(res.trace)
    steps = conc.build(states)
    return {"vfiospec": 1, "name": name or f"tlc-{man['model']}-counterexample",
            "description": f"TLC counterexample of {man['model']}: {res.violated or res.outcome}",
            "requirements": [(res.violated or "").replace("_", "-")] + conc.reqs if res.violated else conc.reqs,
            "source": "generated", "platform": conc.platform(), "steps": steps}
