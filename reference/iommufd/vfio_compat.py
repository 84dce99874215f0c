"""The VFIO container ioctls on an iommufd, IOMMU_VFIO_IOAS, and the compat-IOAS
API that vfio's group path calls (drivers/iommu/iommufd/vfio_compat.c).

Where this differs from native type1 (the [GAP] entries of kernel-semantics.md §6):
CHECK_EXTENSION(DMA_CC_IOMMU) without a compat IOAS fails ENODEV; UPDATE_VADDR and
TYPE1_NESTING are 0; SET_IOMMU of another type is EINVAL, without a group ENODEV,
and may be repeated; MAP without READ or WRITE is accepted while the compat IOAS
has no domain (with a VT-d domain intel_iommu_map refuses it: EINVAL); MAP/UNMAP flags other
than READ|WRITE / UNMAP_ALL are EINVAL (no VADDR, no dirty bitmap); a v2 bisecting
UNMAP is ENOENT; an UNMAP of an empty range is ENOENT up to the fix of Nov 2025
(upstream afb47765f923, v6.18, backported to 6.6.y/6.12.y/6.17.y) and succeeds with
size 0 after; TYPE1 mode cuts areas so any aligned sub-range unmaps; GET_INFO has
no MIGRATION cap and DMA_AVAIL is U32_MAX; DIRTY_PAGES is ENOTTY.

State: IommufdCtx.vfio_ioas (the compat IOAS or None), IommufdCtx.no_iommu_mode.
"""

from __future__ import annotations

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

from .io_pagetable import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE, ULONG_MAX

C = uapi.CONSTANTS
U32_MAX = (1 << 32) - 1


def _get_compat_ioas(ictx, req: str = "COMPAT-NO-IOAS"):
    """get_compat_ioas: ENODEV without one."""
    if ictx.vfio_ioas is None:
        raise Errno("ENODEV", req)
    return ictx.vfio_ioas


def iommufd_vfio_compat_ioas_get_id(ictx) -> int:
    """iommufd_vfio_compat_ioas_get_id: the compat IOAS id, ENODEV without one."""
    return _get_compat_ioas(ictx).obj_id


def iommufd_vfio_compat_set_no_iommu(ictx) -> None:
    """iommufd_vfio_compat_set_no_iommu: EINVAL once a compat IOAS exists."""
    if ictx.vfio_ioas is not None:
        raise Errno("EINVAL", "COMPAT-NOIOMMU-MIX")
    ictx.no_iommu_mode = True
    ictx.k.cover("COMPAT-SET-NO-IOMMU")


def iommufd_vfio_compat_ioas_create(ictx) -> None:
    """iommufd_vfio_compat_ioas_create: reuse the compat IOAS or create one (a normal,
    user-destroyable IOAS); EINVAL in no-iommu mode."""
    from .ioas import Ioas
    if ictx.no_iommu_mode:
        raise Errno("EINVAL", "COMPAT-NOIOMMU-MIX")
    if ictx.vfio_ioas is not None:
        ictx.k.cover("COMPAT-IOAS-REUSE")
        return
    ictx.vfio_ioas = ictx.object_alloc(Ioas(ictx))
    ictx.k.cover("COMPAT-IOAS-CREATE")


def iommufd_vfio_ioas(ictx, cmd) -> Result:
    """iommufd_vfio_ioas: IOMMU_VFIO_IOAS GET / SET / CLEAR."""
    from .ioas import get_ioas
    if cmd["__reserved"]:
        raise Errno("EOPNOTSUPP", "IOMMU-VFIO-IOAS-OP")
    op = cmd["op"]
    k = ictx.k
    if op == C["IOMMU_VFIO_IOAS_GET"]:
        ioas = _get_compat_ioas(ictx, "IOMMU-VFIO-IOAS-GET-NONE")
        k.cover("IOMMU-VFIO-IOAS")
        return Result(0, out={"ioas_id": ioas.obj_id})
    if op == C["IOMMU_VFIO_IOAS_SET"]:
        ictx.vfio_ioas = get_ioas(ictx, cmd["ioas_id"])
        k.cover("IOMMU-VFIO-IOAS")
        return Result(0)
    if op == C["IOMMU_VFIO_IOAS_CLEAR"]:
        ictx.vfio_ioas = None
        k.cover("IOMMU-VFIO-IOAS")
        return Result(0)
    raise Errno("EOPNOTSUPP", "IOMMU-VFIO-IOAS-OP")


def unmap_empty_succeeds(k) -> bool:
    """afb47765f923 "iommufd: Make vfio_compat's unmap succeed if the range is already
    empty": v6.18, and the newest 6.6.y, 6.12.y and 6.17.y stable releases."""
    return k.at_least(6, 18) or k.platform.kernel in ((6, 6), (6, 12), (6, 17))


