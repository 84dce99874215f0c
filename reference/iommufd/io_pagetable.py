"""The io_pagetable of an IOAS (drivers/iommu/iommufd/io_pagetable.c).

State (what the invariants speak of):
  IoPageTable.areas       {iova: Area}, with IoPageTable.starts the sorted list of
                          those iovas (areas never overlap; lookups are bisections)
  Area                    iova, last, pages (pages.IoptPages), start_byte (offset
                          of the area's first byte in its iopt_pages), iommu_prot
                          (IOMMU_READ|IOMMU_WRITE bits), num_accesses, storage
                          (True while the area is loaded into the table's domains)
  IoPageTable.reserved    [(start, last, owner)] sorted: a domain's out-of-aperture
                          ranges (owner = the Domain) and a device's reserved
                          regions (owner = the VfioDevice)
  IoPageTable.allowed     [(start, last)] sorted: IOMMU_IOAS_ALLOW_IOVAS
  IoPageTable.domains     [Domain]: the iommu_domains of the HWPTs on this IOAS
  IoPageTable.accesses    [iommufd_access] attached to the IOAS
  IoPageTable.iova_alignment, IoPageTable.disable_large_pages

IOVAs and lengths are Python ints; ULONG_MAX is 2**64-1 (64-bit kernel).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from vfiospec.reference.errors import Errno

from . import pages as _pages

ULONG_MAX = (1 << 64) - 1
IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1
IOMMU_CACHE = 1 << 2


def roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def ffs_bit(n: int) -> int:
    """1UL << __ffs(n): the lowest set bit."""
    return n & -n


class Domain:
    """The iommu_domain of a paging HWPT: the platform IOMMU's page sizes and aperture."""

    def __init__(self, kernel, hwpt=None):
        io = kernel.platform.iommu
        self.pgsize_bitmap = 0
        for p in io.pgsizes:
            self.pgsize_bitmap |= p
        self.aperture_start, self.aperture_end = io.aperture
        self.hwpt = hwpt


class Area:
    __slots__ = ("iova", "last", "pages", "start_byte", "iommu_prot", "num_accesses", "storage",
                 "prevent_access", "iopt")

    def __init__(self, iopt, iova: int, length: int, pages, start_byte: int, iommu_prot: int):
        self.iopt = iopt
        self.iova = iova
        self.last = iova + length - 1
        self.pages = pages
        self.start_byte = start_byte
        self.iommu_prot = iommu_prot
        self.num_accesses = 0
        self.storage = False
        self.prevent_access = False

    @property
    def length(self) -> int:
        return self.last - self.iova + 1

    def start_byte_of(self, iova: int) -> int:
        """iopt_area_start_byte."""
        return self.start_byte + (iova - self.iova)

    def index(self, iova: int) -> int:
        """iopt_area_iova_to_index: the iopt_pages page index holding `iova`."""
        return self.start_byte_of(iova) // self.pages.page_size

    @property
    def first_index(self) -> int:
        return self.start_byte // self.pages.page_size

    @property
    def last_index(self) -> int:
        return (self.start_byte + self.length - 1) // self.pages.page_size


