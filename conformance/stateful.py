"""Stateful exploration: Hypothesis state machines that drive a target and the
reference in lockstep, one machine family per IOMMU mode (like the kernel's vfio
selftests run every test in every mode), checking every invariant of the z3 model
after every step.

Third parties run them from their own pytest:

    from vfiospec.conformance.stateful import machine_for
    TestType1v2 = machine_for("type1v2", target="exec:./my-vmm-target").TestCase

or `pytest --vfiospec-target exec:... --pyargs vfiospec.conformance.test_machines`.

A divergence or an invariant violation is shrunk by Hypothesis and saved as a
trace file (the reference's results as expectations) with the command that
replays it and the seed."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, seed as hseed, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, initialize, precondition, rule

from vfiospec import errnos

from . import steps as _steps
from .judge import Observed
from .junit import write_atomic
from .targets import get_target
from .targets.base import TargetError, Unsupported
from .targets.reference import ReferenceSession
from .trace import parse_trace

PAGE = 0x1000
U64 = (1 << 64) - 1


class Divergence(AssertionError):
    pass


class InvariantViolation(AssertionError):
    pass


@dataclass
class Mode:
    name: str
    platform: dict
    family: str
    iommu: str = ""              # the SET_IOMMU type
    simulated_only: bool = False


VTD = {"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}}
SPAPR = {"iommu": {"kind": "spapr", "dma32_window": [0, "0x40000000"], "pgsizes": [4096, 65536, 2097152, 16777216],
                   "max_windows": 2, "levels": 1}, "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}}
MTTY = {"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}},
        "mdev_parents": {"mtty": {"types": {"mtty-1": {"available_instances": 4},
                                            "mtty-2": {"available_instances": 2}}}}}

MODES: dict[str, Mode] = {m.name: m for m in [
    Mode("type1", VTD, "type1", "VFIO_TYPE1_IOMMU"),
    Mode("type1v2", VTD, "type1", "VFIO_TYPE1v2_IOMMU"),
    Mode("iommufd-compat-type1", {**VTD, "vfio_container": "iommufd"}, "type1", "VFIO_TYPE1_IOMMU"),
    Mode("iommufd-compat-type1v2", {**VTD, "vfio_container": "iommufd"}, "type1", "VFIO_TYPE1v2_IOMMU"),
    Mode("iommufd", VTD, "iommufd"),
    Mode("spapr-v1", SPAPR, "spapr", "VFIO_SPAPR_TCE_IOMMU"),
    Mode("spapr-v2", SPAPR, "spapr", "VFIO_SPAPR_TCE_v2_IOMMU"),
    Mode("mdev", MTTY, "mdev", "VFIO_TYPE1v2_IOMMU"),
]}


def mode_on(mode: Mode, platform: dict | None) -> Mode:
    """`mode` on the machine a real target is: that machine's facts (kernel,
    params, process, container, groups, mdev parents; its IOMMU's properties
    over the mode's) replace the defaults, so the reference is that machine."""
    if not platform:
        return mode
    plat = dict(mode.platform)
    for k, v in platform.items():
        if k == "iommu":
            mine = plat.get("iommu") or {}
            if (v or {}).get("kind", "vtd") == mine.get("kind", "vtd"):
                plat["iommu"] = {**mine, **(v or {})}
        else:
            plat[k] = v
    return Mode(mode.name, plat, mode.family, mode.iommu, mode.simulated_only)


def modes_for(target) -> list[str]:
    """The modes a target can run: all for a simulator; those matching a real machine's platform."""
    plat = getattr(target, "platform", None)
    if not plat:
        return list(MODES)
    kind = (plat.get("iommu") or {}).get("kind", "vtd")
    container = plat.get("vfio_container", "vfio")
    out = []
    for m in MODES.values():
        mk = (m.platform.get("iommu") or {}).get("kind", "vtd")
        mc = m.platform.get("vfio_container", "vfio")
        if mk == kind and (m.family == "iommufd" or mc == container) and not (m.family == "mdev" and not
                                                                              plat.get("mdev_parents")):
            out.append(m.name)
    return out


