"""The mutant catalog beyond the vfio-core entries of mutants.py: one seeded bug per
entry, each a single semantic change to the reference (a check removed, a bound off
by one, a count taken per the wrong object, a version gate turned around), tied to
the requirement ID whose behaviour it breaks.

Every patch resolves the reference's functions at apply time (mutants.replace) and
wraps the original where it can, so a mutant stays one idea however the module
around it changes.  `vfiospec mutants --list` lists them; `vfiospec mutants --only
NAME` shows what kills one.

Not shipped, on purpose:
- "replace before 6.6 allowed" (the CDEV-ATTACH-REPLACE version gate of
  vfio_iommufd_physical_attach_ioas off): VFIO_DEVICE_ATTACH_IOMMUFD_PT exists only
  on a cdev fd, and /dev/vfio/devices appears in 6.6 (CDEV-NODE), so before 6.6 no
  user call reaches the gate: the mutant is equivalent.  The version-gate idea is
  shipped as `hwpt-alloc-before-6.6` instead.
- "a v2 TCE may run past the end of its pre-registered region" (mm_iommu_lookup
  testing only the first byte): a region can back an IOMMU page of 2^s bytes only
  when its mem->pageshift >= s, i.e. when its start and size are multiples of 2^s,
  and MAP_DMA needs vaddr aligned to 2^s, so no IOMMU page can straddle a region's
  end: equivalent.  SPAPR-V2-MAP-PREREG-ONLY is covered by
  `spapr-v2-map-unregistered` instead.
"""

from __future__ import annotations

from .mutants import mutant, replace, swap_errno

U64 = (1 << 64) - 1


def _errno():
    from vfiospec.reference.errors import Errno
    return Errno


def _result():
    from vfiospec.reference.kernel import Result
    return Result


def _C():
    from vfiospec.reference import uapi
    return uapi.CONSTANTS


# =================================================================== cdev / bind
def _bind_twice(orig):
    def vfio_df_ioctl_bind_iommufd(df, arg):
        # the access_granted test of vfio_df_ioctl_bind_iommufd is gone: a bound fd
        # binds again and answers with the devid it already has
        if df.access_granted and df.group is None:
            return _result()(0, out={**arg, "out_devid": df.devid})
        return orig(df, arg)
    return vfio_df_ioctl_bind_iommufd


mutant("cdev-bind-twice", "CDEV-BIND-TWICE",
       "BIND_IOMMUFD on an already bound cdev fd succeeds again (same devid)",
       replace("vfio.device_cdev:vfio_df_ioctl_bind_iommufd", _bind_twice))


def _df_open_multi(orig):
    def df_open(self, df):
        # vfio_df_open without "open_count != 0 on the cdev path -> EINVAL": a second
        # cdev fd of a device binds too (the device is then bound through two fds)
        device = df.device
        if device.open_count != 0 and df.group is None:
            device.open_count += 1
            return
        return orig(self, df)
    return df_open


mutant("cdev-second-fd-binds", "CDEV-SINGLE-OPEN",
       "a second cdev fd of an already bound device binds as well (double bind)",
       replace("vfio.group:VfioGroup.df_open", _df_open_multi))


def _claim_any_owner(orig):
    def device_claim_dma_owner(self, owner):
        # iommu_device_claim_dma_owner without the owner comparison: a device of a
        # group owned by one iommufd binds to a second iommufd
        if self.owner is not None and self.owner_cnt and self.owner is not owner \
                and self.kernel_driver_users() == 0:
            self.owner_cnt += 1
            return
        return orig(self, owner)
    return device_claim_dma_owner


mutant("bind-second-iommufd", "IOMMUFD-BIND-DMA-OWNER",
       "a device binds to a second iommufd while its group is owned by the first",
       replace("vfio.group:VfioGroup.device_claim_dma_owner", _claim_any_owner))


def _block_group_no_count(orig):
    def vfio_device_block_group(device):
        # the bind still refuses an open group node, but no longer counts itself in
        # cdev_device_open_cnt, so the group node opens while the cdev is bound
        if device.group.opened_file is not None:
            raise _errno()("EBUSY", "CDEV-GROUP-EXCLUSIVE")
    return vfio_device_block_group