class IoPageTable:
    """struct io_pagetable."""

    def __init__(self, kernel):
        self.k = kernel
        self.areas: dict[int, Area] = {}
        self.starts: list[int] = []
        self.reserved: list[tuple[int, int, object]] = []
        self.allowed: list[tuple[int, int]] = []
        self.domains: list[Domain] = []
        self.accesses: list = []
        self.iova_alignment = 1
        self.disable_large_pages = False

    # ------------------------------------------------------------ lookups
    def area_iter_first(self, start: int, last: int) -> Area | None:
        """iopt_area_iter_first: the lowest area intersecting [start, last]."""
        i = bisect_right(self.starts, start) - 1
        if i >= 0:
            a = self.areas[self.starts[i]]
            if a.last >= start:
                return a
        i += 1
        if i < len(self.starts) and self.starts[i] <= last:
            return self.areas[self.starts[i]]
        return None

    def areas_in(self, start: int, last: int):
        """Every area intersecting [start, last], in IOVA order."""
        i = bisect_right(self.starts, start) - 1
        if i < 0 or self.areas[self.starts[i]].last < start:
            i += 1
        while i < len(self.starts) and self.starts[i] <= last:
            yield self.areas[self.starts[i]]
            i += 1

    def area_next(self, area: Area) -> Area | None:
        i = bisect_right(self.starts, area.iova)
        return self.areas[self.starts[i]] if i < len(self.starts) else None

    def reserved_iter_first(self, start: int, last: int):
        for s, l, o in self.reserved:
            if s <= last and l >= start:
                return (s, l, o)
        return None

    def allowed_iter_first(self, start: int, last: int):
        i = bisect_right(self.allowed, (start, ULONG_MAX + 1)) - 1
        if i >= 0 and self.allowed[i][1] >= start:
            return self.allowed[i]
        i += 1
        if i < len(self.allowed) and self.allowed[i][0] <= last:
            return self.allowed[i]
        return None

    def _insert_area(self, a: Area) -> None:
        self.areas[a.iova] = a
        insort(self.starts, a.iova)

    def _remove_area(self, a: Area) -> None:
        del self.areas[a.iova]
        i = bisect_left(self.starts, a.iova)
        del self.starts[i]

    # ------------------------------------------------------------ IOVA allocation
    def _used_spans(self, lo: int, hi: int):
        """Used spans of reserved ∪ areas within [lo, hi], merged, in order
        (interval_tree_for_each_double_span's used parts)."""
        res = [(s, l) for s, l, _ in self.reserved if s <= hi and l >= lo]
        res.sort()
        ri = 0
        it = self.areas_in(lo, hi)
        na = next(it, None)
        cur = None
        while ri < len(res) or na is not None:
            if na is None or (ri < len(res) and res[ri][0] <= na.iova):
                s, l = res[ri]
                ri += 1
            else:
                s, l = na.iova, na.last
                na = next(it, None)
            if cur is None:
                cur = [s, l]
            elif s <= cur[1] + 1:
                cur[1] = max(cur[1], l)
            else:
                yield tuple(cur)
                cur = [s, l]
        if cur is not None:
            yield tuple(cur)

    def _holes(self, lo: int, hi: int):
        cur = lo
        for s, l in self._used_spans(lo, hi):
            if s > cur:
                yield cur, min(s - 1, hi)
            cur = max(cur, l + 1)
            if cur > hi:
                return
        if cur <= hi:
            yield cur, hi

    def alloc_iova(self, uptr: int, length: int) -> int:
        """iopt_alloc_iova: first fit inside the allowed ranges (all of [PAGE_SIZE,
        ULONG_MAX - PAGE_SIZE] when none are set), never IOVA 0."""
        ps = self.k.page_size
        page_offset = uptr % ps
        if length == 0 or length >= ULONG_MAX // 2:
            raise Errno("EOVERFLOW", "IOAS-MAP-AUTO-IOVA-OVERFLOW")
        if not uptr:
            align = roundup_pow_of_two(length)
        else:
            align = min(roundup_pow_of_two(length), ffs_bit(uptr))
        # max_alignment: HPAGE_SIZE with CONFIG_TRANSPARENT_HUGEPAGE, else PAGE_SIZE
        align = min(align, (2 << 20) if self.k.platform.transparent_hugepage else ps)
        if align < self.iova_alignment:
            raise Errno("EINVAL", "IOAS-MAP-AUTO-IOVA-ALIGN")
        lo, hi = ps, ULONG_MAX - ps
        if self.allowed:
            spans = [(max(s, lo), min(l, hi)) for s, l in self.allowed if l >= lo and s <= hi]
        else:
            spans = [(lo, hi)]

        def fit(start, last):
            if last - start < length - 1:
                return None
            start = ((start + align - 1) // align * align) | page_offset
            if start > last or last - start < length - 1:
                return None
            return start

        for s, l in spans:
            s2 = fit(s, l)
            if s2 is None:
                continue
            for hs, hl in self._holes(s2, l):
                got = fit(hs, hl)
                if got is not None:
                    self.k.cover("IOAS-MAP-AUTO-IOVA")
                    return got
        raise Errno("ENOSPC", "IOAS-MAP-AUTO-IOVA-NOSPC")

    def check_iova(self, iova: int, length: int) -> None:
        """iopt_check_iova."""
        if iova & (self.iova_alignment - 1):
            raise Errno("EINVAL", "IOAS-MAP-ALIGNMENT")
        last = iova + length - 1
        if last > ULONG_MAX:
            raise Errno("EOVERFLOW", "IOAS-MAP-OVERFLOW")
        if self.reserved_iter_first(iova, last):
            raise Errno("EINVAL", "IOAS-MAP-RESERVED")
        if self.area_iter_first(iova, last):
            raise Errno("EEXIST", "IOAS-MAP-OVERLAP")

    # ------------------------------------------------------------ map
    def map_pages(self, pages_list, length: int, iova: int | None, iommu_prot: int) -> int:
        """iopt_map_pages: `pages_list` is [(IoptPages, start_byte, length)]; `iova`
        None means IOPT_ALLOC_IOVA.  Returns the IOVA used."""
        if (length & (self.iova_alignment - 1)) or not length:
            raise Errno("EINVAL", "IOAS-MAP-ALIGNMENT")
        if iova is None:
            p0, sb0, _ = pages_list[0]
            iova = self.alloc_iova(p0.uptr + sb0, length)
        else:
            self.check_iova(iova, length)
        new = []
        cur = iova
        for pages, start_byte, ln in pages_list:
            # iopt_insert_area
            if (iommu_prot & IOMMU_WRITE) and not pages.writable:
                raise Errno("EPERM", "IOAS-COPY-WRITE-READONLY")
            if (start_byte % self.k.page_size) & (self.iova_alignment - 1):
                raise Errno("EINVAL", "IOAS-MAP-UPTR-ALIGNMENT")
            if cur + ln - 1 > ULONG_MAX:
                raise Errno("EOVERFLOW", "IOAS-MAP-OVERFLOW")
            new.append(Area(self, cur, ln, pages, start_byte, iommu_prot))
            cur += ln
        # iopt_fill_domains_pages: pin for the domains (nothing when there is none)
        filled = []
        try:
            if self.domains:
                for a in new:
                    _pages.area_fill_domains(a)
                    filled.append(a)
        except Errno:
            for a in filled:
                _pages.area_unfill_domains(a)
            raise
        for a in new:
            self._insert_area(a)
            a.pages.users += 1
        return iova

    # ------------------------------------------------------------ unmap
    def unmap_iova_range(self, start: int, last: int) -> tuple[int, str | None]:
        """iopt_unmap_iova_range: (bytes unmapped, errno or None).  Whole areas only;
        areas met before a failure stay unmapped (the loop frees as it goes)."""
        unmapped = 0
        while True:
            area = self.area_iter_first(start, last)
            if area is None:
                break
            if area.iova < start or area.last > last:
                return unmapped, "ENOENT"
            if area.num_accesses:
                # iommufd_access_notify_unmap: drivers must unpin before we go on
                start = area.iova
                area.prevent_access = True
                from .device import access_notify_unmap
                access_notify_unmap(self, area.iova, area.length)
                if area.num_accesses:
                    area.prevent_access = False
                    return unmapped, "EDEADLK"
                area.prevent_access = False
                continue
            self._remove_area(area)
            _pages.area_unfill_domains(area)
            area.pages.users -= 1
            unmapped += area.length
        return unmapped, None

    # ------------------------------------------------------------ allowed / reserved
    def set_allow_iova(self, ranges: list[tuple[int, int]]) -> None:
        """iopt_set_allow_iova: atomic replacement; EADDRINUSE if a new range meets a
        reserved one."""
        for s, l in ranges:
            if self.reserved_iter_first(s, l):
                raise Errno("EADDRINUSE", "IOAS-ALLOW-IOVAS-IN-USE")
        self.allowed = sorted(ranges)

    def reserve_iova(self, start: int, last: int, owner) -> None:
        """iopt_reserve_iova: EADDRINUSE over a mapped area or an allowed range."""
        if self.area_iter_first(start, last) or self.allowed_iter_first(start, last):
            raise Errno("EADDRINUSE", "IOAS-ATTACH-RESERVED-IN-USE")
        insort(self.reserved, (start, last, owner), key=lambda r: (r[0], r[1]))

    def remove_reserved_iova(self, owner) -> None:
        self.reserved = [r for r in self.reserved if r[2] is not owner]

    def enforce_dev_resv_regions(self, device) -> None:
        """iopt_table_enforce_dev_resv_regions: every reserved region of the device
        (the platform IOMMU's `reserved`, incl. the MSI window) is reserved, owner =
        the device; all or nothing."""
        try:
            for s, l in self.k.platform.iommu.reserved:
                self.reserve_iova(s, l, device)
        except Errno:
            self.remove_reserved_iova(device)
            raise

    # ------------------------------------------------------------ domains
    def check_iova_alignment(self, new_alignment: int) -> None:
        """iopt_check_iova_alignment: EADDRINUSE if an area does not conform.
        (A full walk, as in the kernel: it runs only when the alignment grows.)"""
        m = new_alignment - 1
        ps = self.k.page_size
        for a in self.areas.values():
            if (a.iova & m) or (a.length & m) or ((a.start_byte % ps) & m):
                raise Errno("EADDRINUSE", "IOAS-ALIGNMENT-AREAS-MISALIGNED")

    def calculate_iova_alignment(self) -> None:
        """iopt_calculate_iova_alignment."""
        new = self.k.page_size if self.disable_large_pages else 1
        for d in self.domains:
            new = max(new, ffs_bit(d.pgsize_bitmap))
        for acc in self.accesses:
            new = max(new, acc.iova_alignment)
        if new > self.iova_alignment:
            self.check_iova_alignment(new)
        self.iova_alignment = new

    def table_add_domain(self, domain: Domain) -> None:
        """iopt_table_add_domain: alignment, aperture reservation, then fill (pin)."""
        new_align = max(ffs_bit(domain.pgsize_bitmap), self.iova_alignment)
        if new_align > self.k.page_size:
            raise Errno("EINVAL", "IOAS-DOMAIN-PGSIZE-TOO-BIG")
        if new_align != self.iova_alignment:
            self.check_iova_alignment(new_align)
        try:
            if domain.aperture_start != 0:
                self.reserve_iova(0, domain.aperture_start - 1, domain)
            if domain.aperture_end != ULONG_MAX:
                self.reserve_iova(domain.aperture_end + 1, ULONG_MAX, domain)
            if not self.domains:
                # the first domain becomes every area's storage: pin everything
                done = []
                try:
                    for a in self.areas.values():
                        _pages.area_fill_domains(a, first_domain=True)
                        done.append(a)
                except Errno:
                    for a in done:
                        _pages.area_unfill_domains(a)
                    raise
        except Errno:
            self.remove_reserved_iova(domain)
            raise
        self.iova_alignment = new_align
        self.domains.append(domain)
        self.k.cover("IOAS-DOMAIN-ADD")

    def table_remove_domain(self, domain: Domain) -> None:
        """iopt_table_remove_domain: the last domain out unpins every area."""
        self.domains.remove(domain)
        if not self.domains:
            for a in self.areas.values():
                _pages.area_unfill_domains(a)
        self.remove_reserved_iova(domain)
        self.calculate_iova_alignment()

    def disable_large_pages_(self) -> None:
        """iopt_disable_large_pages."""
        if self.disable_large_pages:
            return
        if self.domains and self.areas:
            raise Errno("EINVAL", "IOAS-HUGE-PAGES-BUSY")
        self.disable_large_pages = True
        try:
            self.calculate_iova_alignment()
        except Errno:
            self.disable_large_pages = False
            raise

    def enable_large_pages(self) -> None:
        self.disable_large_pages = False
        self.calculate_iova_alignment()

    # ------------------------------------------------------------ split (compat TYPE1)
    def area_split(self, area: Area, iova: int) -> None:
        """iopt_area_split: `iova` becomes the last byte of the left part."""
        if iova == area.iova or iova == area.last:
            return
        if area.prevent_access:
            raise Errno("EBUSY", "COMPAT-UNMAP-SPLIT")
        align = self.iova_alignment
        new_start = iova + 1
        if (new_start & (align - 1)) or (area.start_byte_of(new_start) & (align - 1)):
            raise Errno("EINVAL", "COMPAT-UNMAP-SPLIT")
        if area.num_accesses:
            raise Errno("EINVAL", "COMPAT-UNMAP-SPLIT")
        if area.storage and not self.disable_large_pages:
            raise Errno("EINVAL", "COMPAT-UNMAP-SPLIT")
        self._remove_area(area)
        lhs = Area(self, area.iova, new_start - area.iova, area.pages, area.start_byte, area.iommu_prot)
        rhs = Area(self, new_start, area.last - new_start + 1, area.pages, area.start_byte_of(new_start),
                   area.iommu_prot)
        for n in (lhs, rhs):
            n.storage = area.storage
            self._insert_area(n)
        _pages.replace_area(area, (lhs, rhs))
        area.pages.users += 1

    def cut_iova(self, iovas: list[int]) -> None:
        """iopt_cut_iova."""
        for v in iovas:
            a = self.area_iter_first(v, v)
            if a is not None:
                self.area_split(a, v)

    # ------------------------------------------------------------ get pages (COPY)
    def get_pages(self, iova: int, length: int):
        """iopt_get_pages: the pages of a contiguous run of areas covering the range."""
        if not length:
            raise Errno("EINVAL", "IOAS-COPY-LENGTH")
        last = iova + length - 1
        if last > ULONG_MAX:
            raise Errno("EOVERFLOW", "IOAS-COPY-OVERFLOW")
        out = []
        cur = iova
        a = self.area_iter_first(iova, iova)
        while a is not None and a.iova <= cur:
            end = min(last, a.last)
            out.append((a.pages, a.start_byte_of(cur), end - cur + 1))
            if end == last:
                return out
            cur = a.last + 1
            a = self.area_next(a)
            if a is not None and a.iova != cur:
                break
        raise Errno("ENOENT", "IOAS-COPY-SRC-HOLE")

    def contig_areas(self, iova: int, last: int):
        """iopt_for_each_contig_area: [(area, cur_iova, end)] or None when the range
        is not fully covered by contiguous areas."""
        out = []
        cur = iova
        a = self.area_iter_first(iova, iova)
        while a is not None and a.iova <= cur:
            end = min(last, a.last)
            out.append((a, cur, end))
            if end == last:
                return out
            cur = a.last + 1
            a = self.area_next(a)
            if a is not None and a.iova != cur:
                break
        return None

    # ------------------------------------------------------------ reporting
    def iova_holes(self):
        """The holes of the reserved ranges (IOVA_RANGES, compat CAP_IOVA_RANGE)."""
        cur = 0
        out = []
        spans = sorted((s, l) for s, l, _ in self.reserved)
        for s, l in spans:
            if s > cur:
                out.append((cur, s - 1))
            cur = max(cur, l + 1)
        if cur <= ULONG_MAX:
            out.append((cur, ULONG_MAX))
        return out
