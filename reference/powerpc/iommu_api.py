"""Pre-registered ("prereg") memory of an mm: arch/powerpc/mm/book3s64/iommu_api.c.

State (what the invariants read):

- ``kernel.objects["mm_iommu"]`` is the mm's ``MmIommu`` (mm->context.iommu_group_mem_list).
  ``MmIommu.mems`` maps a region's start ``ua`` to its ``MmIommuMem``; regions of
  one mm are pairwise disjoint (mm_iommu_do_alloc refuses overlaps), so
  ``MmIommu.starts`` (sorted) finds the region holding an address by bisection.
- ``MmIommuMem`` (struct mm_iommu_table_group_mem_t): ``ua`` and ``entries``
  (pages of PAGE_SIZE) give the range ``[ua, ua + size)``; ``used`` counts the
  references (one per container that registered it, plus transient gets);
  ``mapped`` is the kernel's biased counter: 1 while no TCE maps into the region,
  1 + n with n TCEs mapping into it, 0 once released; ``tces`` is n;
  ``pageshift`` the largest IOMMU page shift the region can back;
  ``locked`` the pages it charged to ``kernel.mm.locked_vm`` (all of it, at
  registration; every page is pinned from registration to release).
- A region stays listed (pinned and charged) as long as it is in ``mems``: the
  last ``mm_iommu_put`` releases it only when no TCE maps into it
  (SPAPR-PREREG-UNREGISTER-MAPPED).

Accounting helper ``account_locked_vm`` is mm/util.c account_locked_vm(): the
mm's locked_vm against RLIMIT_MEMLOCK, bypassed by CAP_IPC_LOCK.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from vfiospec.reference.errors import Errno


def page_shift(kernel) -> int:
    return kernel.page_size.bit_length() - 1


def account_locked_vm(kernel, pages: int, inc: bool, req: str) -> None:
    """mm/util.c account_locked_vm / __account_locked_vm: ENOMEM when the mm's
    locked_vm would exceed RLIMIT_MEMLOCK, unless CAP_IPC_LOCK (bypass_rlim)."""
    if pages == 0:
        return
    mm = kernel.mm
    if inc:
        if not kernel.capable("CAP_IPC_LOCK"):
            limit = kernel.platform.rlimit_memlock >> page_shift(kernel)
            if mm.locked_vm + pages > limit:
                raise Errno("ENOMEM", req)
        mm.locked_vm += pages
    else:
        mm.locked_vm -= min(pages, mm.locked_vm)


@dataclass
class MmIommuMem:
    """struct mm_iommu_table_group_mem_t."""

    ua: int
    entries: int
    page_size: int
    pageshift: int
    used: int = 1
    mapped: int = 1
    locked: int = 0

    @property
    def size(self) -> int:
        return self.entries * self.page_size

    @property
    def end(self) -> int:
        return self.ua + self.size

    @property
    def tces(self) -> int:
        """TCEs mapping into the region (mapped minus the registration bias)."""
        return max(self.mapped - 1, 0)


class MmIommu:
    """mm->context.iommu_group_mem_list of the (one) process."""

    def __init__(self):
        self.mems: dict[int, MmIommuMem] = {}
        self.starts: list[int] = []

    def add(self, mem: MmIommuMem) -> None:
        self.mems[mem.ua] = mem
        bisect.insort(self.starts, mem.ua)

    def remove(self, mem: MmIommuMem) -> None:
        del self.mems[mem.ua]
        self.starts.remove(mem.ua)

    def containing(self, ua: int) -> MmIommuMem | None:
        i = bisect.bisect_right(self.starts, ua) - 1
        if i < 0:
            return None
        m = self.mems[self.starts[i]]
        return m if m.ua <= ua < m.end else None

    def overlapping(self, ua: int, end: int) -> MmIommuMem | None:
        i = bisect.bisect_left(self.starts, end) - 1
        if i < 0:
            return None
        m = self.mems[self.starts[i]]
        return m if m.end > ua else None


def mm_iommu(kernel) -> MmIommu:
    reg = kernel.objects.get("mm_iommu")
    if reg is None:
        reg = kernel.objects["mm_iommu"] = MmIommu()
    return reg


def mm_iommu_get(kernel, ua: int, entries: int) -> MmIommuMem | None:
    """mm_iommu_get: the region with exactly this start and length, with a new
    reference (used++), else None."""
    m = mm_iommu(kernel).mems.get(ua)
    if m is None or m.entries != entries:
        return None
    m.used += 1
    return m


def _segments(kernel, ua: int, end: int):
    """The mappings covering [ua, end) from ua on, in address order, up to the
    first hole: (start, end, hugepage) clipped to the range."""
    mm = kernel.mm
    addr = ua
    while addr < end:
        v = mm.vma_at(addr)
        if v is None:
            return
        stop = min(v.end, end)
        yield addr, stop, v.hugepage
        addr = stop


def _pinnable(kernel, ua: int, entries: int) -> int:
    """How many pages from `ua` pin_user_pages(FOLL_WRITE | FOLL_LONGTERM) pins
    before the first address no mapping covers."""
    end = ua + entries * kernel.page_size
    covered = ua
    for _, stop, _ in _segments(kernel, ua, end):
        covered = stop
    return (covered - ua) // kernel.page_size


def _region_pageshift(kernel, ua: int, entries: int) -> int:
    """mem->pageshift: __ffs(ua | size), lowered to PAGE_SHIFT by every page that
    is not in a huge page (PageHuge), walked as the kernel walks the pages (its
    per-page shift is not reset, so normal pages after huge ones keep the huge
    shift)."""
    shift0 = page_shift(kernel)
    size = entries * kernel.page_size
    x = ua | size
    mshift = (x & -x).bit_length() - 1 if x else 63
    pshift = shift0
    for _, _, huge in _segments(kernel, ua, ua + size):
        if huge and mshift > shift0:
            pshift = (2 << 20).bit_length() - 1
        mshift = min(mshift, pshift)
    return mshift


def mm_iommu_new(kernel, ua: int, entries: int) -> MmIommuMem | int:
    """mm_iommu_new / mm_iommu_do_alloc: charge locked_vm (ENOMEM), pin every page
    (EFAULT; a partial pin returns the positive count pinned, which the ioctl
    returns), refuse an overlap with another region of the mm (EINVAL), all
    undone on failure.  Zero entries: vzalloc(0) fails, ENOMEM."""
    account_locked_vm(kernel, entries, True, "SPAPR-PREREG-ACCOUNTING")
    try:
        if entries == 0:
            raise Errno("ENOMEM", "SPAPR-PREREG-ZERO-SIZE")
        pinned = _pinnable(kernel, ua, entries)
        if pinned != entries:
            if pinned == 0:
                raise Errno("EFAULT", "SPAPR-PREREG-PIN")
            kernel.cover("SPAPR-PREREG-PARTIAL-PIN")
            account_locked_vm(kernel, entries, False, "SPAPR-PREREG-ACCOUNTING")
            return pinned
        reg = mm_iommu(kernel)
        size = entries * kernel.page_size
        if reg.overlapping(ua, ua + size) is not None:
            raise Errno("EINVAL", "SPAPR-PREREG-OVERLAP")
    except Errno:
        account_locked_vm(kernel, entries, False, "SPAPR-PREREG-ACCOUNTING")
        raise
    mem = MmIommuMem(ua, entries, kernel.page_size, _region_pageshift(kernel, ua, entries), locked=entries)
    reg.add(mem)
    kernel.cover("SPAPR-PREREG-ACCOUNTING")
    return mem


def mm_iommu_put(kernel, mem: MmIommuMem) -> str | None:
    """mm_iommu_put: drop a reference; the last one releases the region (unpin,
    un-charge) unless TCEs still map into it: then the reference is restored and
    "EBUSY" returned ("Are there still mappings?").  Returns an errno name or None."""
    if mem.used == 0:
        return "ENOENT"
    mem.used -= 1
    if mem.used:
        return None
    if mem.mapped != 1:
        mem.used += 1
        return "EBUSY"
    mem.mapped = 0
    mm_iommu(kernel).remove(mem)
    account_locked_vm(kernel, mem.locked, False, "SPAPR-PREREG-ACCOUNTING")
    return None


def mm_iommu_lookup(kernel, ua: int, size: int) -> MmIommuMem | None:
    """mm_iommu_lookup: the region holding all of [ua, ua + size)."""
    m = mm_iommu(kernel).containing(ua)
    if m is None or ua + size > m.end:
        return None
    return m


def mm_iommu_ua_to_hpa(mem: MmIommuMem, ua: int, pageshift: int) -> bool:
    """mm_iommu_ua_to_hpa: fails (EFAULT) outside the region or when the IOMMU page
    is larger than the region's pageshift."""
    if (ua - mem.ua) // mem.page_size >= mem.entries:
        return False
    return pageshift <= mem.pageshift


def mm_iommu_mapped_inc(mem: MmIommuMem) -> bool:
    """mm_iommu_mapped_inc: atomic64_inc_not_zero(&mem->mapped)."""
    if mem.mapped == 0:
        return False
    mem.mapped += 1
    return True


def mm_iommu_mapped_dec(mem: MmIommuMem) -> None:
    """mm_iommu_mapped_dec: atomic64_add_unless(&mem->mapped, -1, 1)."""
    if mem.mapped != 1:
        mem.mapped -= 1