def _unblock_nothing(orig):
    def vfio_device_unblock_group(device):
        return None
    return vfio_device_unblock_group


def _patch_group_exclusive():
    replace("vfio.device_cdev:vfio_device_block_group", _block_group_no_count)()
    replace("vfio.device_cdev:vfio_device_unblock_group", _unblock_nothing)()


mutant("group-open-while-cdev-bound", "CDEV-GROUP-EXCLUSIVE",
       "the group node opens while a device of the group is bound through its cdev",
       _patch_group_exclusive)


def _close_keeps_binding(orig):
    def vfio_df_unbind_iommufd(df):
        # the release of a bound cdev fd drops its iommufd reference and unblocks
        # the group, but forgets vfio_df_close: the device stays open and bound
        if not df.access_granted:
            return orig(df)
        from vfiospec.reference.vfio.device_cdev import iommufd_ctx_put, vfio_device_unblock_group
        iommufd_ctx_put(df.iommufd)
        df.device.cdev_opened = False
        vfio_device_unblock_group(df.device)
    return vfio_df_unbind_iommufd


mutant("cdev-close-keeps-binding", "CDEV-UNBIND-ON-CLOSE",
       "closing a bound cdev fd leaves the device opened and bound to the iommufd",
       replace("vfio.device_cdev:vfio_df_unbind_iommufd", _close_keeps_binding))


def _access_before_bind(orig):
    def ioctl(self, cmd, arg):
        # the "access blocked until BIND_IOMMUFD" gate of a cdev fd is gone
        if not self.access_granted and self.group is None and cmd != "VFIO_DEVICE_BIND_IOMMUFD" \
                and cmd not in ("VFIO_DEVICE_ATTACH_IOMMUFD_PT", "VFIO_DEVICE_DETACH_IOMMUFD_PT"):
            self.access_granted = True
            try:
                return orig(self, cmd, arg)
            finally:
                self.access_granted = False
        return orig(self, cmd, arg)
    return ioctl


mutant("cdev-access-before-bind", "CDEV-NO-ACCESS-BEFORE-BIND",
       "device ioctls on an unbound cdev fd are served",
       replace("vfio.vfio_main:DeviceFile.ioctl", _access_before_bind))


# =================================================================== iommufd pinning
def _pinned_per_domain(orig):
    def pinned_count(self):
        # every page is pinned (and charged) once per domain of the area's table
        # instead of once per iopt_pages
        n = orig(self)
        for a in self.domain_areas:
            n += (len(a.iopt.domains) - 1) * (a.last_index - a.first_index + 1)
        return n
    return pinned_count


mutant("pin-per-domain", "IOMMUFD-PIN-ONCE",
       "iopt_pages pinned and charged once per domain instead of once",
       replace("iommufd.pages:IoptPages.pinned_count", _pinned_per_domain))


def _pinned_per_area(orig):
    def pinned_count(self):
        # the areas' page spans are summed instead of merged: two areas sharing an
        # iopt_pages (COPY, a compat split) charge the shared pages twice
        n = sum(a.last_index - a.first_index + 1 for a in self.domain_areas)
        spans = self._domain_spans()
        starts = [s for s, _ in spans]
        from bisect import bisect_right
        for idx in self.access_pins:
            i = bisect_right(starts, idx) - 1
            if i < 0 or spans[i][1] < idx:
                n += 1
        return n
    return pinned_count


mutant("pin-per-area", "IOMMUFD-PIN-ONCE",
       "iopt_pages pinned count summed per area instead of over the union of areas",
       replace("iommufd.pages:IoptPages.pinned_count", _pinned_per_area))


def _copy_new_pages(orig):
    def get_pages(self, iova, length):
        # IOAS_COPY gets fresh iopt_pages for the same user memory instead of
        # sharing the source's: the copy pins (and charges) the pages again
        from vfiospec.reference.iommufd.pages import IoptPages
        out = []
        for pages, start_byte, ln in orig(self, iova, length):
            fresh = IoptPages(pages.k, pages.uptr, pages.npages, pages.writable, pages.account_mode)
            out.append((fresh, start_byte, ln))
        return out
    return get_pages


