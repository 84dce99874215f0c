"""Abstract actions of the TLA+ models <-> trace-format v1 steps.

Each model's action records ``lastCall`` (the call and its abstract arguments),
``lastResult`` (errno name or "ok") and ``lastOut`` (an output, in pages or
counts).  A *concretizer* turns a behaviour (the list of states TLC prints)
into uAPI steps with expectations; see ../shared/trace-format.md.

IOVA page p is ``iova = p * 0x1000``; user page u is ``buf + u * 0x1000`` of one
anonymous ``mmap`` made in the prologue.
"""

from __future__ import annotations

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


def requirements_of(op: str, result: str) -> list[str]:
    return REQUIREMENTS.get((op, result)) or REQUIREMENTS.get((op, "*")) or []


class Concretizer:
    """Builds the steps of one trace from a behaviour of one model."""
    model = ""

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
            for r in requirements_of(call["op"], result):
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
        return {"groups": {g: {"devices": {f"dev{g[1:]}": "vfio-pci"}} for g in groups}}

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
UUIDS = {f"m{k}": f"5e1e0e1d-0000-4000-8000-00000000000{k}" for k in range(10)}
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


CONCRETIZERS = {"type1": Type1Concretizer, "iommufd": IommufdConcretizer, "mdev": MdevConcretizer}


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
    base = man["model"].split("_")[0]
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
