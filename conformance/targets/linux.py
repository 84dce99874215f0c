"""`linux[:CONFIG]`: the running kernel through real syscalls.

Struct layouts come from reference/uapi.py (the uapi headers' own).  The
configuration file maps the trace's logical names to real ones and is the
allowlist: the target opens no group, device node or sysfs file that it does not
name, and never binds or unbinds drivers.

    {"groups":  {"g0": 12},
     "devices": {"dev0": {"name": "0000:00:03.0", "group": "g0", "cdev": "vfio0"}},
     "mdev_parents": ["mtty"],
     "platform": { ...the trace-format platform this machine is... }}

Without a configuration it refuses to run.  `Os` is the seam to the kernel;
tests give it a fake device-node layer."""

from __future__ import annotations

import ctypes
import fcntl
import json
import mmap as _mmap
import os
import re

from vfiospec import errnos
from vfiospec.conformance.judge import Observed
from vfiospec.conformance.steps import PLACEHOLDER, buffer_address
from vfiospec.reference import uapi

from .base import Session, Target, TargetError, Unsupported

CAPS_ROOM = 4096        # bytes after a struct for capability chains


class Os:
    """The syscalls the target makes; a test replaces it with a fake node layer."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, number: int, arg) -> int:
        """`arg`: an int, or a bytearray the kernel reads and writes in place."""
        if isinstance(arg, bytearray):
            return fcntl.ioctl(fd, number, arg, True)
        return fcntl.ioctl(fd, number, arg)

    def mmap(self, length: int, hugepage: bool) -> tuple[int, object]:
        flags = _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS
        m = _mmap.mmap(-1, length, flags=flags, prot=_mmap.PROT_READ | _mmap.PROT_WRITE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        return addr, m

    def munmap(self, handle) -> None:
        handle.close()

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def write(self, path: str, data: str) -> int:
        fd = os.open(path, os.O_WRONLY)
        try:
            return os.write(fd, data.encode())
        finally:
            os.close(fd)

    def buffer_address(self, buf) -> int:
        return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def load_config(path: str | None) -> dict:
    if not path:
        raise TargetError("the linux target needs a configuration file that lists every group and device it may "
                          "touch: --target linux:CONFIG.json (see vfiospec/conformance/targets/linux.py)")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise TargetError(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise TargetError(f"{path}: bad JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(cfg, dict) or not (cfg.get("groups") or cfg.get("devices") or cfg.get("mdev_parents")):
        raise TargetError(f"{path}: lists no group, device or mdev parent: nothing may be touched, so nothing runs")
    for k in cfg:
        if k not in ("groups", "devices", "mdev_parents", "platform"):
            raise TargetError(f"{path}: unknown key {k!r}; expected groups, devices, mdev_parents, platform")
    return cfg


class LinuxSession(Session):
    def __init__(self, target: "LinuxTarget"):
        self.t = target
        self.os = target.os
        self.fds: dict[str, int] = {}
        self.bufs: dict[str, tuple[int, object]] = {}
        self.mdevs: dict[str, str] = {}       # `as` name -> UUID created in this session

    # ------------------------------------------------------------ names
    def _name(self, name: str, attr: str | None) -> str:
        cfg = self.t.cfg
        if name in cfg.get("groups", {}) and attr is None:
            return str(cfg["groups"][name])
        dev = cfg.get("devices", {}).get(name)
        if dev is not None:
            if attr == "group":
                return str(cfg["groups"][dev["group"]])
            if attr == "cdev":
                if not dev.get("cdev"):
                    raise Unsupported(f"device {name} has no cdev in the configuration")
                return dev["cdev"]
            return dev["name"]
        if name in self.mdevs:
            uuid = self.mdevs[name]
            if attr == "group":
                link = os.readlink(f"/sys/bus/mdev/devices/{uuid}/iommu_group")
                return os.path.basename(link)
            if attr == "cdev":
                entries = os.listdir(f"/sys/bus/mdev/devices/{uuid}/vfio-dev")
                return entries[0]
            return uuid
        raise Unsupported(f"{name!r} is not in the linux target's configuration")

    def resolve_str(self, s: str) -> str:
        return PLACEHOLDER.sub(lambda m: self._name(m.group(1), m.group(2)), s)

    def allowed_path(self, path: str) -> bool:
        cfg = self.t.cfg
        if path in ("/dev/vfio/vfio", "/dev/iommu"):
            return True
        groups = {str(n) for n in cfg.get("groups", {}).values()}
        groups |= {self._name(a, "group") for a in self.mdevs}
        m = re.fullmatch(r"/dev/vfio/(noiommu-)?([0-9]+)", path)
        if m:
            return m.group(2) in groups
        m = re.fullmatch(r"/dev/vfio/devices/(vfio[0-9]+)", path)
        if m:
            cdevs = {d.get("cdev") for d in cfg.get("devices", {}).values()}
            cdevs |= {self._name(a, "cdev") for a in self.mdevs}
            return m.group(1) in cdevs
        for p in cfg.get("mdev_parents", []):
            if path.startswith((f"/sys/class/mdev_bus/{p}/", "/sys/devices/virtual/mtty/mtty/")):
                return True
        m = re.fullmatch(r"/sys/bus/mdev/devices/([0-9a-fA-F-]+)/(remove|mdev_type/name|mdev_type)", path)
        return bool(m and m.group(1) in self.mdevs.values())

    def addr(self, v) -> int:
        try:
            return buffer_address(v, lambda name: self.bufs[name][0])
        except KeyError:
            raise TargetError(f"unknown buffer {v!r}") from None

    def fd(self, v) -> int:
        if isinstance(v, int):
            return v
        if v not in self.fds:
            raise TargetError(f"unknown fd name {v!r}")
        return self.fds[v]

    # ------------------------------------------------------------ steps
    def perform(self, step: dict) -> Observed:
        call = step["call"]
        try:
            if call == "open":
                path = self.resolve_str(step["path"])
                if not self.allowed_path(path):
                    raise Unsupported(f"{path} is not in the linux target's allowlist")
                fd = self.os.open(path, os.O_RDWR | os.O_CLOEXEC)
                self.fds[step["as"]] = fd
                return Observed(ret=fd)
            if call == "close":
                fd = self.fd(step["fd"])
                self.os.close(fd)
                self.fds = {n: f for n, f in self.fds.items() if f != fd}
                return Observed(ret=0)
            if call == "mmap":
                addr, h = self.os.mmap(step["length"], step.get("hugepage", False))
                self.bufs[step["as"]] = (addr, h)
                return Observed(ret=0)
            if call == "munmap":
                name = step["addr"]
                if name not in self.bufs:
                    raise TargetError(f"unknown buffer {name!r}")
                self.os.munmap(self.bufs.pop(name)[1])
                return Observed(ret=0)
            if call == "read":
                path = self.resolve_str(step["path"])
                if not self.allowed_path(path):
                    raise Unsupported(f"{path} is not in the linux target's allowlist")
                text = self.os.read(path).rstrip("\n")
                return Observed(ret=int(text) if re.fullmatch(r"-?[0-9]+", text.strip()) else 0, data=text)
            if call == "write":
                path = self.resolve_str(step["path"])
                if not self.allowed_path(path):
                    raise Unsupported(f"{path} is not in the linux target's allowlist")
                n = self.os.write(path, step["data"])
                if "as" in step and path.endswith("/create"):
                    self.mdevs[step["as"]] = step["data"].strip()
                return Observed(ret=n)
            if call == "kapi":
                raise Unsupported(f"{step['fn']} is an in-kernel API: a real kernel cannot be driven to call it")
            if call == "ioctl":
                return self.ioctl(step)
        except OSError as e:
            return Observed(ret=-1, errno=errnos.name(e.errno))
        raise Unsupported(f"unknown call {call!r}")

    def ioctl(self, step: dict) -> Observed:
        io = uapi.IOCTLS[step["cmd"]]
        fd = self.fd(step["fd"])
        arg = step.get("arg")
        if io.arg == "none":
            ret = self.os.ioctl(fd, io.number, 0)
            return Observed(ret=ret)
        if io.arg == "int":
            return Observed(ret=self.os.ioctl(fd, io.number, int(arg)))
        if io.arg == "fd":
            buf = bytearray(ctypes.c_int32(self.fd(arg)))
            return Observed(ret=self.os.ioctl(fd, io.number, buf))
        if io.arg == "string":
            buf = bytearray(self.resolve_str(arg).encode() + b"\0")
            ret = self.os.ioctl(fd, io.number, buf)
            if "as" in step:
                self.fds[step["as"]] = ret
            return Observed(ret=ret)
        st = io.struct
        values, keep = self.pack_values(st, arg)
        size = max(st.size, values.get(io.size_field, st.size))
        buf = bytearray(size + CAPS_ROOM)
        buf[:st.size] = st.pack(values)
        ret = self.os.ioctl(fd, io.number, buf)
        out = st.unpack(bytes(buf))
        for fname, (arr, n) in keep.items():
            f = st.field(fname)
            count = min(n, out.get("num_iovas", n))
            es = f.array_of.size
            out[fname] = [f.array_of.unpack(bytes(arr[i * es:(i + 1) * es])) for i in range(count)]
        if st.has("cap_offset") and out.get("cap_offset"):
            out["caps"] = parse_caps(bytes(buf), out["cap_offset"], st.name)
        return Observed(ret=ret, out=out)

    def pack_values(self, st: uapi.Struct, arg: dict):
        values = {}
        keep = {}
        for f in st.fields:
            v = arg.get(f.name, 0)
            if f.kind == "addr":
                values[f.name] = self.addr(v)
            elif f.kind == "fd":
                values[f.name] = self.fd(v) if isinstance(v, str) else v
            elif f.kind == "array":
                if isinstance(v, list):
                    es = f.array_of.size
                    n = max(len(v), arg.get("num_iovas", len(v)))
                    arr = bytearray(max(n, 1) * es)
                    for i, e in enumerate(v):
                        arr[i * es:(i + 1) * es] = f.array_of.pack(e)
                    keep[f.name] = (arr, n)
                    values[f.name] = self.os.buffer_address(arr)
                else:
                    values[f.name] = self.addr(v) if v else 0
            else:
                values[f.name] = v
        return values, keep

    def close(self) -> None:
        for fd in sorted(set(self.fds.values()), reverse=True):
            try:
                self.os.close(fd)
            except OSError:
                pass
        for _, h in self.bufs.values():
            try:
                self.os.munmap(h)
            except Exception:
                pass
        self.fds, self.bufs = {}, {}


_CAP_NAMES = {
    "vfio_iommu_type1_info": {1: "VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", 2: "VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION",
                              3: "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL"},
}


def parse_caps(buf: bytes, offset: int, struct_name: str) -> list[dict]:
    """The capability chain of an INFO ioctl (vfio_info_cap_header), as trace outputs."""
    import struct as _s
    names = _CAP_NAMES.get(struct_name, {})
    caps = []
    seen = set()
    while offset and offset + 8 <= len(buf) and offset not in seen:
        seen.add(offset)
        cid, ver, nxt = _s.unpack_from("=HHI", buf, offset)
        cap = {"id": names.get(cid, cid), "version": ver}
        body = offset + 8
        if cid == 1 and struct_name == "vfio_iommu_type1_info":
            (n,) = _s.unpack_from("=I", buf, body)
            cap["nr_iovas"] = n
            cap["iova_ranges"] = [dict(zip(("start", "end"), _s.unpack_from("=QQ", buf, body + 8 + 16 * i)))
                                  for i in range(min(n, (len(buf) - body - 8) // 16))]
        elif cid == 2 and struct_name == "vfio_iommu_type1_info":
            flags, pgsize_bitmap, max_dirty = _s.unpack_from("=IxxxxQQ", buf, body)
            cap.update(flags=flags, pgsize_bitmap=pgsize_bitmap, max_dirty_bitmap_size=max_dirty)
        elif cid == 3 and struct_name == "vfio_iommu_type1_info":
            (cap["avail"],) = _s.unpack_from("=I", buf, body)
        caps.append(cap)
        offset = nxt
    return caps


class LinuxTarget(Target):
    def __init__(self, config: str | None, os_layer: Os | None = None):
        self.cfg = load_config(config)
        self.os = os_layer or Os()
        self.name = f"linux:{config}"
        self.platform = self.cfg.get("platform")

    def begin(self, trace) -> LinuxSession:
        want = trace.platform or {}
        for g in (want.get("groups") or {"g0": None}):
            if g not in self.cfg.get("groups", {}):
                raise Unsupported(f"the trace needs group {g!r}, which the configuration does not map")
        for gdef in (want.get("groups") or {}).values():
            for d in (gdef or {}).get("devices", {}):
                if d not in self.cfg.get("devices", {}) and (gdef["devices"][d] or "").startswith("vfio"):
                    raise Unsupported(f"the trace needs device {d!r}, which the configuration does not map")
        return LinuxSession(self)