mutant("copy-pins-again", "IOAS-COPY-SHARES-PAGES",
       "IOAS_COPY pins the source's pages again instead of sharing its iopt_pages",
       replace("iommufd.io_pagetable:IoPageTable.get_pages", _copy_new_pages))


def _update_pinned_no_user_limit(orig):
    def update_pinned(kernel, mode, delta):
        # incr_user_locked_vm without the RLIMIT_MEMLOCK comparison
        if mode == "user":
            kernel.user_locked_vm += delta
            kernel.mm.pinned_vm += delta
            kernel.cover("IOMMUFD-ACCOUNT-USER")
            return
        return orig(kernel, mode, delta)
    return update_pinned


mutant("iommufd-user-rlimit-off", "IOMMUFD-ACCOUNT-USER-RLIMIT",
       "per-user accounting of iommufd pins ignores RLIMIT_MEMLOCK",
       replace("iommufd.pages:update_pinned", _update_pinned_no_user_limit))


def _compat_ctx_per_user(orig):
    def open_iommufd(kernel, compat=True):
        # a context opened as /dev/vfio/vfio charges per user (like /dev/iommu)
        f = orig(kernel, compat)
        if compat:
            from vfiospec.reference.iommufd.pages import ACCOUNT_USER
            f.ictx.account_mode = ACCOUNT_USER
        return f
    return open_iommufd


mutant("compat-ctx-per-user", "IOMMUFD-OPEN-COMPAT-ACCOUNT-MM",
       "an iommufd opened as /dev/vfio/vfio accounts per user instead of per mm",
       replace("iommufd.main:open_iommufd", _compat_ctx_per_user))


# =================================================================== IOAS
def _alloc_from_zero(orig):
    def alloc_iova(self, uptr, length):
        # first fit starts at IOVA 0 instead of PAGE_SIZE
        got = orig(self, uptr, length)
        if uptr % self.k.page_size == 0 and length and length - 1 <= U64:
            last = length - 1
            in_allowed = not self.allowed or any(s <= 0 and last <= l for s, l in self.allowed)
            if in_allowed and self.area_iter_first(0, last) is None and self.reserved_iter_first(0, last) is None:
                return 0
        return got
    return alloc_iova


mutant("auto-iova-zero", "IOAS-MAP-AUTO-IOVA",
       "IOAS_MAP without FIXED_IOVA may allocate IOVA 0",
       replace("iommufd.io_pagetable:IoPageTable.alloc_iova", _alloc_from_zero))


def _ranges_no_emsgsize(orig):
    def iommufd_ioas_iova_ranges(ictx, cmd):
        # a short allowed_iovas array is filled as far as it goes and 0 returned
        try:
            return orig(ictx, cmd)
        except _errno() as e:
            if e.name != "EMSGSIZE":
                raise
            return _result()(0, out=e.out)
    return iommufd_ioas_iova_ranges


mutant("iova-ranges-no-emsgsize", "IOAS-IOVA-RANGES-EMSGSIZE",
       "IOAS_IOVA_RANGES with too short an array succeeds instead of EMSGSIZE",
       replace("iommufd.ioas:iommufd_ioas_iova_ranges", _ranges_no_emsgsize))


def _destroy_busy_ioas(orig):
    def destroy_user(self, obj_id):
        # iommufd_object_remove ignores the users of an IOAS (HWPTs, accesses)
        obj = self.objects.get(obj_id)
        if obj is not None and obj.type == "ioas" and obj.users != 1:
            obj.users = 0
            self.object_remove(obj)
            return
        return orig(self, obj_id)
    return destroy_user


mutant("destroy-busy-ioas", "IOMMU-DESTROY-IOAS-BUSY",
       "IOMMU_DESTROY of an IOAS a HWPT or access still uses succeeds",
       replace("iommufd.main:IommufdCtx.destroy_user", _destroy_busy_ioas))