# Behaviours of the real kernel (modelled by the reference) after which an invariant
# no longer holds for the rest of the process: the leak is the kernel's, reported by
# its requirement, not a divergence.
KERNEL_LEAKS = {
    "SPAPR-TCE-CREATE-FAILED-KEEPS-CHARGE": frozenset({"INV-ACCOUNTING-EQUALS-PINNED"}),
}



def _model_limits(state) -> frozenset:
    """Invariants the z3 model cannot judge on this state: it counts IOVA in pages, so
    two sub-page areas sharing a page (legal while an IOAS's alignment is below
    PAGE_SIZE) look overlapping to it; the reference's own EEXIST check covers them."""
    for a in getattr(state, "areas", ()):
        if a.iova % PAGE or a.length % PAGE:
            return frozenset({"INV-AREAS-DISJOINT"})
    return frozenset()


# ------------------------------------------------------------------ lockstep
# ioctls whose return value is the answer (elsewhere a success's value is 0 or an fd number)
VALUE_IOCTLS = frozenset({"VFIO_CHECK_EXTENSION", "VFIO_GET_API_VERSION"})

_CHECKED: dict = {}          # abstract state -> the invariants it violates (check_state is pure)
_CHECKED_MAX = 1 << 14


def checked_state(runtime, state) -> list:
    """runtime.check_state(state), memoised on the (frozen, hashable) state: an
    exploration revisits few distinct states (a failing call leaves the state as it
    was, and every example starts with the same setup), so most steps are a lookup.
    An unhashable state is checked every time."""
    try:
        bad = _CHECKED.get(state)
    except TypeError:
        return runtime.check_state(state)
    if bad is None:
        bad = runtime.check_state(state)
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[state] = bad
    return bad


class Lockstep:
    """One example: the reference and (unless the target is the reference) the target,
    fed the same steps; the executed steps are kept as a trace."""

    def __init__(self, mode: Mode, target_spec: str, target_cache: dict):
        self.mode = mode
        self.trace_stub = parse_trace({"vfiospec": 1, "name": f"stateful-{mode.name}", "platform": mode.platform,
                                       "steps": []}, "<stateful>")
        self.ref = ReferenceSession(mode.platform)
        self.tgt = None
        self.target_spec = target_spec
        if target_spec != "reference":
            t = target_cache.get(target_spec)
            if t is None:
                t = target_cache[target_spec] = get_target(target_spec)
            self.tgt = t.begin(self.trace_stub)
        self.saved: dict = {}
        self.exempt: frozenset = frozenset()      # invariants a kernel leak has broken for good
        self.steps: list[dict] = []
        self.coverage: dict[str, int] = {}

    def do(self, step: dict, compare_out: tuple[str, ...] = ()) -> Observed:
        norm = _steps.normalize(step, self.saved)
        r = self.ref.perform(norm)
        for req in r.reqs:
            self.exempt |= KERNEL_LEAKS.get(req, frozenset())
        by_value = step.get("cmd") in VALUE_IOCTLS
        rec = dict(step)
        rec["expect"] = {"errno": r.errno} if r.errno else ({"ret": r.ret, "out": {k: r.out[k] for k in compare_out
                                                                                     if k in r.out}}
                                                             if compare_out else ({"ret": r.ret} if by_value else "ok"))
        self.steps.append(rec)
        key = (step.get("cmd") or step["call"]) + " -> " + (r.errno or "ok")
        self.coverage[key] = self.coverage.get(key, 0) + 1
        if self.tgt is not None:
            try:
                o = self.tgt.perform(norm)
            except Unsupported:
                o = None
            if o is not None and o.unsupported is not None:
                o = None
            if o is not None and o.error is not None:
                raise Divergence(f"step {len(self.steps) - 1} {_text(step)}: reference {r.errno or 'ok'}, "
                                 f"target error: {o.error.splitlines()[0][:300]}")
            if o is not None:
                same = (o.errno is None) == (r.errno is None) and (
                    r.errno is None or errnos.same(o.errno, r.errno))
                if not same:
                    raise Divergence(f"step {len(self.steps) - 1} {_text(step)}: reference "
                                     f"{r.errno or 'ok'}, target {o.errno or 'ok'}")
                if by_value and r.errno is None and o.ret != r.ret:
                    raise Divergence(f"step {len(self.steps) - 1} {_text(step)}: reference returned {r.ret}, "
                                     f"target {o.ret}")
                for k in compare_out:
                    if r.errno is None and k in r.out and o.out.get(k) != r.out[k]:
                        raise Divergence(f"step {len(self.steps) - 1} {_text(step)}: out.{k} reference "
                                         f"{r.out[k]}, target {o.out.get(k)}")
        self.check_invariants()
        if r.errno is None:
            for fld, name in step.get("save", {}).items():
                self.saved[name] = r.ret if fld == "ret" else r.out.get(fld)
        return r

    def check_invariants(self) -> None:
        try:
            from vfiospec.model import runtime
        except ImportError:
            return
        state = self.ref.state()
        exempt = self.exempt | _model_limits(state)
        bad = [v for v in checked_state(runtime, state) if v.invariant not in exempt]
        if bad:
            raise InvariantViolation(f"after step {len(self.steps) - 1} {_text(self.steps[-1])}: "
                                     + "; ".join(str(v) for v in bad))
        if self.tgt is not None:
            ts = self.tgt.state()
            if ts is not None:
                exempt = self.exempt | _model_limits(ts)
                bad = [v for v in checked_state(runtime, ts) if v.invariant not in exempt]
                if bad:
                    raise InvariantViolation(f"target state after step {len(self.steps) - 1}: "
                                             + "; ".join(str(v) for v in bad))

    def close(self) -> None:
        self.ref.close()
        if self.tgt is not None:
            try:
                self.tgt.close()
            except TargetError:
                pass