def _map_dma(ictx, arg) -> Result:
    """iommufd_vfio_map_dma."""
    from .ioas import map_user_pages
    st = uapi.vfio_iommu_type1_dma_map
    if arg["argsz"] < st.minsz or arg["flags"] & ~(C["VFIO_DMA_MAP_FLAG_READ"] | C["VFIO_DMA_MAP_FLAG_WRITE"]):
        raise Errno("EINVAL", "COMPAT-MAP-FLAGS")
    prot = IOMMU_CACHE
    if arg["flags"] & C["VFIO_DMA_MAP_FLAG_READ"]:
        prot |= IOMMU_READ
    if arg["flags"] & C["VFIO_DMA_MAP_FLAG_WRITE"]:
        prot |= IOMMU_WRITE
    ioas = _get_compat_ioas(ictx)
    iova = map_user_pages(ictx, ioas, arg["iova"], arg["vaddr"], arg["size"], prot)
    if not prot & (IOMMU_READ | IOMMU_WRITE):
        if ioas.iopt.domains and ictx.k.platform.iommu.kind == "vtd":
            # iopt_fill_domains_pages -> iommu_map -> intel_iommu_map -> __domain_mapping:
            # "(prot & (DMA_PTE_READ|DMA_PTE_WRITE)) == 0" is EINVAL; the area is undone
            ioas.iopt.unmap_iova_range(iova, iova + arg["size"] - 1)
            raise Errno("EINVAL", "COMPAT-MAP-NO-PROT-VTD")
        ictx.k.cover("COMPAT-MAP-NO-PROT-ACCEPTED")
    ictx.k.cover("COMPAT-MAP")
    return Result(0)


def _unmap_dma(ictx, arg) -> Result:
    """iommufd_vfio_unmap_dma: size is written back even when the unmap fails."""
    st = uapi.vfio_iommu_type1_dma_unmap
    k = ictx.k
    if arg["argsz"] < st.minsz or arg["flags"] & ~C["VFIO_DMA_UNMAP_FLAG_ALL"]:
        raise Errno("EINVAL", "COMPAT-UNMAP-FLAGS")
    ioas = _get_compat_ioas(ictx)
    iova, size = arg["iova"], arg["size"]
    if arg["flags"] & C["VFIO_DMA_UNMAP_FLAG_ALL"]:
        if iova or size:
            raise Errno("EINVAL", "COMPAT-UNMAP-ALL-ARGS")
        unmapped, err = ioas.iopt.unmap_iova_range(0, ULONG_MAX)
        if err == "ENOENT":
            err = None
        req = "COMPAT-UNMAP-ALL"
    else:
        if ioas.iopt.disable_large_pages:
            cuts = [iova + size - 1] + ([iova - 1] if iova else [])
            ioas.iopt.cut_iova([c & ULONG_MAX for c in cuts])
            k.cover("COMPAT-TYPE1-UNMAP-CUT")
        if not size:
            raise Errno("EINVAL", "IOAS-UNMAP-LENGTH-ZERO")
        if iova + size - 1 > ULONG_MAX:
            raise Errno("EOVERFLOW", "IOAS-UNMAP-OVERFLOW")
        unmapped, err = ioas.iopt.unmap_iova_range(iova, iova + size - 1)
        req = "COMPAT-UNMAP"
        if err == "ENOENT":
            req = "COMPAT-UNMAP-BISECT-ENOENT"
        elif err is None and unmapped == 0:
            if unmap_empty_succeeds(k):
                req = "COMPAT-UNMAP-EMPTY"
            else:
                err, req = "ENOENT", "COMPAT-UNMAP-EMPTY"
    out = {**arg, "size": unmapped}
    if err:
        raise Errno(err, req, out=out)
    k.cover(req)
    return Result(0, out=out)


def _pagesizes(ioas, k) -> int:
    """iommufd_get_pagesizes."""
    bm = ULONG_MAX
    for d in ioas.iopt.domains:
        bm &= d.pgsize_bitmap
    ps = k.page_size
    if bm & (ps - 1):
        bm &= ~(ps - 1) & ULONG_MAX
        bm |= ps
    return max(bm, ioas.iopt.iova_alignment)