def _unmap_partial_area(orig):
    def unmap_iova_range(self, start, last):
        # iopt_unmap_iova_range removes an area that only partly lies in the range
        # (instead of stopping with ENOENT): the whole area goes
        for a in list(self.areas_in(start, last)):
            if a.iova < start or a.last > last:
                start, last = min(start, a.iova), max(last, a.last)
        return orig(self, start, last)
    return unmap_iova_range


mutant("ioas-unmap-partial-area", "IOAS-UNMAP-SPLIT-ENOENT",
       "IOAS_UNMAP of a part of an area unmaps the whole area",
       replace("iommufd.io_pagetable:IoPageTable.unmap_iova_range", _unmap_partial_area))


def _patch_hwpt_gate():
    from vfiospec.reference.iommufd import main
    fn, _ = main._IOCTL_OPS["IOMMU_HWPT_ALLOC"]
    main._IOCTL_OPS["IOMMU_HWPT_ALLOC"] = (fn, (6, 2))


mutant("hwpt-alloc-before-6.6", "IOMMUFD-UNKNOWN-IOCTL",
       "the 6.6 version gate of IOMMU_HWPT_ALLOC is off (served on 6.2-6.5)",
       _patch_hwpt_gate)


# =================================================================== iommufd VFIO compat
mutant("compat-bisect-einval", "COMPAT-UNMAP-BISECT-ENOENT",
       "compat UNMAP_DMA bisecting a mapping gives type1's EINVAL instead of ENOENT",
       swap_errno("COMPAT-UNMAP-BISECT-ENOENT", "EINVAL"))


def _compat_vaddr(orig):
    def _map_dma(ictx, arg):
        # iommufd_vfio_map_dma takes VFIO_DMA_MAP_FLAG_VADDR as if it were absent
        vaddr_flag = _C()["VFIO_DMA_MAP_FLAG_VADDR"]
        if arg.get("flags", 0) & vaddr_flag:
            arg = {**arg, "flags": arg["flags"] & ~vaddr_flag}
        return orig(ictx, arg)
    return _map_dma


mutant("compat-accepts-vaddr", "COMPAT-MAP-FLAGS",
       "compat MAP_DMA accepts FLAG_VADDR (native type1's live update) instead of EINVAL",
       replace("iommufd.vfio_compat:_map_dma", _compat_vaddr))


mutant("compat-type1-no-cut", "COMPAT-TYPE1-UNMAP-CUT",
       "compat VFIO_TYPE1_IOMMU mode no longer cuts areas: a sub-range UNMAP_DMA fails",
       replace("iommufd.io_pagetable:IoPageTable.cut_iova", lambda orig: (lambda self, iovas: None)))


def _no_empty_unmap_backport(orig):
    def unmap_empty_succeeds(k):
        # afb47765f923 taken as 6.18-only: its 6.6.y/6.12.y/6.17.y backports forgotten
        return k.at_least(6, 18)
    return unmap_empty_succeeds


mutant("compat-empty-unmap-gate", "COMPAT-UNMAP-EMPTY",
       "compat UNMAP of an empty range succeeds only from 6.18 (stable backports ignored)",
       replace("iommufd.vfio_compat:unmap_empty_succeeds", _no_empty_unmap_backport))


# =================================================================== type1
def _v2_bisect_allowed(orig):
    def do_unmap(self, flags, iova, size):
        # the v2 no-bisect test is skipped: the call runs with v1's rules
        if self.v2 and not flags:
            self.v2 = False
            try:
                return orig(self, flags, iova, size)
            finally:
                self.v2 = True
        return orig(self, flags, iova, size)
    return do_unmap


mutant("type1-v2-bisect-allowed", "TYPE1-UNMAP-NO-BISECT",
       "a v2 UNMAP_DMA that starts or ends inside a mapping is not refused",
       replace("vfio.iommu_type1:Type1.do_unmap", _v2_bisect_allowed))


