"""iopt_pages: the pinned user memory behind IOAS areas, and its accounting
(drivers/iommu/iommufd/pages.c).

State (what the invariants speak of):
  IoptPages.uptr, npages      the user range (page aligned) this iopt_pages covers
  IoptPages.domain_areas      the areas whose table has a domain (each page of
                              theirs is pinned, once, however many domains and
                              areas share it: pages->domains_itree)
  IoptPages.access_pins       {page index: pin count} from iommufd_access_pin_pages
                              (pages->access_itree)
  IoptPages.npinned           pages pinned now (= |union of the above|), which is
                              what was accounted (last_npinned)
  IoptPages.account_mode      "none" | "user" | "mm", fixed at MAP time
  IoptPages.users             areas referring to it (kref)
Accounting lands in kernel.user_locked_vm (per-user), kernel.mm.locked_vm
(per-mm) and kernel.mm.pinned_vm (always), in pages.
"""

from __future__ import annotations

from vfiospec.reference.errors import Errno

ACCOUNT_NONE, ACCOUNT_USER, ACCOUNT_MM = "none", "user", "mm"


class IoptPages:
    """struct iopt_pages."""

    __slots__ = ("k", "uptr", "npages", "writable", "account_mode", "domain_areas", "access_pins",
                 "npinned", "users", "page_size")

    def __init__(self, kernel, uptr: int, npages: int, writable: bool, account_mode: str):
        self.k = kernel
        self.page_size = kernel.page_size
        self.uptr = uptr
        self.npages = npages
        self.writable = writable
        self.account_mode = account_mode
        self.domain_areas: set = set()
        self.access_pins: dict[int, int] = {}
        self.npinned = 0
        self.users = 0

    # -------------------------------------------------------------- pinned set
    def _domain_spans(self):
        spans = sorted((a.first_index, a.last_index) for a in self.domain_areas)
        out = []
        for s, l in spans:
            if out and s <= out[-1][1] + 1:
                out[-1][1] = max(out[-1][1], l)
            else:
                out.append([s, l])
        return out

    def pinned_count(self) -> int:
        spans = self._domain_spans()
        n = sum(l - s + 1 for s, l in spans)
        if self.access_pins:
            from bisect import bisect_right
            starts = [s for s, _ in spans]
            for idx in self.access_pins:
                i = bisect_right(starts, idx) - 1
                if i < 0 or spans[i][1] < idx:
                    n += 1
        return n

    def user_covered(self, first_index: int, last_index: int) -> bool:
        """GUP of the pages [first_index, last_index] succeeds (every byte mapped)."""
        start = self.uptr + first_index * self.page_size
        return self.k.mm.covered(start, (last_index - first_index + 1) * self.page_size)

    def sync(self) -> None:
        """iopt_pages_update_pinned / do_update_pinned: account the change of npinned.
        On ENOMEM nothing is changed (the caller undoes its pin)."""
        new = self.pinned_count()
        delta = new - self.npinned
        if delta == 0:
            return
        update_pinned(self.k, self.account_mode, delta)
        self.npinned = new


def update_pinned(kernel, mode: str, delta: int) -> None:
    """do_update_pinned: per-user (incr_user_locked_vm), per-mm (__account_locked_vm)
    or none (CAP_IPC_LOCK at MAP time); pinned_vm always."""
    limit = kernel.platform.rlimit_memlock // kernel.page_size
    if mode == ACCOUNT_USER:
        if delta > 0 and kernel.user_locked_vm + delta > limit:
            raise Errno("ENOMEM", "IOMMUFD-ACCOUNT-USER-RLIMIT")
        kernel.user_locked_vm += delta
        kernel.cover("IOMMUFD-ACCOUNT-USER")
    elif mode == ACCOUNT_MM:
        if delta > 0 and kernel.mm.locked_vm + delta > limit:
            raise Errno("ENOMEM", "IOMMUFD-ACCOUNT-MM-RLIMIT")
        kernel.mm.locked_vm += delta
        kernel.cover("IOMMUFD-ACCOUNT-MM")
    else:
        kernel.cover("IOMMUFD-ACCOUNT-NONE")
    kernel.mm.pinned_vm += delta


