"""IOAS objects and their ioctls (drivers/iommu/iommufd/ioas.c).

State (what the invariants speak of):
  Ioas.iopt        the io_pagetable (io_pagetable.py: areas, reserved, allowed,
                   domains, accesses, iova_alignment)
  Ioas.hwpt_list   the paging HWPTs built on this IOAS (auto and user created)
  Ioas.users       1 + one per HWPT and per attached access (EBUSY on destroy)
"""

from __future__ import annotations

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

from . import pages as _pages
from .io_pagetable import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, ULONG_MAX, IoPageTable
from .main import IommufdObject

C = uapi.CONSTANTS
MAP_FIXED_IOVA = C["IOMMU_IOAS_MAP_FIXED_IOVA"]
MAP_WRITEABLE = C["IOMMU_IOAS_MAP_WRITEABLE"]
MAP_READABLE = C["IOMMU_IOAS_MAP_READABLE"]
U64_MAX = (1 << 64) - 1


class Ioas(IommufdObject):
    """struct iommufd_ioas."""

    type = "ioas"

    def __init__(self, ictx):
        super().__init__(ictx)
        self.iopt = IoPageTable(ictx.k)
        self.hwpt_list: list = []

    def destroy(self) -> None:
        """iommufd_ioas_destroy: unmap everything (iopt_unmap_all), free the table."""
        self.iopt.unmap_iova_range(0, ULONG_MAX)


def iommufd_ioas_alloc(ictx) -> Ioas:
    return ictx.object_alloc(Ioas(ictx))


def get_ioas(ictx, ioas_id: int) -> Ioas:
    """iommufd_get_ioas: ENOENT unless the ID names an IOAS."""
    return ictx.get_object(ioas_id, "ioas")


def iommufd_ioas_alloc_ioctl(ictx, cmd) -> Result:
    """iommufd_ioas_alloc_ioctl: flags must be 0; IDs start at 1."""
    if cmd["flags"]:
        raise Errno("EOPNOTSUPP", "IOAS-ALLOC-FLAGS")
    ioas = iommufd_ioas_alloc(ictx)
    ictx.k.cover("IOAS-ALLOC")
    return Result(0, out={"out_ioas_id": ioas.obj_id})


def iommufd_ioas_iova_ranges(ictx, cmd) -> Result:
    """iommufd_ioas_iova_ranges: the holes of the reserved ranges; EMSGSIZE (struct
    still written back, num_iovas = the count needed) when the array is too short."""
    if cmd["__reserved"]:
        raise Errno("EOPNOTSUPP", "IOAS-IOVA-RANGES-RESERVED")
    ioas = get_ioas(ictx, cmd["ioas_id"])
    max_iovas = cmd["num_iovas"]
    holes = ioas.iopt.iova_holes()
    out = {"num_iovas": len(holes), "out_iova_alignment": ioas.iopt.iova_alignment,
           "allowed_iovas": [{"start": s, "last": l} for s, l in holes[:max_iovas]]}
    if len(holes) > max_iovas:
        raise Errno("EMSGSIZE", "IOAS-IOVA-RANGES-EMSGSIZE", out={**cmd, **out})
    ictx.k.cover("IOAS-IOVA-RANGES")
    return Result(0, out=out)


def _load_iovas(cmd) -> list[tuple[int, int]]:
    """iommufd_ioas_load_iovas: start < last for each, no overlaps."""
    ranges = cmd.get("allowed_iovas")
    if not isinstance(ranges, list):
        ranges = []
    ranges = ranges[: cmd["num_iovas"]]
    # entries past the given list read as zeros (fresh user memory)
    ranges = ranges + [{}] * (cmd["num_iovas"] - len(ranges))
    out: list[tuple[int, int]] = []
    for r in ranges:
        s, l = r.get("start", 0), r.get("last", 0)
        if s >= l:
            raise Errno("EINVAL", "IOAS-ALLOW-IOVAS-EMPTY-RANGE")
        for s2, l2 in out:
            if s <= l2 and l >= s2:
                raise Errno("EINVAL", "IOAS-ALLOW-IOVAS-OVERLAP")
        out.append((s, l))
    return out


def iommufd_ioas_allow_iovas(ictx, cmd) -> Result:
    """iommufd_ioas_allow_iovas."""
    if cmd["__reserved"]:
        raise Errno("EOPNOTSUPP", "IOAS-ALLOW-IOVAS-RESERVED")
    ioas = get_ioas(ictx, cmd["ioas_id"])
    ranges = _load_iovas(cmd)
    ioas.iopt.set_allow_iova(ranges)
    ictx.k.cover("IOAS-ALLOW-IOVAS")
    return Result(0)


def conv_iommu_prot(flags: int) -> int:
    prot = IOMMU_CACHE
    if flags & MAP_WRITEABLE:
        prot |= IOMMU_WRITE
    if flags & MAP_READABLE:
        prot |= IOMMU_READ
    return prot


def map_user_pages(ictx, ioas: Ioas, iova: int | None, uptr: int, length: int, prot: int) -> int:
    """iopt_map_user_pages: a new iopt_pages for every call (so two MAPs of the same
    memory pin it twice); with no domain nothing is pinned yet."""
    pages, start_byte = _pages.alloc_user_pages(ictx.k, ictx, uptr, length, bool(prot & IOMMU_WRITE))
    iova = ioas.iopt.map_pages([(pages, start_byte, length)], length, iova, prot)
    ictx.k.cover("IOMMUFD-PIN-SEPARATE-MAPS")
    if not ioas.iopt.domains:
        ictx.k.cover("IOAS-MAP-LAZY")
    return iova


