"""Implementation -> spec: check a recorded trace against a TLA+ model with TLC.

The trace's steps are translated to the model's abstract calls (the inverse of
traces.py), each with the result the run gave (its ``expect``, or a recorded
``result``).  A trace module is written whose behaviours must follow that
sequence:

    VNext == \\/ ~vfree /\\ vi < Len(T) /\\ Next /\\ Matches(vi + 1) /\\ vi' = vi + 1
             \\/ ~vfree /\\ vi < Len(T) /\\ Next /\\ vfree' /\\ vi' = vi

The second disjunct records, beside each state on the trace, every step the
spec allows there (vfree states end there).  TLC explores it (``-dump``); the
trace is accepted when a state with vi = Len(T) is reachable.  Otherwise the
first step no action explains is step vi+1 of the furthest state, and the free
successors of that state are what the spec enabled there.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from . import tlc
from .generate import read_constants
from .tlavalue import parse_state, to_tla
from .traces import (PAGE, SPAPR_CREATE_ARG, SPAPR_PLATFORM, SPAPR_TYPES, SPAPR_USER_PAGE, SPAPR_IOMMU_PAGE,
                     SPAPR_WINDOW_START, UUIDS, base_model, spapr_iova, spapr_window_of)

MODULES = {"type1": "Type1", "iommufd": "Iommufd", "mdev": "Mdev", "spapr": "SpaprTce"}


class Unrepresentable(Exception):
    """A step the model cannot express (outside its constants or its vocabulary)."""


def num(v) -> int:
    if isinstance(v, int):
        return v
    v = str(v)
    if v == "U64_MAX":
        return (1 << 64) - 1
    if v == "U32_MAX":
        return (1 << 32) - 1
    return int(v, 0)


def results_of(step) -> tuple[set, int | None]:
    """({errno names or "ok"}, out or None) the run gave for this step."""
    rec = step.get("result")
    if isinstance(rec, dict):          # a recorded result: {"ret", "errno", "out", "data"}
        res = {rec["errno"]} if rec.get("errno") else {"ok"}
        return res, rec
    exp = step.get("expect")
    if exp is None:
        return {"*"}, None
    if exp == "ok":
        return {"ok"}, None
    if isinstance(exp, list):
        if all(isinstance(e, str) for e in exp):
            return set(exp), None
        exp = next((e for e in exp if not ({"kernel", "vfio_container", "iommu"} & set(e))), exp[-1])
    if isinstance(exp, dict):
        if "errno" in exp:
            e = exp["errno"]
            return (set(e) if isinstance(e, list) else {e}), None
        return {"ok"}, exp
    raise Unrepresentable(f"expectation {exp!r}")


def out_field(extra, key) -> int | None:
    if not isinstance(extra, dict):
        return None
    if key == "data" and "data" in extra:
        return int(extra["data"])
    out = extra.get("out") or {}
    return num(out[key]) // PAGE if key in out else None


class Abstractor:
    model = ""

    def __init__(self, consts):
        self.c = consts

    def out(self, key, extra) -> int | None:
        """The abstract output of a step's result field `key` (None: not known)."""
        return out_field(extra, key)

    def page_range(self, iova, size, maxlen_key="MaxLen"):
        iova, size = num(iova), num(size)
        if iova % PAGE or size % PAGE or size == 0:
            raise Unrepresentable(f"iova {iova:#x} size {size:#x} not whole pages")
        p, n = iova // PAGE, size // PAGE
        if p + n > self.c["NPages"] or n > self.c[maxlen_key]:
            raise Unrepresentable(f"iova {iova:#x} size {size:#x} outside the model's {self.c['NPages']} pages / {self.c[maxlen_key]}-page ranges")
        return p, n


