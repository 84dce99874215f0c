"""The sPAPR TCE IOMMU backend, v1 (VFIO_SPAPR_TCE_IOMMU) and v2
(VFIO_SPAPR_TCE_v2_IOMMU): drivers/vfio/vfio_iommu_spapr_tce.c as of 6.12
(identical in 7.2), with the pseries table-group ops of
arch/powerpc/platforms/pseries/iommu.c (see reference.powerpc.iommu) and the
per-mm pre-registered memory of arch/powerpc/mm/book3s64/iommu_api.c
(reference.powerpc.iommu_api).  Available only when platform.iommu.kind is
"spapr".

State (struct tce_container; what the invariants read):

- ``v2``: the IOMMU type; ``enabled``: MAP/UNMAP allowed (v1: VFIO_IOMMU_ENABLE;
  v2: the first successful REGISTER_MEMORY); ``mm``: the mm recorded on first
  use (tce_iommu_mm_set), None before.
- ``tables``: the container's DMA windows, a list of ``IommuTable`` or None per
  slot (IOMMU_TABLE_GROUP_MAX_TABLES = 2); each window is
  ``[tbl.start, tbl.end)`` with page size ``tbl.page_size``; windows are
  disjoint.  ``def_window_pending``: the default 32-bit window will be created on
  first use (MAP, UNMAP, TCE_CREATE) unless TCE_REMOVE(0) cancels it.
- ``tbl.tces``: entry -> ``Tce`` for every IOMMU page mapped (iova =
  entry << it_page_shift, inside its window and aligned by construction).
  v1 TCEs each hold one pin of the user page ``tce.page``; v2 TCEs reference the
  pre-registered region ``tce.mem`` (counted in its ``mapped``).
- ``prereg``: the registrations this container holds a reference to
  (struct tce_iommu_prereg list); the registrations themselves, with their
  ``used`` and ``mapped`` counts, live in the mm (``kernel.objects["mm_iommu"]``).
- ``locked_pages``: what v1 ENABLE charged to ``kernel.mm.locked_vm`` (the whole
  default window); window tables charge ``tbl.allocated_size`` bytes each.
- ``group_list``: attached VFIO groups, newest first (list_add).
"""

from __future__ import annotations

from vfiospec.reference import uapi
from vfiospec.reference.errors import Errno
from vfiospec.reference.kernel import Result
from vfiospec.reference.powerpc import iommu as ppc
from vfiospec.reference.powerpc import iommu_api as prereg

from . import vfio_spapr_eeh as eeh
from .container import IommuDriver, register_iommu_driver

C = uapi.CONSTANTS
_NR = {name: io.number for name, io in uapi.IOCTLS.items()}
READ, WRITE = C["VFIO_DMA_MAP_FLAG_READ"], C["VFIO_DMA_MAP_FLAG_WRITE"]


def _nr(name: str) -> int:
    return _NR[name]


