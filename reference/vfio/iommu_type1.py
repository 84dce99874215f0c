"""The VFIO type1 IOMMU backend, drivers/vfio/vfio_iommu_type1.c (vfio_iommu_driver_ops_type1).

Read against linux-source-6.12.117 (Debian) and 7.2.13; the 6.18 changes are the
series "vfio/type1: handle DMA map/unmap up to the addressable limit" (Alex Mastro,
v5/v6, Oct 2025: check_add_overflow, EOVERFLOW, inclusive-end searches).  Where the
kernel changed over time the behaviour follows `kernel.at_least(...)`.  For 6.12's
mis-handling of a mapping that ends exactly at 2^64 (see TYPE1-MAP-LAST-PAGE-MDEV)
the reference models the behaviour upstream intends, not the bug.

Abstract state (what the invariants and reference/state.py read), on a `Type1`
instance (`container.iommu_data`):

- `v2` (bool), `nesting` (bool, SET_IOMMU(VFIO_TYPE1_NESTING_IOMMU) before 6.13);
- `dmas`: dict iova -> `Dma` (struct vfio_dma), with `starts`, the sorted list of
  their iovas (the rb-tree); mappings never overlap.  A `Dma` has `iova`, `size`,
  `vaddr`, `prot` (IOMMU_READ=1 | IOMMU_WRITE=2), `lock_cap`, `vaddr_invalid`,
  `iommu_mapped` (pinned and mapped into the domain), `locked_vm` (pages this
  mapping accounts to mm->locked_vm) and `pfn_list`: dict iova -> pin count of the
  pages a vendor driver pinned (vfio_pin_pages; struct vfio_pfn);
- `domain_groups`: the IOMMU-backed groups (one vfio_domain: every group of the
  platform shares the same iommu_ops, so a later group joins the first domain),
  `emulated_groups`: the emulated (mdev) groups;
- `iova_list`: the valid IOVA ranges as [start, end] (inclusive), empty while
  the container has no IOMMU-backed domain yet;
- `pgsize_bitmap`, `dma_avail`, `vaddr_invalid_count`, `dirty_page_tracking`.

Accounting goes into `kernel.mm.locked_vm` (pages), checked against
platform.rlimit_memlock unless CAP_IPC_LOCK was held at MAP time (dma->lock_cap).

Output of VFIO_IOMMU_GET_INFO (an extension of the trace format's `out`): the
struct fields as the kernel leaves them (only the first min(argsz, 24) bytes are
written), plus `caps`, the capability chain the kernel wrote after the struct, as
a list in chain order; `[]` when argsz was too small (then `argsz` is raised to
the size needed and `cap_offset` stays 0).  Each capability is an object:
  {"id": "VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION", "version": 1, "next": 56,
   "flags": 0, "pgsize_bitmap": 4096, "max_dirty_bitmap_size": 268435456}
  {"id": "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL", "version": 1, "next": 72, "avail": 65535}
  {"id": "VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", "version": 1, "next": 0,
   "nr_iovas": 2, "iova_ranges": [{"start": 0, "end": 4276092927}, ...]}
`next` is the offset of the next capability from the start of the struct (0 ends
the chain), as vfio_info_cap_shift leaves it.

In-kernel API for emulated (mdev) vendor drivers, on the instance:
`pin_pages(device, iova, npage, prot) -> int`, `unpin_pages(device, iova, npage)`,
`dma_rw(device, iova, length, write) -> int` (vfio_pin_pages / vfio_unpin_pages /
vfio_dma_rw through container.c to the type1 ops).  UNMAP of a range a driver has
pinned calls `device.ops.dma_unmap(iova, length)` on each registered emulated
device (vfio_notify_dma_unmap), which must unpin.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result

from .container import IommuDriver, register_iommu_driver

C = uapi.CONSTANTS
U64 = (1 << 64) - 1
IOMMU_READ = 1           # include/linux/iommu.h
IOMMU_WRITE = 2
SIZEOF_UNSIGNED_LONG = 8                 # VFIO_PIN_PAGES_MAX_ENTRIES = PAGE_SIZE / sizeof(unsigned long)
DIRTY_BITMAP_SIZE_MAX = 1 << 28          # DIRTY_BITMAP_BYTES(INT_MAX)
INFO_SIZE = uapi.vfio_iommu_type1_info.size          # 24
CAP_MIGRATION_SIZE = 32                  # struct vfio_iommu_type1_info_cap_migration
CAP_DMA_AVAIL_SIZE = 16                  # ALIGN(sizeof(vfio_iommu_type1_info_dma_avail) = 12, 8)
CAP_DMA_AVAIL_SIZE_PRE_6_6 = 12          # before "vfio: align capability structures" (a881b496941f, v6.6)
CAP_IOVA_RANGE_HDR = 16                  # header + nr_iovas + reserved
IOVA_RANGE_SIZE = 16                     # struct vfio_iova_range {start, end}
DIRTY_BITMAP_GET_SIZE = 40               # struct vfio_iommu_type1_dirty_bitmap_get
VFIO_BITMAP_SIZE = 24                    # struct vfio_bitmap
UNMAP_NOTIFY_RETRIES = 10                      # vfio_dma_do_unmap: BUG_ON(++retries > 10)


_VMA_INDEX: dict[int, tuple] = {}


def _vma_index(mm) -> tuple[list[int], dict]:
    """Sorted vma starts of `mm`, kept up to date cheaply.  kernel.Mm hands out addresses
    upwards and never reuses them, so (mm.next, number of vmas) changes with every mmap
    and munmap, and new vmas are the last ones of the dict (appended in address order)."""
    key = (mm.next, len(mm.vmas))
    hit = _VMA_INDEX.get(id(mm))
    if hit is not None and hit[2] is mm.vmas and hit[0] == key:
        return hit[1], hit[2]
    if hit is not None and hit[2] is mm.vmas and key[1] > hit[0][1]:
        grown = key[1] - hit[0][1]
        it = reversed(mm.vmas)
        tail = [next(it) for _ in range(grown)][::-1]
        starts = hit[1]
        if not starts or (tail[0] > starts[-1] and tail == sorted(tail)):
            starts.extend(tail)
            if len(starts) == key[1]:
                _VMA_INDEX[id(mm)] = (key, starts, mm.vmas)
                return starts, mm.vmas
    _VMA_INDEX.clear()              # one live process at a time; keeps no stale Mm alive
    _VMA_INDEX[id(mm)] = (key, sorted(mm.vmas), mm.vmas)
    return _VMA_INDEX[id(mm)][1], mm.vmas


class KernelOops(Exception):
    """The kernel would BUG() here (the ioctl never returns); the runner reports ERROR."""


def _ffs_bit(x: int) -> int:
    """1 << __ffs(x): the lowest set bit."""
    return x & -x


class Dma:
    """struct vfio_dma."""

    __slots__ = ("iova", "size", "vaddr", "prot", "lock_cap", "vaddr_invalid", "iommu_mapped",
                 "locked_vm", "pfn_list")

    def __init__(self, iova: int, size: int, vaddr: int, prot: int, lock_cap: bool):
        self.iova = iova
        self.size = size
        self.vaddr = vaddr
        self.prot = prot
        self.lock_cap = lock_cap
        self.vaddr_invalid = False
        self.iommu_mapped = False
        self.locked_vm = 0
        self.pfn_list: dict[int, int] = {}

    @property
    def last(self) -> int:
        """The inclusive end, dma->iova + dma->size - 1 (never wraps)."""
        return self.iova + self.size - 1

    def __repr__(self) -> str:
        return f"Dma(iova={self.iova:#x}, size={self.size:#x})"


@register_iommu_driver
class Type1(IommuDriver):
    """struct vfio_iommu; one instance per container after SET_IOMMU."""

    name = "vfio-iommu-type1"

    @staticmethod
    def available(kernel) -> bool:
        return kernel.platform.iommu.kind == "vtd"

    @staticmethod
    def check_extension_static(kernel, arg: int) -> int:
        """vfio_iommu_type1_check_extension(NULL, arg): the answer before SET_IOMMU."""
        return Type1._check_extension(kernel, None, arg)

    @staticmethod
    def _check_extension(kernel, iommu, arg: int) -> int:
        """vfio_iommu_type1_check_extension."""
        if arg in (C["VFIO_TYPE1_IOMMU"], C["VFIO_TYPE1v2_IOMMU"], C["VFIO_UNMAP_ALL"]):
            kernel.cover("TYPE1-CHECK-EXTENSION")
            return 1
        if arg == C["VFIO_TYPE1_NESTING_IOMMU"]:
            # "vfio: Remove VFIO_TYPE1_NESTING_IOMMU" (35890f85573c, v6.13): no longer advertised
            kernel.cover("TYPE1-NESTING-EXTENSION")
            return 0 if kernel.at_least(6, 13) else 1
        if arg == C["VFIO_UPDATE_VADDR"]:
            kernel.cover("TYPE1-CHECK-EXTENSION-UPDATE-VADDR")
            return int(iommu is not None and not iommu.emulated_groups)
        if arg == C["VFIO_DMA_CC_IOMMU"]:
            kernel.cover("TYPE1-CHECK-EXTENSION-DMA-CC")
            # vfio_domains_have_enforce_cache_coherency: 1 when every domain enforces coherency
            # (VT-d with snoop control: the platform's iommu.coherent, false on QEMU's VT-d);
            # vacuously 1 with no domain (mdev-only container)
            if iommu is None:
                return 0
            return 0 if iommu.domain_groups and not kernel.platform.iommu.coherent else 1
        kernel.cover("TYPE1-CHECK-EXTENSION")
        return 0

    def check_extension(self, arg: int) -> int:
        """vfio_iommu_type1_check_extension(iommu, arg), after SET_IOMMU."""
        return self._check_extension(self.k, self, arg)

    # ------------------------------------------------------------------ open / release
    def __init__(self, kernel, container, arg: int):
        """vfio_iommu_type1_open."""
        super().__init__(kernel, container, arg)
        if arg == C["VFIO_TYPE1_IOMMU"]:
            self.v2 = False
        elif arg in (C["VFIO_TYPE1v2_IOMMU"], C["VFIO_TYPE1_NESTING_IOMMU"]):
            self.v2 = True
        else:
            raise Errno("EINVAL", "CONTAINER-SET-IOMMU-UNSUPPORTED")
        self.nesting = arg == C["VFIO_TYPE1_NESTING_IOMMU"] and not kernel.at_least(6, 13)
        kernel.cover("TYPE1-SET-IOMMU-V2" if self.v2 else "TYPE1-SET-IOMMU-V1")
        self.dmas: dict[int, Dma] = {}
        self.starts: list[int] = []
        self.domain_groups: list = []
        self.emulated_groups: list = []
        self.iova_list: list[list[int]] = []
        self.dma_avail = kernel.platform.dma_entry_limit
        self.page_size = kernel.page_size
        self.page_mask = U64 & ~(self.page_size - 1)
        self.pgsize_bitmap = self.page_mask
        self.vaddr_invalid_count = 0
        self.dirty_page_tracking = False

    def release(self) -> None:
        """vfio_iommu_type1_release: every mapping unpinned, unaccounted and dropped."""
        self.emulated_groups.clear()
        self._unmap_unpin_all()
        self.domain_groups.clear()
        self.iova_list = []
        self.k.cover("TYPE1-RELEASE-UNACCOUNTS")

    # ------------------------------------------------------------------ the dma tree
    def find_dma(self, start: int, last: int) -> Dma | None:
        """vfio_find_dma: a mapping overlapping [start, last] (inclusive), O(log n)."""
        i = bisect_right(self.starts, last) - 1
        if i < 0:
            return None
        d = self.dmas[self.starts[i]]
        return d if d.last >= start else None

    def _first_index(self, start: int, last: int) -> int | None:
        """vfio_find_dma_first_node: index in `starts` of the lowest mapping overlapping [start, last]."""
        i = bisect_right(self.starts, start) - 1
        if i < 0 or self.dmas[self.starts[i]].last < start:
            i += 1
        if i < len(self.starts) and self.starts[i] <= last:
            return i
        return None

    def _link(self, dma: Dma) -> None:
        self.dmas[dma.iova] = dma
        insort(self.starts, dma.iova)

    def _unlink(self, dma: Dma) -> None:
        del self.dmas[dma.iova]
        del self.starts[bisect_left(self.starts, dma.iova)]

    def _has_domain(self) -> bool:
        return bool(self.domain_groups)

    # ------------------------------------------------------------------ accounting
    def _limit_pages(self) -> int:
        return self.k.platform.rlimit_memlock // self.page_size

    def _lock_acct(self, dma: Dma, npage: int) -> None:
        """vfio_lock_acct -> __account_locked_vm: ENOMEM past RLIMIT_MEMLOCK unless lock_cap."""
        mm = self.k.mm
        if npage > 0 and not dma.lock_cap and mm.locked_vm + npage > self._limit_pages():
            raise Errno("ENOMEM", "TYPE1-MAP-RLIMIT-MEMLOCK")
        mm.locked_vm += npage
        dma.locked_vm += npage

    def _first_hole(self, vaddr: int, length: int) -> int:
        """Offset of the first byte of [vaddr, vaddr+length) that no mmap covers (length if
        none): what GUP reaches before it fails.  Same answer as kernel.mm.covered, found by
        bisection over the vmas so the cost does not grow with the number of buffers."""
        starts, vmas = _vma_index(self.k.mm)
        addr, end = vaddr, vaddr + length
        while addr < end:
            i = bisect_right(starts, addr) - 1
            if i < 0:
                break
            v = vmas[starts[i]]
            if not v.start <= addr < v.end:
                break
            addr = v.end
        return min(addr, end) - vaddr

    def _covered(self, vaddr: int, length: int) -> bool:
        """kernel.mm.covered(vaddr, length)."""
        return self._first_hole(vaddr, length) == length

    def _pin_remote(self, dma: Dma) -> None:
        """vfio_pin_map_dma / vfio_iommu_replay through vfio_pin_pages_remote: pin every page
        of the mapping in order and account those an mdev has not pinned already.  GUP on an
        unmapped vaddr fails with EFAULT (pin_user_pages_remote, then no VM_PFNMAP vma);
        the first page past RLIMIT_MEMLOCK fails with ENOMEM; whichever comes first wins
        and everything this call pinned and accounted is undone."""
        npages = dma.size // self.page_size
        vpfns = len(dma.pfn_list)           # already accounted by vfio_pin_page_external
        need = npages - vpfns
        hole = self._first_hole(dma.vaddr, dma.size) // self.page_size
        if dma.lock_cap and self.k.mm.locked_vm + need > self._limit_pages():
            self.k.cover("TYPE1-MAP-RLIMIT-MEMLOCK")       # CAP_IPC_LOCK: the limit does not apply
        if not dma.lock_cap:
            room = self._limit_pages() - self.k.mm.locked_vm
            if room < need:
                # the (room+1)-th page not already pinned fails the limit check
                fail_at = self._nth_unpinned_page(dma, max(room, 0))
                if fail_at < hole:
                    raise Errno("ENOMEM", "TYPE1-MAP-RLIMIT-MEMLOCK")
        if hole < npages:
            raise Errno("EFAULT", "TYPE1-MAP-VADDR-UNMAPPED")
        self.k.mm.locked_vm += need
        dma.locked_vm += need
        dma.iommu_mapped = True

    def _nth_unpinned_page(self, dma: Dma, n: int) -> int:
        """Page index of the n-th (0-based) page of `dma` without a vfio_pfn."""
        if not dma.pfn_list:
            return n
        pinned = sorted((i - dma.iova) // self.page_size for i in dma.pfn_list)
        idx = n
        for p in pinned:
            if p <= idx:
                idx += 1
            else:
                break
        return idx

    def _unmap_unpin(self, dma: Dma, do_accounting: bool = True) -> int:
        """vfio_unmap_unpin: unpin the pages pinned for the domain; returns pages unlocked
        when not accounting here."""
        if not dma.size or not self._has_domain() or not dma.iommu_mapped:
            dma.iommu_mapped = False
            return 0
        unlocked = dma.size // self.page_size
        dma.iommu_mapped = False
        if do_accounting:
            self.k.mm.locked_vm -= unlocked
            dma.locked_vm -= unlocked
            self.k.cover("TYPE1-UNMAP-UNACCOUNTS")
            return 0
        return unlocked

    def _remove_dma(self, dma: Dma) -> None:
        """vfio_remove_dma."""
        self._unmap_unpin(dma, True)
        self._unlink(dma)
        if dma.vaddr_invalid:
            self.vaddr_invalid_count -= 1
        self.dma_avail += 1

    def _unmap_unpin_all(self) -> None:
        """vfio_iommu_unmap_unpin_all."""
        for iova in list(self.starts):
            d = self.dmas[iova]
            if d.pfn_list and not self._has_domain():
                # pages an mdev still pins are released with the vfio_dma
                self.k.mm.locked_vm -= d.locked_vm
                d.locked_vm = 0
            self._remove_dma(d)

    def _unmap_unpin_reaccount(self) -> None:
        """vfio_iommu_unmap_unpin_reaccount: the last IOMMU domain goes while emulated
        groups remain; mappings stay, only the pages an mdev pinned stay accounted."""
        for iova in self.starts:
            d = self.dmas[iova]
            unlocked = self._unmap_unpin(d, False)
            locked = len(d.pfn_list)
            self.k.mm.locked_vm += locked - unlocked
            d.locked_vm += locked - unlocked

    # ------------------------------------------------------------------ groups
    def attach_group(self, group) -> None:
        """vfio_iommu_type1_attach_group."""
        k = self.k
        if self.vaddr_invalid_count:
            raise Errno("EBUSY", "TYPE1-ATTACH-VADDR-INVALID")
        if group in self.domain_groups or group in self.emulated_groups:
            raise Errno("EINVAL", "TYPE1-ATTACH-GROUP")
        if group.type == "emulated":
            self.emulated_groups.append(group)
            k.cover("TYPE1-ATTACH-EMULATED")
            return
        io = k.platform.iommu
        if self.nesting:
            # iommu_enable_nesting: VT-d has no enable_nesting op
            raise Errno("EINVAL", "TYPE1-NESTING-EXTENSION")
        ap_start, ap_end = io.aperture
        if self._aper_conflict(ap_start, ap_end):
            raise Errno("EINVAL", "TYPE1-ATTACH-APERTURE-CONFLICT")
        for (rs, re_) in io.reserved:
            if self.find_dma(rs, re_):
                raise Errno("EINVAL", "TYPE1-ATTACH-RESV-CONFLICT")
        new_list = self._aper_resize([list(r) for r in self.iova_list], ap_start, ap_end)
        new_list = self._resv_exclude(new_list, io.reserved)
        if not new_list:
            raise Errno("EINVAL", "TYPE1-ATTACH-RESV-CONFLICT")
        if not io.intremap:
            raise Errno("EPERM", "TYPE1-ATTACH-NO-INTREMAP")
        if not self.domain_groups:
            self._replay()
            self.domain_groups.append(group)
            self._update_pgsize_bitmap()
        else:
            self.domain_groups.append(group)
        self.iova_list = new_list
        k.cover("TYPE1-ATTACH-GROUP")

    def _replay(self) -> None:
        """vfio_iommu_replay: a new domain pins and maps every existing mapping; on failure
        everything pinned for it is undone and the attach fails."""
        done = []
        try:
            min_pg = _ffs_bit(self._domain_pgsize_bitmap())
            ap_start, ap_end = self.k.platform.iommu.aperture
            for iova in self.starts:
                d = self.dmas[iova]
                self._pin_remote(d)
                done.append(d)
                if (d.iova | d.size) & (min_pg - 1):
                    raise Errno("EINVAL", "TYPE1-ATTACH-REPLAY")
                if d.last > ap_end:
                    # intel_iommu_map: "iommu width is not sufficient for the mapped address"
                    raise Errno("EFAULT", "TYPE1-ATTACH-REPLAY")
            self.k.cover("TYPE1-ATTACH-REPLAY")
        except Errno:
            for d in done:
                n = d.size // self.page_size - len(d.pfn_list)
                self.k.mm.locked_vm -= n
                d.locked_vm -= n
                d.iommu_mapped = False
            raise

    def _aper_conflict(self, start: int, end: int) -> bool:
        """vfio_iommu_aper_conflict: never with an empty list (mdev-only container)."""
        if not self.iova_list:
            return False
        first, last = self.iova_list[0], self.iova_list[-1]
        if start > last[1] or end < first[0]:
            return True
        if start > first[0] and self.find_dma(first[0], start - 1):
            return True
        if end < last[1] and self.find_dma(end + 1, last[1]):
            return True
        return False

    @staticmethod
    def _aper_resize(lst: list, start: int, end: int) -> list:
        """vfio_iommu_aper_resize."""
        if not lst:
            return [[start, end]]
        out = []
        for s, e in lst:
            if e < start or s > end:
                continue
            out.append([max(s, start), min(e, end)])
        return out

    @staticmethod
    def _resv_exclude(lst: list, reserved) -> list:
        """vfio_iommu_resv_exclude."""
        for rs, re_ in reserved:
            out = []
            for s, e in lst:
                if rs > e or re_ < s:
                    out.append([s, e])
                    continue
                if rs > s:
                    out.append([s, rs - 1])
                if re_ < e:
                    out.append([re_ + 1, e])
            lst = out
        return lst

    def _domain_pgsize_bitmap(self) -> int:
        bm = 0
        for p in self.k.platform.iommu.pgsizes:
            bm |= p
        return bm

    def _update_pgsize_bitmap(self) -> None:
        """vfio_update_pgsize_bitmap: sub-PAGE_SIZE sizes hidden, PAGE_SIZE always present."""
        bm = self._domain_pgsize_bitmap() if self.domain_groups else U64
        if bm & ~self.page_mask & U64:
            bm &= self.page_mask
            bm |= self.page_size
        self.pgsize_bitmap = bm

    def detach_group(self, group) -> None:
        """vfio_iommu_type1_detach_group."""
        if group in self.emulated_groups:
            self.emulated_groups.remove(group)
            if not self.emulated_groups and not self.domain_groups:
                self._unmap_unpin_all()
            self.k.cover("TYPE1-DETACH-GROUP")
            return
        if group not in self.domain_groups:
            return
        if len(self.domain_groups) == 1:
            # the domain goes with its last group; its mappings are unpinned first
            if not self.emulated_groups:
                self._unmap_unpin_all()
            else:
                self._unmap_unpin_reaccount()
        self.domain_groups.remove(group)
        if not self.domain_groups:
            self._update_pgsize_bitmap()
            # vfio_iommu_aper_expand + vfio_iommu_resv_refresh with no domain left
            self.iova_list = [[0, U64]] if self.iova_list else []
        self.k.cover("TYPE1-DETACH-GROUP")

    # ------------------------------------------------------------------ ioctls
    def ioctl(self, cmd: str, arg):
        """vfio_iommu_type1_ioctl."""
        if cmd == "VFIO_CHECK_EXTENSION":
            return Result(self._check_extension(self.k, self, arg))
        if cmd == "VFIO_IOMMU_GET_INFO":
            return self.get_info(arg)
        if cmd == "VFIO_IOMMU_MAP_DMA":
            return self.map_dma(arg)
        if cmd == "VFIO_IOMMU_UNMAP_DMA":
            return self.unmap_dma(arg)
        if cmd == "VFIO_IOMMU_DIRTY_PAGES":
            return self.dirty_pages(arg)
        raise Errno("ENOTTY", "CONTAINER-BACKEND-UNKNOWN-IOCTL")

    # ---------------------------------------------------------------- GET_INFO
    def get_info(self, arg) -> Result:
        """vfio_iommu_type1_get_info."""
        argsz = arg["argsz"]
        if argsz < uapi.vfio_iommu_type1_info.minsz:
            raise Errno("EINVAL", "TYPE1-GET-INFO-ARGSZ")
        caps = []
        off = INFO_SIZE
        mig = {"id": "VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION", "version": 1, "flags": 0,
               "pgsize_bitmap": _ffs_bit(self.pgsize_bitmap), "max_dirty_bitmap_size": DIRTY_BITMAP_SIZE_MAX}
        caps.append((mig, CAP_MIGRATION_SIZE))
        caps.append(({"id": "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL", "version": 1, "avail": self.dma_avail},
                     CAP_DMA_AVAIL_SIZE if self.k.at_least(6, 6) else CAP_DMA_AVAIL_SIZE_PRE_6_6))
        if self.iova_list:
            caps.append(({"id": "VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", "version": 1,
                          "nr_iovas": len(self.iova_list),
                          "iova_ranges": [{"start": s, "end": e} for s, e in self.iova_list]},
                         CAP_IOVA_RANGE_HDR + IOVA_RANGE_SIZE * len(self.iova_list)))
        caps_size = sum(sz for _, sz in caps)
        info = {"argsz": argsz, "flags": C["VFIO_IOMMU_INFO_PGSIZES"] | C["VFIO_IOMMU_INFO_CAPS"],
                "iova_pgsizes": self.pgsize_bitmap, "cap_offset": 0, "pad": 0}
        written = []
        if argsz < INFO_SIZE + caps_size:
            info["argsz"] = INFO_SIZE + caps_size
            self.k.cover("TYPE1-GET-INFO-ARGSZ-RAISED")
        else:
            for i, (c, sz) in enumerate(caps):
                off += sz
                written.append({**c, "next": off if i + 1 < len(caps) else 0})
            info["cap_offset"] = INFO_SIZE
        # copy_to_user(arg, &info, min(argsz, sizeof(info)))
        out = dict(arg)
        copied = min(argsz, INFO_SIZE)
        for f in uapi.vfio_iommu_type1_info.fields:
            if f.end <= copied:
                out[f.name] = info[f.name]
        out["caps"] = written
        self.k.cover("TYPE1-GET-INFO")
        if self.iova_list:
            self.k.cover("TYPE1-GET-INFO-IOVA-RANGE")
        else:
            self.k.cover("TYPE1-GET-INFO-NO-IOVA-RANGE")
        return Result(0, out=out)

    # ---------------------------------------------------------------- MAP_DMA
    def map_dma(self, arg) -> Result:
        """vfio_iommu_type1_map_dma."""
        mask = C["VFIO_DMA_MAP_FLAG_READ"] | C["VFIO_DMA_MAP_FLAG_WRITE"] | C["VFIO_DMA_MAP_FLAG_VADDR"]
        if arg["argsz"] < uapi.vfio_iommu_type1_dma_map.minsz or arg["flags"] & ~mask:
            raise Errno("EINVAL", "TYPE1-MAP-ARGSZ-FLAGS")
        self.do_map(arg["flags"], arg["iova"] & U64, arg["size"] & U64, arg["vaddr"] & U64)
        return Result(0, out=dict(arg))

    def do_map(self, flags: int, iova: int, size: int, vaddr: int) -> None:
        """vfio_dma_do_map."""
        k = self.k
        set_vaddr = bool(flags & C["VFIO_DMA_MAP_FLAG_VADDR"])
        prot = (IOMMU_WRITE if flags & C["VFIO_DMA_MAP_FLAG_WRITE"] else 0) | \
               (IOMMU_READ if flags & C["VFIO_DMA_MAP_FLAG_READ"] else 0)
        new = k.at_least(6, 18)
        if new:
            # 6.18: size 0 and overflow are checked first, overflow is EOVERFLOW
            if not size:
                raise Errno("EINVAL", "TYPE1-MAP-ALIGN")
            if iova + size - 1 > U64 or vaddr + size - 1 > U64:
                raise Errno("EOVERFLOW", "TYPE1-MAP-WRAP")
        if (prot and set_vaddr) or (not prot and not set_vaddr):
            raise Errno("EINVAL", "TYPE1-MAP-PROT")
        pgsize = _ffs_bit(self.pgsize_bitmap)
        if not size or (size | iova | vaddr) & (pgsize - 1):
            raise Errno("EINVAL", "TYPE1-MAP-ALIGN")
        if not new and (iova + size - 1 > U64 or vaddr + size - 1 > U64):
            raise Errno("EINVAL", "TYPE1-MAP-WRAP")
        last = iova + size - 1
        dma = self.find_dma(iova, last)
        if set_vaddr:
            if dma is None:
                raise Errno("ENOENT", "TYPE1-MAP-VADDR-NO-MAPPING")
            if not dma.vaddr_invalid or dma.iova != iova or dma.size != size:
                raise Errno("EINVAL", "TYPE1-MAP-VADDR-NOT-INVALID")
            # vfio_change_dma_owner: same mm, nothing to move
            dma.vaddr = vaddr
            dma.vaddr_invalid = False
            self.vaddr_invalid_count -= 1
            k.cover("TYPE1-MAP-VADDR-UPDATE")
            return
        if dma is not None:
            raise Errno("EEXIST", "TYPE1-MAP-OVERLAP")
        if not self.dma_avail:
            raise Errno("ENOSPC", "TYPE1-MAP-DMA-ENTRY-LIMIT")
        if not self._iova_dma_valid(iova, last):
            raise Errno("EINVAL", "TYPE1-MAP-IOVA-RANGE")
        dma = Dma(iova, size, vaddr, prot, k.capable("CAP_IPC_LOCK"))
        if self._has_domain():
            self._pin_remote(dma)       # raises with nothing left pinned or accounted
            k.cover("TYPE1-MAP-PIN-ACCOUNT")
        else:
            k.cover("TYPE1-MAP-DEFERRED-PIN")
        self.dma_avail -= 1
        self._link(dma)
        if self.dirty_page_tracking and size // pgsize > (1 << 31) - 1:
            # vfio_dma_bitmap_alloc: more than DIRTY_BITMAP_PAGES_MAX pages -> vfio_remove_dma
            self._remove_dma(dma)
            raise Errno("EINVAL", "TYPE1-DIRTY-PAGES-START")
        if last == U64 and not self.iova_list:
            k.cover("TYPE1-MAP-LAST-PAGE-MDEV")
        k.cover("TYPE1-MAP")

    def _iova_dma_valid(self, start: int, last: int) -> bool:
        """vfio_iommu_iova_dma_valid: inside one valid range; any IOVA with an empty list."""
        if not self.iova_list:
            self.k.cover("TYPE1-MAP-IOVA-RANGE")
            return True
        for s, e in self.iova_list:
            if s <= start and last <= e:
                if last == e:
                    self.k.cover("TYPE1-MAP-LAST-PAGE")
                return True
        return False

    # ---------------------------------------------------------------- UNMAP_DMA
    def unmap_dma(self, arg) -> Result:
        """vfio_iommu_type1_unmap_dma: the struct is copied back only on success."""
        F_DIRTY, F_ALL, F_VADDR = (C["VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP"], C["VFIO_DMA_UNMAP_FLAG_ALL"],
                                   C["VFIO_DMA_UNMAP_FLAG_VADDR"])
        minsz = uapi.vfio_iommu_type1_dma_unmap.minsz
        flags = arg["flags"]
        if arg["argsz"] < minsz or flags & ~(F_DIRTY | F_ALL | F_VADDR):
            raise Errno("EINVAL", "TYPE1-UNMAP-ARGSZ-FLAGS")
        if flags & F_DIRTY and flags & (F_ALL | F_VADDR):
            raise Errno("EINVAL", "TYPE1-UNMAP-ARGSZ-FLAGS")
        if flags & F_DIRTY:
            if arg["argsz"] < minsz + VFIO_BITMAP_SIZE:
                raise Errno("EINVAL", "TYPE1-UNMAP-DIRTY-BITMAP")
            # the struct vfio_bitmap after the struct: trace-format passes zeros there, and
            # verify_bitmap_size() refuses a zero bitmap size
            raise Errno("EINVAL", "TYPE1-UNMAP-DIRTY-BITMAP")
        unmapped = self.do_unmap(flags, arg["iova"] & U64, arg["size"] & U64)
        return Result(0, out={**arg, "size": unmapped})

    def do_unmap(self, flags: int, iova: int, size: int) -> int:
        """vfio_dma_do_unmap: returns the bytes unmapped (or invalidated)."""
        k = self.k
        unmap_all = bool(flags & C["VFIO_DMA_UNMAP_FLAG_ALL"])
        invalidate = bool(flags & C["VFIO_DMA_UNMAP_FLAG_VADDR"])
        if invalidate and self.emulated_groups:
            raise Errno("EBUSY", "TYPE1-UNMAP-VADDR-EMULATED")
        pgsize = _ffs_bit(self.pgsize_bitmap)
        if iova & (pgsize - 1):
            raise Errno("EINVAL", "TYPE1-UNMAP-ALIGN")
        if unmap_all:
            if iova or size:
                raise Errno("EINVAL", "TYPE1-UNMAP-ALL-ARGS")
            last = U64
            k.cover("TYPE1-UNMAP-ALL")
        else:
            if not size or size & (pgsize - 1):
                raise Errno("EINVAL", "TYPE1-UNMAP-ALIGN")
            if iova + size - 1 > U64:
                if k.at_least(6, 18):
                    raise Errno("EOVERFLOW", "TYPE1-UNMAP-WRAP")
                raise Errno("EINVAL", "TYPE1-UNMAP-WRAP")
            last = iova + size - 1
            if last == U64:
                k.cover("TYPE1-UNMAP-LAST-PAGE")
        unmapped = 0
        retries = 0
        dma_last = None
        while True:     # again:
            if self.v2 and not unmap_all:
                d = self.find_dma(iova, iova)
                if d is not None and d.iova != iova:
                    raise Errno("EINVAL", "TYPE1-UNMAP-NO-BISECT")
                d = self.find_dma(last, last)
                if d is not None and d.last != last:
                    raise Errno("EINVAL", "TYPE1-UNMAP-NO-BISECT")
            i = self._first_index(iova, last)
            first_i = i
            again = False
            while i is not None and i < len(self.starts):
                dma = self.dmas[self.starts[i]]
                if dma.iova > last:
                    break
                if not self.v2 and iova > dma.iova:
                    k.cover("TYPE1-V1-UNMAP-OFFSET-ZERO")
                    break
                if invalidate:
                    if dma.vaddr_invalid:
                        for j in range(first_i, i):
                            self.dmas[self.starts[j]].vaddr_invalid = False
                            self.vaddr_invalid_count -= 1
                        raise Errno("EINVAL", "TYPE1-UNMAP-VADDR-ROLLBACK")
                    dma.vaddr_invalid = True
                    self.vaddr_invalid_count += 1
                    unmapped += dma.size
                    i += 1
                    continue
                if dma.pfn_list:
                    if dma_last is dma:
                        retries += 1
                        if retries > UNMAP_NOTIFY_RETRIES:
                            raise KernelOops("vfio_dma_do_unmap: BUG_ON(++retries > 10): a vendor driver "
                                             "did not unpin in its dma_unmap callback")
                    else:
                        dma_last, retries = dma, 0
                    self._notify_dma_unmap(dma)
                    again = True
                    break
                if not self.v2 and last < dma.last:
                    k.cover("TYPE1-V1-UNMAP-WHOLE-MAPPING")
                unmapped += dma.size
                self._remove_dma(dma)       # `starts` shifts left: i now names the next one
            if not again:
                break
        if invalidate:
            k.cover("TYPE1-UNMAP-VADDR")
        elif unmapped == 0 and self.v2 and not unmap_all:
            k.cover("TYPE1-UNMAP-EMPTY-RANGE")
        k.cover("TYPE1-UNMAP")
        return unmapped

    # ---------------------------------------------------------------- DIRTY_PAGES
    def dirty_pages(self, arg) -> Result:
        """vfio_iommu_type1_dirty_pages."""
        if not self.v2:
            raise Errno("EACCES", "TYPE1-DIRTY-PAGES-V1")
        START, STOP, GET = (C["VFIO_IOMMU_DIRTY_PAGES_FLAG_START"], C["VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP"],
                            C["VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP"])
        minsz = uapi.vfio_iommu_type1_dirty_bitmap.minsz
        flags = arg["flags"]
        if arg["argsz"] < minsz or flags & ~(START | STOP | GET):
            raise Errno("EINVAL", "TYPE1-DIRTY-PAGES-ARGS")
        if flags == 0 or flags & (flags - 1):
            # __ffs(flags) != __fls(flags); with no flag nothing matches and -EINVAL is returned
            raise Errno("EINVAL", "TYPE1-DIRTY-PAGES-ARGS")
        if flags & START:
            for d in self.dmas.values():
                if d.size // _ffs_bit(self.pgsize_bitmap) > (1 << 31) - 1:
                    raise Errno("EINVAL", "TYPE1-DIRTY-PAGES-START")
            self.dirty_page_tracking = True
            self.k.cover("TYPE1-DIRTY-PAGES-START")
            return Result(0, out=dict(arg))
        if flags & STOP:
            self.dirty_page_tracking = False
            self.k.cover("TYPE1-DIRTY-PAGES-STOP")
            return Result(0, out=dict(arg))
        # GET_BITMAP: a struct vfio_iommu_type1_dirty_bitmap_get must follow
        if arg["argsz"] - minsz < DIRTY_BITMAP_GET_SIZE:
            raise Errno("EINVAL", "TYPE1-DIRTY-PAGES-GET-BITMAP")
        # the trace format passes zeros after the struct: range.size == 0 and bitmap.size == 0
        # fail verify_bitmap_size() (6.18: `if (!size) return -EINVAL` first)
        raise Errno("EINVAL", "TYPE1-DIRTY-PAGES-GET-BITMAP")

    # ------------------------------------------------------------------ in-kernel API (mdev)
    def _registered_devices(self) -> list:
        """iommu->device_list: devices opened through a group of this container whose vendor
        driver has a dma_unmap callback (vfio_device_container_register at first open)."""
        out = []
        for g in self.container.group_list:
            for d in g.devices:
                ops = getattr(d, "ops", None)
                if d.open_count > 0 and ops is not None and getattr(ops, "dma_unmap", None):
                    out.append(d)
        return out

    def _notify_dma_unmap(self, dma: Dma) -> None:
        """vfio_notify_dma_unmap: every registered device must unpin inside [iova, iova+size)."""
        for d in self._registered_devices():
            d.ops.dma_unmap(dma.iova, dma.size)
        self.k.cover("TYPE1-UNMAP-NOTIFY-PINNED")

    @staticmethod
    def _prot(prot) -> int:
        if isinstance(prot, list):
            v = 0
            for n in prot:
                v |= {"IOMMU_READ": IOMMU_READ, "IOMMU_WRITE": IOMMU_WRITE}[n]
            return v
        return int(prot)

    def pin_pages(self, device, iova: int, npage: int, prot) -> int:
        """vfio_pin_pages -> vfio_device_container_pin_pages -> vfio_iommu_type1_pin_pages.
        Returns the number of pages pinned."""
        k = self.k
        prot = self._prot(prot)
        # vfio_pin_pages (npage 0 -> EINVAL) and vfio_device_container_pin_pages
        # (npage > VFIO_PIN_PAGES_MAX_ENTRIES -> E2BIG) check before the backend is called
        if npage <= 0:
            raise Errno("EINVAL", "TYPE1-PIN-PAGES-ARGS")
        if not self.v2:
            raise Errno("EACCES", "TYPE1-PIN-PAGES-V1")
        if k.at_least(6, 18) and iova + npage * self.page_size - 1 > U64:
            raise Errno("EOVERFLOW", "TYPE1-PIN-PAGES-ARGS")
        if self.vaddr_invalid_count:
            # WARN_ONCE: unreachable from user space (VADDR is refused with emulated groups)
            raise Errno("EBUSY")
        if not self._registered_devices():
            raise Errno("EINVAL", "TYPE1-PIN-PAGES-ARGS")
        do_accounting = not self._has_domain()
        done: list[tuple[Dma, int]] = []
        try:
            for i in range(npage):
                pi = (iova + self.page_size * i) & U64
                dma = self.find_dma(pi, pi + self.page_size - 1)
                if dma is None:
                    raise Errno("EINVAL", "TYPE1-PIN-PAGES-NOT-MAPPED")
                if (dma.prot & prot) != prot:
                    raise Errno("EPERM", "TYPE1-PIN-PAGES-PROT")
                if pi in dma.pfn_list:
                    dma.pfn_list[pi] += 1
                    done.append((dma, pi))
                    continue
                va = dma.vaddr + (pi - dma.iova)
                if not self._covered(va, self.page_size):
                    raise Errno("EFAULT", "TYPE1-PIN-PAGES-VADDR-UNMAPPED")
                if do_accounting:
                    self._lock_acct(dma, 1)
                dma.pfn_list[pi] = 1
                done.append((dma, pi))
        except Errno:
            for dma, pi in done:
                self._unpin_page_external(dma, pi, do_accounting)
            raise
        k.cover("TYPE1-PIN-PAGES")
        return npage

    def _unpin_page_external(self, dma: Dma, iova: int, do_accounting: bool) -> None:
        """vfio_unpin_page_external."""
        n = dma.pfn_list.get(iova)
        if n is None:
            return
        if n > 1:
            dma.pfn_list[iova] = n - 1
            return
        del dma.pfn_list[iova]
        if do_accounting:
            self.k.mm.locked_vm -= 1
            dma.locked_vm -= 1

    def unpin_pages(self, device, iova: int, npage: int) -> None:
        """vfio_unpin_pages -> vfio_iommu_type1_unpin_pages (void: bad arguments only WARN)."""
        if npage <= 0 or npage > self.page_size // SIZEOF_UNSIGNED_LONG or not self.v2:
            return
        do_accounting = not self._has_domain()
        for i in range(npage):
            pi = (iova + self.page_size * i) & U64
            dma = self.find_dma(pi, pi + self.page_size - 1)
            if dma is None:
                break
            self._unpin_page_external(dma, pi, do_accounting)
        self.k.cover("TYPE1-UNPIN-PAGES")

    def dma_rw(self, device, iova: int, length: int, write: bool) -> int:
        """vfio_dma_rw -> vfio_iommu_type1_dma_rw: 0, or EINVAL (no mapping at an IOVA),
        EPERM (a mapping without READ, or a write to one without WRITE), EFAULT (the
        user memory behind it is not mapped), EBUSY (vaddr invalidated)."""
        k = self.k
        if length <= 0:
            raise Errno("EINVAL", "TYPE1-DMA-RW")
        if self.vaddr_invalid_count:
            raise Errno("EBUSY", "TYPE1-DMA-RW")
        while length > 0:
            dma = self.find_dma(iova, iova)
            if dma is None:
                raise Errno("EINVAL", "TYPE1-DMA-RW")
            if (write and not dma.prot & IOMMU_WRITE) or not dma.prot & IOMMU_READ:
                raise Errno("EPERM", "TYPE1-DMA-RW")
            offset = iova - dma.iova
            count = min(length, dma.size - offset)
            if not self._covered(dma.vaddr + offset, count):
                raise Errno("EFAULT", "TYPE1-DMA-RW")
            length -= count
            iova += count
        k.cover("TYPE1-DMA-RW")
        return 0