class Type1Abstractor(Abstractor):
    model = "type1"

    def __init__(self, consts):
        super().__init__(consts)
        self.fd_group = {}
        self.containers = set()

    def call(self, op, group="", iova=0, size=0, type=""):
        return {"op": op, "group": group, "iova": iova, "size": size, "type": type}

    def step(self, s, results):
        call = s["call"]
        if call == "mmap":
            return None
        if call == "open" and s["path"] == "/dev/vfio/vfio":
            if self.containers:
                raise Unrepresentable("a second container (the model has one)")
            self.containers.add(s["as"])
            return None
        if call == "open":
            m = re.fullmatch(r"/dev/vfio/\{(\w+)\}", s["path"])
            if not m or m.group(1) not in self.c["Groups"]:
                raise Unrepresentable(f"open of {s['path']}")
            if results & {"ok", "*"}:
                self.fd_group[s["as"]] = m.group(1)
            return self.call("OpenGroup", m.group(1)), None
        if call == "close":
            if s["fd"] not in self.fd_group:
                raise Unrepresentable(f"close of {s['fd']}")
            return self.call("CloseGroup", self.fd_group.pop(s["fd"])), None
        if call != "ioctl":
            raise Unrepresentable(f"call {call}")
        cmd, arg = s["cmd"], s.get("arg")
        if isinstance(arg, dict) and "argsz" in arg:
            raise Unrepresentable(f"{cmd} with an explicit argsz")
        if s.get("fd") not in self.containers | set(self.fd_group):
            raise Unrepresentable(f"{cmd} on fd {s.get('fd')!r}")
        if cmd in ("VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_GROUP_GET_STATUS", "VFIO_IOMMU_GET_INFO"):
            return None
        if cmd in ("VFIO_GROUP_SET_CONTAINER", "VFIO_GROUP_UNSET_CONTAINER"):
            g = self.fd_group.get(s["fd"])
            if g is None:
                raise Unrepresentable(f"{cmd} on {s['fd']}")
            if cmd == "VFIO_GROUP_SET_CONTAINER" and arg not in self.containers:
                raise Unrepresentable(f"SET_CONTAINER with {arg!r}, not the container")
            return self.call("SetContainer" if cmd.endswith("_SET_CONTAINER") else "UnsetContainer", g), None
        if cmd == "VFIO_SET_IOMMU":
            t = {"VFIO_TYPE1_IOMMU": "v1", "VFIO_TYPE1v2_IOMMU": "v2", 1: "v1", 3: "v2"}.get(arg)
            if t is None:
                raise Unrepresentable(f"SET_IOMMU({arg})")
            return self.call("SetIommu", type=t), None
        if s.get("fd") not in self.containers and cmd.startswith("VFIO_IOMMU") or cmd == "VFIO_SET_IOMMU" and s.get("fd") not in self.containers:
            raise Unrepresentable(f"{cmd} on a group fd")
        if cmd == "VFIO_IOMMU_MAP_DMA":
            fl = arg.get("flags", [])
            if not isinstance(fl, list) or not fl or not set(fl) <= {"VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"}:
                raise Unrepresentable(f"MAP_DMA flags {fl!r}")
            p, n = self.page_range(arg.get("iova", 0), arg.get("size", 0))
            return self.call("MapDma", iova=p, size=n), None
        if cmd == "VFIO_IOMMU_UNMAP_DMA":
            if arg.get("flags"):
                raise Unrepresentable("UNMAP_DMA flags")
            p, n = self.page_range(arg.get("iova", 0), arg.get("size", 0), "NPages")
            return self.call("UnmapDma", iova=p, size=n), "size"
        raise Unrepresentable(f"ioctl {cmd}")


IOAS_FLAGS = ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_WRITEABLE", "IOMMU_IOAS_MAP_READABLE"]


def _plain_flags(flags) -> bool:
    """flags the IOMMUFD model covers: none, or exactly FIXED_IOVA|WRITEABLE|READABLE."""
    if flags in (None, 0, []):
        return True
    return isinstance(flags, list) and set(flags) == set(IOAS_FLAGS)