def _text(step: dict) -> str:
    if step["call"] == "ioctl":
        return f"{step['cmd']}({json.dumps(step.get('arg')) if step.get('arg') is not None else ''})"
    return f"{step['call']}({', '.join(f'{k}={v}' for k, v in step.items() if k not in ('call', 'expect', 'save'))})"


# ------------------------------------------------------------------ values
def pages(*ns):
    return st.sampled_from([n * PAGE for n in ns])


IOVA = st.one_of(pages(0, 1, 2, 3, 4, 8, 15, 16), st.sampled_from([0x800, 0xFEE00000, 0xFFFFF000, (1 << 39) - PAGE,
                                                                  U64 - PAGE + 1]))
SIZE = st.one_of(pages(1, 2, 4, 16), st.sampled_from([0, 0x800, PAGE + 1]))
BUF = 0x40 * PAGE          # the buffer every machine maps


class Machine(RuleBasedStateMachine):
    """Common parts: the lockstep, swarm testing, and the saved last example."""

    mode: Mode
    target_spec = "reference"
    target_cache: dict = {}
    last_steps: list = []
    step_count = 0
    RULES: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.ls = Lockstep(self.mode, self.target_spec, self.target_cache)
        type(self).last_steps = self.ls.steps
        self.disabled: frozenset = frozenset()

    def do(self, step, compare_out=()):
        type(self).step_count += 1
        return self.ls.do(step, compare_out)

    def on(self, name: str) -> bool:
        return name not in self.disabled

    def teardown(self):
        type(self).coverage = getattr(type(self), "coverage", {})
        for k, v in self.ls.coverage.items():
            type(self).coverage[k] = type(self).coverage.get(k, 0) + v
        self.ls.close()


