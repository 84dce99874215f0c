"""The simulated machine and process: fd table, user memory, devices and the
path namespace (/dev/vfio, /dev/iommu, /sys).  Object kinds live in their own
modules; this one only routes calls to them."""

from __future__ import annotations

from bisect import bisect_right, insort, bisect_left
from dataclasses import dataclass, field

from . import dispatch
from .errors import Errno
from .platform import Platform, parse_platform


@dataclass
class Result:
    """What a syscall gave: `ret` (>= 0) or `errno`, the struct as the kernel left it
    in `out`, the text a sysfs read gave in `data`, and the requirement IDs it exercised."""

    ret: int = 0
    errno: str | None = None
    out: dict = field(default_factory=dict)
    data: str | None = None
    reqs: list[str] = field(default_factory=list)


class File:
    """An open file description; subclasses implement `ioctl`."""

    kind = "file"

    def __init__(self, kernel: "Kernel"):
        self.k = kernel
        self.closed = False

    def ioctl(self, cmd: str, arg):
        raise Errno("ENOTTY")

    def release(self) -> None:
        """The last close (fput): subclasses undo their state."""


@dataclass
class Vma:
    start: int
    length: int
    hugepage: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length


class Mm:
    """The process's address space (mmap'd anonymous memory) and its locked_vm /
    pinned_vm counters, in pages (mm_struct)."""

    BASE = 0x7F0000000000

    def __init__(self, page_size: int):
        self.page_size = page_size
        self.vmas: dict[int, Vma] = {}
        self.starts: list[int] = []      # sorted VMA starts
        self.next = self.BASE
        self.locked_vm = 0
        self.pinned_vm = 0

    def mmap(self, length: int, hugepage: bool = False) -> int:
        if length <= 0:
            raise Errno("EINVAL")
        align = (2 << 20) if hugepage else self.page_size
        start = (self.next + align - 1) // align * align
        length = (length + self.page_size - 1) // self.page_size * self.page_size
        self.vmas[start] = Vma(start, length, hugepage)
        insort(self.starts, start)
        self.next = start + length + self.page_size   # a guard gap between buffers
        return start

    def munmap(self, addr: int) -> None:
        if addr not in self.vmas:
            raise Errno("EINVAL")
        del self.vmas[addr]
        del self.starts[bisect_left(self.starts, addr)]

    def vma_at(self, addr: int) -> Vma | None:
        i = bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.vmas[self.starts[i]].end:
            return self.vmas[self.starts[i]]
        return None

    def covered(self, addr: int, length: int) -> bool:
        """Every byte of [addr, addr+length) lies in a mapping (what GUP needs)."""
        end = addr + length
        while addr < end:
            v = self.vma_at(addr)
            if v is None:
                return False
            addr = v.end
        return True

    def backing_pagesize(self, addr: int) -> int:
        v = self.vma_at(addr)
        return (2 << 20) if v is not None and v.hugepage else self.page_size


class Kernel:
    """One process on one simulated machine, as a trace's platform describes it."""

    def __init__(self, platform: Platform | dict | None = None):
        if not isinstance(platform, Platform):
            platform = parse_platform(platform)
        self.platform = platform
        self.mm = Mm(platform.page_size)
        self.user_locked_vm = 0          # user_struct->locked_vm (iommufd per-user accounting)
        self.files: dict[int, File] = {}
        self.next_fd = 3
        self.reqs: list[str] = []        # requirement IDs exercised by the current call
        # kernel objects, created lazily by the modules that own them
        self.objects: dict[str, object] = {}
        # vfio devices by the trace's logical names (dev0, and mdevs named by `as`)
        self.devices: dict[str, object] = {}
        dispatch.boot(self)

    # ---------------------------------------------------------------- helpers
    @property
    def page_size(self) -> int:
        return self.platform.page_size

    def at_least(self, major: int, minor: int = 0) -> bool:
        return self.platform.at_least(major, minor)

    def capable(self, cap: str) -> bool:
        return self.platform.has_cap(cap)

    def cover(self, req: str) -> None:
        """Record that the current call exercised requirement `req`."""
        self.reqs.append(req)

    def device_by_logical(self, name: str):
        """The vfio device a trace's logical name (dev0, m0) stands for, or None."""
        return self.devices.get(name)

    def name_mdev(self, alias: str, uuid: str) -> None:
        """Bind the `as` name of an mdev `create` write to the mdev it created."""
        uuid = uuid[:36].lower()
        for d in list(self.devices.values()):
            if getattr(d, "name", None) == uuid:
                self.devices[alias] = d
                return

    def install_fd(self, f: File) -> int:
        fd = self.next_fd
        while fd in self.files:
            fd += 1
        self.files[fd] = f
        self.next_fd = fd + 1
        return fd

    def file(self, fd: int) -> File:
        f = self.files.get(fd)
        if f is None:
            raise Errno("EBADF")
        return f

    # ---------------------------------------------------------------- syscalls
    def _call(self, fn, *args) -> Result:
        self.reqs = []
        try:
            r = fn(*args)
        except Errno as e:
            return Result(-1, e.name, e.out or {}, None, self.reqs + [e.req] if e.req else self.reqs[:])
        if r.__class__ is not Result and not isinstance(r, Result):
            return Result(0 if r is None else r, None, {}, None, list(self.reqs))
        r.reqs = self.reqs + r.reqs
        return r

    def open(self, path: str, flags=None) -> Result:
        return self._call(self._open, path)

    def _open(self, path: str) -> int:
        return self.install_fd(dispatch.open_path(self, path))

    def close(self, fd: int) -> Result:
        def go():
            f = self.file(fd)
            del self.files[fd]
            if not any(g is f for g in self.files.values()) and not self._pinned(f):
                f.closed = True
                f.release()
            return 0
        return self._call(go)

    def _pinned(self, f: File) -> bool:
        """Another object still holds a reference to this file (fget), e.g. a device
        fd pins its group file (vfio_device_file holds group->opened_file)."""
        return bool(getattr(f, "extra_refs", 0))

    def drop_ref(self, f: File) -> None:
        f.extra_refs -= 1
        if f.extra_refs == 0 and not any(g is f for g in self.files.values()):
            f.closed = True
            f.release()

    def ioctl(self, fd: int, cmd: str, arg=None) -> Result:
        return self._call(self._ioctl, fd, cmd, arg)

    def _ioctl(self, fd: int, cmd: str, arg):
        return self.file(fd).ioctl(cmd, arg)

    def mmap(self, length: int, hugepage: bool = False) -> Result:
        return self._call(self.mm.mmap, length, hugepage)

    def munmap(self, addr: int) -> Result:
        return self._call(self.mm.munmap, addr)

    def sysfs_read(self, path: str) -> Result:
        def go():
            text = dispatch.sysfs_read(self, path)
            r = Result(ret=0, data=text)
            try:
                r.ret = int(text.strip(), 0)
            except ValueError:
                pass
            return r
        return self._call(go)

    def sysfs_write(self, path: str, data: str) -> Result:
        return self._call(lambda: dispatch.sysfs_write(self, path, data))

    def kapi(self, fn: str, args: dict) -> Result:
        return self._call(lambda: dispatch.kapi(self, fn, args))

    def close_all(self) -> None:
        """Process exit: every fd closed in order."""
        for fd in sorted(self.files):
            if fd in self.files:
                self.close(fd)

    def state(self):
        """The read-only abstract state (see state.py)."""
        from .state import snapshot
        return snapshot(self)