class IommufdAbstractor(Abstractor):
    model = "iommufd"

    def __init__(self, consts):
        super().__init__(consts)
        self.fd_dev, self.fd_group, self.names, self.devids = {}, {}, {}, {}
        self.alloc: set[int] = set()

    def call(self, op, dev="", ioas=0, iova=0, size=0, dst=0, dst_iova=0):
        return {"op": op, "dev": dev, "ioas": ioas, "iova": iova, "size": size, "dst": dst, "dst_iova": dst_iova}

    def slot(self, ref):
        if isinstance(ref, str) and ref.startswith("$") and ref[1:] in self.names and self.names[ref[1:]] in self.alloc:
            return self.names[ref[1:]]
        free = [k for k in range(1, self.c["NIoas"] + 1) if k not in self.alloc]
        if not free:
            raise Unrepresentable(f"object id {ref!r} with every IOAS slot in use")
        return free[0]

    def step(self, s, results):
        call = s["call"]
        if call == "mmap":
            return None
        if call == "open" and s["path"] == "/dev/iommu":
            if s["as"] != "iommufd":
                raise Unrepresentable("the iommufd must be named 'iommufd'")
            return None
        if call == "open":
            m = re.fullmatch(r"/dev/vfio/devices/\{(\w+)\.cdev\}", s["path"])
            if m and m.group(1) in self.c["Devices"]:
                self.fd_dev[s["as"]] = m.group(1)
                return None
            m = re.fullmatch(r"/dev/vfio/\{g(\w+)\}", s["path"])
            if m and f"dev{m.group(1)}" in self.c["Devices"]:
                if results & {"ok", "*"}:
                    self.fd_group[s["as"]] = f"dev{m.group(1)}"
                return self.call("OpenGroup", f"dev{m.group(1)}"), None
            raise Unrepresentable(f"open of {s['path']}")
        if call == "close" and s["fd"] in self.fd_group:
            return self.call("CloseGroup", self.fd_group.pop(s["fd"])), None
        if call != "ioctl":
            raise Unrepresentable(f"call {call}")
        cmd, arg = s["cmd"], s.get("arg") or {}
        if isinstance(arg, dict) and ({"argsz", "__reserved"} & set(arg) or (cmd.startswith("IOMMU_") and "size" in arg)
                                      or not _plain_flags(arg.get("flags"))):
            raise Unrepresentable(f"{cmd} with fields the model does not vary: {arg}")
        if cmd in ("IOMMU_IOAS_MAP", "IOMMU_IOAS_COPY") and not (isinstance(arg.get("flags"), list)
                                                                and set(arg["flags"]) == set(IOAS_FLAGS)):
            raise Unrepresentable(f"{cmd} without FIXED_IOVA|WRITEABLE|READABLE")
        if cmd == "VFIO_DEVICE_BIND_IOMMUFD" and arg.get("iommufd") != "iommufd":
            raise Unrepresentable("BIND_IOMMUFD with another fd than the iommufd")
        if cmd in ("VFIO_DEVICE_BIND_IOMMUFD", "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "VFIO_DEVICE_DETACH_IOMMUFD_PT"):
            d = self.fd_dev.get(s["fd"])
            if d is None:
                raise Unrepresentable(f"{cmd} on {s['fd']}")
            if cmd.endswith("BIND_IOMMUFD"):
                for k, v in (s.get("save") or {}).items():
                    if k == "out_devid":
                        self.devids[v] = d
                return self.call("Bind", d), None
            if cmd.endswith("ATTACH_IOMMUFD_PT"):
                return self.call("Attach", d, self.slot(arg.get("pt_id"))), None
            return self.call("Detach", d), None
        if cmd == "IOMMU_IOAS_ALLOC":
            free = [k for k in range(1, self.c["NIoas"] + 1) if k not in self.alloc]
            if not free:
                raise Unrepresentable("IOAS_ALLOC beyond the model's IOAS slots")
            self.alloc.add(free[0])
            for k, v in (s.get("save") or {}).items():
                if k == "out_ioas_id":
                    self.names[v] = free[0]
            return self.call("IoasAlloc", ioas=free[0]), "alloc"
        if cmd == "IOMMU_DESTROY":
            ref = arg.get("id")
            if isinstance(ref, str) and ref[1:] in self.devids:
                return self.call("DestroyDevice", self.devids[ref[1:]]), None
            k = self.slot(ref)
            if results & {"ok", "*"}:
                self.alloc.discard(k)
            return self.call("IoasDestroy", ioas=k), None
        if cmd in ("IOMMU_IOAS_MAP", "IOMMU_IOAS_UNMAP"):
            length = arg.get("length", 0)
            op = "IoasMap" if cmd.endswith("_MAP") else "IoasUnmap"
            p, n = self.page_range(arg.get("iova", 0), length, "MaxLen" if op == "IoasMap" else "NPages")
            return self.call(op, ioas=self.slot(arg.get("ioas_id")), iova=p, size=n), ("length" if op == "IoasUnmap" else None)
        if cmd == "IOMMU_IOAS_COPY":
            p, n = self.page_range(arg.get("src_iova", 0), arg.get("length", 0))
            q, _ = self.page_range(arg.get("dst_iova", 0), arg.get("length", 0))
            return self.call("IoasCopy", ioas=self.slot(arg.get("src_ioas_id")), iova=p, size=n,
                             dst=self.slot(arg.get("dst_ioas_id")), dst_iova=q), None
        raise Unrepresentable(f"ioctl {cmd}")


class MdevAbstractor(Abstractor):
    model = "mdev"

    def __init__(self, consts):
        super().__init__(consts)
        self.uuid_name = {v: k for k, v in UUIDS.items() if k in consts["Uuids"]}
        self.type_of = {}

    def call(self, op, type="", uuid=""):
        return {"op": op, "type": type, "uuid": uuid}

    def step(self, s, results):
        path = s.get("path", "")
        m = re.fullmatch(r"/sys/class/mdev_bus/mtty/mdev_supported_types/([\w-]+)/(create|available_instances)", path)
        if m and m.group(1) in self.c["Types"]:
            t = m.group(1)
            if m.group(2) == "create":
                u = s.get("as") or self.uuid_name.get(str(s.get("data", "")).strip())
                if u not in self.c["Uuids"]:
                    raise Unrepresentable(f"UUID {s.get('data')!r}")
                self.uuid_name.setdefault(str(s["data"]).strip(), u)
                if results & {"ok", "*"}:
                    self.type_of[u] = t
                return self.call("Create", t, u), None
            return self.call("ReadAvailable", t), "data"
        m = re.fullmatch(r"/sys/bus/mdev/devices/\{(\w+)\}/remove", path)
        if m and m.group(1) in self.type_of and s.get("data") in ("1", 1):
            return self.call("Remove", self.type_of.pop(m.group(1)), m.group(1)), None
        raise Unrepresentable(f"{s['call']} {path}")


MAP_FLAGS = {"VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"}


class SpaprAbstractor(Abstractor):
    """Steps on one sPAPR container with one group -> SpaprTce.tla calls (the inverse
    of traces.SpaprConcretizer).  Keeps a shadow of the windows and live TCEs from
    the results, to name windows saved by TCE_CREATE and to leave out what the
    model does not cover (MAP over a live TCE, which the kernel exchanges)."""
    model = "spapr"

    def __init__(self, consts):
        super().__init__(consts)
        self.container = None
        self.groups: dict[str, bool] = {}      # group fd -> attached to the container
        self.buf = None                        # the mmap the user pages are in
        self.iommu = None
        self.windows: set[int] = set()
        self.live: set[int] = set()            # IOVA pages with a TCE
        self.saved: dict[str, int] = {}        # name saved from TCE_CREATE's start_addr -> slot

    def call(self, op, type="", iova=0, ua=0, reg=None, window=0):
        return {"op": op, "type": type, "iova": iova, "ua": ua,
                "reg": reg or {"ua": 0, "n": 0}, "window": window}

    @staticmethod
    def _only(results, what):
        """Whether the step succeeded; Unrepresentable when the results do not say."""
        if results in ({"ok"},) or "ok" not in results and "*" not in results:
            return "ok" in results
        raise Unrepresentable(f"{what} without a definite result")

    def _user(self, v) -> int:
        """User page of a vaddr (``buf+k*0x10000``)."""
        m = re.fullmatch(r"(\w+)(?:\+(\w+))?", str(v).strip())
        if not m or m.group(1) != self.buf:
            raise Unrepresentable(f"vaddr {v!r} outside the mmap'd buffer")
        off = num(m.group(2)) if m.group(2) else 0
        if off % SPAPR_USER_PAGE or off // SPAPR_USER_PAGE >= self.c["NUser"]:
            raise Unrepresentable(f"vaddr {v!r} is not one of the model's {self.c['NUser']} 64K user pages")
        return off // SPAPR_USER_PAGE

    def _addr(self, v) -> int:
        if isinstance(v, str) and v.startswith("$"):
            if v[1:] not in self.saved:
                raise Unrepresentable(f"{v} is no window start saved by TCE_CREATE")
            return SPAPR_WINDOW_START[self.saved[v[1:]]]
        return num(v)

    def _page(self, v) -> int:
        iova = self._addr(v)
        for p in range(self.c["NIova"]):
            if spapr_iova(p, self.c["NIova"]) == iova:
                return p
        raise Unrepresentable(f"iova {iova:#x} is none of the model's IOVA pages")

    def out(self, key, extra):
        if key != "start_addr":
            return super().out(key, extra)
        start = ((extra or {}).get("out") or {}).get("start_addr") if isinstance(extra, dict) else None
        if start is None:
            return None
        slots = [w for w, s in SPAPR_WINDOW_START.items() if s == num(start)]
        return slots[0] if slots else -2        # another address: no slot, so no action matches

    def step(self, s, results):
        call = s["call"]
        if call == "mmap":
            if self.buf is None:
                if s.get("hugepage") or num(s.get("length", 0)) < self.c["NUser"] * SPAPR_USER_PAGE:
                    raise Unrepresentable(f"mmap of {s.get('length')} (a huge page mapping, or smaller "
                                          f"than the model's user pages)")
                self.buf = s["as"]
            return None
        if call == "open" and s["path"] == "/dev/vfio/vfio":
            if self.container is not None:
                raise Unrepresentable("a second container (the model has one)")
            self.container = s["as"]
            return None
        if call == "open":
            if not re.fullmatch(r"/dev/vfio/\{\w+\}", s["path"]) or results != {"ok"} and results != {"*"}:
                raise Unrepresentable(f"open of {s['path']} (the model has one group, attached once)")
            self.groups[s["as"]] = False
            return None
        if call != "ioctl":
            raise Unrepresentable(f"call {call}")
        cmd, arg, fd = s["cmd"], s.get("arg"), s.get("fd")
        if fd in self.groups:
            if cmd == "VFIO_GROUP_GET_STATUS":
                return None
            if cmd == "VFIO_GROUP_SET_CONTAINER" and arg == self.container and results == {"ok"} \
                    and self.iommu is None and not any(self.groups.values()):
                self.groups[fd] = True
                return None
            raise Unrepresentable(f"{cmd} on group {fd} (the model has one group attached before SET_IOMMU)")
        if fd != self.container or self.container is None:
            raise Unrepresentable(f"{cmd} on fd {fd!r}")
        if isinstance(arg, dict) and ({"argsz", "flags"} & set(arg)) \
                and cmd not in ("VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA"):
            raise Unrepresentable(f"{cmd} with fields the model does not vary: {arg}")
        if cmd in ("VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_IOMMU_SPAPR_TCE_GET_INFO",
                   "VFIO_IOMMU_GET_INFO"):
            return None
        if cmd != "VFIO_SET_IOMMU" and self.iommu is None:
            raise Unrepresentable(f"{cmd} before SET_IOMMU (the model starts with the backend set)")
        if cmd == "VFIO_SET_IOMMU":
            t = {name: k for k, name in SPAPR_TYPES.items()}.get(arg) or {2: "v1", 7: "v2"}.get(arg)
            if t is None or not any(self.groups.values()):
                raise Unrepresentable(f"SET_IOMMU({arg}) " + ("(not an sPAPR type)" if t is None
                                                               else "before a group is attached"))
            if self.iommu is None and self._only(results, "SET_IOMMU"):
                self.iommu, self.windows = t, {0}
            return self.call("SetIommu", type=t), None
        if cmd == "VFIO_IOMMU_ENABLE":
            return self.call("Enable"), None
        if cmd in ("VFIO_IOMMU_SPAPR_REGISTER_MEMORY", "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY"):
            u, size = self._user(arg.get("vaddr", 0)), num(arg.get("size", 0))
            n = size // SPAPR_USER_PAGE
            if size % SPAPR_USER_PAGE or not 1 <= n <= self.c["MaxLen"] or u + n > self.c["NUser"]:
                raise Unrepresentable(f"{cmd} of {size:#x} bytes at user page {u}: not a region of the model")
            op = "Register" if cmd.endswith("_REGISTER_MEMORY") and "UNREGISTER" not in cmd else "Unregister"
            return self.call(op, reg={"ua": u, "n": n}), None
        if cmd in ("VFIO_IOMMU_MAP_DMA", "VFIO_IOMMU_UNMAP_DMA"):
            fl = arg.get("flags", 0)
            if cmd.endswith("_MAP_DMA") and not (fl == 3 or isinstance(fl, list) and set(fl) == MAP_FLAGS) \
                    or cmd.endswith("UNMAP_DMA") and fl not in (0, [], None) or "argsz" in arg:
                raise Unrepresentable(f"{cmd} flags {fl!r}")
            if num(arg.get("size", 0)) != SPAPR_IOMMU_PAGE:
                raise Unrepresentable(f"{cmd} of {arg.get('size')} bytes (the model maps one 4K IOMMU page)")
            p = self._page(arg.get("iova", 0))
            if cmd.endswith("UNMAP_DMA"):
                if results != {"*"} and "ok" in results:
                    self.live.discard(p)
                return self.call("Unmap", iova=p), None
            if p in self.live:
                raise Unrepresentable(f"MAP_DMA over the live TCE at {arg.get('iova')} "
                                      f"(the kernel exchanges it; not modelled)")
            if self._only(results, "MAP_DMA"):
                self.live.add(p)
            return self.call("Map", iova=p, ua=self._user(arg.get("vaddr", 0))), None
        if cmd == "VFIO_IOMMU_SPAPR_TCE_CREATE":
            given = {k: num(v) for k, v in (arg or {}).items()}
            if given != {k: num(v) for k, v in SPAPR_CREATE_ARG.items()}:
                raise Unrepresentable(f"TCE_CREATE {arg} (the model's windows are 4K pages of tce32_size, one level)")
            if self.iommu == "v2" and self._only(results, "TCE_CREATE"):
                w = 0 if 0 not in self.windows else 1
                self.windows.add(w)
                for fld, name in (s.get("save") or {}).items():
                    if fld == "start_addr":
                        self.saved[name] = w
            return self.call("CreateWindow"), "start_addr"
        if cmd == "VFIO_IOMMU_SPAPR_TCE_REMOVE":
            start = self._addr((arg or {}).get("start_addr", 0))
            slots = [w for w, a in SPAPR_WINDOW_START.items() if a == start]
            if not slots:
                raise Unrepresentable(f"TCE_REMOVE at {start:#x}, not a window start of the model")
            w = slots[0]
            if self.iommu == "v2" and self._only(results, "TCE_REMOVE"):
                self.windows.discard(w)
                self.live -= {p for p in self.live if spapr_window_of(p, self.c["NIova"]) == w}
            return self.call("RemoveWindow", window=w), None
        raise Unrepresentable(f"ioctl {cmd}")


ABSTRACTORS = {"type1": Type1Abstractor, "iommufd": IommufdAbstractor, "mdev": MdevAbstractor,
               "spapr": SpaprAbstractor}


def model_of(doc) -> str:
    text = json.dumps(doc["steps"])
    if ((doc.get("platform") or {}).get("iommu") or {}).get("kind") == "spapr":
        return "spapr"
    if "/dev/iommu" in text or "/dev/vfio/devices/" in text:
        return "iommufd"
    if "/dev/vfio/vfio" in text:
        return "type1"
    if "/sys/" in text and "mdev" in text:
        return "mdev"
    raise Unrepresentable("the trace uses none of the modelled interfaces")


def variants_of(base: str) -> list[str]:
    """The shipped models of one base, the base first (e.g. type1, type1_guest); not broken ones."""
    return [base] + sorted(m for m in tlc.list_models()
                           if m != base and base_model(m) == base and not tlc.load_manifest(m).get("broken"))


def _model_consts(model: str) -> tuple[dict, str]:
    man = tlc.load_manifest(model)
    cfg_text = (tlc.MODELS_DIR / model / man["config"]).read_text()
    return read_constants(cfg_text), cfg_text


def _expresses(model: str, doc: dict) -> bool:
    """Every step of `doc` (and its platform) is expressible with `model`'s constants."""
    base = base_model(model)
    consts, _ = _model_consts(model)
    try:
        check_platform(base, doc.get("platform"), consts)
        ab = ABSTRACTORS[base](consts)
        for step in doc["steps"]:
            ab.step(step, results_of(step)[0])
    except Unrepresentable:
        return False
    return True


def pick_model(base: str, doc: dict) -> str:
    """The first of the base's models (base first, then variants such as mdev_guest) whose
    constants express the whole trace; the base when none does."""
    return next((m for m in variants_of(base) if _expresses(m, doc)), base)


@dataclasses.dataclass
class Report:
    name: str
    model: str = ""
    accepted: bool = False
    steps_checked: int = 0
    skipped: list = dataclasses.field(default_factory=list)
    diverged_at: int | None = None          # index in the trace's steps
    diverged_step: dict | None = None
    enabled: list = dataclasses.field(default_factory=list)   # what the spec allowed there
    spec_says: list = dataclasses.field(default_factory=list)  # the spec's result(s) for that very call
    note: str = ""
    complete: bool = True                   # every step was expressible in the model
    seconds: float = 0.0

    def text(self) -> str:
        if self.accepted:
            s = f"ACCEPTED {self.name}: {self.steps_checked} steps follow spec/models/{self.model} ({self.seconds:.1f}s)"
            if self.note:
                s += f"; {self.note}"
            return s
        if self.diverged_at is None:
            return f"UNKNOWN  {self.name}: {self.note}" + (f" ({self.steps_checked} steps follow spec/models/{self.model})" if self.steps_checked else "")
        st = self.diverged_step
        what = st.get("cmd") or st.get("path") or st["call"]
        lines = [f"REJECTED {self.name}: step {self.diverged_at} ({st['call']} {what}, expect {st.get('expect', st.get('result'))!r}) "
                 f"is explained by no action of spec/models/{self.model}"]
        if self.spec_says:
            lines.append(f"  the spec answers that call with: {', '.join(self.spec_says)}")
        lines.append(f"  enabled there ({len(self.enabled)}):")
        lines += [f"    {e}" for e in self.enabled[:25]]
        if len(self.enabled) > 25:
            lines.append(f"    ... {len(self.enabled) - 25} more")
        return "\n".join(lines)


def _fmt_call(call, res, out):
    args = ", ".join(f"{k}={v!r}" for k, v in call.items()
                     if k != "op" and v not in ("", 0) and not (isinstance(v, dict) and not any(v.values())))
    return f"{call['op']}({args}) -> {res}" + (f" [out {out}]" if out else "")


def trace_module(module: str, entries: list) -> tuple[str, str]:
    name = f"Val{module}"
    rows = ",\n    ".join(to_tla({"call": c, "res": sorted(r) if r != {"*"} else [], "any": r == {"*"},
                                  "out": -1 if o is None else o}) for c, r, o in entries)
    text = f"""---- MODULE {name} ----
EXTENDS {module}, Sequences, Integers
VARIABLES vi, vfree
T == <<
    {rows}
  >>
Matches(k) == /\\ lastCall' = T[k].call
              /\\ (T[k].any \\/ lastResult' \\in {{T[k].res[j] : j \\in DOMAIN T[k].res}})
              /\\ (T[k].out = -1 \\/ lastOut' = T[k].out)
VInit == Init /\\ vi = 0 /\\ vfree = FALSE
VNext == \\/ ~vfree /\\ vi < Len(T) /\\ Next /\\ Matches(vi + 1) /\\ vi' = vi + 1 /\\ vfree' = FALSE
         \\/ ~vfree /\\ vi < Len(T) /\\ Next /\\ vfree' = TRUE /\\ vi' = vi
====
"""
    return name, text


def check_platform(model: str, platform: dict, consts: dict) -> None:
    """The models assume the default machine (trace-format.md "Platform"): x86 IOMMU
    with interrupt remapping, kernel 6.12, root, groups of vfio-pci devices only.
    Anything else is outside them (Unrepresentable)."""
    platform = platform or {}
    if model == "spapr":
        return check_spapr_platform(platform)
    extra = set(platform) - {"groups", "mdev_parents"}
    if extra:
        raise Unrepresentable(f"platform keys {sorted(extra)} (the models assume the default platform)")
    for g, spec in (platform.get("groups") or {}).items():
        for dev, drv in (spec.get("devices") or {}).items():
            if drv != "vfio-pci":
                raise Unrepresentable(f"device {dev} bound to {drv!r} (the models assume vfio-pci)")
    if model == "mdev":
        for parent, spec in (platform.get("mdev_parents") or {}).items():
            for t, ts in spec.get("types", {}).items():
                if parent != "mtty" or (t in consts["Types"] and ts.get("available_instances") != consts["Total"]):
                    raise Unrepresentable(f"mdev parent {parent} type {t} differs from the model's")


def check_spapr_platform(platform: dict) -> None:
    """The sPAPR model's platform is the pseries guest (traces.SPAPR_PLATFORM, the
    reference's sPAPR defaults): its window placement and slot-0 rule are those of
    pseries' spapr_tce_create_table (6.10+), one group of vfio-pci devices, a
    process with CAP_IPC_LOCK (v1 ENABLE charges the whole 1 GiB window); any
    page size (the model's user pages are 64K, its IOMMU pages 4K)."""
    from vfiospec.reference.platform import PlatformError, parse_platform

    try:
        have, want = parse_platform(platform), parse_platform(SPAPR_PLATFORM)
    except PlatformError as exc:
        raise Unrepresentable(f"platform: {exc}") from None
    fields = ("kind", "pgsizes", "dma32_window", "max_windows", "levels", "ddw")
    diff = [f for f in fields if getattr(have.iommu, f) != getattr(want.iommu, f)]
    if diff:
        raise Unrepresentable("iommu " + ", ".join(f"{f} {getattr(have.iommu, f)!r}" for f in diff)
                              + " differ from the model's pseries platform")
    if have.kernel < (6, 10):
        raise Unrepresentable(f"kernel {platform.get('kernel')!r} (the model's pseries window rules are 6.10+)")
    if have.vfio_container != "vfio":
        raise Unrepresentable(f"vfio_container {have.vfio_container!r}")
    if "CAP_IPC_LOCK" not in have.caps:
        raise Unrepresentable("a process without CAP_IPC_LOCK (the model has no locked_vm limit)")
    if platform.get("mdev_parents") or set(platform.get("params") or {}) - {"transparent_hugepage"}:
        raise Unrepresentable("mdev parents or module parameters (outside the model)")
    if len(have.groups) != 1:
        raise Unrepresentable(f"{len(have.groups)} groups (the model has one)")
    for dev in have.devices.values():
        if dev.driver != "vfio-pci":
            raise Unrepresentable(f"device {dev.name} bound to {dev.driver!r} (the model assumes vfio-pci)")


def validate_doc(doc: dict, timeout: float = 600) -> Report:
    rep = Report(name=doc.get("name", "?"))
    try:
        base = model_of(doc)
    except Unrepresentable as exc:
        rep.note = str(exc)
        return rep
    rep.model = model = pick_model(base, doc)
    man = tlc.load_manifest(model)
    consts, cfg_text = _model_consts(model)
    try:
        check_platform(base, doc.get("platform"), consts)
    except Unrepresentable as exc:
        rep.complete = False
        rep.note = f"outside the model: {exc}"
        return rep
    ab = ABSTRACTORS[base](consts)
    entries, index = [], []
    for k, step in enumerate(doc["steps"]):
        try:
            results, extra = results_of(step)
            got = ab.step(step, results)
        except Unrepresentable as exc:
            rep.complete = False
            rep.note = f"step {k} is outside the model: {exc}; checked the {len(entries)} modelled steps before it"
            break
        if got is None:
            rep.skipped.append(k)
            continue
        call, outkey = got
        out = None
        if outkey == "alloc":
            out = call["ioas"]
        elif outkey and "ok" in results:
            out = ab.out(outkey, extra)
        entries.append((call, results, out))
        index.append(k)
    rep.steps_checked = len(entries)
    if not entries:
        rep.accepted = rep.complete
        rep.note = (rep.note + "; " if rep.note else "") + "no modelled step"
        return rep
    name, text = trace_module(man["module"], entries)
    keep = []
    for line in cfg_text.splitlines():
        if re.match(r"^[A-Z]+\b", line):
            on = line.startswith("CONSTANT")
            keep.append(line) if on else None
            continue
        if keep and re.match(r"^\s", line) and keep[-1] is not None:
            keep.append(line)
    consts_cfg = "\n".join(l for l in _constants_block(cfg_text))
    cfg = consts_cfg + "\nINIT VInit\nNEXT VNext\n"
    res = tlc.run_tlc(name, cfg, extra_modules={f"{name}.tla": text},
                      args=["-deadlock", "-dump", "states"], timeout=timeout, keep=True)
    rep.seconds = res.seconds
    dump = Path(res.workdir) / "states.dump"
    import shutil
    if res.outcome != "success" or not dump.is_file():
        rep.note = f"TLC: {res.summary()} {res.errors[:2]}"
        shutil.rmtree(res.workdir, ignore_errors=True)
        return rep
    states = _read_dump(dump.read_text())
    shutil.rmtree(res.workdir, ignore_errors=True)
    reached = max((s["vi"] for s in states if not s["vfree"]), default=0)
    if reached == len(entries):
        rep.accepted = rep.complete
        return rep
    rep.diverged_at = index[reached]
    rep.diverged_step = doc["steps"][rep.diverged_at]
    want = entries[reached][0]
    seen = set()
    for s in states:
        if s["vfree"] and s["vi"] == reached:
            line = _fmt_call(s["lastCall"], s["lastResult"], s["lastOut"])
            if line not in seen:
                seen.add(line)
                rep.enabled.append(line)
            if s["lastCall"] == want:
                rep.spec_says.append(f"{s['lastResult']}" + (f" (out {s['lastOut']})" if s["lastOut"] else ""))
    rep.enabled.sort()
    rep.spec_says = sorted(set(rep.spec_says))
    return rep


def _constants_block(cfg_text):
    on = False
    for line in cfg_text.splitlines():
        if re.match(r"^[A-Z]+\b", line):
            on = line.startswith("CONSTANT")
        if on:
            yield line


def _read_dump(text: str) -> list[dict]:
    out = []
    for block in re.split(r"^State \d+:\n", text, flags=re.M):
        if block.strip():
            out.append(parse_state(block))
    return out


def validate_file(path) -> Report:
    doc = json.loads(Path(path).read_text())
    rep = validate_doc(doc)
    return rep


def recorded_run(doc: dict, target: str = "reference") -> dict:
    """Run a trace on a conformance target with its expectations removed and return
    a copy whose steps carry the target's results under ``result``: the run as
    recorded, for ``validate_doc``."""
    import copy
    from ..conformance.runner import run_trace
    from ..conformance.targets import get_target
    from ..conformance.trace import parse_trace

    bare = copy.deepcopy(doc)
    for s in bare["steps"]:
        s.pop("expect", None)
    result = run_trace(parse_trace(bare), get_target(target))
    rec = copy.deepcopy(bare)
    rec["name"] = f"{doc.get('name', 'trace')}@{target}"
    for s, r in zip(rec["steps"], result.steps):
        s["result"] = r.observed.to_json()
    return rec
