"""/dev/iommu: the iommufd file, its object table and the ioctl decoder
(drivers/iommu/iommufd/main.c).

State (what the invariants speak of):
  IommufdCtx.objects      {id: object} (IDs from 1, the lowest free one reused,
                          as xa_alloc with XA_FLAGS_ALLOC1); every object has
                          obj_id, type ("ioas" | "hwpt_paging" | "device" |
                          "access") and users (its refcount: 1 for the table,
                          +1 per holder)
  IommufdCtx.users        holders of the context outside the file: VFIO
                          devices bound to it, groups set to it (iommufd_ctx_get)
  IommufdCtx.account_mode "user" | "mm"   (IOMMU_OPTION_RLIMIT_MODE)
  IommufdCtx.vfio_ioas    the compat IOAS (vfio_compat.py), no_iommu_mode
  IommufdCtx.groups       {VfioGroup: IommufdGroup} (device.py)
"""

from __future__ import annotations

import heapq

from vfiospec.reference import dispatch, uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import File, Result

from .pages import ACCOUNT_MM, ACCOUNT_USER


class IommufdObject:
    """struct iommufd_object."""

    type = "any"

    def __init__(self, ictx):
        self.ictx = ictx
        self.obj_id = 0
        self.users = 1

    def destroy(self) -> None:
        """iommufd_object_ops[type].destroy."""


class IommufdCtx:
    """struct iommufd_ctx."""

    def __init__(self, kernel, compat: bool):
        self.k = kernel
        self.objects: dict[int, IommufdObject] = {}
        self._free_ids: list[int] = []
        self._next_id = 1
        self.account_mode = ACCOUNT_MM if compat else ACCOUNT_USER
        self.vfio_ioas = None
        self.no_iommu_mode = False
        self.groups: dict = {}
        self._users = 0
        self.file: IommufdFile | None = None

    # holders outside the file (iommufd_ctx_get / iommufd_ctx_put)
    @property
    def users(self) -> int:
        return self._users

    @users.setter
    def users(self, v: int) -> None:
        self._users = v
        f = self.file
        if v == 0 and f is not None and not f.closed and not any(g is f for g in self.k.files.values()):
            f.closed = True
            f.release()

    # ------------------------------------------------------------ object table
    def object_alloc(self, obj: IommufdObject) -> IommufdObject:
        """iommufd_object_alloc + finalize: the lowest free ID (from 1)."""
        if self._free_ids:
            obj.obj_id = heapq.heappop(self._free_ids)
        else:
            obj.obj_id = self._next_id
            self._next_id += 1
        self.objects[obj.obj_id] = obj
        return obj

    def object_abort(self, obj: IommufdObject) -> None:
        """iommufd_object_abort: the ID goes back to the free list."""
        if self.objects.get(obj.obj_id) is obj:
            del self.objects[obj.obj_id]
            heapq.heappush(self._free_ids, obj.obj_id)

    def get_object(self, obj_id: int, *types: str, req: str = "IOMMUFD-OBJECT-ENOENT") -> IommufdObject:
        """iommufd_get_object: ENOENT for a missing ID or one of another type."""
        obj = self.objects.get(obj_id)
        if obj is None or (types and obj.type not in types):
            raise Errno("ENOENT", req)
        return obj

    def object_remove(self, obj: IommufdObject) -> None:
        """Erase then destroy (iommufd_object_remove with users == 1)."""
        self.object_abort(obj)
        if self.vfio_ioas is obj:
            self.vfio_ioas = None
            self.k.cover("IOMMU-VFIO-IOAS-DESTROY-CLEARS")
        obj.destroy()

    def destroy_user(self, obj_id: int) -> None:
        """iommufd_destroy -> iommufd_object_remove: ENOENT, EBUSY while held."""
        obj = self.objects.get(obj_id)
        if obj is None:
            raise Errno("ENOENT", "IOMMUFD-OBJECT-ENOENT")
        if obj.users != 1:
            raise Errno("EBUSY", {"ioas": "IOMMU-DESTROY-IOAS-BUSY", "hwpt_paging": "IOMMU-DESTROY-HWPT-BUSY"}
                        .get(obj.type, "IOMMU-DESTROY-DEVICE-BUSY"))
        obj.users = 0
        self.object_remove(obj)

    def put_and_try_destroy(self, obj: IommufdObject) -> None:
        """iommufd_object_put_and_try_destroy: drop a user; gone at the table's ref."""
        obj.users -= 1
        if obj.users == 1 and self.objects.get(obj.obj_id) is obj:
            obj.users = 0
            self.object_remove(obj)

    def release(self) -> None:
        """iommufd_fops_release: destroy leaves first (objects whose only user is the
        table), repeatedly, in ID order, until the table is empty."""
        while self.objects:
            destroyed = 0
            for oid in sorted(self.objects):
                obj = self.objects.get(oid)
                if obj is None or obj.users != 1:
                    continue
                obj.users = 0
                self.object_remove(obj)
                destroyed += 1
            if not destroyed:
                break
        self.k.cover("IOMMUFD-RELEASE-LEAF-FIRST")


