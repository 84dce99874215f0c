"""The platform's TCE tables and DMA windows as VFIO sees them:
arch/powerpc/kernel/iommu.c (iommu_table, iommu_tce_check_ioba/gpa,
iommu_tce_xchg_no_kill) and the pseries iommu_table_group_ops of
arch/powerpc/platforms/pseries/iommu.c (6.10+: spapr_tce_get_table_size,
spapr_tce_create_table, spapr_tce_unset_window), with the hypervisor's answers
as QEMU's spapr PHB gives them (hw/ppc/spapr_pci.c, spapr_rtas_ddw.c,
spapr_iommu.c: default window at dma_win_addr, one dynamic window at
dma64_win_addr = 1 << 59, H_PARAMETER for a TCE outside a table).

State (what the invariants read):

- ``TableGroup`` (struct iommu_table_group, one per IOMMU group, in
  ``kernel.objects["spapr_table_groups"]`` by group number): ``tce32_start`` /
  ``tce32_size`` (the default 32-bit window), ``pgsizes`` (bitmap),
  ``max_dynamic_windows_supported``, ``max_levels``, ``ddw_failed`` (the pdn is
  on failed_ddw_pdn_list: every later create_table is ENODEV until reboot).
- ``IommuTable`` (struct iommu_table, one DMA window): the window is
  ``[start, start + size)`` with ``start = it_offset << it_page_shift`` and
  ``size = it_size << it_page_shift``; ``tces`` maps an entry number (absolute,
  ``iova >> it_page_shift``) to its ``Tce``; ``allocated_size`` is the table
  memory in bytes charged to locked_vm; ``ddw`` tells a dynamic window from the
  (restored) default one.
- ``Tce``: the user address ``ua`` the IOMMU page maps (IOMMU-page aligned), the
  DMA ``direction`` (READ=1 to-device, WRITE=2 from-device, 3 both), and either
  ``page`` (v1: the user page ``ua & PAGE_MASK`` this TCE holds one pin of) or
  ``mem`` (v2: the pre-registered region it maps from; no pin of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vfiospec.reference.errors import Errno

IOMMU_TABLE_GROUP_MAX_TABLES = 2
IOMMU_PAGE_SHIFT_4K = 12
DMA64_WIN_ADDR = 0x800000000000000        # QEMU spapr-pci-host-bridge "dma64_win_addr" (1 << 59)
H_PARAMETER = -4                          # returned as the errno (EINTR) by tce_exchange_pseries

DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL = 1, 2, 3


@dataclass
class Tce:
    ua: int
    direction: int
    page: int | None = None       # v1: the pinned user page
    mem: object = None            # v2: the MmIommuMem mapped from


@dataclass
class IommuTable:
    it_offset: int                # first entry (bus address >> it_page_shift)
    it_size: int                  # entries
    it_page_shift: int
    levels: int
    allocated_size: int           # bytes charged to locked_vm
    ddw: bool = False             # a dynamic window (RTAS-created), not the default one
    tces: dict[int, Tce] = field(default_factory=dict)

    @property
    def page_size(self) -> int:
        return 1 << self.it_page_shift

    @property
    def start(self) -> int:
        return self.it_offset << self.it_page_shift

    @property
    def size(self) -> int:
        return self.it_size << self.it_page_shift

    @property
    def end(self) -> int:
        return self.start + self.size

    def contains(self, ioba: int) -> bool:
        """tce_iommu_find_table's test: it_offset <= ioba >> shift < it_offset + it_size."""
        e = ioba >> self.it_page_shift
        return self.it_offset <= e < self.it_offset + self.it_size

    def entries_in(self, first: int, count: int):
        """Mapped entries in [first, first + count), without walking empty ranges."""
        last = first + count
        if count <= len(self.tces):
            return [e for e in range(first, last) if e in self.tces]
        return sorted(e for e in self.tces if first <= e < last)


@dataclass
class TableGroup:
    """struct iommu_table_group of one IOMMU group (a PE)."""

    tce32_start: int
    tce32_size: int
    pgsizes: int
    max_dynamic_windows_supported: int
    max_levels: int
    ddw: bool
    ops: str = "pseries"          # the create_table ops (compared at attach)
    ddw_failed: bool = False