def _swarm(rules):
    return st.frozensets(st.sampled_from(rules), max_size=max(len(rules) // 2, 0))


class Type1Machine(Machine):
    """The legacy container with type1 (native or iommufd's emulation), v1 or v2."""

    RULES = ("map", "unmap_exact", "unmap_partial", "unmap_any", "unmap_all", "info", "ext", "set_iommu_again",
             "reopen_device")

    @initialize(disabled=_swarm(RULES))
    def setup(self, disabled):
        self.disabled = disabled
        self.maps: list[tuple[int, int]] = []
        for s in [{"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
                  {"call": "open", "path": "/dev/vfio/{g0}", "as": "group"},
                  {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container"},
                  {"call": "ioctl", "fd": "container", "cmd": "VFIO_SET_IOMMU", "arg": self.mode.iommu},
                  {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_GET_DEVICE_FD", "arg": "{dev0}", "as": "device"},
                  {"call": "mmap", "length": hex(BUF), "as": "buf"}]:
            self.do(s)

    @precondition(lambda self: self.on("map"))
    @rule(iova=IOVA, size=SIZE, off=pages(0, 1, 8), flags=st.sampled_from(
        [["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"], ["VFIO_DMA_MAP_FLAG_READ"], [],
         ["VFIO_DMA_MAP_FLAG_VADDR"]]))
    def map(self, iova, size, off, flags):
        r = self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
                     "arg": {"flags": flags, "vaddr": f"buf+{hex(off)}", "iova": hex(iova), "size": hex(size)}})
        if r.errno is None and "VFIO_DMA_MAP_FLAG_VADDR" not in flags:
            self.maps.append((iova, size))

    def _unmap(self, iova, size, flags=0):
        r = self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA",
                     "arg": {"flags": flags, "iova": hex(iova), "size": hex(size)}}, compare_out=("size",))
        if r.errno is None:
            end = iova + size
            self.maps = [(a, s) for a, s in self.maps if a + s <= iova or a >= end]

    @precondition(lambda self: self.on("unmap_exact") and self.maps)
    @rule(data=st.data())
    def unmap_exact(self, data):
        iova, size = data.draw(st.sampled_from(self.maps))
        self._unmap(iova, size)

    @precondition(lambda self: self.on("unmap_partial") and any(s > PAGE for _, s in self.maps))
    @rule(data=st.data(), head=st.booleans())
    def unmap_partial(self, data, head):
        iova, size = data.draw(st.sampled_from([m for m in self.maps if m[1] > PAGE]))
        self._unmap(iova if head else iova + PAGE, PAGE)

    @precondition(lambda self: self.on("unmap_any"))
    @rule(iova=IOVA, size=SIZE)
    def unmap_any(self, iova, size):
        self._unmap(iova, size)

    @precondition(lambda self: self.on("unmap_all"))
    @rule()
    def unmap_all(self):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA",
                 "arg": {"flags": ["VFIO_DMA_UNMAP_FLAG_ALL"]}}, compare_out=("size",))
        self.maps = []

    @precondition(lambda self: self.on("info"))
    @rule(argsz=st.sampled_from([None, 8, 16, 24]))
    def info(self, argsz):
        arg = {} if argsz is None else {"argsz": argsz}
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_GET_INFO", "arg": arg})

    @precondition(lambda self: self.on("ext"))
    @rule(ext=st.sampled_from(["VFIO_TYPE1_IOMMU", "VFIO_TYPE1v2_IOMMU", "VFIO_UNMAP_ALL", "VFIO_UPDATE_VADDR",
                               "VFIO_SPAPR_TCE_IOMMU", "VFIO_NOIOMMU_IOMMU", "VFIO_DMA_CC_IOMMU"]))
    def ext(self, ext):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_CHECK_EXTENSION", "arg": ext})

    @precondition(lambda self: self.on("set_iommu_again"))
    @rule(t=st.sampled_from(["VFIO_TYPE1_IOMMU", "VFIO_TYPE1v2_IOMMU", "VFIO_SPAPR_TCE_IOMMU"]))
    def set_iommu_again(self, t):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_SET_IOMMU", "arg": t})

    @precondition(lambda self: self.on("reopen_device"))
    @rule()
    def reopen_device(self):
        self.do({"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_GET_DEVICE_FD", "arg": "{dev0}", "as": "device2"})


