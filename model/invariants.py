"""The invariants of the abstract state, as z3 formulas over a State.

Each has an ID, a docstring in plain words and its source (seed document and
kernel function).  `aux=True` marks the strengthening invariants the inductive
proof needs (well-formedness and bookkeeping facts); they are proved and checked
exactly like the others.

The same functions serve the prover (over symbolic states), the explorer (BMC)
and the runtime checker (over a concrete state, see runtime.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from .schema import (DDW_BASE_PAGES, DMA32_PAGES, IOMMU_NAMES, IOMMU_NONE, IOMMU_SPAPR_V1, IOMMU_SPAPR_V2, SPAPR_KINDS, SPAPR_PAGE_SIZES, TYPE1_KINDS, State,
                     aligned, count, disjoint, total, within)
from .transitions import derived_pin, owner_ictx


@dataclass(frozen=True)
class Invariant:
    id: str
    fn: object
    doc: str
    source: str
    aux: bool = False

    def __call__(self, s: State):
        return self.fn(s)


def _all(xs):
    xs = list(xs)
    return z3.And(xs) if xs else z3.BoolVal(True)


def _any(xs):
    xs = list(xs)
    return z3.Or(xs) if xs else z3.BoolVal(False)


# ---------------------------------------------------------------- devices, groups, attachments
def one_bind(s):
    return _all(count(s.bind[d]) <= 1 for d in range(s.cfg.n_dev))


def path_exclusive(s):
    cfg = s.cfg
    out = []
    for d in range(cfg.n_dev):
        g = cfg.grp_of[d]
        for i in range(cfg.n_ictx):
            out.append(z3.Implies(s.bind[d][i], z3.And(z3.Not(s.gopen[g]), s.gcont[g] == -1, s.gictx[g] == -1,
                                                        z3.Or(s.demu[d], s.gown[g] == owner_ictx(cfg, i)))))
    for g in range(cfg.n_grp):
        emulated = _any(s.demu[d] for d in cfg.devs_of(g))    # an mdev's group claims no DMA ownership
        out.append(z3.Implies(s.gcont[g] >= 0, z3.And(s.gopen[g], z3.Or(emulated, s.gown[g] == s.gcont[g]),
                                                       s.gictx[g] == -1)))
        out.append(z3.Implies(s.gictx[g] >= 0, s.gopen[g]))
    return _all(out)


def group_owner(s):
    cfg = s.cfg
    out = []
    for g in range(cfg.n_grp):
        devs = cfg.devs_of(g)
        out.append(z3.Or(s.gown[g] == -1, z3.And(s.gown[g] >= 0, s.gown[g] < cfg.n_cont),
                         z3.Or([s.gown[g] == owner_ictx(cfg, i) for i in range(cfg.n_ictx)])))
        out.append(z3.And(s.gcont[g] >= -1, s.gcont[g] < cfg.n_cont, s.gictx[g] >= -1, s.gictx[g] < cfg.n_ictx))
        out.append(z3.Implies(z3.And(s.gown[g] >= 0, s.gown[g] < cfg.n_cont), s.gcont[g] == s.gown[g]))
        for i in range(cfg.n_ictx):
            out.append(z3.Implies(s.gown[g] == owner_ictx(cfg, i),
                                  z3.Or(s.gictx[g] == i, _any(s.bind[d][i] for d in devs))))
    return _all(out)


def one_attach(s):
    return _all(count(s.attached[d]) <= 1 for d in range(s.cfg.n_dev))


def one_hwpt_per_group(s):
    cfg = s.cfg
    out = []
    for g in range(cfg.n_grp):
        devs = cfg.devs_of(g)
        for d1 in devs:
            for d2 in devs:
                for h1 in range(cfg.n_hwpt):
                    for h2 in range(cfg.n_hwpt):
                        if h1 != h2:
                            out.append(z3.Not(z3.And(s.attached[d1][h1], s.attached[d2][h2])))
    return _all(out)


def attach_bound(s):
    cfg = s.cfg
    out = []
    for d in range(cfg.n_dev):
        for h in range(cfg.n_hwpt):
            g = cfg.grp_of[d]
            same_ctx = _any(z3.And(z3.Or(s.bind[d][i], s.gictx[g] == i), _any(z3.And(s.hioas[h] == q, s.qictx[q] == i)
                                                      for q in range(cfg.n_ioas))) for i in range(cfg.n_ictx))
            out.append(z3.Implies(s.attached[d][h], same_ctx))
    return _all(out)


def hwpt_well_formed(s):
    cfg = s.cfg
    out = []
    for h in range(cfg.n_hwpt):
        out.append(z3.Implies(z3.And(s.hlive[h], s.hauto[h]), _any(s.attached[d][h] for d in range(cfg.n_dev))))
        for h2 in range(h + 1, cfg.n_hwpt):
            out.append(z3.Not(z3.And(s.hlive[h], s.hlive[h2], s.hauto[h], s.hauto[h2], s.hioas[h] == s.hioas[h2])))
    for q in range(cfg.n_ioas):
        out.append(z3.Implies(s.qlive[q], z3.And(s.qictx[q] >= 0, s.qictx[q] < cfg.n_ictx)))
    return _all(out)


def no_dangling(s):
    cfg = s.cfg
    out = []
    for d in range(cfg.n_dev):
        for h in range(cfg.n_hwpt):
            out.append(z3.Implies(s.attached[d][h], s.hlive[h]))
    for h in range(cfg.n_hwpt):
        out.append(z3.Implies(s.hlive[h], _any(z3.And(s.hioas[h] == q, s.qlive[q]) for q in range(cfg.n_ioas))))
    for a in range(cfg.n_area):
        out.append(z3.Implies(s.alive[a], z3.And(
            _any(z3.And(s.aioas[a] == q, s.qlive[q]) for q in range(cfg.n_ioas)),
            _any(z3.And(s.aobj[a] == o, s.olive[o], s.aoff[a] + s.alen[a] <= s.olen[o]) for o in range(cfg.n_obj)))))
    for m in range(cfg.n_map):
        out.append(z3.Implies(s.mlive[m], _any(z3.And(s.mcont[m] == c, _kind(s.ciommu[c], TYPE1_KINDS))
                                               for c in range(cfg.n_cont))))
    for c in range(cfg.n_cont):
        for n in range(cfg.n_win):
            out.append(z3.Implies(s.wlive[c][n], _kind(s.ciommu[c], SPAPR_KINDS)))
    for t in range(cfg.n_tce):
        out.append(z3.Implies(s.tlive[t], _any(z3.And(s.tcont[t] == c, s.tnum[t] == n, s.wlive[c][n])
                                               for c in range(cfg.n_cont) for n in range(cfg.n_win))))
    for r in range(cfg.n_reg):
        out.append(z3.Implies(z3.And(s.rlive[r], s.rcont[r] >= 0),
                              _any(z3.And(s.rcont[r] == c, _kind(s.ciommu[c], SPAPR_KINDS)) for c in range(cfg.n_cont))))
    for i in range(cfg.n_mdev):
        out.append(z3.Implies(s.ilive[i], z3.And(s.itype[i] >= 0, s.itype[i] < cfg.n_mtype)))
    return _all(out)


def container_has_group(s):
    cfg = s.cfg
    out = []
    for c in range(cfg.n_cont):
        out.append(z3.Implies(s.ciommu[c] != IOMMU_NONE, _any(s.gcont[g] == c for g in range(cfg.n_grp))))
        out.append(_kind(s.ciommu[c], tuple(IOMMU_NAMES)))
        out.append(z3.Implies(_kind(s.ciommu[c], TYPE1_KINDS), z3.Not(s.spapr)))
        out.append(z3.Implies(_kind(s.ciommu[c], SPAPR_KINDS), s.spapr))
        out.append(z3.Implies(s.cen[c], _kind(s.ciommu[c], SPAPR_KINDS)))
    return _all(out)


# ---------------------------------------------------------------- IOAS, pins, accounting
def areas_disjoint(s):
    cfg = s.cfg
    out = []
    for a in range(cfg.n_area):
        out.append(z3.Implies(s.alive[a], z3.And(s.alen[a] >= 1, s.aiova[a] >= 0, s.aoff[a] >= 0)))
        for b in range(a + 1, cfg.n_area):
            out.append(z3.Implies(z3.And(s.alive[a], s.alive[b], s.aioas[a] == s.aioas[b]),
                                  disjoint(s.aiova[a], s.alen[a], s.aiova[b], s.alen[b])))
    return _all(out)


def object_well_formed(s):
    cfg = s.cfg
    out = []
    for o in range(cfg.n_obj):
        out.append(z3.Implies(s.olive[o], z3.And(s.olen[o] >= 1, s.olen[o] <= cfg.n_upages, s.ova[o] >= 0)))
        out.append(z3.Implies(s.olive[o], _any(z3.And(s.alive[a], s.aobj[a] == o) for a in range(cfg.n_area))))
    return _all(out)


def single_pin(s):
    cfg = s.cfg
    return _all(z3.And(s.opin[o][k] >= 0, s.opin[o][k] <= 1) for o in range(cfg.n_obj) for k in range(cfg.n_upages))


def pin_exact(s):
    cfg = s.cfg
    return _all(s.opin[o][k] == z3.If(derived_pin(s, o, k), 1, 0)
                for o in range(cfg.n_obj) for k in range(cfg.n_upages))


def _kind(x, kinds):
    return z3.Or([x == k for k in kinds])


def iommufd_pinned(s, mode=None):
    cfg = s.cfg
    return total([s.opin[o][k] if mode is None else z3.If(s.omode[o] == mode, s.opin[o][k], 0)
                  for o in range(cfg.n_obj) for k in range(cfg.n_upages)])


def type1_locked(s):
    cfg = s.cfg
    return total([z3.If(s.mlive[m], s.macct[m], 0) for m in range(cfg.n_map)] + list(s.v1acct))


def spapr_locked(s):
    cfg = s.cfg
    return total([z3.If(s.rlive[r], s.rlen[r], 0) for r in range(cfg.n_reg)] +
                 [z3.If(s.wlive[c][n], s.wacct[c][n], 0) for c in range(cfg.n_cont) for n in range(cfg.n_win)])


def accounting(s):
    return z3.And(s.locked_vm == type1_locked(s) + spapr_locked(s) + iommufd_pinned(s, 2),
                  s.pinned_vm == iommufd_pinned(s), s.user_locked_vm == iommufd_pinned(s, 1))


def accounting_nonneg(s):
    cfg = s.cfg
    out = [z3.Implies(s.mlive[m], z3.And(s.mlen[m] >= 1, s.macct[m] >= 0)) for m in range(cfg.n_map)]
    out += [x >= 0 for x in s.v1acct]
    out += [z3.Implies(s.olive[o], z3.And(s.omode[o] >= 0, s.omode[o] <= 2, z3.Implies(s.cap, s.omode[o] == 0),
                                          z3.Implies(z3.Not(s.cap), s.omode[o] >= 1)))
            for o in range(cfg.n_obj)]
    out += [s.oacc[o][k] >= 0 for o in range(cfg.n_obj) for k in range(cfg.n_upages)]
    out += [z3.Implies(s.rlive[r], s.rlen[r] >= 1) for r in range(cfg.n_reg)]
    out += [z3.Implies(s.wlive[c][n], s.wacct[c][n] >= 0) for c in range(cfg.n_cont) for n in range(cfg.n_win)]
    out += [s.rlimit >= 0]
    return _all(out)


def locked_within_limit(s):
    return z3.Implies(z3.Not(s.cap), z3.And(s.locked_vm <= s.rlimit, s.user_locked_vm <= s.rlimit))


def type1_disjoint(s):
    cfg = s.cfg
    out = []
    for m in range(cfg.n_map):
        for k in range(m + 1, cfg.n_map):
            out.append(z3.Implies(z3.And(s.mlive[m], s.mlive[k], s.mcont[m] == s.mcont[k]),
                                  disjoint(s.miova[m], s.mlen[m], s.miova[k], s.mlen[k])))
    return _all(out)


# ---------------------------------------------------------------- sPAPR
def _tce_window(s, t, fn):
    """fn(c, n) for the window of TCE t, as a disjunction over the finite windows."""
    cfg = s.cfg
    return _any(z3.And(s.tcont[t] == c, s.tnum[t] == n, fn(c, n)) for c in range(cfg.n_cont) for n in range(cfg.n_win))


def tce_in_window(s):
    cfg = s.cfg
    return _all(z3.Implies(s.tlive[t], _tce_window(s, t, lambda c, n: z3.And(
        s.wlive[c][n], s.wstart[c][n] <= s.tiova[t],
        s.tiova[t] + s.wps[c][n] <= s.wstart[c][n] + s.wsize[c][n]))) for t in range(cfg.n_tce))


def tce_aligned(s):
    cfg = s.cfg
    return _all(z3.Implies(s.tlive[t], _tce_window(s, t, lambda c, n: z3.And(
        aligned(s.tiova[t], s.wps[c][n]), aligned(s.tva[t], s.wps[c][n]))))
        for t in range(cfg.n_tce))


def tce_unique(s):
    cfg = s.cfg
    return _all(z3.Not(z3.And(s.tlive[t], s.tlive[u], s.tcont[t] == s.tcont[u], s.tiova[t] == s.tiova[u]))
                for t in range(cfg.n_tce) for u in range(t + 1, cfg.n_tce))


def window_well_formed(s):
    cfg = s.cfg
    out = []
    for c in range(cfg.n_cont):
        for n in range(cfg.n_win):
            fits = [s.wsize[c][n] >= s.wps[c][n], aligned(s.wsize[c][n], s.wps[c][n]),
                    z3.Or([s.wps[c][n] == x for x in SPAPR_PAGE_SIZES]), s.wsize[c][n] <= DDW_BASE_PAGES,
                    z3.Or(s.wstart[c][n] == 0, s.wstart[c][n] == DDW_BASE_PAGES)]
            fits.append(z3.Implies(s.wstart[c][n] == 0, z3.And(s.wsize[c][n] <= DMA32_PAGES, s.wps[c][n] == 1)))
            if n > 0:
                fits.append(s.wstart[c][n] == DDW_BASE_PAGES)
            out.append(z3.Implies(s.wlive[c][n], z3.And(fits)))
    return _all(out)


def windows_disjoint(s):
    cfg = s.cfg
    out = []
    for c in range(cfg.n_cont):
        for n in range(cfg.n_win):
            for m in range(n + 1, cfg.n_win):
                out.append(z3.Implies(z3.And(s.wlive[c][n], s.wlive[c][m]),
                                      disjoint(s.wstart[c][n], s.wsize[c][n], s.wstart[c][m], s.wsize[c][m])))
    return _all(out)


def windows_max(s):
    cfg = s.cfg
    return _all(count(s.wlive[c]) <= s.max_windows for c in range(cfg.n_cont))


def prereg_identical_or_disjoint(s):
    cfg = s.cfg
    out = []
    for r in range(cfg.n_reg):
        for k in range(r + 1, cfg.n_reg):
            out.append(z3.Implies(z3.And(s.rlive[r], s.rlive[k]), disjoint(s.rva[r], s.rlen[r], s.rva[k], s.rlen[k])))
    return _all(out)


def v2_map_from_prereg(s):
    cfg = s.cfg
    out = []
    for t in range(cfg.n_tce):
        ps = _tce_window(s, t, lambda c, n: z3.BoolVal(True))
        inreg = _any(z3.And(s.treg[t] == r, _tce_window(s, t, lambda c, n: within(s.tva[t], s.wps[c][n], s.rva[r],
                                                                                   s.rlen[r])))
                     for r in range(cfg.n_reg))
        v2 = _any(z3.And(s.tcont[t] == c, s.ciommu[c] == IOMMU_SPAPR_V2) for c in range(cfg.n_cont))
        out.append(z3.Implies(z3.And(s.tlive[t], v2), z3.And(ps, inreg)))
    return _all(out)


def prereg_mapped_stays(s):
    cfg = s.cfg
    return _all(z3.Implies(z3.And(s.tlive[t], s.treg[t] == r), s.rlive[r])
                for t in range(cfg.n_tce) for r in range(cfg.n_reg))


def spapr_enabled(s):
    """v2 only: a v1 container keeps its TCEs across VFIO_IOMMU_DISABLE (tce_iommu_disable
    un-charges the window but clears nothing)."""
    cfg = s.cfg
    return _all(z3.Implies(s.tlive[t], _any(z3.And(s.tcont[t] == c, z3.Or(s.cen[c], s.ciommu[c] == IOMMU_SPAPR_V1))
                                            for c in range(cfg.n_cont)))
                for t in range(cfg.n_tce))


# ---------------------------------------------------------------- mdev
def mdev_conserved(s):
    cfg = s.cfg
    return _all(s.avail[t] + total([z3.If(z3.And(s.ilive[i], s.itype[i] == t), s.icost[i], 0)
                                    for i in range(cfg.n_mdev)]) == s.mtotal[t]
                for t in range(cfg.n_mtype))


def mdev_avail_nonneg(s):
    return _all([a >= 0 for a in s.avail] + [z3.Implies(s.ilive[i], s.icost[i] >= 1) for i in range(s.cfg.n_mdev)])


INVARIANTS: list[Invariant] = [
    Invariant("INV-ONE-BIND-PER-DEVICE", one_bind,
              "A device is bound to at most one iommufd.",
              "seed 003 (VFIO device cdev): 'a device can be bound to one iommufd only'; "
              "drivers/vfio/device_cdev.c vfio_df_ioctl_bind_iommufd (access_granted -> EINVAL)"),
    Invariant("INV-PATH-EXCLUSIVE", path_exclusive,
              "A device bound through its cdev has its group node closed and its group in no container; "
              "a group in a container is open and owned by that container.",
              "seed 003: 'the group path and the cdev path are exclusive'; drivers/vfio/group.c "
              "vfio_device_block_group, vfio_group_fops_open; drivers/iommu/iommu.c iommu_group_claim_dma_owner"),
    Invariant("INV-GROUP-OWNER", group_owner,
              "The DMA owner of an iommu_group is nobody, its container, or the one iommufd its bound devices use.",
              "drivers/iommu/iommu.c iommu_group_claim_dma_owner / iommu_device_claim_dma_owner", aux=True),
    Invariant("INV-ONE-ATTACH-PER-DEVICE", one_attach,
              "A device is attached to at most one HWPT (a second attach replaces the first).",
              "seed 003: ATTACH_IOMMUFD_PT replaces; drivers/iommu/iommufd/device.c iommufd_device_replace"),
    Invariant("INV-ONE-HWPT-PER-GROUP", one_hwpt_per_group,
              "All attached devices of one iommu_group are attached to the same HWPT.",
              "drivers/iommu/iommufd/device.c iommufd_hw_pagetable_attach (igroup->hwpt != hwpt -> EINVAL)"),
    Invariant("INV-ATTACH-BOUND", attach_bound,
              "An attached device is bound to the iommufd that owns the IOAS of its HWPT.",
              "drivers/vfio/device_cdev.c vfio_df_ioctl_attach_pt (access_granted); iommufd_get_object", aux=True),
    Invariant("INV-HWPT-WELL-FORMED", hwpt_well_formed,
              "An automatic HWPT has an attached device, and an IOAS has at most one automatic HWPT.",
              "drivers/iommu/iommufd/device.c iommufd_device_auto_get_domain (reuses a compatible HWPT)", aux=True),
    Invariant("INV-NO-DANGLING-OBJECT", no_dangling,
              "No destroyed object is still referenced: attachments name live HWPTs, HWPTs live IOASes, areas "
              "live IOASes and iopt_pages, mappings/windows/TCEs/registrations live backends of their container.",
              "drivers/iommu/iommufd/main.c iommufd_object_remove (users -> EBUSY); "
              "drivers/vfio/container.c vfio_group_detach_container"),
    Invariant("INV-CONTAINER-HAS-GROUP", container_has_group,
              "A container with an IOMMU backend has a group; the backend matches the platform.",
              "drivers/vfio/container.c vfio_ioctl_set_iommu, vfio_group_detach_container", aux=True),
    Invariant("INV-AREAS-DISJOINT", areas_disjoint,
              "The areas of one IOAS do not overlap.",
              "seed 004 (iommufd): IOMMU_IOAS_MAP; drivers/iommu/iommufd/io_pagetable.c iopt_alloc_area_pages "
              "(EEXIST)"),
    Invariant("INV-OBJECT-WELL-FORMED", object_well_formed,
              "A live iopt_pages is mapped by at least one area and is within the model's bound.",
              "drivers/iommu/iommufd/io_pagetable.c iopt_unmap_iova_range (last area puts the pages)", aux=True),
    Invariant("INV-SINGLE-PIN-PER-PAGE", single_pin,
              "A page of an iopt_pages is pinned at most once, however many areas, IOASes or domains map it.",
              "Documentation/userspace-api/iommufd.rst: 'a page is pinned only once'; "
              "drivers/iommu/iommufd/pages.c pfn_reader"),
    Invariant("INV-PIN-EXACT", pin_exact,
              "A page is pinned exactly when some area maps it into an IOAS with a domain.",
              "drivers/iommu/iommufd/pages.c iopt_area_fill_domain / iopt_area_unfill_domain", aux=True),
    Invariant("INV-ACCOUNTING-EQUALS-PINNED", accounting,
              "locked_vm is the type1 mappings plus the sPAPR registrations and TCE tables; iommufd's "
              "pinned_vm and user locked_vm are the pages it pins (none charged with CAP_IPC_LOCK).",
              "drivers/vfio/vfio_iommu_type1.c vfio_lock_acct; arch/powerpc/mm/book3s64/iommu_api.c "
              "mm_iommu_adjust_locked_vm; drivers/iommu/iommufd/pages.c do_update_pinned"),
    Invariant("INV-ACCOUNTING-WELL-FORMED", accounting_nonneg,
              "Accounted sizes are positive.", "model bookkeeping", aux=True),
    Invariant("INV-LOCKED-WITHIN-LIMIT", locked_within_limit,
              "Without CAP_IPC_LOCK, locked_vm and the user's iommufd locked_vm stay within RLIMIT_MEMLOCK.",
              "seed 000 (vfio.rst): 'mappings are accounted against the user's locked memory limit'; "
              "vfio_pin_pages_remote, mm_iommu_adjust_locked_vm, incr_user_locked_vm"),
    Invariant("INV-TYPE1-MAPS-DISJOINT", type1_disjoint,
              "The type1 mappings of one container do not overlap.",
              "drivers/vfio/vfio_iommu_type1.c vfio_dma_do_map (vfio_find_dma -> EEXIST)"),
    Invariant("INV-TCE-IN-WINDOW", tce_in_window,
              "Every TCE lies inside a DMA window of its container.",
              "seed 000 (vfio.rst, sPAPR): DMA windows; drivers/vfio/vfio_iommu_spapr_tce.c tce_iommu_find_table"),
    Invariant("INV-TCE-ALIGNED", tce_aligned,
              "Every TCE's IOVA and user address are aligned to its window's IOMMU page size.",
              "drivers/vfio/vfio_iommu_spapr_tce.c tce_iommu_ioctl VFIO_IOMMU_MAP_DMA (page size checks)"),
    Invariant("INV-TCE-UNIQUE", tce_unique,
              "One TCE per IOVA of a container.", "iommu_tce_xchg_no_kill replaces the entry", aux=True),
    Invariant("INV-WINDOW-WELL-FORMED", window_well_formed,
              "A window is whole IOMMU pages of a supported size and fits below the next table's bus address.",
              "drivers/vfio/vfio_iommu_spapr_tce.c tce_iommu_create_window", aux=True),
    Invariant("INV-WINDOWS-DISJOINT", windows_disjoint,
              "The DMA windows of a container do not overlap.",
              "drivers/vfio/vfio_iommu_spapr_tce.c tce_iommu_create_window (table slot -> bus offset)"),
    Invariant("INV-WINDOWS-MAX", windows_max,
              "A container has at most the platform's number of DMA windows.",
              "drivers/vfio/vfio_iommu_spapr_tce.c tce_iommu_find_free_table (ENOSPC)"),
    Invariant("INV-PREREG-IDENTICAL-OR-DISJOINT", prereg_identical_or_disjoint,
              "Two pre-registered regions of the mm are the same region or disjoint (an identical registration "
              "shares the region).",
              "seed 000 (vfio.rst sPAPR): REGISTER_MEMORY; arch/powerpc/mm/book3s64/iommu_api.c mm_iommu_do_alloc"),
    Invariant("INV-V2-MAP-FROM-PREREG", v2_map_from_prereg,
              "Every v2 TCE maps memory inside the pre-registered region it was taken from.",
              "drivers/vfio/vfio_iommu_spapr_tce.c tce_iommu_build_v2 (mm_iommu_lookup)"),
    Invariant("INV-PREREG-MAPPED-STAYS", prereg_mapped_stays,
              "A region that TCEs still map stays registered (an UNREGISTER returns 0 and the region leaks, "
              "as observed on 6.12).",
              "arch/powerpc/mm/book3s64/iommu_api.c mm_iommu_put (EBUSY ignored by tce_iommu_prereg_free); "
              "kernel-semantics 61"),
    Invariant("INV-SPAPR-ENABLED", spapr_enabled,
              "TCEs exist only in an enabled container (or a v1 container, which keeps them after DISABLE).", "tce_iommu_ioctl (!container->enabled -> EPERM)",
              aux=True),
    Invariant("INV-MDEV-CONSERVED", mdev_conserved,
              "For every mdev parent's pool, the free units (mtty: ports) plus the units its live instances hold "
              "is what it offered at boot (available_instances = free ports / ports per instance).",
              "seed 002 (vfio-mediated-device.txt): available_instances; samples/vfio-mdev/mtty.c "
              "mtty_init_dev / mtty_release_dev"),
    Invariant("INV-MDEV-AVAILABLE-NONNEG", mdev_avail_nonneg,
              "available_instances is never negative.", "mdev_sysfs.c available_instances_show", aux=True),
]

BY_ID = {i.id: i for i in INVARIANTS}


def conjunction(s: State):
    return z3.And([inv(s) for inv in INVARIANTS])