def iommufd_ioas_map(ictx, cmd) -> Result:
    """iommufd_ioas_map."""
    flags = cmd["flags"]
    if (flags & ~(MAP_FIXED_IOVA | MAP_WRITEABLE | MAP_READABLE)) or cmd["__reserved"]:
        raise Errno("EOPNOTSUPP", "IOAS-MAP-FLAGS")
    if cmd["iova"] >= ULONG_MAX or cmd["length"] >= ULONG_MAX:
        raise Errno("EOVERFLOW", "IOAS-MAP-OVERFLOW")
    if not flags & (MAP_WRITEABLE | MAP_READABLE):
        raise Errno("EINVAL", "IOAS-MAP-NO-PROT")
    ioas = get_ioas(ictx, cmd["ioas_id"])
    fixed = bool(flags & MAP_FIXED_IOVA)
    iova = map_user_pages(ictx, ioas, cmd["iova"] if fixed else None, cmd["user_va"], cmd["length"],
                          conv_iommu_prot(flags))
    ictx.k.cover("IOAS-MAP-FIXED" if fixed else "IOAS-MAP")
    return Result(0, out={"iova": iova})


def iommufd_ioas_copy(ictx, cmd) -> Result:
    """iommufd_ioas_copy: the destination shares the source's iopt_pages."""
    flags = cmd["flags"]
    if flags & ~(MAP_FIXED_IOVA | MAP_WRITEABLE | MAP_READABLE):
        raise Errno("EOPNOTSUPP", "IOAS-COPY-FLAGS")
    if cmd["length"] >= ULONG_MAX or cmd["src_iova"] >= ULONG_MAX or cmd["dst_iova"] >= ULONG_MAX:
        raise Errno("EOVERFLOW", "IOAS-COPY-OVERFLOW")
    if not flags & (MAP_WRITEABLE | MAP_READABLE):
        raise Errno("EINVAL", "IOAS-COPY-NO-PROT")
    src = get_ioas(ictx, cmd["src_ioas_id"])
    plist = src.iopt.get_pages(cmd["src_iova"], cmd["length"])
    dst = get_ioas(ictx, cmd["dst_ioas_id"])
    fixed = bool(flags & MAP_FIXED_IOVA)
    iova = dst.iopt.map_pages(plist, cmd["length"], cmd["dst_iova"] if fixed else None, conv_iommu_prot(flags))
    ictx.k.cover("IOAS-COPY-SHARES-PAGES")
    return Result(0, out={"dst_iova": iova})


def iommufd_ioas_unmap(ictx, cmd) -> Result:
    """iommufd_ioas_unmap: (0, U64_MAX) unmaps everything, even nothing; otherwise
    whole areas only and ENOENT when nothing (or a part of an area) is in range."""
    ioas = get_ioas(ictx, cmd["ioas_id"])
    iova, length = cmd["iova"], cmd["length"]
    if iova == 0 and length == U64_MAX:
        unmapped, err = ioas.iopt.unmap_iova_range(0, ULONG_MAX)
        if err == "ENOENT":
            err = None
        req = "IOAS-UNMAP-ALL"
    else:
        if iova >= ULONG_MAX or length >= ULONG_MAX:
            raise Errno("EOVERFLOW", "IOAS-UNMAP-OVERFLOW")
        if not length:
            raise Errno("EINVAL", "IOAS-UNMAP-LENGTH-ZERO")
        if iova + length - 1 > ULONG_MAX:
            raise Errno("EOVERFLOW", "IOAS-UNMAP-OVERFLOW")
        unmapped, err = ioas.iopt.unmap_iova_range(iova, iova + length - 1)
        req = "IOAS-UNMAP"
        if err == "ENOENT":
            req = "IOAS-UNMAP-SPLIT-ENOENT"
        elif err is None and unmapped == 0:
            err, req = "ENOENT", "IOAS-UNMAP-EMPTY-ENOENT"
    if err:
        raise Errno(err, req if err == "ENOENT" else "IOMMUFD-ACCESS-UNMAP-NOTIFY")
    ictx.k.cover(req)
    return Result(0, out={"length": unmapped})


def iommufd_ioas_option(ictx, cmd) -> int:
    """iommufd_ioas_option / iommufd_ioas_option_huge_pages."""
    ioas = get_ioas(ictx, cmd["object_id"])
    op = cmd["op"]
    if op == C["IOMMU_OPTION_OP_GET"]:
        ictx.k.cover("IOMMU-OPTION-HUGE-PAGES")
        return 0 if ioas.iopt.disable_large_pages else 1
    if op == C["IOMMU_OPTION_OP_SET"]:
        if cmd["val64"] == 0:
            ioas.iopt.disable_large_pages_()
            ictx.k.cover("IOMMU-OPTION-HUGE-PAGES")
            return 0
        if cmd["val64"] == 1:
            ioas.iopt.enable_large_pages()
            ictx.k.cover("IOMMU-OPTION-HUGE-PAGES")
            return 1
        raise Errno("EINVAL", "IOMMU-OPTION-HUGE-PAGES-VAL")
    raise Errno("EOPNOTSUPP", "IOMMU-OPTION-UNKNOWN")
