"""The abstract action vocabulary shared by every face of vfiospec.

One frozen dataclass per abstract action (design.md, "Layers"): the uAPI
decoder of the reference turns a trace step into one of these, the z3 model
(vfiospec.model.transitions) defines each as a transition relation under the
same name, the TLA+ spec names its actions after them, and every class lists
the requirement IDs (reference/requirements/*.toml) its semantics implement.

`abstract(step, result, kernel=None)` maps a normalised trace step and the
result it gave to the abstract action it performed (None for calls that are
not abstract actions: queries such as GET_INFO, mmap, reads).  Fields keep the
trace's own names: fds by their `as` names, numbers as the step gave them
(bytes), logical device/group names where the step used a placeholder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import ClassVar


@dataclass(frozen=True)
class Action:
    REQS: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return type(self).__name__


# ---------------------------------------------------------------- groups and containers
@dataclass(frozen=True)
class OpenGroup(Action):
    """open(/dev/vfio/$GROUP)."""
    REQS = ("GROUP-OPEN", "GROUP-SINGLE-OPEN", "CDEV-GROUP-EXCLUSIVE", "GROUP-NODE")
    group: str
    fd: str


@dataclass(frozen=True)
class CloseGroup(Action):
    """close() of the group fd: the group leaves its container."""
    REQS = ("GROUP-UNSET-CONTAINER", "CONTAINER-LAST-GROUP-RELEASES-IOMMU")
    fd: str


@dataclass(frozen=True)
class SetContainer(Action):
    """VFIO_GROUP_SET_CONTAINER."""
    REQS = ("GROUP-SET-CONTAINER", "GROUP-SET-CONTAINER-ALREADY", "GROUP-DMA-OWNER-EXCLUSIVE",
            "GROUP-SET-CONTAINER-IOMMUFD")
    group_fd: str
    container_fd: str


@dataclass(frozen=True)
class UnsetContainer(Action):
    """VFIO_GROUP_UNSET_CONTAINER."""
    REQS = ("GROUP-UNSET-CONTAINER", "GROUP-UNSET-CONTAINER-NONE", "CONTAINER-LAST-GROUP-RELEASES-IOMMU")
    group_fd: str


@dataclass(frozen=True)
class SetIommu(Action):
    """VFIO_SET_IOMMU."""
    REQS = ("CONTAINER-SET-IOMMU", "CONTAINER-SET-IOMMU-NO-GROUP", "CONTAINER-SET-IOMMU-TWICE",
            "CONTAINER-SET-IOMMU-UNSUPPORTED")
    container_fd: str
    type: int


# ---------------------------------------------------------------- type1
@dataclass(frozen=True)
class MapDma(Action):
    """VFIO_IOMMU_MAP_DMA on a type1 container."""
    REQS = ("TYPE1-MAP", "TYPE1-MAP-OVERLAP", "TYPE1-MAP-RLIMIT-MEMLOCK", "TYPE1-MAP-PIN-ACCOUNT",
            "CONTAINER-IOCTL-BEFORE-SET-IOMMU")
    container_fd: str
    iova: int
    size: int
    vaddr: object
    flags: int = 0


@dataclass(frozen=True)
class UnmapDma(Action):
    """VFIO_IOMMU_UNMAP_DMA on a type1 container."""
    REQS = ("TYPE1-UNMAP", "TYPE1-UNMAP-NO-BISECT", "TYPE1-UNMAP-EMPTY-RANGE", "TYPE1-UNMAP-UNACCOUNTS",
            "CONTAINER-IOCTL-BEFORE-SET-IOMMU")
    container_fd: str
    iova: int
    size: int
    flags: int = 0


# ---------------------------------------------------------------- cdev and iommufd
@dataclass(frozen=True)
class Bind(Action):
    """VFIO_DEVICE_BIND_IOMMUFD on a device cdev fd."""
    REQS = ("CDEV-BIND", "CDEV-BIND-TWICE", "CDEV-GROUP-EXCLUSIVE", "IOMMUFD-BIND", "IOMMUFD-BIND-DMA-OWNER")
    device_fd: str
    iommufd: object


@dataclass(frozen=True)
class Unbind(Action):
    """close() of a bound device cdev fd."""
    REQS = ("CDEV-UNBIND-ON-CLOSE", "IOMMUFD-UNBIND", "HWPT-AUTO-DESTROYED")
    device_fd: str


@dataclass(frozen=True)
class IoasAlloc(Action):
    """IOMMU_IOAS_ALLOC."""
    REQS = ("IOAS-ALLOC",)
    iommufd: str


@dataclass(frozen=True)
class Attach(Action):
    """VFIO_DEVICE_ATTACH_IOMMUFD_PT (an IOAS: an automatic HWPT is found or made)."""
    REQS = ("CDEV-ATTACH", "CDEV-ATTACH-REPLACE", "IOMMUFD-ATTACH", "IOMMUFD-ATTACH-AUTO-HWPT",
            "IOMMUFD-ATTACH-AUTO-HWPT-REUSE", "IOMMUFD-ATTACH-GROUP-SAME-HWPT", "IOMMUFD-PIN-ONCE",
            "CDEV-NO-ACCESS-BEFORE-BIND", "IOMMUFD-ACCOUNT-USER-RLIMIT")
    device_fd: str
    pt_id: object


@dataclass(frozen=True)
class Detach(Action):
    """VFIO_DEVICE_DETACH_IOMMUFD_PT."""
    REQS = ("CDEV-DETACH", "IOMMUFD-DETACH", "HWPT-AUTO-DESTROYED", "CDEV-NO-ACCESS-BEFORE-BIND")
    device_fd: str


@dataclass(frozen=True)
class IoasMap(Action):
    """IOMMU_IOAS_MAP."""
    REQS = ("IOAS-MAP", "IOAS-MAP-FIXED", "IOAS-MAP-OVERLAP", "IOAS-MAP-LAZY", "IOMMUFD-ACCOUNT-USER",
            "IOMMUFD-ACCOUNT-USER-RLIMIT", "IOMMUFD-PIN-SEPARATE-MAPS")
    iommufd: str
    ioas_id: object
    iova: int
    length: int
    user_va: object
    flags: int = 0


@dataclass(frozen=True)
class IoasUnmap(Action):
    """IOMMU_IOAS_UNMAP."""
    REQS = ("IOAS-UNMAP", "IOAS-UNMAP-SPLIT-ENOENT", "IOAS-UNMAP-EMPTY-ENOENT")
    iommufd: str
    ioas_id: object
    iova: int
    length: int


@dataclass(frozen=True)
class IoasCopy(Action):
    """IOMMU_IOAS_COPY."""
    REQS = ("IOAS-COPY-SHARES-PAGES", "IOAS-COPY-SRC-HOLE", "IOAS-MAP-OVERLAP", "IOMMUFD-PIN-ONCE")
    iommufd: str
    src_ioas_id: object
    dst_ioas_id: object
    src_iova: int
    dst_iova: int
    length: int
    flags: int = 0


@dataclass(frozen=True)
class Destroy(Action):
    """IOMMU_DESTROY (the model covers an IOAS)."""
    REQS = ("IOMMUFD-OBJECT-ENOENT", "IOMMUFD-RELEASE-LEAF-FIRST")
    iommufd: str
    id: object


# ---------------------------------------------------------------- sPAPR
@dataclass(frozen=True)
class RegisterMemory(Action):
    """VFIO_IOMMU_SPAPR_REGISTER_MEMORY."""
    REQS = ("SPAPR-PREREG-REGISTER", "SPAPR-PREREG-TWICE", "SPAPR-PREREG-OVERLAP", "SPAPR-PREREG-SHARED",
            "SPAPR-PREREG-ACCOUNTING", "SPAPR-V2-ENABLED-BY-REGISTER")
    container_fd: str
    vaddr: object
    size: int


@dataclass(frozen=True)
class UnregisterMemory(Action):
    """VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY."""
    REQS = ("SPAPR-PREREG-EXACT-UNREGISTER", "SPAPR-PREREG-UNREGISTER-MAPPED", "SPAPR-PREREG-ACCOUNTING")
    container_fd: str
    vaddr: object
    size: int


@dataclass(frozen=True)
class TceCreate(Action):
    """VFIO_IOMMU_SPAPR_TCE_CREATE."""
    REQS = ("SPAPR-TCE-CREATE", "SPAPR-TCE-CREATE-MAX-WINDOWS", "SPAPR-TCE-CREATE-ACCOUNTING")
    container_fd: str
    page_shift: int
    window_size: int
    levels: int


@dataclass(frozen=True)
class TceRemove(Action):
    """VFIO_IOMMU_SPAPR_TCE_REMOVE."""
    REQS = ("SPAPR-TCE-REMOVE", "SPAPR-TCE-REMOVE-NO-WINDOW", "SPAPR-TCE-REMOVE-PENDING-DEFAULT")
    container_fd: str
    start_addr: int


@dataclass(frozen=True)
class SpaprMapDma(Action):
    """VFIO_IOMMU_MAP_DMA on a sPAPR container (one TCE per IOMMU page)."""
    REQS = ("SPAPR-MAP", "SPAPR-MAP-OUTSIDE-WINDOWS", "SPAPR-MAP-ALIGN", "SPAPR-MAP-IOVA-UNALIGNED-RET1",
            "SPAPR-V2-MAP-PREREG-ONLY", "SPAPR-MAP-NOT-ENABLED")
    container_fd: str
    iova: int
    size: int
    vaddr: object
    flags: int = 0


@dataclass(frozen=True)
class SpaprUnmapDma(Action):
    """VFIO_IOMMU_UNMAP_DMA on a sPAPR container."""
    REQS = ("SPAPR-UNMAP", "SPAPR-MAP-OUTSIDE-WINDOWS", "SPAPR-MAP-NOT-ENABLED")
    container_fd: str
    iova: int
    size: int


# ---------------------------------------------------------------- mdev
@dataclass(frozen=True)
class MdevCreate(Action):
    """A UUID written to mdev_supported_types/<type>/create."""
    REQS = ("MDEV-CREATE", "MDEV-CREATE-NO-INSTANCES", "MDEV-AVAILABLE-INSTANCES")
    parent: str
    type: str
    uuid: str


@dataclass(frozen=True)
class MdevRemove(Action):
    """A write to /sys/bus/mdev/devices/<uuid>/remove."""
    REQS = ("MDEV-REMOVE", "MDEV-REMOVE-RETURNS-INSTANCE", "MDEV-AVAILABLE-INSTANCES")
    uuid: str
    value: str = "1"


# ---------------------------------------------------------------- opening fds (no state of the model)
@dataclass(frozen=True)
class OpenFd(Action):
    """open() of /dev/vfio/vfio, /dev/iommu or a device cdev: a new fd, no abstract state."""
    REQS = ("CONTAINER-OPEN", "IOMMUFD-OPEN", "CDEV-OPEN")
    path: str
    fd: str


@dataclass(frozen=True)
class Close(Action):
    """close() of any other fd."""
    REQS = ()
    fd: str


ALL: dict[str, type[Action]] = {c.__name__: c for c in Action.__subclasses__()}


def field_names(cls: type[Action]) -> list[str]:
    return [f.name for f in fields(cls)]


_GROUP_PATH = re.compile(r"^/dev/vfio/(noiommu-)?(\{[^}]+\}|[0-9]+)$")
_CREATE = re.compile(r"^(?:/sys/class/mdev_bus/([^/]+)|/sys/devices/virtual/mtty/(mtty))/mdev_supported_types/"
                     r"([^/]+)/create$")
_REMOVE = re.compile(r"^/sys/bus/mdev/devices/([^/]+)/remove$")


def _backend(kernel, fdname, fds) -> str | None:
    """The IOMMU backend of the container behind fd `fdname` ("type1", "spapr", None)."""
    if kernel is None or fds is None or fdname not in fds:
        return None
    f = kernel.files.get(fds[fdname])
    data = getattr(getattr(f, "container", None), "iommu_data", None)
    if data is None:
        return None
    return "spapr" if type(data).__name__ == "TceContainer" else "type1"


def abstract(step: dict, result=None, kernel=None, fds: dict | None = None) -> Action | None:
    """The abstract action a normalised trace step performs (None: not an action).

    With `kernel` and `fds` (fd name -> number, as ReferenceSession keeps them),
    called *before* the step runs, the kind of the fd decides (a close of a group
    fd is CloseGroup, of a cdev fd Unbind; MAP/UNMAP_DMA on a sPAPR container are
    SpaprMapDma/SpaprUnmapDma); without them the fd names the model's traces use
    (groupN, cdevN) decide.  `result` is accepted for symmetry and not needed."""
    call = step.get("call")
    if call == "open":
        path = step["path"]
        m = _GROUP_PATH.match(path)
        if m and path != "/dev/vfio/vfio":
            return OpenGroup(m.group(2).strip("{}"), step.get("as", ""))
        return OpenFd(path, step.get("as", ""))
    if call == "close":
        fd = step["fd"]
        if kernel is not None and fds is not None and fd in fds and fds[fd] in kernel.files:
            kind = getattr(kernel.files[fds[fd]], "kind", "")
            f = kernel.files[fds[fd]]
            if kind == "vfio-group":
                return CloseGroup(fd)
            if kind == "vfio-device" and getattr(f, "group", None) is None:
                return Unbind(fd)
            return Close(fd)
        if isinstance(fd, str) and fd.startswith("group"):
            return CloseGroup(fd)
        if isinstance(fd, str) and fd.startswith("cdev"):
            return Unbind(fd)
        return Close(str(fd))
    if call == "write":
        path = step["path"]
        m = _CREATE.match(path)
        if m:
            return MdevCreate(m.group(1) or m.group(2), m.group(3), str(step.get("data", "")).strip())
        m = _REMOVE.match(path)
        if m:
            return MdevRemove(m.group(1).strip("{}"), str(step.get("data", "")).strip())
        return None
    if call != "ioctl":
        return None
    cmd, fd, arg = step["cmd"], step.get("fd"), step.get("arg")
    a = arg if isinstance(arg, dict) else {}
    if cmd == "VFIO_GROUP_SET_CONTAINER":
        return SetContainer(fd, arg)
    if cmd == "VFIO_GROUP_UNSET_CONTAINER":
        return UnsetContainer(fd)
    if cmd == "VFIO_SET_IOMMU":
        return SetIommu(fd, arg)
    if cmd == "VFIO_IOMMU_MAP_DMA":
        cls = SpaprMapDma if _backend(kernel, fd, fds) == "spapr" else MapDma
        return cls(fd, a.get("iova", 0), a.get("size", 0), a.get("vaddr", 0), a.get("flags", 0))
    if cmd == "VFIO_IOMMU_UNMAP_DMA":
        if _backend(kernel, fd, fds) == "spapr":
            return SpaprUnmapDma(fd, a.get("iova", 0), a.get("size", 0))
        return UnmapDma(fd, a.get("iova", 0), a.get("size", 0), a.get("flags", 0))
    if cmd == "VFIO_DEVICE_BIND_IOMMUFD":
        return Bind(fd, a.get("iommufd"))
    if cmd == "VFIO_DEVICE_ATTACH_IOMMUFD_PT":
        return Attach(fd, a.get("pt_id"))
    if cmd == "VFIO_DEVICE_DETACH_IOMMUFD_PT":
        return Detach(fd)
    if cmd == "IOMMU_IOAS_ALLOC":
        return IoasAlloc(fd)
    if cmd == "IOMMU_IOAS_MAP":
        return IoasMap(fd, a.get("ioas_id"), a.get("iova", 0), a.get("length", 0), a.get("user_va", 0),
                       a.get("flags", 0))
    if cmd == "IOMMU_IOAS_UNMAP":
        return IoasUnmap(fd, a.get("ioas_id"), a.get("iova", 0), a.get("length", 0))
    if cmd == "IOMMU_IOAS_COPY":
        return IoasCopy(fd, a.get("src_ioas_id"), a.get("dst_ioas_id"), a.get("src_iova", 0), a.get("dst_iova", 0),
                        a.get("length", 0), a.get("flags", 0))
    if cmd == "IOMMU_DESTROY":
        return Destroy(fd, a.get("id"))
    if cmd == "VFIO_IOMMU_SPAPR_REGISTER_MEMORY":
        return RegisterMemory(fd, a.get("vaddr", 0), a.get("size", 0))
    if cmd == "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY":
        return UnregisterMemory(fd, a.get("vaddr", 0), a.get("size", 0))
    if cmd == "VFIO_IOMMU_SPAPR_TCE_CREATE":
        return TceCreate(fd, a.get("page_shift", 0), a.get("window_size", 0), a.get("levels", 0))
    if cmd == "VFIO_IOMMU_SPAPR_TCE_REMOVE":
        return TceRemove(fd, a.get("start_addr", 0))
    return None