def _get_info(ictx, arg) -> Result:
    """iommufd_vfio_iommu_get_info: caps DMA_AVAIL (U32_MAX) and IOVA_RANGE (each
    padded to 8 bytes), no MIGRATION; argsz returns the full size; cap_offset only
    when everything fits."""
    st = uapi.vfio_iommu_type1_info
    k = ictx.k
    if arg["argsz"] < st.minsz:
        raise Errno("EINVAL", "COMPAT-GET-INFO-ARGSZ")
    ioas = _get_compat_ioas(ictx)
    holes = ioas.iopt.iova_holes()
    dma_avail = {"id": "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL", "version": 1, "avail": U32_MAX}
    iova_cap = {"id": "VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", "version": 1, "nr_iovas": len(holes),
                "iova_ranges": [{"start": s, "end": l} for s, l in holes]}
    sizes = [(12 + 7) // 8 * 8, 16 + 16 * len(holes)]
    total = st.size + sum(sizes)
    argsz = arg["argsz"]
    caps = []
    off = st.size
    for i, (cap, sz) in enumerate(zip((dma_avail, iova_cap), sizes)):
        if argsz >= off + sz:
            # a written cap's next is the following cap's offset (0 for the last one)
            caps.append({**cap, "next": off + sz if i + 1 < len(sizes) else 0})
        off += sz
    out = {**arg, "flags": C["VFIO_IOMMU_INFO_PGSIZES"] | C["VFIO_IOMMU_INFO_CAPS"],
           "iova_pgsizes": _pagesizes(ioas, k), "cap_offset": st.size if argsz >= total else 0,
           "argsz": total, "caps": caps}
    k.cover("COMPAT-GET-INFO")
    return Result(0, out=out)


def _check_extension(ictx, ext: int) -> int:
    """iommufd_vfio_check_extension."""
    k = ictx.k
    if ext in (C["VFIO_TYPE1_IOMMU"], C["VFIO_TYPE1v2_IOMMU"], C["VFIO_UNMAP_ALL"]):
        k.cover("COMPAT-CHECK-EXTENSION")
        return 1
    if ext == C["VFIO_NOIOMMU_IOMMU"] and k.at_least(6, 3):
        k.cover("COMPAT-CHECK-EXTENSION")
        return 1
    if ext == C["VFIO_DMA_CC_IOMMU"]:
        ioas = _get_compat_ioas(ictx, "COMPAT-CC-IOMMU-NO-IOAS")
        k.cover("COMPAT-CHECK-EXTENSION")
        # iommufd_vfio_cc_iommu: 1 unless some HWPT of the IOAS does not enforce coherency;
        # a paging HWPT enforces it only when the IOMMU can (IOMMU_CAP_ENFORCE_CACHE_COHERENCY,
        # the platform's iommu.coherent: QEMU's VT-d has no snoop control)
        return int(all(h.enforce_cache_coherency and k.platform.iommu.coherent for h in ioas.hwpt_list))
    k.cover("COMPAT-CHECK-EXTENSION-ZERO")
    return 0


def _set_iommu(ictx, t: int) -> Result:
    """iommufd_vfio_set_iommu: TYPE1 disables huge pages on the compat IOAS."""
    k = ictx.k
    if t == C["VFIO_NOIOMMU_IOMMU"] and ictx.no_iommu_mode and k.at_least(6, 3):
        if not k.capable("CAP_SYS_RAWIO"):
            raise Errno("EPERM", "COMPAT-SET-IOMMU-NOIOMMU")
        k.cover("COMPAT-SET-IOMMU-NOIOMMU")
        return Result(0)
    if t not in (C["VFIO_TYPE1_IOMMU"], C["VFIO_TYPE1v2_IOMMU"]) or ictx.no_iommu_mode:
        raise Errno("EINVAL", "COMPAT-SET-IOMMU-TYPE")
    ioas = _get_compat_ioas(ictx, "COMPAT-SET-IOMMU-NO-GROUP")
    if t == C["VFIO_TYPE1_IOMMU"]:
        ioas.iopt.disable_large_pages_()
        k.cover("COMPAT-SET-IOMMU-TYPE1")
    k.cover("COMPAT-SET-IOMMU")
    return Result(0)


def iommufd_vfio_ioctl(ictx, cmd: str, arg) -> Result:
    """iommufd_vfio_ioctl: the container ioctls; everything else ENOTTY."""
    k = ictx.k
    if cmd == "VFIO_GET_API_VERSION":
        k.cover("COMPAT-API-VERSION")
        return Result(0)
    if cmd == "VFIO_SET_IOMMU":
        return _set_iommu(ictx, arg)
    if cmd == "VFIO_CHECK_EXTENSION":
        return Result(_check_extension(ictx, arg))
    if cmd == "VFIO_IOMMU_GET_INFO":
        return _get_info(ictx, arg)
    if cmd == "VFIO_IOMMU_MAP_DMA":
        return _map_dma(ictx, arg)
    if cmd == "VFIO_IOMMU_UNMAP_DMA":
        return _unmap_dma(ictx, arg)
    if cmd == "VFIO_IOMMU_DIRTY_PAGES":
        raise Errno("ENOTTY", "COMPAT-DIRTY-PAGES-ENOTTY")
    raise Errno("ENOTTY", "COMPAT-UNKNOWN-IOCTL")