def _v1_end_bisect_refused(orig):
    def do_unmap(self, flags, iova, size):
        # v1 refuses a range ending inside a mapping (v2's rule) instead of
        # removing the whole mapping
        if not self.v2 and not flags and size and iova + size - 1 <= U64:
            last = iova + size - 1
            d = self.find_dma(last, last)
            if d is not None and d.last != last and d.iova >= iova:
                raise _errno()("EINVAL", "TYPE1-V1-UNMAP-WHOLE-MAPPING")
        return orig(self, flags, iova, size)
    return do_unmap


mutant("type1-v1-whole-mapping-broken", "TYPE1-V1-UNMAP-WHOLE-MAPPING",
       "a v1 UNMAP_DMA ending inside a mapping fails instead of removing the whole mapping",
       replace("vfio.iommu_type1:Type1.do_unmap", _v1_end_bisect_refused))


def _unmap_all_skips_last(orig):
    def do_unmap(self, flags, iova, size):
        # the UNMAP_ALL walk stops one node early: the highest mapping stays
        if flags & _C()["VFIO_DMA_UNMAP_FLAG_ALL"] and not iova and not size and self.starts:
            top = self.dmas[self.starts[-1]]
            self._unlink(top)
            try:
                return orig(self, flags, iova, size)
            finally:
                self._link(top)
        return orig(self, flags, iova, size)
    return do_unmap


mutant("type1-unmap-all-leaves-last", "TYPE1-UNMAP-ALL",
       "UNMAP_DMA with FLAG_ALL leaves the highest mapping in place",
       replace("vfio.iommu_type1:Type1.do_unmap", _unmap_all_skips_last))


def _dma_avail_not_taken(orig):
    def do_map(self, flags, iova, size, vaddr):
        # a new vfio_dma does not consume dma_avail: dma_entry_limit is never reached
        before = len(self.dmas)
        r = orig(self, flags, iova, size, vaddr)
        if len(self.dmas) > before:
            self.dma_avail += 1
        return r
    return do_map


mutant("type1-dma-entry-limit-off", "TYPE1-MAP-DMA-ENTRY-LIMIT",
       "MAP_DMA does not count mappings against dma_entry_limit",
       replace("vfio.iommu_type1:Type1.do_map", _dma_avail_not_taken))


mutant("type1-locked-vm-unlimited", "TYPE1-MAP-RLIMIT-MEMLOCK",
       "type1 pins are charged to locked_vm but RLIMIT_MEMLOCK is never enforced",
       replace("vfio.iommu_type1:Type1._limit_pages", lambda orig: (lambda self: 1 << 62)))


def _unpin_all_keeps_locked(orig):
    def _unmap_unpin_all(self):
        # vfio_iommu_unmap_unpin_all drops every mapping without unaccounting its
        # pages: locked_vm keeps what the backend had charged
        locked = self.k.mm.locked_vm
        orig(self)
        self.k.mm.locked_vm = locked
    return _unmap_unpin_all


mutant("type1-release-keeps-locked-vm", "TYPE1-RELEASE-UNACCOUNTS",
       "the last group leaving (or the backend's release) drops the mappings but keeps their locked_vm",
       replace("vfio.iommu_type1:Type1._unmap_unpin_all", _unpin_all_keeps_locked))


def _wrap_off_by_one(orig):
    def do_map(self, flags, iova, size, vaddr):
        # the wrap test is `iova + size > U64` instead of `iova + size - 1 > U64`:
        # a mapping that ends at the last byte of the IOVA space is refused
        if size and not flags & _C()["VFIO_DMA_MAP_FLAG_VADDR"] and \
                (iova + size - 1 == U64 or vaddr + size - 1 == U64):
            raise _errno()("EOVERFLOW" if self.k.at_least(6, 18) else "EINVAL", "TYPE1-MAP-WRAP")
        return orig(self, flags, iova, size, vaddr)
    return do_map


mutant("type1-wrap-off-by-one", "TYPE1-MAP-WRAP",
       "MAP_DMA's wrap check is off by one: a mapping ending at 2^64-1 is refused",
       replace("vfio.iommu_type1:Type1.do_map", _wrap_off_by_one))