@register_iommu_driver
class TceContainer(IommuDriver):
    """struct tce_container; the driver ops are tce_iommu_driver_ops."""

    name = "iommu-vfio-powerpc"

    @staticmethod
    def available(kernel) -> bool:
        return kernel.platform.iommu.kind == "spapr"

    @staticmethod
    def check_extension_static(kernel, arg: int) -> int:
        """tce_iommu_ioctl(VFIO_CHECK_EXTENSION): both sPAPR types 1, VFIO_EEH
        eeh_enabled(), anything else 0."""
        if arg in (C["VFIO_SPAPR_TCE_IOMMU"], C["VFIO_SPAPR_TCE_v2_IOMMU"]):
            kernel.cover("SPAPR-CHECK-EXTENSION")
            return 1
        return eeh.check_extension(kernel, arg)

    def __init__(self, kernel, container, arg: int):
        """tce_iommu_open: only the two sPAPR types."""
        if arg not in (C["VFIO_SPAPR_TCE_IOMMU"], C["VFIO_SPAPR_TCE_v2_IOMMU"]):
            raise Errno("EINVAL", "SPAPR-SET-IOMMU")
        super().__init__(kernel, container, arg)
        self.v2 = arg == C["VFIO_SPAPR_TCE_v2_IOMMU"]
        self.enabled = False
        self.def_window_pending = False
        self.locked_pages = 0
        self.mm = None
        self.tables: list[ppc.IommuTable | None] = [None] * ppc.IOMMU_TABLE_GROUP_MAX_TABLES
        self.group_list: list = []
        self.prereg: list[prereg.MmIommuMem] = []
        kernel.cover("SPAPR-SET-IOMMU")

    # ------------------------------------------------------------ helpers
    @property
    def page_shift(self) -> int:
        return prereg.page_shift(self.k)

    def _tg(self, group=None) -> ppc.TableGroup:
        return ppc.table_group(self.k, group if group is not None else self.group_list[0])

    def mm_set(self) -> None:
        """tce_iommu_mm_set: record the caller's mm on first use; another mm: EPERM."""
        if self.mm is not None:
            if self.mm is self.k.mm:
                return
            raise Errno("EPERM", "SPAPR-MM-OWNER")
        self.mm = self.k.mm
        self.k.cover("SPAPR-MM-OWNER")

    def find_table(self, ioba: int):
        """tce_iommu_find_table: the slot whose window holds ioba, or (-1, None)."""
        for i, t in enumerate(self.tables):
            if t is not None and t.contains(ioba):
                return i, t
        return -1, None

    # ------------------------------------------------------------ groups
    def attach_group(self, group) -> None:
        """tce_iommu_attach_group (6.4+)."""
        if group.type == "emulated":
            raise Errno("EINVAL", "SPAPR-ATTACH-EMULATED")
        tg = self._tg(group)
        if self.v2 and tg.max_dynamic_windows_supported == 0:
            raise Errno("EINVAL", "SPAPR-ATTACH-V2-NEEDS-DDW")
        if not self.v2 and self.group_list:
            raise Errno("EBUSY", "SPAPR-ATTACH-V1-ONE-GROUP")
        for g in self.group_list:
            if g is group:
                raise Errno("EBUSY", "SPAPR-ATTACH-SAME-GROUP")
            if self._tg(g).ops != tg.ops:
                raise Errno("EPERM", "SPAPR-ATTACH-INCOMPATIBLE")
        # tce_iommu_take_ownership: set_window of every existing table (always
        # succeeds for tables this container created)
        if not self.group_list and self.tables[0] is None:
            self.def_window_pending = True
            self.k.cover("SPAPR-DEFAULT-WINDOW-PENDING")
        self.group_list.insert(0, group)
        self.k.cover("SPAPR-ATTACH-GROUP")

    def detach_group(self, group) -> None:
        """tce_iommu_detach_group -> tce_iommu_release_ownership: every TCE of every
        window is cleared, then the windows are unset on that group (the tables
        stay with the container)."""
        if group not in self.group_list:
            return
        self.group_list.remove(group)
        for t in self.tables:
            if t is not None:
                self.clear(t, t.it_offset, t.it_size)
        self.k.cover("SPAPR-DETACH-CLEARS")

    def release(self) -> None:
        """tce_iommu_release: detach groups, free the tables (un-charge), drop this
        container's registrations (a region TCEs still map stays: WARN), undo ENABLE."""
        while self.group_list:
            self.detach_group(self.group_list[0])
        for i, t in enumerate(self.tables):
            if t is not None:
                self.free_table(t)
                self.tables[i] = None
        for mem in list(self.prereg):
            if prereg.mm_iommu_put(self.k, mem) is None:
                self.prereg.remove(mem)
        self.disable()
        self.k.cover("SPAPR-RELEASE")

    # ------------------------------------------------------------ v1 enable
    def enable(self) -> None:
        """tce_iommu_enable: charge the whole default window to locked_vm."""
        if self.enabled:
            raise Errno("EBUSY", "SPAPR-V1-ENABLE-TWICE")
        if not self.group_list:
            raise Errno("ENODEV", "SPAPR-NO-GROUP")
        tg = self._tg()
        if not tg.tce32_size:
            raise Errno("EPERM", "SPAPR-V1-ENABLE-NO-DEFAULT-WINDOW")
        self.mm_set()
        locked = tg.tce32_size >> self.page_shift
        prereg.account_locked_vm(self.k, locked, True, "SPAPR-V1-ENABLE-ACCOUNTING")
        self.locked_pages = locked
        self.enabled = True
        self.k.cover("SPAPR-V1-ENABLE-ACCOUNTING")

    def disable(self) -> None:
        """tce_iommu_disable: un-charge; TCEs stay."""
        if not self.enabled:
            return
        self.enabled = False
        prereg.account_locked_vm(self.k, self.locked_pages, False, "SPAPR-V1-ENABLE-ACCOUNTING")

    # ------------------------------------------------------------ windows
    def free_table(self, tbl: ppc.IommuTable) -> None:
        """tce_iommu_free_table: un-charge it_allocated_size."""
        prereg.account_locked_vm(self.k, tbl.allocated_size >> self.page_shift, False,
                                 "SPAPR-TCE-CREATE-ACCOUNTING")

    def create_window(self, page_shift: int, window_size: int, levels: int) -> int:
        """tce_iommu_create_window: a free slot (ENOSPC), a supported page size
        (EINVAL), the table charged to locked_vm (tce_iommu_create_table: zero size
        EINVAL, ENOMEM; a failing create_table keeps the charge), then the
        platform's create_table chooses the bus address."""
        try:
            num = self.tables.index(None)
        except ValueError:
            raise Errno("ENOSPC", "SPAPR-TCE-CREATE-MAX-WINDOWS") from None
        tg = self._tg()
        if page_shift >= 64 or not tg.pgsizes & (1 << page_shift):
            raise Errno("EINVAL", "SPAPR-TCE-CREATE-PAGE-SHIFT")
        table_size = ppc.get_table_size(tg, page_shift, window_size, levels)
        if not table_size:
            raise Errno("EINVAL", "SPAPR-TCE-CREATE-ZERO-SIZE")
        prereg.account_locked_vm(self.k, table_size >> self.page_shift, True, "SPAPR-TCE-CREATE-ACCOUNTING")
        try:
            tbl = ppc.create_table(self.k, tg, num, page_shift, window_size, levels, self.tables)
        except Errno:
            self.k.cover("SPAPR-TCE-CREATE-FAILED-KEEPS-CHARGE")
            raise
        self.tables[num] = tbl
        self.k.cover("SPAPR-TCE-CREATE-ACCOUNTING")
        return tbl.start

    def create_default_window(self) -> None:
        """tce_iommu_create_default_window: 4K pages, tce32_size, one level."""
        if not self.def_window_pending:
            return
        if not self.group_list:
            raise Errno("ENODEV", "SPAPR-NO-GROUP")
        tg = self._tg()
        self.create_window(ppc.IOMMU_PAGE_SHIFT_4K, tg.tce32_size, 1)
        self.def_window_pending = False
        self.k.cover("SPAPR-DEFAULT-WINDOW-PENDING")

    def remove_window(self, start_addr: int) -> None:
        """tce_iommu_remove_window: the window holding start_addr (EINVAL if none)
        is cleared (TCEs unpinned / unreferenced), unset and freed."""
        num, tbl = self.find_table(start_addr)
        if num < 0:
            raise Errno("EINVAL", "SPAPR-TCE-REMOVE-NO-WINDOW")
        self.clear(tbl, tbl.it_offset, tbl.it_size)
        self.free_table(tbl)
        self.tables[num] = None
        self.k.cover("SPAPR-TCE-REMOVE")

    # ------------------------------------------------------------ TCEs
    def clear(self, tbl: ppc.IommuTable, entry: int, pages: int) -> None:
        """tce_iommu_clear: entries outside the table or never mapped are skipped."""
        for e in tbl.entries_in(entry, pages):
            tce = tbl.tces.pop(e)
            if tce.mem is not None:
                prereg.mm_iommu_mapped_dec(tce.mem)     # tce_iommu_unuse_page_v2

    def _xchg(self, tbl: ppc.IommuTable, entry: int, tce: ppc.Tce) -> ppc.Tce | None:
        """iommu_tce_xchg_no_kill via tce_exchange_pseries: H_GET_TCE/H_PUT_TCE;
        an entry outside the table is H_PARAMETER (-4, seen as EINTR); else the
        new TCE replaces the old one, which is returned."""
        if not tbl.it_offset <= entry < tbl.it_offset + tbl.it_size:
            raise Errno("EINTR", "SPAPR-MAP-BEYOND-WINDOW")
        old = tbl.tces.get(entry)
        tbl.tces[entry] = tce
        return old

    def build(self, tbl: ppc.IommuTable, entry: int, ua: int, pages: int, direction: int) -> None:
        """tce_iommu_build (v1): pin each page at map time (EFAULT), backing page
        at least the IOMMU page (EPERM); a replaced TCE releases its page; on
        error everything this call mapped is cleared."""
        k = self.k
        ps = k.page_size
        i = 0
        try:
            for i in range(pages):
                u = ua + i * tbl.page_size
                if not k.mm.covered(u & ~(ps - 1), 1):
                    raise Errno("EFAULT", "SPAPR-V1-MAP-PIN")
                if k.mm.backing_pagesize(u) < tbl.page_size:
                    raise Errno("EPERM", "SPAPR-MAP-PAGE-SIZE")
                self._xchg(tbl, entry + i, ppc.Tce(u, direction, page=u & ~(ps - 1)))
        except Errno:
            self.clear(tbl, entry, i)
            raise
        k.cover("SPAPR-V1-MAP-PINS")

    def build_v2(self, tbl: ppc.IommuTable, entry: int, ua: int, pages: int, direction: int) -> None:
        """tce_iommu_build_v2: every IOMMU page must lie in one pre-registered
        region of the mm (EINVAL) able to back that page size (EINVAL), on host
        pages at least that big (EPERM); a region whose last put already ran
        stops the loop without an error."""
        k = self.k
        i = 0
        try:
            for i in range(pages):
                u = ua + i * tbl.page_size
                mem = prereg.mm_iommu_lookup(k, u, tbl.page_size)
                if mem is None:
                    raise Errno("EINVAL", "SPAPR-V2-MAP-PREREG-ONLY")
                if not prereg.mm_iommu_ua_to_hpa(mem, u, tbl.it_page_shift):
                    raise Errno("EINVAL", "SPAPR-MAP-PAGE-SIZE")
                if k.mm.backing_pagesize(u) < tbl.page_size:
                    raise Errno("EPERM", "SPAPR-MAP-PAGE-SIZE")
                if not prereg.mm_iommu_mapped_inc(mem):
                    return
                try:
                    old = self._xchg(tbl, entry + i, ppc.Tce(u, direction, mem=mem))
                except Errno:
                    prereg.mm_iommu_mapped_dec(mem)
                    raise
                if old is not None and old.mem is not None:
                    prereg.mm_iommu_mapped_dec(old.mem)
        except Errno:
            self.clear(tbl, entry, i)
            raise
        k.cover("SPAPR-V2-MAP-PREREG-ONLY")

    # ------------------------------------------------------------ ioctls
    def ioctl(self, cmd: str, arg):
        """tce_iommu_ioctl.  Commands are told apart by number, as the kernel does
        (VFIO_IOMMU_GET_INFO is TCE_GET_INFO, VFIO_IOMMU_DIRTY_PAGES is
        REGISTER_MEMORY)."""
        nr = _NR.get(cmd)
        k = self.k
        if nr == _nr("VFIO_CHECK_EXTENSION"):
            return Result(self.check_extension(arg))
        if self.mm is not None and self.mm is not k.mm:
            raise Errno("EPERM", "SPAPR-MM-OWNER")
        arg = arg if isinstance(arg, dict) else {}
        if nr == _nr("VFIO_IOMMU_SPAPR_TCE_GET_INFO"):
            return self.get_info(arg)
        if nr == _nr("VFIO_IOMMU_MAP_DMA"):
            return self.map_dma(arg)
        if nr == _nr("VFIO_IOMMU_UNMAP_DMA"):
            return self.unmap_dma(arg)
        if nr == _nr("VFIO_IOMMU_SPAPR_REGISTER_MEMORY") and self.v2:
            return self.register_memory(arg)
        if nr == _nr("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY") and self.v2:
            return self.unregister_memory(arg)
        if nr == _nr("VFIO_IOMMU_ENABLE") and not self.v2:
            self.enable()
            return Result(0)
        if nr == _nr("VFIO_IOMMU_DISABLE") and not self.v2:
            self.disable()
            k.cover("SPAPR-V1-DISABLE")
            return Result(0)
        if nr == _nr("VFIO_EEH_PE_OP"):
            return Result(eeh.container_pe_op(k, self.group_list, arg))
        if nr == _nr("VFIO_IOMMU_SPAPR_TCE_CREATE") and self.v2:
            return self.tce_create(arg)
        if nr == _nr("VFIO_IOMMU_SPAPR_TCE_REMOVE") and self.v2:
            return self.tce_remove(arg)
        if nr in (_nr("VFIO_IOMMU_ENABLE"), _nr("VFIO_IOMMU_DISABLE")):
            raise Errno("ENOTTY", "SPAPR-V2-NO-ENABLE")
        if nr in (_nr("VFIO_IOMMU_SPAPR_REGISTER_MEMORY"), _nr("VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY"),
                  _nr("VFIO_IOMMU_SPAPR_TCE_CREATE"), _nr("VFIO_IOMMU_SPAPR_TCE_REMOVE")):
            raise Errno("ENOTTY", "SPAPR-V1-NO-V2-IOCTLS")
        raise Errno("ENOTTY", "SPAPR-UNKNOWN-IOCTL")

    def get_info(self, arg: dict) -> Result:
        """VFIO_IOMMU_SPAPR_TCE_GET_INFO: the default window; for v2 on a DDW table
        group the DDW flag and block.  Only offsetofend(dma32_window_size) bytes
        are copied back unless argsz covers ddw; the flag is set either way."""
        if not self.group_list:
            raise Errno("ENXIO", "SPAPR-NO-GROUP")
        st = uapi.vfio_iommu_spapr_tce_info
        if arg.get("argsz", 0) < st.minsz:
            raise Errno("EINVAL", "SPAPR-GET-INFO-ARGSZ")
        tg = self._tg()
        flags = 0
        ddw = {"pgsizes": 0, "max_dynamic_windows_supported": 0, "levels": 0}
        if tg.max_dynamic_windows_supported and self.v2:
            flags |= C["VFIO_IOMMU_SPAPR_INFO_DDW"]
            ddw = {"pgsizes": tg.pgsizes, "max_dynamic_windows_supported": tg.max_dynamic_windows_supported,
                   "levels": tg.max_levels}
            self.k.cover("SPAPR-GET-INFO-DDW")
        out = dict(arg)
        out.update(flags=flags, dma32_window_start=tg.tce32_start & 0xFFFFFFFF,
                   dma32_window_size=tg.tce32_size & 0xFFFFFFFF)
        if arg["argsz"] >= st.offsetofend("ddw"):
            out["ddw"] = ddw
        else:
            out["ddw"] = dict(arg.get("ddw") or {"pgsizes": 0, "max_dynamic_windows_supported": 0, "levels": 0})
            self.k.cover("SPAPR-GET-INFO-DDW-ARGSZ")
        self.k.cover("SPAPR-GET-INFO")
        return Result(0, out=out)

    def map_dma(self, arg: dict) -> Result:
        """VFIO_IOMMU_MAP_DMA."""
        if not self.enabled:
            raise Errno("EPERM", "SPAPR-MAP-NOT-ENABLED")
        if arg.get("argsz", 0) < uapi.vfio_iommu_type1_dma_map.minsz:
            raise Errno("EINVAL", "SPAPR-MAP-ARGSZ-FLAGS")
        flags = arg.get("flags", 0)
        if flags & ~(READ | WRITE):
            raise Errno("EINVAL", "SPAPR-MAP-ARGSZ-FLAGS")
        self.create_default_window()
        iova, vaddr, size = arg.get("iova", 0), arg.get("vaddr", 0), arg.get("size", 0)
        num, tbl = self.find_table(iova)
        if num < 0:
            raise Errno("ENXIO", "SPAPR-MAP-OUTSIDE-WINDOWS")
        mask = tbl.page_size - 1
        if size & mask or vaddr & mask:
            raise Errno("EINVAL", "SPAPR-MAP-ALIGN")
        if not flags & (READ | WRITE):
            raise Errno("EINVAL", "SPAPR-MAP-DIRECTION")
        direction = (ppc.DMA_TO_DEVICE if flags & READ else 0) | (ppc.DMA_FROM_DEVICE if flags & WRITE else 0)
        if not ppc.check_ioba(tbl, iova) or not ppc.check_gpa(tbl, vaddr):
            # iommu_tce_put_param_check is a `||` of two checks: its value is 1
            self.k.cover("SPAPR-MAP-IOVA-UNALIGNED-RET1")
            return Result(1)
        pages = size >> tbl.it_page_shift
        entry = iova >> tbl.it_page_shift
        if self.v2:
            self.build_v2(tbl, entry, vaddr, pages, direction)
        else:
            self.build(tbl, entry, vaddr, pages, direction)
        self.k.cover("SPAPR-MAP")
        return Result(0)

    def unmap_dma(self, arg: dict) -> Result:
        """VFIO_IOMMU_UNMAP_DMA: never-mapped entries (and entries past the window's
        end) are skipped silently."""
        if not self.enabled:
            raise Errno("EPERM", "SPAPR-MAP-NOT-ENABLED")
        if arg.get("argsz", 0) < uapi.vfio_iommu_type1_dma_unmap.minsz:
            raise Errno("EINVAL", "SPAPR-UNMAP-ARGSZ-FLAGS")
        if arg.get("flags", 0):
            raise Errno("EINVAL", "SPAPR-UNMAP-ARGSZ-FLAGS")
        self.create_default_window()
        iova, size = arg.get("iova", 0), arg.get("size", 0)
        num, tbl = self.find_table(iova)
        if num < 0:
            raise Errno("ENXIO", "SPAPR-MAP-OUTSIDE-WINDOWS")
        if size & (tbl.page_size - 1):
            raise Errno("EINVAL", "SPAPR-MAP-ALIGN")
        if not ppc.check_ioba(tbl, iova):
            self.k.cover("SPAPR-MAP-IOVA-UNALIGNED-RET1")
            return Result(1)
        self.clear(tbl, iova >> tbl.it_page_shift, size >> tbl.it_page_shift)
        self.k.cover("SPAPR-UNMAP")
        return Result(0)

    def register_memory(self, arg: dict) -> Result:
        """VFIO_IOMMU_SPAPR_REGISTER_MEMORY -> tce_iommu_register_pages."""
        k = self.k
        self.mm_set()
        if arg.get("argsz", 0) < uapi.vfio_iommu_spapr_register_memory.minsz:
            raise Errno("EINVAL", "SPAPR-PREREG-ARGSZ-FLAGS")
        if arg.get("flags", 0):
            raise Errno("EINVAL", "SPAPR-PREREG-ARGSZ-FLAGS")
        vaddr, size = arg.get("vaddr", 0), arg.get("size", 0)
        ps = k.page_size
        if vaddr & (ps - 1) or size & (ps - 1) or vaddr + size >= 1 << 64:
            raise Errno("EINVAL", "SPAPR-PREREG-ALIGN")
        entries = size // ps
        mem = prereg.mm_iommu_get(k, vaddr, entries)
        if mem is not None:
            if mem in self.prereg:
                prereg.mm_iommu_put(k, mem)
                raise Errno("EBUSY", "SPAPR-PREREG-TWICE")
            k.cover("SPAPR-PREREG-SHARED")
        else:
            mem = prereg.mm_iommu_new(k, vaddr, entries)
            if isinstance(mem, int):
                return Result(mem)
        self.prereg.append(mem)
        if not self.enabled:
            k.cover("SPAPR-V2-ENABLED-BY-REGISTER")
        self.enabled = True
        k.cover("SPAPR-PREREG-REGISTER")
        return Result(0)

    def unregister_memory(self, arg: dict) -> Result:
        """VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY -> tce_iommu_unregister_pages: exact
        range, registered through this container.  With TCEs still mapping into
        the region the container's reference goes and 0 is returned, while the
        region stays registered in the mm (the last put's EBUSY is ignored)."""
        k = self.k
        if self.mm is None:
            raise Errno("EPERM", "SPAPR-PREREG-UNREGISTER-NO-MM")
        if arg.get("argsz", 0) < uapi.vfio_iommu_spapr_register_memory.minsz:
            raise Errno("EINVAL", "SPAPR-PREREG-ARGSZ-FLAGS")
        if arg.get("flags", 0):
            raise Errno("EINVAL", "SPAPR-PREREG-ARGSZ-FLAGS")
        vaddr, size = arg.get("vaddr", 0), arg.get("size", 0)
        ps = k.page_size
        if vaddr & (ps - 1) or size & (ps - 1):
            raise Errno("EINVAL", "SPAPR-PREREG-ALIGN")
        mem = prereg.mm_iommu_get(k, vaddr, size // ps)
        if mem is None:
            raise Errno("ENOENT", "SPAPR-PREREG-EXACT-UNREGISTER")
        try:
            if mem not in self.prereg:
                raise Errno("ENOENT", "SPAPR-PREREG-EXACT-UNREGISTER")
            err = prereg.mm_iommu_put(k, mem)       # tce_iommu_prereg_free
            if err:
                raise Errno(err, "SPAPR-PREREG-UNREGISTER-MAPPED")
            self.prereg.remove(mem)
        finally:
            last = prereg.mm_iommu_put(k, mem)      # the get's reference; result ignored
        if last == "EBUSY":
            k.cover("SPAPR-PREREG-UNREGISTER-MAPPED")
        k.cover("SPAPR-PREREG-EXACT-UNREGISTER")
        return Result(0)

    def tce_create(self, arg: dict) -> Result:
        """VFIO_IOMMU_SPAPR_TCE_CREATE: the pending default window first, then the
        new one; start_addr is written back on success only."""
        self.mm_set()
        if not self.group_list:
            raise Errno("ENXIO", "SPAPR-NO-GROUP")
        if arg.get("argsz", 0) < uapi.vfio_iommu_spapr_tce_create.minsz:
            raise Errno("EINVAL", "SPAPR-TCE-CREATE-ARGSZ-FLAGS")
        if arg.get("flags", 0):
            raise Errno("EINVAL", "SPAPR-TCE-CREATE-ARGSZ-FLAGS")
        self.create_default_window()
        start = self.create_window(arg.get("page_shift", 0), arg.get("window_size", 0), arg.get("levels", 0))
        self.k.cover("SPAPR-TCE-CREATE")
        return Result(0, out={**arg, "start_addr": start})

    def tce_remove(self, arg: dict) -> Result:
        """VFIO_IOMMU_SPAPR_TCE_REMOVE: start_addr 0 while the default window is
        pending only cancels it."""
        self.mm_set()
        if not self.group_list:
            raise Errno("ENXIO", "SPAPR-NO-GROUP")
        if arg.get("argsz", 0) < uapi.vfio_iommu_spapr_tce_remove.minsz:
            raise Errno("EINVAL", "SPAPR-TCE-REMOVE-ARGSZ-FLAGS")
        if arg.get("flags", 0):
            raise Errno("EINVAL", "SPAPR-TCE-REMOVE-ARGSZ-FLAGS")
        if self.def_window_pending and not arg.get("start_addr", 0):
            self.def_window_pending = False
            self.k.cover("SPAPR-TCE-REMOVE-PENDING-DEFAULT")
            return Result(0)
        self.remove_window(arg.get("start_addr", 0))
        return Result(0)
