"""Abstract action sequences of the model as conformance traces (trace format v1).

Each abstract action becomes the uAPI calls a program makes for it; the fds it
needs (container, group, iommufd, cdev) are opened the first time an action
uses them.  Every step carries the expectation the model computed (its errno),
so replaying the trace on a target checks the target against the model.

Units: the model counts pages of 4 KiB; the trace speaks bytes.
"""

from __future__ import annotations

from .schema import DDW_BASE_PAGES, IOMMU_SPAPR_V2, USER_PAGES, Config

PAGE = 4096
KIND_NAME = {1: "VFIO_TYPE1v2_IOMMU", 2: "VFIO_SPAPR_TCE_v2_IOMMU"}
PAGE_SHIFT = {1: 12, 16: 16}


def platform_of(s0: dict, cfg: Config) -> dict:
    """The trace `platform` for the model's initial state (constants)."""
    groups = {}
    for g in range(cfg.n_grp):
        groups[f"g{g}"] = {"devices": {f"dev{d}": "vfio-pci" for d in cfg.devs_of(g)}}
    caps = ["CAP_SYS_RAWIO", "CAP_SYS_RESOURCE"] + (["CAP_IPC_LOCK"] if s0["cap"] else [])
    p = {"kernel": "6.12", "groups": groups,
         "process": {"rlimit_memlock": s0["rlimit"] * PAGE, "caps": caps, "page_size": PAGE}}
    if s0["spapr"]:
        p["iommu"] = {"kind": "spapr", "max_windows": s0["max_windows"]}
    total = s0["mtotal"][0] if cfg.n_mtype else 0
    if cfg.n_mtype:
        p["mdev_parents"] = {"mtty": {"types": {"mtty-1": {"available_instances": total},
                                                "mtty-2": {"available_instances": total // 2}}}}
    return p


def _expect(errno: str):
    return "ok" if errno == "OK" else {"errno": errno}


class _Writer:
    def __init__(self, cfg: Config, s0: dict):
        self.cfg = cfg
        self.steps: list[dict] = []
        self.open: set[str] = set()
        self.spapr = bool(s0["spapr"])
        self.uuid = 0
        self.steps.append({"call": "mmap", "length": hex(USER_PAGES * PAGE), "as": "buf",
                           **({"hugepage": True} if self.spapr else {}), "expect": "ok"})

    def ensure(self, name: str, path: str):
        if name not in self.open:
            self.steps.append({"call": "open", "path": path, "as": name, "expect": "ok"})
            self.open.add(name)

    def cont(self, c):
        self.ensure(f"container{c}", "/dev/vfio/vfio")
        return f"container{c}"

    def iommufd(self, i):
        self.ensure(f"iommufd{i}", "/dev/iommu")
        return f"iommufd{i}"

    def cdev(self, d):
        self.ensure(f"cdev{d}", f"/dev/vfio/devices/{{dev{d}.cdev}}")
        return f"cdev{d}"

    def ioctl(self, fd, cmd, arg=None, errno="OK", **extra):
        st = {"call": "ioctl", "fd": fd, "cmd": cmd}
        if arg is not None:
            st["arg"] = arg
        st["expect"] = _expect(errno)
        st.update(extra)
        self.steps.append(st)

    @staticmethod
    def buf(va):
        return "buf" if va == 0 else f"buf+{hex(va * PAGE)}"


def _window_at(pre: dict, c: int, iova: int, cfg: Config):
    for n in range(cfg.n_win):
        if pre["wlive"][c][n] and pre["wstart"][c][n] <= iova < pre["wstart"][c][n] + pre["wsize"][c][n]:
            return n
    return None


def emit(w: "_Writer", a: str, p: dict, e: str, pre: dict, post: dict, cfg: Config) -> None:
    """Append the uAPI steps of abstract action `a` (params p, model errno e) to w."""
    if a == "OpenGroup":
        w.steps.append({"call": "open", "path": f"/dev/vfio/{{g{p['g']}}}", "as": f"group{p['g']}",
                        "expect": _expect(e)})
        if e == "OK":
            w.open.add(f"group{p['g']}")
    elif a == "CloseGroup":
        w.steps.append({"call": "close", "fd": f"group{p['g']}", "expect": "ok"})
        w.open.discard(f"group{p['g']}")
    elif a == "SetContainer":
        c = w.cont(p["c"])
        w.ioctl(f"group{p['g']}", "VFIO_GROUP_SET_CONTAINER", c, e)
    elif a == "UnsetContainer":
        w.ioctl(f"group{p['g']}", "VFIO_GROUP_UNSET_CONTAINER", None, e)
    elif a == "SetIommu":
        c = w.cont(p["c"])
        w.ioctl(c, "VFIO_SET_IOMMU", KIND_NAME.get(p["kind"], p["kind"]), e)
        if e == "OK" and p["kind"] == IOMMU_SPAPR_V2:
            # the model has no pending default window: cancel it (kernel-semantics 63)
            w.ioctl(c, "VFIO_IOMMU_SPAPR_TCE_REMOVE", {"start_addr": 0}, "OK")
    elif a == "MapDma":
        w.ioctl(w.cont(p["c"]), "VFIO_IOMMU_MAP_DMA",
                {"flags": ["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"], "vaddr": w.buf(p["va"]),
                 "iova": hex(p["iova"] * PAGE), "size": hex(p["len"] * PAGE)}, e)
    elif a == "UnmapDma":
        w.ioctl(w.cont(p["c"]), "VFIO_IOMMU_UNMAP_DMA",
                {"iova": hex(p["iova"] * PAGE), "size": hex(p["len"] * PAGE)}, e)
    elif a == "Bind":
        fd = w.iommufd(p["ictx"])
        w.ioctl(w.cdev(p["dev"]), "VFIO_DEVICE_BIND_IOMMUFD", {"iommufd": fd}, e)
    elif a == "Unbind":
        w.steps.append({"call": "close", "fd": f"cdev{p['dev']}", "expect": "ok"})
        w.open.discard(f"cdev{p['dev']}")
    elif a == "IoasAlloc":
        w.ioctl(w.iommufd(p["ictx"]), "IOMMU_IOAS_ALLOC", {}, e, save={"out_ioas_id": f"ioas{p['slot']}"})
    elif a == "Attach":
        w.ioctl(w.cdev(p["dev"]), "VFIO_DEVICE_ATTACH_IOMMUFD_PT", {"pt_id": f"$ioas{p['ioas']}"}, e)
    elif a == "Detach":
        w.ioctl(w.cdev(p["dev"]), "VFIO_DEVICE_DETACH_IOMMUFD_PT", {}, e)
    elif a == "IoasMap":
        fd = w.iommufd(pre["qictx"][p["ioas"]])
        w.ioctl(fd, "IOMMU_IOAS_MAP",
                {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_WRITEABLE", "IOMMU_IOAS_MAP_READABLE"],
                 "ioas_id": f"$ioas{p['ioas']}", "user_va": w.buf(p["va"]), "length": hex(p["len"] * PAGE),
                 "iova": hex(p["iova"] * PAGE)}, e)
    elif a == "IoasUnmap":
        fd = w.iommufd(pre["qictx"][p["ioas"]])
        w.ioctl(fd, "IOMMU_IOAS_UNMAP", {"ioas_id": f"$ioas{p['ioas']}", "iova": hex(p["iova"] * PAGE),
                                         "length": hex(p["len"] * PAGE)}, e)
    elif a == "IoasCopy":
        fd = w.iommufd(pre["qictx"][p["src_ioas"]])
        w.ioctl(fd, "IOMMU_IOAS_COPY",
                {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_WRITEABLE", "IOMMU_IOAS_MAP_READABLE"],
                 "dst_ioas_id": f"$ioas{p['dst_ioas']}", "src_ioas_id": f"$ioas{p['src_ioas']}",
                 "length": hex(p["len"] * PAGE), "dst_iova": hex(p["dst_iova"] * PAGE),
                 "src_iova": hex(p["src_iova"] * PAGE)}, e)
    elif a == "Destroy":
        fd = w.iommufd(pre["qictx"][p["ioas"]])
        w.ioctl(fd, "IOMMU_DESTROY", {"id": f"$ioas{p['ioas']}"}, e)
    elif a in ("RegisterMemory", "UnregisterMemory"):
        cmd = "VFIO_IOMMU_SPAPR_REGISTER_MEMORY" if a == "RegisterMemory" else "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY"
        w.ioctl(w.cont(p["c"]), cmd, {"vaddr": w.buf(p["va"]), "size": hex(p["len"] * PAGE)}, e)
    elif a == "TceCreate":
        arg = {"page_shift": PAGE_SHIFT[p["pgsize"]], "window_size": hex(p["size"] * PAGE), "levels": 1}
        n = p["num"]
        if e == "OK":
            w.ioctl(w.cont(p["c"]), "VFIO_IOMMU_SPAPR_TCE_CREATE", arg, None,
                    expect={"ret": 0, "out": {"start_addr": hex(post["wstart"][p["c"]][n] * PAGE)}})
        else:
            w.ioctl(w.cont(p["c"]), "VFIO_IOMMU_SPAPR_TCE_CREATE", arg, e)
    elif a == "TceRemove":
        start = 0 if p["at"] == 0 else DDW_BASE_PAGES
        w.ioctl(w.cont(p["c"]), "VFIO_IOMMU_SPAPR_TCE_REMOVE", {"start_addr": hex(start * PAGE)}, e)
    elif a in ("SpaprMapDma", "SpaprUnmapDma"):
        n = _window_at(pre, p["c"], p["iova"], cfg)
        size = pre["wps"][p["c"]][n] if n is not None else 1
        if a == "SpaprMapDma":
            w.ioctl(w.cont(p["c"]), "VFIO_IOMMU_MAP_DMA",
                    {"flags": ["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"], "vaddr": w.buf(p["va"]),
                     "iova": hex(p["iova"] * PAGE), "size": hex(size * PAGE)}, e)
        else:
            w.ioctl(w.cont(p["c"]), "VFIO_IOMMU_UNMAP_DMA",
                    {"iova": hex(p["iova"] * PAGE), "size": hex(size * PAGE)}, e)
    elif a == "MdevCreate":
        w.uuid += 1
        uuid = f"83b8f4f2-509f-382f-3c1e-{w.uuid:012x}"
        w.steps.append({"call": "write",
                        "path": f"/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-{p['ports']}/create",
                        "data": uuid, **({"as": f"m{p['slot']}"} if e == "OK" else {}), "expect": _expect(e)})
    elif a == "MdevRemove":
        w.steps.append({"call": "write", "path": f"/sys/bus/mdev/devices/{{m{p['slot']}}}/remove", "data": "1",
                        "expect": _expect(e)})
    else:   # pragma: no cover - every action of the model is listed above
        raise ValueError(f"no trace steps for action {a}")


def to_trace(name: str, description: str, steps, states: list[dict], cfg: Config, requirements=None) -> dict:
    """A trace document for an explorer result (steps and the states s0..sN)."""
    from .transitions import BY_NAME
    s0 = states[0]
    w = _Writer(cfg, s0)
    reqs = list(requirements or [])
    # open the containers and iommufds the actions use in index order, so that a
    # snapshot of the target numbers them as the model does
    for c in range(1 + max([st.params["c"] for st in steps if "c" in st.params], default=-1)):
        w.cont(c)
    for i in range(1 + max([st.params["ictx"] for st in steps if "ictx" in st.params], default=-1)):
        w.iommufd(i)
    for k, st in enumerate(steps):
        for r in BY_NAME[st.action].reqs:
            if r not in reqs:
                reqs.append(r)
        emit(w, st.action, st.params, st.errno, states[k], states[k + 1], cfg)
    for st in w.steps:
        if st.get("expect") is None:
            del st["expect"]
    return {"vfiospec": 1, "name": name, "description": description, "requirements": reqs,
            "source": "generated", "platform": platform_of(s0, cfg), "steps": w.steps}