def _invert_eoverflow(orig):
    def f(self, *a):
        # the 6.18 gate of "overflow is EOVERFLOW" reads the other way round
        try:
            return orig(self, *a)
        except _errno() as e:
            if e.req in ("TYPE1-MAP-WRAP", "TYPE1-UNMAP-WRAP") and e.name in ("EINVAL", "EOVERFLOW"):
                e.name = "EOVERFLOW" if e.name == "EINVAL" else "EINVAL"
            raise
    return f


def _patch_eoverflow_gate():
    replace("vfio.iommu_type1:Type1.do_map", _invert_eoverflow)()
    replace("vfio.iommu_type1:Type1.do_unmap", _invert_eoverflow)()


mutant("type1-eoverflow-gate-inverted", "TYPE1-MAP-WRAP",
       "the 6.18 EOVERFLOW version gate is inverted (EOVERFLOW before 6.18, EINVAL after)",
       _patch_eoverflow_gate)


mutant("type1-iova-range-unchecked", "TYPE1-MAP-IOVA-RANGE",
       "MAP_DMA outside the valid IOVA ranges (e.g. over the MSI window) is accepted",
       replace("vfio.iommu_type1:Type1._iova_dma_valid", lambda orig: (lambda self, start, last: True)))


# =================================================================== sPAPR TCE
def _window_end_inclusive(orig):
    def contains(self, ioba):
        # the window's end is taken as inclusive: the IOVA one past it is "in"
        e = ioba >> self.it_page_shift
        return self.it_offset <= e <= self.it_offset + self.it_size
    return contains


mutant("spapr-window-end-off-by-one", "SPAPR-MAP-OUTSIDE-WINDOWS",
       "the DMA window is found for the IOVA one page past its end",
       replace("powerpc.iommu:IommuTable.contains", _window_end_inclusive))


def _ioba_unaligned_ok(orig):
    def check_ioba(tbl, ioba):
        # iommu_tce_check_ioba without the IOMMU-page alignment test
        e = ioba >> tbl.it_page_shift
        return tbl.it_offset <= e < tbl.it_offset + tbl.it_size
    return check_ioba


mutant("spapr-tce-align-dropped", "SPAPR-MAP-IOVA-UNALIGNED-RET1",
       "MAP/UNMAP at an IOVA not aligned to the window's IOMMU page is carried out",
       replace("powerpc.iommu:check_ioba", _ioba_unaligned_ok))


def _partial_unregister(orig):
    def unregister_memory(self, arg):
        # mm_iommu_get matches any registered region holding the range, so a
        # sub-range UNREGISTER drops the whole region
        from vfiospec.reference.powerpc import iommu_api
        vaddr, size = arg.get("vaddr", 0), arg.get("size", 0)
        ps = self.k.page_size
        if size and not vaddr & (ps - 1) and not size & (ps - 1):
            m = iommu_api.mm_iommu(self.k).containing(vaddr)
            if m is not None and vaddr + size <= m.end:
                arg = {**arg, "vaddr": m.ua, "size": m.size}
        return orig(self, arg)
    return unregister_memory


mutant("spapr-partial-unregister", "SPAPR-PREREG-EXACT-UNREGISTER",
       "UNREGISTER_MEMORY of a sub-range of a registered region is accepted",
       replace("vfio.iommu_spapr_tce:TceContainer.unregister_memory", _partial_unregister))


mutant("spapr-overlapping-register", "SPAPR-PREREG-OVERLAP",
       "REGISTER_MEMORY of a range overlapping a registered region is accepted",
       replace("powerpc.iommu_api:MmIommu.overlapping", lambda orig: (lambda self, ua, end: None)))


def _v2_maps_unregistered(orig):
    def build_v2(self, tbl, entry, ua, pages, direction):
        # tce_iommu_build_v2 falls back to v1's pin-at-map-time when the memory
        # was never pre-registered, instead of failing with EINVAL
        from vfiospec.reference.powerpc import iommu_api
        if iommu_api.mm_iommu_lookup(self.k, ua, tbl.page_size) is None:
            return self.build(tbl, entry, ua, pages, direction)
        return orig(self, tbl, entry, ua, pages, direction)
    return build_v2