class IommufdFile(File):
    """An open /dev/iommu (or iommufd's /dev/vfio/vfio)."""

    kind = "iommufd"

    def __init__(self, kernel, compat: bool):
        super().__init__(kernel)
        self.ictx = IommufdCtx(kernel, compat)
        self.ictx.file = self
        self.compat = compat

    @property
    def extra_refs(self) -> int:
        """Holders of the context keep the file alive (iommufd_ctx_get is get_file)."""
        return self.ictx.users

    def ioctl(self, cmd: str, arg):
        """iommufd_fops_ioctl: numbers below IOMMUFD_CMD_BASE (every VFIO ioctl) go to
        the VFIO container emulation; the generic size rules for the rest."""
        io = uapi.IOCTLS.get(cmd)
        if io is None:
            raise Errno("ENOTTY", "IOMMUFD-UNKNOWN-IOCTL")
        if io.size_field != "size":
            from . import vfio_compat
            return vfio_compat.iommufd_vfio_ioctl(self.ictx, cmd, arg)
        entry = _IOCTL_OPS.get(cmd)
        if entry is None or not self.k.at_least(*entry[1]):
            raise Errno("ENOTTY", "IOMMUFD-UNKNOWN-IOCTL")
        fn = entry[0]
        st = io.struct
        size = arg.get("size", st.size)
        if size < st.minsz:
            raise Errno("EINVAL", "IOMMUFD-IOCTL-SIZE-SHORT")
        tail = arg.get("__tail__", b"")
        if size > st.size and any(tail):
            raise Errno("E2BIG", "IOMMUFD-IOCTL-SIZE-TAIL")
        # copy_struct_from_user: fields past `size` read as zero
        cmdv = {}
        for f in st.fields:
            v = arg.get(f.name, 0)
            cmdv[f.name] = v if f.end <= size else ({} if isinstance(f.type, uapi.Struct) else 0)
        cmdv["size"] = size
        if size > st.size:
            self.k.cover("IOMMUFD-IOCTL-SIZE-TAIL")
        r = fn(self.ictx, cmdv)
        if isinstance(r, Result) and r.out:
            # iommufd_ucmd_respond copies min(size, sizeof) bytes back
            out = dict(arg)
            out.pop("__tail__", None)
            for f in st.fields:
                if f.name in r.out and f.end <= size:
                    out[f.name] = r.out[f.name]
            for k_, v in r.out.items():
                if not st.has(k_):
                    out[k_] = v
            r.out = out
        return r

    def release(self) -> None:
        self.ictx.release()


def _destroy(ictx, cmd) -> Result:
    """iommufd_destroy."""
    ictx.destroy_user(cmd["id"])
    ictx.k.cover("IOMMU-DESTROY")
    return Result(0)


def _option(ictx, cmd) -> Result:
    """iommufd_option: __reserved / unknown option -> EOPNOTSUPP; val64 written back."""
    if cmd["__reserved"]:
        raise Errno("EOPNOTSUPP", "IOMMU-OPTION-RESERVED")
    oid = cmd["option_id"]
    if oid == uapi.CONSTANTS["IOMMU_OPTION_RLIMIT_MODE"]:
        val = _option_rlimit_mode(ictx, cmd)
    elif oid == uapi.CONSTANTS["IOMMU_OPTION_HUGE_PAGES"]:
        from .ioas import iommufd_ioas_option
        val = iommufd_ioas_option(ictx, cmd)
    else:
        raise Errno("EOPNOTSUPP", "IOMMU-OPTION-UNKNOWN")
    return Result(0, out={"val64": val})


