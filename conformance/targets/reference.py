"""The reference as a target: names of the trace (fds, buffers, groups, devices,
mdevs) bound to the simulated process's objects."""

from __future__ import annotations


from vfiospec.conformance.judge import Observed
from vfiospec.conformance.steps import PLACEHOLDER, buffer_address
from vfiospec.reference import Kernel, uapi

from .base import Session, Target, Unsupported

_NAME_FIELDS: dict[str, list] = {}
_IOCTLS = uapi.IOCTLS


def _name_fields(st: uapi.Struct) -> list:
    """The fields of a struct that may hold a name to resolve (addresses, fds, nested structs)."""
    r = _NAME_FIELDS.get(st.name)
    if r is None:
        r = _NAME_FIELDS[st.name] = [f for f in st.fields if isinstance(f.type, uapi.Struct)
                                     or f.kind in ("addr", "fd", "array")]
    return r


class ReferenceSession(Session):
    def __init__(self, platform: dict | None, kernel_factory=Kernel):
        self.kernel = kernel_factory(platform)
        self.fds: dict[str, int] = {}
        self.bufs: dict[str, int] = {}

    # -------------------------------------------------------------- names
    def placeholder(self, name: str, attr: str | None) -> str:
        k = self.kernel
        p = k.platform
        if name in p.groups and attr is None:
            return str(p.groups[name].number)
        dev = k.device_by_logical(name)
        if dev is None:
            raise KeyError(name)
        if attr == "group":
            return str(dev.group.number)
        if attr == "cdev":
            return dev.cdev_name
        return dev.name

    def resolve_str(self, s: str) -> str:
        if "{" not in s:                # no placeholder: nothing to substitute
            return s

        def rep(m):
            try:
                return self.placeholder(m.group(1), m.group(2))
            except KeyError:
                raise Unsupported(f"no group, device or mdev named {m.group(1)!r}") from None
        return PLACEHOLDER.sub(rep, s)

    def resolve_addr(self, v) -> int:
        return buffer_address(v, self.bufs.__getitem__)

    def resolve_fd(self, v) -> int:
        if isinstance(v, int):
            return v
        if v in self.fds:
            return self.fds[v]
        raise KeyError(v)

    def _arg_struct(self, st: uapi.Struct, obj: dict) -> dict:
        """A normalised struct argument (every field present) with names resolved."""
        out = dict(obj)
        for f in _name_fields(st):
            v = out.get(f.name, 0)
            if isinstance(f.type, uapi.Struct):
                out[f.name] = self._arg_struct(f.type, v or {})
            elif f.kind == "addr" or (f.kind == "array" and not isinstance(v, list)):
                out[f.name] = v if isinstance(v, int) else self.resolve_addr(v)
            elif f.kind == "fd":
                out[f.name] = self.resolve_fd(v) if isinstance(v, str) else v
        return out

    # -------------------------------------------------------------- steps
    def perform(self, step: dict) -> Observed:
        k = self.kernel
        call = step["call"]
        if call == "ioctl":                       # most steps: tested first
            cmd = step["cmd"]
            io = _IOCTLS[cmd]
            arg = step.get("arg")
            kind = io.arg
            if kind == "struct":
                arg = self._arg_struct(io.struct, arg)
            elif kind == "fd":
                arg = self.resolve_fd(arg)
            elif kind == "string":
                arg = self.resolve_str(arg)
            fd = step["fd"]
            r = k.ioctl(fd if fd.__class__ is int else self.resolve_fd(fd), cmd, arg)
            if r.errno is None and "as" in step:
                self.fds[step["as"]] = r.ret
            if kind == "struct" and r.errno is None and isinstance(r.out, dict) and "caps" not in r.out \
                    and "cap_offset" in io.struct.by_name:
                # trace format: a struct with a capability chain always has "caps" ([] when none)
                r.out = {**r.out, "caps": []}
        elif call == "open":
            r = k.open(self.resolve_str(step["path"]), step.get("flags"))
            if r.errno is None:
                self.fds[step["as"]] = r.ret
        elif call == "close":
            r = k.close(self.resolve_fd(step["fd"]))
            if r.errno is None:
                self.fds = {n: fd for n, fd in self.fds.items() if fd != self.fds.get(step["fd"])}
        elif call == "mmap":
            r = k.mmap(step["length"], step.get("hugepage", False))
            if r.errno is None:
                self.bufs[step["as"]] = r.ret
        elif call == "munmap":
            r = k.munmap(self.resolve_addr(step["addr"]))
        elif call == "read":
            r = k.sysfs_read(self.resolve_str(step["path"]))
        elif call == "write":
            r = k.sysfs_write(self.resolve_str(step["path"]), step["data"])
            if r.errno is None and "as" in step:
                k.name_mdev(step["as"], step["data"].strip())
        elif call == "kapi":
            args = dict(step)
            r = k.kapi(step["fn"], args)
        else:
            raise Unsupported(f"unknown call {call!r}")
        errno = r.errno
        reqs = r.reqs
        return Observed(-1 if errno is not None else r.ret, errno, r.out, r.data, None, None,
                        reqs if reqs.__class__ is list else list(reqs))

    def state(self):
        return self.kernel.state()

    def close(self) -> None:
        self.kernel.close_all()


class ReferenceTarget(Target):
    name = "reference"

    def __init__(self, kernel_factory=Kernel):
        self.kernel_factory = kernel_factory

    def begin(self, trace) -> ReferenceSession:
        return ReferenceSession(trace.parsed_platform, self.kernel_factory)