class IommufdMachine(Machine):
    """/dev/iommu with the device cdev: IOAS map/unmap/copy, attach/replace/detach, destroy."""

    RULES = ("map_fixed", "map_auto", "unmap", "unmap_all", "copy", "alloc_ioas", "attach", "detach", "destroy",
             "second_bind", "ranges")

    @initialize(disabled=_swarm(RULES))
    def setup(self, disabled):
        self.disabled = disabled
        self.areas: list[tuple[int, int]] = []
        self.ioas = ["ioas0"]
        for s in [{"call": "open", "path": "/dev/iommu", "as": "iommufd"},
                  {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_ALLOC", "save": {"out_ioas_id": "ioas0"}},
                  {"call": "open", "path": "/dev/vfio/devices/{dev0.cdev}", "as": "device"},
                  {"call": "ioctl", "fd": "device", "cmd": "VFIO_DEVICE_BIND_IOMMUFD", "arg": {"iommufd": "iommufd"},
                   "save": {"out_devid": "devid"}},
                  {"call": "ioctl", "fd": "device", "cmd": "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                   "arg": {"pt_id": "$ioas0"}, "save": {"pt_id": "hwpt0"}},
                  {"call": "mmap", "length": hex(BUF), "as": "buf"}]:
            self.do(s)

    def ioas_arg(self, data):
        return "$" + data.draw(st.sampled_from(self.ioas))

    @precondition(lambda self: self.on("map_fixed"))
    @rule(data=st.data(), iova=IOVA, size=SIZE, off=pages(0, 1))
    def map_fixed(self, data, iova, size, off):
        r = self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_MAP",
                     "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_READABLE",
                                       "IOMMU_IOAS_MAP_WRITEABLE"], "ioas_id": self.ioas_arg(data),
                             "user_va": f"buf+{hex(off)}", "length": hex(size), "iova": hex(iova)}})
        if r.errno is None:
            self.areas.append((iova, size))

    @precondition(lambda self: self.on("map_auto"))
    @rule(data=st.data(), size=SIZE)
    def map_auto(self, data, size):
        r = self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_MAP",
                     "arg": {"flags": ["IOMMU_IOAS_MAP_READABLE"], "ioas_id": self.ioas_arg(data),
                             "user_va": "buf", "length": hex(size)}})
        if r.errno is None:
            self.areas.append((r.out.get("iova", 0), size))

    @precondition(lambda self: self.on("unmap"))
    @rule(data=st.data(), iova=IOVA, size=SIZE)
    def unmap(self, data, iova, size):
        if self.areas and data.draw(st.booleans()):
            iova, size = data.draw(st.sampled_from(self.areas))
        r = self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_UNMAP",
                     "arg": {"ioas_id": self.ioas_arg(data), "iova": hex(iova), "length": hex(size)}},
                    compare_out=("length",))
        if r.errno is None:
            self.areas = [(a, s) for a, s in self.areas if a + s <= iova or a >= iova + size]

    @precondition(lambda self: self.on("unmap_all"))
    @rule(data=st.data())
    def unmap_all(self, data):
        self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_UNMAP",
                 "arg": {"ioas_id": self.ioas_arg(data), "iova": 0, "length": "U64_MAX"}}, compare_out=("length",))
        self.areas = []

    @precondition(lambda self: self.on("copy") and self.areas)
    @rule(data=st.data(), dst=IOVA)
    def copy(self, data, dst):
        iova, size = data.draw(st.sampled_from(self.areas))
        self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_COPY",
                 "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_READABLE"],
                         "dst_ioas_id": self.ioas_arg(data), "src_ioas_id": self.ioas_arg(data),
                         "length": hex(size), "dst_iova": hex(dst), "src_iova": hex(iova)}})

    @precondition(lambda self: self.on("alloc_ioas") and len(self.ioas) < 3)
    @rule()
    def alloc_ioas(self):
        name = f"ioas{len(self.ioas)}"
        r = self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_ALLOC", "save": {"out_ioas_id": name}})
        if r.errno is None:
            self.ioas.append(name)

    @precondition(lambda self: self.on("attach"))
    @rule(data=st.data())
    def attach(self, data):
        self.do({"call": "ioctl", "fd": "device", "cmd": "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                 "arg": {"pt_id": self.ioas_arg(data)}})

    @precondition(lambda self: self.on("detach"))
    @rule()
    def detach(self):
        self.do({"call": "ioctl", "fd": "device", "cmd": "VFIO_DEVICE_DETACH_IOMMUFD_PT"})

    @precondition(lambda self: self.on("destroy"))
    @rule(data=st.data(), which=st.sampled_from(["ioas", "hwpt", "devid", "zero"]))
    def destroy(self, data, which):
        ident = {"ioas": self.ioas_arg(data), "hwpt": "$hwpt0", "devid": "$devid", "zero": 0}[which]
        r = self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_DESTROY", "arg": {"id": ident}})
        if r.errno is None and which == "ioas":
            self.areas = []

    @precondition(lambda self: self.on("second_bind"))
    @rule()
    def second_bind(self):
        r = self.do({"call": "open", "path": "/dev/vfio/devices/{dev0.cdev}", "as": "device2"})
        if r.errno is None:
            self.do({"call": "ioctl", "fd": "device2", "cmd": "VFIO_DEVICE_BIND_IOMMUFD",
                     "arg": {"iommufd": "iommufd"}})
            self.do({"call": "close", "fd": "device2"})

    @precondition(lambda self: self.on("ranges"))
    @rule(data=st.data(), n=st.sampled_from([0, 1, 8]))
    def ranges(self, data, n):
        self.do({"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_IOVA_RANGES",
                 "arg": {"ioas_id": self.ioas_arg(data), "num_iovas": n,
                         "allowed_iovas": [{"start": 0, "last": 0}] * n}}, compare_out=("num_iovas",))


SP_IOVA = st.one_of(pages(0, 1, 16), st.sampled_from([0x10000, 0x3FFFF000, 0x40000000, 0x800000000000000,
                                                      0x800000000001000]))


class SpaprMachine(Machine):
    """sPAPR TCE v1 (ENABLE, whole-window accounting) and v2 (pre-registration, DDW windows)."""

    RULES = ("enable", "disable", "map", "unmap", "info", "register", "unregister", "create", "remove")

    @initialize(disabled=_swarm(RULES))
    def setup(self, disabled):
        self.disabled = disabled
        self.v2 = self.mode.iommu.endswith("v2_IOMMU")
        for s in [{"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
                  {"call": "open", "path": "/dev/vfio/{g0}", "as": "group"},
                  {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container"},
                  {"call": "ioctl", "fd": "container", "cmd": "VFIO_SET_IOMMU", "arg": self.mode.iommu},
                  {"call": "mmap", "length": hex(BUF), "as": "buf"}]:
            self.do(s)
        self.regs: list[tuple[int, int]] = []

    @precondition(lambda self: self.on("enable"))
    @rule()
    def enable(self):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_ENABLE"})

    @precondition(lambda self: self.on("disable"))
    @rule()
    def disable(self):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_DISABLE"})

    @precondition(lambda self: self.on("map"))
    @rule(iova=SP_IOVA, size=SIZE, off=pages(0, 1, 16))
    def map(self, iova, size, off):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
                 "arg": {"flags": ["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"], "vaddr": f"buf+{hex(off)}",
                         "iova": hex(iova), "size": hex(size)}})

    @precondition(lambda self: self.on("unmap"))
    @rule(iova=SP_IOVA, size=SIZE)
    def unmap(self, iova, size):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA",
                 "arg": {"iova": hex(iova), "size": hex(size)}})

    @precondition(lambda self: self.on("info"))
    @rule()
    def info(self):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_GET_INFO"},
                compare_out=("dma32_window_start", "dma32_window_size"))

    @precondition(lambda self: self.on("register"))
    @rule(off=pages(0, 1, 16), size=pages(0, 1, 16))
    def register(self, off, size):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_REGISTER_MEMORY",
                 "arg": {"vaddr": f"buf+{hex(off)}", "size": hex(size)}})

    @precondition(lambda self: self.on("unregister"))
    @rule(off=pages(0, 1, 16), size=pages(1, 16))
    def unregister(self, off, size):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY",
                 "arg": {"vaddr": f"buf+{hex(off)}", "size": hex(size)}})

    @precondition(lambda self: self.on("create"))
    @rule(shift=st.sampled_from([12, 16, 21, 13]), size=st.sampled_from([1 << 30, 1 << 32, 0]),
          levels=st.sampled_from([1, 2]))
    def create(self, shift, size, levels):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_CREATE",
                 "arg": {"page_shift": shift, "window_size": hex(size), "levels": levels}},
                compare_out=("start_addr",))

    @precondition(lambda self: self.on("remove"))
    @rule(start=st.sampled_from([0, 0x800000000000000, 0x1000]))
    def remove(self, start):
        self.do({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_REMOVE",
                 "arg": {"start_addr": hex(start)}})