def table_group(kernel, group) -> TableGroup:
    """The table group of a VFIO group's IOMMU group (iommu_group_get_iommudata),
    set up as spapr_tce_init_table_group does for the platform."""
    tgs = kernel.objects.setdefault("spapr_table_groups", {})
    tg = tgs.get(group.number)
    if tg is None:
        io = kernel.platform.iommu
        mask = 0
        for p in io.pgsizes:
            mask |= p
        if io.ddw:
            tg = TableGroup(io.dma32_window[0], io.dma32_window[1], mask,
                            min(io.max_windows, IOMMU_TABLE_GROUP_MAX_TABLES), io.levels, True)
        else:
            # no "ibm,ddw-applicable": max_dynamic_windows_supported = -1, pgsizes SZ_4K, max_levels 0
            tg = TableGroup(io.dma32_window[0], io.dma32_window[1], 1 << IOMMU_PAGE_SHIFT_4K,
                            0xFFFFFFFF, 0, False)
        tgs[group.number] = tg
    return tg


def get_table_size(tg: TableGroup, page_shift: int, window_size: int, levels: int) -> int:
    """spapr_tce_get_table_size: ~0U for more than one level, else 8 bytes per TCE."""
    if levels > 1:
        return 0xFFFFFFFF
    return window_size >> (page_shift - 3)


def create_table(kernel, tg: TableGroup, num: int, page_shift: int, window_size: int, levels: int,
                 windows: list) -> IommuTable:
    """spapr_tce_create_table (pseries, 6.10+), with QEMU's ibm,create-pe-dma-window
    choosing the bus address:
    - window_size not a power of two, or more than one level: EINVAL;
    - the pdn failed a window creation before: ENODEV (until reboot);
    - slot 0 while another window exists: EPERM ("64-bit window already present",
      "Attempt to create window#0 when 64-bit window is present");
    - without "ibm,ddw-applicable": every creation, the default window's
      included, fails with the property lookup's EINVAL and marks the pdn failed;
    - slot 0 and a "default window request" (4K pages, size <= tce32_size): the
      default window is restored (reset-pe-dma-window) at tce32_start, limited to
      window_size;
    - otherwise a dynamic window: a window smaller than one IOMMU page fails the
      largest_available_block test (EINVAL: the shift count is negative, and the
      compiled code gives a huge block count; observed on 6.12); if a dynamic
      window exists already the hypervisor has none left (QEMU keeps counting its
      default window, which the guest never removes: the 20-byte ibm,dma-window
      property is shorter than struct dynamic_dma_window_prop, so
      remove_dma_window_named skips the RTAS call): ENODEV and the pdn is marked
      failed; else the window is placed at dma64_win_addr (1 << 59).
    QEMU's largest_available_block limit on big windows is not modelled."""
    if window_size & (window_size - 1) or window_size == 0 or levels > 1:
        raise Errno("EINVAL", "SPAPR-TCE-CREATE-PLATFORM-GEOMETRY")
    if tg.ddw_failed:
        raise Errno("ENODEV", "SPAPR-TCE-CREATE-DDW-FAILED")
    size = window_size.bit_length() - 1
    alloc = get_table_size(tg, page_shift, window_size, levels)
    others = [w for w in windows if w is not None]
    if num == 0 and others:
        raise Errno("EPERM", "SPAPR-TCE-CREATE-PLATFORM-START")
    if not tg.ddw:
        # take_ownership could not remove the default window's property, so even
        # the default request reaches the ibm,ddw-applicable lookup: out_failed
        tg.ddw_failed = True
        raise Errno("EINVAL", "SPAPR-TCE-CREATE-DDW-FAILED")
    if num == 0 and page_shift == IOMMU_PAGE_SHIFT_4K and window_size <= tg.tce32_size:
        return IommuTable(tg.tce32_start >> page_shift, window_size >> page_shift, page_shift, levels, alloc)
    if size < page_shift:
        raise Errno("EINVAL", "SPAPR-TCE-CREATE-PLATFORM-GEOMETRY")
    if any(w.ddw for w in others):
        tg.ddw_failed = True
        raise Errno("ENODEV", "SPAPR-TCE-CREATE-DDW-FAILED")
    return IommuTable(DMA64_WIN_ADDR >> page_shift, 1 << (size - page_shift), page_shift, levels, alloc, ddw=True)


def check_ioba(tbl: IommuTable, ioba: int) -> bool:
    """iommu_tce_check_ioba (npages ignored): aligned, and its first IOMMU page in the table."""
    if ioba & (tbl.page_size - 1):
        return False
    e = ioba >> tbl.it_page_shift
    return tbl.it_offset <= e < tbl.it_offset + tbl.it_size


def check_gpa(tbl: IommuTable, gpa: int) -> bool:
    """iommu_tce_check_gpa."""
    return not gpa & (tbl.page_size - 1)