mutant("spapr-v2-map-unregistered", "SPAPR-V2-MAP-PREREG-ONLY",
       "a v2 MAP_DMA of memory that was never pre-registered is pinned and mapped (v1's way)",
       replace("vfio.iommu_spapr_tce:TceContainer.build_v2", _v2_maps_unregistered))


def _put_ignores_mapped(orig):
    def mm_iommu_put(kernel, mem):
        # the last put releases the region even while TCEs still map into it
        if mem.used == 1 and mem.mapped > 1:
            mem.mapped = 1
        return orig(kernel, mem)
    return mm_iommu_put


mutant("spapr-unregister-mapped-releases", "SPAPR-PREREG-UNREGISTER-MAPPED",
       "the last reference to a pre-registered region frees it while TCEs still map it",
       replace("powerpc.iommu_api:mm_iommu_put", _put_ignores_mapped))


def _enable_uncharged(orig):
    def account_locked_vm(kernel, pages, inc, req):
        # tce_iommu_enable / tce_iommu_disable skip the locked_vm charge of the
        # default window
        if req == "SPAPR-V1-ENABLE-ACCOUNTING":
            return None
        return orig(kernel, pages, inc, req)
    return account_locked_vm


mutant("spapr-v1-enable-uncharged", "SPAPR-V1-ENABLE-ACCOUNTING",
       "v1 ENABLE does not charge the default window to locked_vm (RLIMIT_MEMLOCK not enforced)",
       replace("powerpc.iommu_api:account_locked_vm", _enable_uncharged))


def _patch_three_windows():
    from vfiospec.reference.powerpc import iommu
    iommu.IOMMU_TABLE_GROUP_MAX_TABLES = 3


mutant("spapr-third-window", "SPAPR-TCE-CREATE-MAX-WINDOWS",
       "a container holds three DMA windows instead of IOMMU_TABLE_GROUP_MAX_TABLES = 2",
       _patch_three_windows)


# =================================================================== mdev
def _init_no_take(orig):
    def init_dev(self, state):
        # mtty_init_dev checks the free ports but does not take them
        n_before = self.avail_ports
        orig(self, state)
        self.avail_ports = n_before
    return init_dev


def _release_no_give(orig):
    def release_dev(self, state):
        return None
    return release_dev


def _patch_available_not_decremented():
    replace("mdev.mtty:MttyParent.init_dev", _init_no_take)()
    replace("mdev.mtty:MttyParent.release_dev", _release_no_give)()


mutant("mdev-available-not-decremented", "MDEV-AVAILABLE-INSTANCES",
       "creating an mtty mdev leaves available_instances unchanged",
       _patch_available_not_decremented)


def _release_loses_instance(orig):
    def release_dev(self, state):
        # mtty_release_dev does not give the ports back
        return None
    return release_dev


mutant("mdev-remove-keeps-instance", "MDEV-REMOVE-RETURNS-INSTANCE",
       "removing an mdev does not return its instance to available_instances",
       replace("mdev.mtty:MttyParent.release_dev", _release_loses_instance))


def _duplicate_uuid(orig):
    def mdev_device_create(kernel, parent, type_name, uuid):
        # mdev_device_create without the mdev_list UUID test: the new mdev
        # shadows the old one
        from vfiospec.reference.mdev.mdev_core import mdevs
        table = mdevs(kernel)
        old = table.pop(uuid, None)
        try:
            return orig(kernel, parent, type_name, uuid)
        except Exception:
            if old is not None:
                table[uuid] = old
            raise
    return mdev_device_create


mutant("mdev-duplicate-uuid", "MDEV-CREATE-DUPLICATE",
       "creating an mdev with the UUID of an existing one succeeds",
       replace("mdev.mdev_core:mdev_device_create", _duplicate_uuid))


mutant("mdev-remove-zero-removes", "MDEV-REMOVE-ZERO",
       "writing 0 to an mdev's remove attribute removes it",
       replace("mdev.mdev_sysfs:kstrtoul", lambda orig: (lambda s: orig(s) or 1)))