def alloc_user_pages(kernel, ictx, uptr: int, length: int, writable: bool) -> tuple[IoptPages, int]:
    """iopt_alloc_user_pages + iopt_alloc_pages: (pages, start_byte).  The account
    mode is none with CAP_IPC_LOCK, else the context's (user, or mm for RLIMIT_MODE=1
    and for a context opened as /dev/vfio/vfio)."""
    from .io_pagetable import ULONG_MAX
    if uptr + length > ULONG_MAX:
        raise Errno("EOVERFLOW", "IOAS-MAP-OVERFLOW")
    ps = kernel.page_size
    if length == 0 or length > ULONG_MAX - ps:
        raise Errno("EINVAL", "IOAS-MAP-LENGTH-ZERO")
    base = uptr - uptr % ps
    start_byte = uptr - base
    npages = (length + start_byte + ps - 1) // ps
    if kernel.capable("CAP_IPC_LOCK"):
        mode = ACCOUNT_NONE
    else:
        mode = ACCOUNT_USER
        if ictx.account_mode == ACCOUNT_MM:
            mode = ACCOUNT_MM
    return IoptPages(kernel, base, npages, writable, mode), start_byte


# ------------------------------------------------------------------ domains
def area_fill_domains(area, first_domain: bool = False) -> None:
    """iopt_area_fill_domains / iopt_area_fill_domain: pin the area's pages (a
    page already pinned for another area or access of the same iopt_pages is not
    pinned again) and account them.  EFAULT if the user memory is gone, ENOMEM
    over the limit; on failure nothing stays pinned."""
    pages = area.pages
    if area in pages.domain_areas:
        return
    if not pages.user_covered(area.first_index, area.last_index):
        raise Errno("EFAULT", "IOAS-MAP-EFAULT")
    pages.domain_areas.add(area)
    try:
        pages.sync()
    except Errno:
        pages.domain_areas.discard(area)
        raise
    area.storage = True
    area.iopt.k.cover("IOMMUFD-PIN-ONCE")


def area_unfill_domains(area) -> None:
    """iopt_area_unfill_domains: unpin what no other user of the pages holds."""
    pages = area.pages
    if area in pages.domain_areas:
        pages.domain_areas.discard(area)
        pages.sync()
    area.storage = False


def replace_area(old, new_areas) -> None:
    """After iopt_area_split: the parts take the place of the old area."""
    pages = old.pages
    if old in pages.domain_areas:
        pages.domain_areas.discard(old)
        for n in new_areas:
            pages.domain_areas.add(n)


# ------------------------------------------------------------------ accesses
def area_add_access(area, index: int, last_index: int) -> None:
    """iopt_area_add_access: pin [index, last_index] for an in-kernel access."""
    pages = area.pages
    if not pages.user_covered(index, last_index):
        raise Errno("EFAULT", "IOMMUFD-ACCESS-PIN-EFAULT")
    for i in range(index, last_index + 1):
        pages.access_pins[i] = pages.access_pins.get(i, 0) + 1
    try:
        pages.sync()
    except Errno:
        _drop_access(pages, index, last_index)
        raise
    area.num_accesses += 1


def _drop_access(pages, index: int, last_index: int) -> None:
    for i in range(index, last_index + 1):
        c = pages.access_pins.get(i, 0) - 1
        if c <= 0:
            pages.access_pins.pop(i, None)
        else:
            pages.access_pins[i] = c


def area_remove_access(area, index: int, last_index: int) -> None:
    """iopt_area_remove_access."""
    _drop_access(area.pages, index, last_index)
    area.pages.sync()
    area.num_accesses -= 1