UUIDS = ["83b8f4f2-509f-382f-3c1e-e6bfe0fa1001", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002",
         "83b8f4f2-509f-382f-3c1e-e6bfe0fa1003", "not-a-uuid"]


class MdevMachine(Machine):
    """mdev create/remove through sysfs, available_instances, and an mdev in a type1 container."""

    RULES = ("create", "remove", "available", "use")

    @initialize(disabled=_swarm(RULES[1:]))       # create stays on: without it nothing is enabled
    def setup(self, disabled):
        self.disabled = disabled
        self.live: dict[str, str] = {}
        self.n = 0

    @precondition(lambda self: self.on("create"))
    @rule(uuid=st.sampled_from(UUIDS), t=st.sampled_from(["mtty-1", "mtty-2"]))
    def create(self, uuid, t):
        name = f"m{self.n}"
        r = self.do({"call": "write", "path": f"/sys/class/mdev_bus/mtty/mdev_supported_types/{t}/create",
                     "data": uuid, "as": name})
        if r.errno is None:
            self.live[uuid] = name
            self.n += 1

    @precondition(lambda self: self.on("remove") and self.live)
    @rule(data=st.data())
    def remove(self, data):
        uuid = data.draw(st.sampled_from(sorted(self.live)))
        r = self.do({"call": "write", "path": f"/sys/bus/mdev/devices/{uuid}/remove", "data": "1"})
        if r.errno is None:
            del self.live[uuid]

    @precondition(lambda self: self.on("available"))
    @rule(t=st.sampled_from(["mtty-1", "mtty-2"]))
    def available(self, t):
        self.do({"call": "read", "path": f"/sys/class/mdev_bus/mtty/mdev_supported_types/{t}/available_instances"},
                compare_out=())

    @precondition(lambda self: self.on("use") and self.live and not getattr(self, "used", False))
    @rule(data=st.data())
    def use(self, data):
        name = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        self.used = True
        for s in [{"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
                  {"call": "open", "path": f"/dev/vfio/{{{name}.group}}", "as": "mgroup"},
                  {"call": "ioctl", "fd": "mgroup", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container"},
                  {"call": "ioctl", "fd": "container", "cmd": "VFIO_SET_IOMMU", "arg": "VFIO_TYPE1v2_IOMMU"},
                  {"call": "ioctl", "fd": "container", "cmd": "VFIO_CHECK_EXTENSION", "arg": "VFIO_UPDATE_VADDR"}]:
            self.do(s)


FAMILIES = {"type1": Type1Machine, "iommufd": IommufdMachine, "spapr": SpaprMachine, "mdev": MdevMachine}


def machine_for(mode: str, target: str = "reference", platform: dict | None = None) -> type[Machine]:
    """A fresh machine class for `mode` against `target` (usable from any pytest);
    `platform`: the machine the target is (mode_on)."""
    if mode not in MODES:
        raise KeyError(f"unknown mode {mode!r}; expected one of {list(MODES)}")
    m = mode_on(MODES[mode], platform)
    base = FAMILIES[m.family]
    cls = type(f"{base.__name__}_{mode.replace('-', '_')}", (base,),
               {"mode": m, "target_spec": target, "target_cache": {}, "last_steps": [], "step_count": 0,
                "coverage": {}})
    cls.TestCase.settings = settings(deadline=None, max_examples=20, stateful_step_count=20, database=None,
                                     suppress_health_check=list(HealthCheck))
    return cls


def save_counterexample(path: Path, mode: Mode, steps: list[dict], message: str, seed: int, target: str) -> dict:
    doc = {"vfiospec": 1, "name": path.stem, "description": f"stateful {mode.name}, seed {seed}: {message}"[:500],
           "source": f"generated (stateful {mode.name}, seed {seed}, target {target})",
           "platform": mode.platform, "steps": steps}
    write_atomic(path, json.dumps(doc, indent=1))
    return doc


_TESTS: dict = {}


def _machine_test(mode: str, target: str, per_batch: int, steps_per_example: int, platform: dict | None = None):
    """(machine class, Hypothesis test) for run_mode, built once per process and
    reused with fresh class counters: building the test makes Hypothesis digest
    the machine's source (inspect.getsource parses this whole module for a class
    made by machine_for), which costs as much as hundreds of steps."""
    key = (mode, target, per_batch, steps_per_example, json.dumps(platform, sort_keys=True, default=str))
    hit = _TESTS.get(key)
    if hit is None:
        cls = machine_for(mode, target, platform)
        conf = settings(deadline=None, max_examples=per_batch, stateful_step_count=steps_per_example,
                        database=None, suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
                        phases=[Phase.generate, Phase.shrink], report_multiple_bugs=False)
        if len(_TESTS) >= 256:
            _TESTS.clear()
        hit = _TESTS[key] = (cls, get_state_machine_test(cls, settings=conf))
    cls, test = hit
    cls.target_cache, cls.last_steps, cls.step_count, cls.coverage = {}, [], 0, {}
    return cls, test


def run_mode(mode: str, target: str, budget: float, seed: int, waivers=(), report_dir=None, progress=None,
             max_examples: int | None = None, steps_per_example: int = 25, target_obj=None,
             per_batch: int = 10) -> dict:
    """Explore `mode` for `budget` seconds (or `max_examples` examples); a failure is
    shrunk and saved as a trace. `target_obj`: the target `target` names, already
    made (and kept: the caller shuts it down); the reference is the machine its
    `platform` describes (mode_on)."""
    owned = None
    if target_obj is None and target != "reference":
        target_obj = owned = get_target(target)
        try:
            target_obj.describe()
        except TargetError as e:
            owned.shutdown()
            return {"mode": mode, "verdict": "ERROR", "seed": seed, "failures": [], "steps": 0, "examples": 0,
                    "error": str(e)}
    platform = getattr(target_obj, "platform", None) if target_obj is not None else None
    per_batch = per_batch if max_examples is None else max_examples
    cls, test = _machine_test(mode, target, per_batch, steps_per_example, platform)
    m = cls.mode
    if target_obj is not None:
        cls.target_cache[target] = target_obj
    t0 = time.monotonic()
    examples = 0
    result = {"mode": mode, "verdict": "PASS", "seed": seed, "failures": [], "steps": 0, "examples": 0}
    if platform:
        result["platform"] = m.platform
    s = seed
    while True:
        test = hseed(s)(test)
        try:
            test()
        except (Divergence, InvariantViolation, AssertionError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            out_dir = Path(report_dir or ".") / "counterexamples"
            path = out_dir / f"{mode}-seed{s}.json"
            save_counterexample(path, m, list(cls.last_steps), msg, s, target)
            result["failures"].append({"message": f"{type(e).__name__}: {msg}", "trace": str(path), "seed": s,
                                       "replay": f"vfiospec replay {path} --target {target}",
                                       "steps_text": [_text(x) for x in cls.last_steps]})
            result["verdict"] = "FAIL"
            break
        except (TargetError, Unsupported) as e:
            result["verdict"], result["error"] = "ERROR", str(e)
            break
        except Exception as e:      # the reference itself broke: a bug to report, with its trace
            out_dir = Path(report_dir or ".") / "counterexamples"
            path = out_dir / f"{mode}-seed{s}-error.json"
            save_counterexample(path, m, list(cls.last_steps), f"{type(e).__name__}: {e}", s, target)
            result["verdict"], result["error"] = "ERROR", f"{type(e).__name__}: {e} (trace {path})"
            break
        examples += per_batch
        if progress:
            progress(f"{examples} examples, {cls.step_count} steps, 0 failures")
        if max_examples is not None or time.monotonic() - t0 >= budget:
            break
        s += 1
    if owned is not None:
        owned.shutdown()
    result.update(steps=cls.step_count, examples=examples, seconds=round(time.monotonic() - t0, 3),
                  coverage=getattr(cls, "coverage", {}))
    return result