def _option_rlimit_mode(ictx, cmd) -> int:
    """iommufd_option_rlimit_mode."""
    k = ictx.k
    if cmd["object_id"]:
        raise Errno("EOPNOTSUPP", "IOMMU-OPTION-RLIMIT-MODE-OBJECT")
    op = cmd["op"]
    if op == uapi.CONSTANTS["IOMMU_OPTION_OP_GET"]:
        k.cover("IOMMU-OPTION-RLIMIT-MODE-GET")
        return 1 if ictx.account_mode == ACCOUNT_MM else 0
    if op == uapi.CONSTANTS["IOMMU_OPTION_OP_SET"]:
        if not k.capable("CAP_SYS_RESOURCE"):
            raise Errno("EPERM", "IOMMU-OPTION-RLIMIT-MODE-EPERM")
        if ictx.objects:
            raise Errno("EBUSY", "IOMMU-OPTION-RLIMIT-MODE-BUSY")
        if cmd["val64"] == 0:
            ictx.account_mode = ACCOUNT_USER
        elif cmd["val64"] == 1:
            ictx.account_mode = ACCOUNT_MM
        else:
            raise Errno("EINVAL", "IOMMU-OPTION-RLIMIT-MODE-VAL")
        k.cover("IOMMU-OPTION-RLIMIT-MODE-SET")
        return cmd["val64"]
    raise Errno("EOPNOTSUPP", "IOMMU-OPTION-UNKNOWN")


def _vfio_ioas(ictx, cmd):
    from .vfio_compat import iommufd_vfio_ioas
    return iommufd_vfio_ioas(ictx, cmd)


def _ioas(name):
    def call(ictx, cmd):
        from . import ioas
        return getattr(ioas, name)(ictx, cmd)
    return call


def _hwpt_alloc(ictx, cmd):
    from .hw_pagetable import iommufd_hwpt_alloc
    return iommufd_hwpt_alloc(ictx, cmd)


def _get_hw_info(ictx, cmd):
    from .device import iommufd_get_hw_info
    return iommufd_get_hw_info(ictx, cmd)


# iommufd_ioctl_ops: the handler and the first kernel that has the ioctl
_IOCTL_OPS = {
    "IOMMU_DESTROY": (_destroy, (6, 2)),
    "IOMMU_IOAS_ALLOC": (_ioas("iommufd_ioas_alloc_ioctl"), (6, 2)),
    "IOMMU_IOAS_ALLOW_IOVAS": (_ioas("iommufd_ioas_allow_iovas"), (6, 2)),
    "IOMMU_IOAS_COPY": (_ioas("iommufd_ioas_copy"), (6, 2)),
    "IOMMU_IOAS_IOVA_RANGES": (_ioas("iommufd_ioas_iova_ranges"), (6, 2)),
    "IOMMU_IOAS_MAP": (_ioas("iommufd_ioas_map"), (6, 2)),
    "IOMMU_IOAS_UNMAP": (_ioas("iommufd_ioas_unmap"), (6, 2)),
    "IOMMU_OPTION": (_option, (6, 2)),
    "IOMMU_VFIO_IOAS": (_vfio_ioas, (6, 2)),
    "IOMMU_HWPT_ALLOC": (_hwpt_alloc, (6, 6)),
    "IOMMU_GET_HW_INFO": (_get_hw_info, (6, 6)),
}


def open_iommufd(kernel, compat: bool = True) -> IommufdFile:
    """iommufd_fops_open: a context opened as /dev/vfio/vfio (compat) uses per-mm
    (VFIO-compatible) accounting; one opened as /dev/iommu per-user."""
    if not kernel.at_least(6, 2):
        raise Errno("ENOENT", "IOMMUFD-NODE")
    f = IommufdFile(kernel, compat)
    kernel.cover("IOMMUFD-OPEN-COMPAT-ACCOUNT-MM" if compat else "IOMMUFD-OPEN")
    return f


@dispatch.on_open(r"/dev/iommu")
def _open_dev_iommu(kernel, m):
    return open_iommufd(kernel, compat=False)

