"""The abstract actions as z3 transition relations, one per action of
vfiospec.reference.actions, each naming the requirement IDs it implements.

An action is `ActionDef(name, reqs, params, body)`.  `body(s, p)` returns the
checks the kernel makes, in the kernel's order (the first that holds decides
the errno), the state the call leaves on success, and `enabled`: the action is
expressible in the bounded model (a free slot exists, the fd a trace would use
exists).  `transition(action, s, p)` gives the errno term and the post-state:
on an error the state is unchanged (every call here is all-or-nothing in the
kernel).

Units are pages (see schema.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import z3

from .schema import (DDW_BASE_PAGES, DMA32_PAGES, ERRNO_CODE, IOMMU_NONE, IOMMU_SPAPR_V2, IOMMU_TYPE1V2, IOVA_PAGES,
                     SPAPR_KINDS, SPAPR_MODEL_PAGE_SIZES, USER_PAGES, Config, State, aligned, count, disjoint, sel, total,
                     upd, within)

OK = ERRNO_CODE["OK"]


@dataclass(frozen=True)
class Param:
    """An integer parameter of an action with lo <= p < hi (hi None: unbounded)."""
    name: str
    lo: object = 0          # int or fn(cfg)
    hi: object = None       # int, fn(cfg) or None
    doc: str = ""

    def bounds(self, cfg: Config):
        lo = self.lo(cfg) if callable(self.lo) else self.lo
        hi = self.hi(cfg) if callable(self.hi) else self.hi
        return lo, hi


@dataclass
class Checks:
    items: list = field(default_factory=list)

    def fail(self, cond, errno: str):
        self.items.append((z3.BoolVal(cond) if isinstance(cond, bool) else cond, errno))

    def errno(self):
        e = z3.IntVal(OK)
        for cond, name in reversed(self.items):
            e = z3.If(cond, ERRNO_CODE[name], e)
        return e

    def ok(self):
        return z3.And([z3.Not(c) for c, _ in self.items]) if self.items else z3.BoolVal(True)


@dataclass(frozen=True)
class ActionDef:
    name: str
    reqs: tuple[str, ...]
    params: tuple[Param, ...]
    body: object
    doc: str = ""
    platform: str = "any"        # "vtd", "spapr" or "any": the platform kind the action exists on

    def param_terms(self, prefix: str) -> dict:
        return {p.name: z3.Int(f"{prefix}{p.name}") for p in self.params}

    def domain(self, cfg: Config, p: dict):
        cs = []
        for prm in self.params:
            lo, hi = prm.bounds(cfg)
            if lo is not None:
                cs.append(p[prm.name] >= lo)
            if hi is not None:
                cs.append(p[prm.name] < hi)
        return z3.And(cs) if cs else z3.BoolVal(True)


@dataclass
class Outcome:
    errno: z3.ArithRef
    ok: z3.BoolRef
    post: State
    enabled: z3.BoolRef


def _merge(ok, new, old):
    if isinstance(new, list):
        return [_merge(ok, n, o) for n, o in zip(new, old)]
    if new is old:
        return old
    return z3.If(ok, new, old)


def transition(action: ActionDef, s: State, p: dict) -> Outcome:
    checks, new, enabled = action.body(s, p)
    ok = checks.ok()
    vals = {name: _merge(ok, new.get(name), s.get(name)) for name in s._v}
    platform = z3.BoolVal(True)
    if action.platform == "spapr":
        platform = s.spapr
    elif action.platform == "vtd":
        platform = z3.Not(s.spapr)
    return Outcome(checks.errno(), ok, State(s.cfg, vals), z3.And(enabled, platform, action.domain(s.cfg, p)))


# ---------------------------------------------------------------- shared helpers
def grp(cfg: Config, d):
    return sel([z3.IntVal(g) for g in cfg.grp_of], d)


def owner_ictx(cfg: Config, i):
    return cfg.n_cont + i


def has_domain(s: State, q):
    """IOAS q has at least one domain (a live HWPT of it)."""
    return z3.Or([z3.And(s.hlive[h], s.hioas[h] == q) for h in range(s.cfg.n_hwpt)])


def derived_pin(s: State, o: int, k: int):
    """Page k of iopt_pages o is pinned: some area maps it into an IOAS with a domain
    (iopt_area_fill_domains / pfn_reader: pages are pinned while a domain holds them)."""
    return z3.And(s.olive[o], k < s.olen[o], z3.Or([s.oacc[o][k] > 0] + [
        z3.And(s.alive[a], s.aobj[a] == o, s.aoff[a] <= k, k < s.aoff[a] + s.alen[a], has_domain(s, s.aioas[a]))
        for a in range(s.cfg.n_area)]))


def repin(old, needed):
    """The pin count of a page after a change of who needs it: pinned once while
    needed, however many areas or domains need it (pages.c: "a page is pinned only
    once"), unpinned when nothing needs it."""
    return z3.If(needed, z3.If(old == 0, 1, old), 0)


# Actions may override how they re-pin (the weakening tests use this).
REPIN = {}


def apply_pins(action: str, s_old: State, s_new: State):
    """Recompute pins after an action changed areas/domains; returns (state, delta)."""
    fn = REPIN.get(action, repin)
    cfg = s_old.cfg
    pins = [[fn(s_old.opin[o][k], derived_pin(s_new, o, k)) for k in range(cfg.n_upages)] for o in range(cfg.n_obj)]
    per = [total([pins[o][k] - s_old.opin[o][k] for k in range(cfg.n_upages)]) for o in range(cfg.n_obj)]
    delta = total(per)
    d_user = total([z3.If(s_new.omode[o] == 1, per[o], 0) for o in range(cfg.n_obj)])
    d_mm = total([z3.If(s_new.omode[o] == 2, per[o], 0) for o in range(cfg.n_obj)])
    st = s_new.updated(opin=pins, pinned_vm=s_new.pinned_vm + delta, user_locked_vm=s_new.user_locked_vm + d_user,
                       locked_vm=s_new.locked_vm + d_mm)
    return st, (d_user, d_mm)


def pin_limit_exceeded(s: State, delta):
    """do_update_pinned: per-user (incr_user_locked_vm) or per-mm accounting beyond
    RLIMIT_MEMLOCK -> ENOMEM (no accounting at all for pages mapped with CAP_IPC_LOCK)."""
    d_user, d_mm = delta
    return z3.Or(z3.And(d_user > 0, s.user_locked_vm + d_user > s.rlimit),
                 z3.And(d_mm > 0, s.locked_vm + d_mm > s.rlimit))


def release_container(s: State, c, when) -> State:
    """The IOMMU backend of container c is released (last group out, or the container
    closes): type1 drops every vfio_dma (vfio_iommu_type1_release), sPAPR clears every
    TCE, frees its tables and puts every region it registered (tce_iommu_release)."""
    cfg = s.cfg
    is_c = lambda x: z3.And(when, x == c)   # noqa: E731
    # type1
    drop_m = [z3.And(s.mlive[m], is_c(s.mcont[m])) for m in range(cfg.n_map)]
    mlive = [z3.And(s.mlive[m], z3.Not(drop_m[m])) for m in range(cfg.n_map)]
    locked = s.locked_vm - total([z3.If(drop_m[m], s.macct[m], 0) for m in range(cfg.n_map)])
    locked = locked - total([z3.If(z3.And(when, c == cc), s.v1acct[cc], 0) for cc in range(cfg.n_cont)])
    # sPAPR windows and TCEs
    wlive = [[z3.And(s.wlive[cc][n], z3.Not(z3.And(when, c == cc))) for n in range(cfg.n_win)]
             for cc in range(cfg.n_cont)]
    locked = locked - total([z3.If(z3.And(s.wlive[cc][n], when, c == cc), s.wacct[cc][n], 0)
                             for cc in range(cfg.n_cont) for n in range(cfg.n_win)])
    tlive = [z3.And(s.tlive[t], z3.Not(is_c(s.tcont[t]))) for t in range(cfg.n_tce)]
    st = s.updated(mlive=mlive, wlive=wlive, tlive=tlive, locked_vm=locked, v1acct=upd(s.v1acct, c, 0, when),
                   ciommu=upd(s.ciommu, c, IOMMU_NONE, when), cen=upd(s.cen, c, False, when))
    # regions registered through c are put: freed unless TCEs still map them
    return put_regions(st, [is_c(s.rcont[r]) for r in range(cfg.n_reg)])


def put_regions(s: State, which) -> State:
    """mm_iommu_put of regions `which` (a list of Bool per region): the container lets go
    (rcont = -1); a region still mapped by a TCE stays registered and pinned in the mm
    (mm_iommu_put's EBUSY is ignored by tce_iommu_prereg_free: the region leaks, as
    observed on 6.12), otherwise it is unpinned and un-accounted."""
    cfg = s.cfg
    mapped = [z3.Or([z3.And(s.tlive[t], s.treg[t] == r) for t in range(cfg.n_tce)]) for r in range(cfg.n_reg)]
    dies = [z3.And(which[r], s.rlive[r], z3.Not(mapped[r])) for r in range(cfg.n_reg)]
    return s.updated(
        rcont=[z3.If(which[r], -1, s.rcont[r]) for r in range(cfg.n_reg)],
        rlive=[z3.And(s.rlive[r], z3.Not(dies[r])) for r in range(cfg.n_reg)],
        locked_vm=s.locked_vm - total([z3.If(dies[r], s.rlen[r], 0) for r in range(cfg.n_reg)]))


def detach_group(s: State, g, when) -> State:
    """vfio_group_detach_container: the group leaves its container and gives up DMA
    ownership; the last group out releases the backend."""
    cfg = s.cfg
    c = sel(s.gcont, g)
    in_cont = z3.And(when, c >= 0)
    others = z3.Or([z3.And(g != gg, s.gcont[gg] == c) for gg in range(cfg.n_grp)])
    st = s.updated(gcont=upd(s.gcont, g, -1, in_cont), gown=upd(s.gown, g, -1, in_cont))
    # tce_iommu_detach_group: every TCE of the container is cleared (the tables stay)
    spapr = z3.And(in_cont, z3.Or([sel(s.ciommu, c) == k for k in SPAPR_KINDS]))
    st = st.updated(tlive=[z3.And(st.tlive[t], z3.Not(z3.And(spapr, st.tcont[t] == c))) for t in range(cfg.n_tce)])
    return release_container(st, c, z3.And(in_cont, z3.Not(others)))


def free_unused_hwpts(s: State) -> State:
    """An automatic HWPT is destroyed when its last device detaches
    (iommufd_hw_pagetable_put / iommufd_auto_response_faults)."""
    cfg = s.cfg
    used = [z3.Or([s.attached[d][h] for d in range(cfg.n_dev)]) for h in range(cfg.n_hwpt)]
    return s.updated(hlive=[z3.And(s.hlive[h], z3.Or(z3.Not(s.hauto[h]), used[h])) for h in range(cfg.n_hwpt)])


def free_unused_objects(s: State) -> State:
    """iopt_pages are freed with their last area (kref put in iopt_unmap_iova_range)."""
    cfg = s.cfg
    used = [z3.Or([z3.And(s.alive[a], s.aobj[a] == o) for a in range(cfg.n_area)]) for o in range(cfg.n_obj)]
    return s.updated(olive=[z3.And(s.olive[o], used[o]) for o in range(cfg.n_obj)])


def bound_ictx(s: State, d):
    """(bound, i): whether device d is bound and to which iommufd."""
    row = dev_row(s, "bind", d)
    i = z3.IntVal(0)
    for k in reversed(range(len(row))):
        i = z3.If(row[k], k, i)
    return z3.Or(row), i


def dev_row(s: State, name: str, d):
    cfg = s.cfg
    m = s.get(name)
    return [sel([m[dd][j] for dd in range(cfg.n_dev)], d) for j in range(len(m[0]))]


def free_slot(live, slot):
    return z3.Not(sel(live, slot))


# ---------------------------------------------------------------- groups and containers
def _open_group(s, p):
    cfg = s.cfg
    g = p["g"]
    ch = Checks()
    cdev_bound = z3.Or([z3.And(grp(cfg, d) == g, z3.Or(s.bind[d])) for d in range(cfg.n_dev)])
    ch.fail(cdev_bound, "EBUSY")                 # vfio_group_fops_open: cdev_device_open_cnt
    ch.fail(sel(s.gopen, g), "EBUSY")            # group->opened_file
    return ch, s.updated(gopen=upd(s.gopen, g, True)), z3.BoolVal(True)


def _close_group(s, p):
    g = p["g"]
    st = detach_group(s, g, True)
    st = st.updated(gopen=upd(st.gopen, g, False))
    # a group set to an iommufd (group path) is outside the model's actions
    return Checks(), st, z3.And(sel(s.gopen, g), sel(s.gictx, g) == -1)


def _set_container(s, p):
    cfg = s.cfg
    g, c = p["g"], p["c"]
    ch = Checks()
    ch.fail(z3.Or(sel(s.gcont, g) >= 0, sel(s.gictx, g) >= 0), "EINVAL")   # set_container: already set
    ch.fail(sel(s.gown, g) != -1, "EPERM")       # iommu_group_claim_dma_owner
    st = s.updated(gcont=upd(s.gcont, g, c), gown=upd(s.gown, g, c))
    return ch, st, sel(s.gopen, g)


def _unset_container(s, p):
    g = p["g"]
    ch = Checks()
    ch.fail(sel(s.gcont, g) < 0, "EINVAL")       # vfio_group_ioctl_unset_container: none set
    return ch, detach_group(s, g, True), sel(s.gopen, g)


def _set_iommu(s, p):
    cfg = s.cfg
    c, kind = p["c"], p["kind"]
    ch = Checks()
    ch.fail(z3.Not(z3.Or([s.gcont[g] == c for g in range(cfg.n_grp)])), "EINVAL")   # no group
    ch.fail(sel(s.ciommu, c) != IOMMU_NONE, "EINVAL")                                # already set
    ch.fail(z3.If(s.spapr, kind != IOMMU_SPAPR_V2, kind != IOMMU_TYPE1V2), "ENODEV")  # no backend claims it
    return ch, s.updated(ciommu=upd(s.ciommu, c, kind)), z3.BoolVal(True)


# ---------------------------------------------------------------- type1
def _map_dma(s, p):
    cfg = s.cfg
    c, iova, ln, va, m = p["c"], p["iova"], p["len"], p["va"], p["slot"]
    ch = Checks()
    ci = sel(s.ciommu, c)
    ch.fail(ci == IOMMU_NONE, "EINVAL")          # vfio_fops_unl_ioctl: no backend
    ch.fail(z3.Or([z3.And(s.mlive[k], s.mcont[k] == c, z3.Not(disjoint(s.miova[k], s.mlen[k], iova, ln)))
                   for k in range(cfg.n_map)]), "EEXIST")      # vfio_find_dma
    ch.fail(z3.And(z3.Not(s.cap), s.locked_vm + ln > s.rlimit), "ENOMEM")   # vfio_pin_pages_remote
    st = s.updated(mlive=upd(s.mlive, m, True), mcont=upd(s.mcont, m, c), miova=upd(s.miova, m, iova),
                   mlen=upd(s.mlen, m, ln), mva=upd(s.mva, m, va), macct=upd(s.macct, m, ln),
                   locked_vm=s.locked_vm + ln)
    # other backends (v1 type1, sPAPR, noiommu) are outside the model's type1 actions
    enabled = z3.And(free_slot(s.mlive, m), z3.Or(ci == IOMMU_NONE, ci == IOMMU_TYPE1V2), va + ln <= USER_PAGES)
    return ch, st, enabled


def _unmap_dma(s, p):
    cfg = s.cfg
    c, iova, ln = p["c"], p["iova"], p["len"]
    ch = Checks()
    ci = sel(s.ciommu, c)
    ch.fail(ci == IOMMU_NONE, "EINVAL")
    mine = [z3.And(s.mlive[k], s.mcont[k] == c) for k in range(cfg.n_map)]
    inside = [z3.And(mine[k], within(s.miova[k], s.mlen[k], iova, ln)) for k in range(cfg.n_map)]
    bisect = z3.Or([z3.And(mine[k], z3.Not(disjoint(s.miova[k], s.mlen[k], iova, ln)), z3.Not(inside[k]))
                    for k in range(cfg.n_map)])
    ch.fail(bisect, "EINVAL")                    # vfio_dma_do_unmap: v2 never bisects a mapping
    st = s.updated(mlive=[z3.And(s.mlive[k], z3.Not(inside[k])) for k in range(cfg.n_map)],
                   locked_vm=s.locked_vm - total([z3.If(inside[k], s.macct[k], 0) for k in range(cfg.n_map)]))
    return ch, st, z3.Or(ci == IOMMU_NONE, ci == IOMMU_TYPE1V2)


# ---------------------------------------------------------------- cdev bind / attach
def _bind(s, p):
    cfg = s.cfg
    d, i = p["dev"], p["ictx"]
    g = grp(cfg, d)
    ch = Checks()
    ch.fail(sel(s.gopen, g), "EBUSY")                                   # vfio_device_block_group
    ch.fail(z3.Or(dev_row(s, "bind", d)), "EINVAL")                     # df->access_granted: bound twice
    own = sel(s.gown, g)
    emu = sel(s.demu, d)        # an emulated device's bind creates an access: no DMA ownership
    ch.fail(z3.And(z3.Not(emu), own != -1, own != owner_ictx(cfg, i)), "EPERM")   # iommu_device_claim_dma_owner
    bind = [[z3.If(z3.And(d == dd, i == ii), True, s.bind[dd][ii]) for ii in range(cfg.n_ictx)]
            for dd in range(cfg.n_dev)]
    st = s.updated(bind=bind, gown=upd(s.gown, g, owner_ictx(cfg, i), z3.Not(emu)))
    return ch, st, z3.BoolVal(True)


def _detach_dev(s: State, d, when, action: str) -> tuple[State, object]:
    cfg = s.cfg
    att = [[z3.And(s.attached[dd][h], z3.Not(z3.And(when, d == dd))) for h in range(cfg.n_hwpt)]
           for dd in range(cfg.n_dev)]
    st = free_unused_hwpts(s.updated(attached=att))
    return apply_pins(action, s, st)


def _unbind(s, p):
    """Closing the cdev fd: vfio_df_unbind_iommufd -> detach, iommufd_device_unbind."""
    cfg = s.cfg
    d = p["dev"]
    bound, i = bound_ictx(s, d)
    st, _ = _detach_dev(s, d, True, "Unbind")
    bind = [[z3.And(st.bind[dd][ii], d != dd) for ii in range(cfg.n_ictx)] for dd in range(cfg.n_dev)]
    g = grp(cfg, d)
    still = z3.Or([z3.And(grp(cfg, dd) == g, bind[dd][ii], z3.Not(s.demu[dd]), sel(s.gown, g) == owner_ictx(cfg, ii))
                   for dd in range(cfg.n_dev) for ii in range(cfg.n_ictx)])
    still = z3.Or(still, z3.And(sel(s.gown, g) != -1, z3.Not(z3.Or([sel(s.gown, g) == owner_ictx(cfg, ii)
                                                                    for ii in range(cfg.n_ictx)]))))
    st = st.updated(bind=bind, gown=upd(st.gown, g, -1, z3.Not(still)))
    return Checks(), st, bound


def _attach(s, p):
    cfg = s.cfg
    d, q, hnew = p["dev"], p["ioas"], p["slot"]
    g = grp(cfg, d)
    bound, i = bound_ictx(s, d)
    ch = Checks()
    ch.fail(z3.Not(bound), "EINVAL")                         # access_granted
    ch.fail(sel(s.qictx, q) != i, "ENOENT")                  # iommufd_get_object in the device's ictx
    cur = dev_row(s, "attached", d)
    is_att = z3.Or(cur)
    # the HWPT the group is on (another device of the group attached)
    grp_h = [z3.Or([z3.And(grp(cfg, dd) == g, s.attached[dd][h]) for dd in range(cfg.n_dev)])
             for h in range(cfg.n_hwpt)]
    # the automatic HWPT of q (iommufd_device_auto_get_domain reuses a compatible one)
    exist = [z3.And(s.hlive[h], s.hauto[h], s.hioas[h] == q) for h in range(cfg.n_hwpt)]
    have = z3.Or(exist)
    target = z3.IntVal(0)
    for h in reversed(range(cfg.n_hwpt)):
        target = z3.If(exist[h], h, target)
    target = z3.If(have, target, hnew)
    grp_other = z3.Or([z3.And(grp_h[h], target != h) for h in range(cfg.n_hwpt)])
    ch.fail(z3.And(z3.Not(is_att), grp_other), "EINVAL")   # iommufd_hw_pagetable_attach: igroup->hwpt != hwpt
    # replace moves the whole group (iommufd_device_do_replace); a first attach joins it
    moving = [z3.Or(z3.And(dd == d), z3.And(grp(cfg, dd) == g, z3.Or([z3.And(cur[h], s.attached[dd][h])
                                                                        for h in range(cfg.n_hwpt)])))
              for dd in range(cfg.n_dev)]
    att = [[z3.If(moving[dd], target == h, s.attached[dd][h]) for h in range(cfg.n_hwpt)] for dd in range(cfg.n_dev)]
    st = s.updated(attached=att,
                   hlive=upd(s.hlive, hnew, True, z3.Not(have)), hioas=upd(s.hioas, hnew, q, z3.Not(have)),
                   hauto=upd(s.hauto, hnew, True, z3.Not(have)))
    st = free_unused_hwpts(st)
    st, delta = apply_pins("Attach", s, st)
    ch.fail(pin_limit_exceeded(s, delta), "ENOMEM")          # iopt_table_add_domain -> pfn_reader
    # an IOAS of another iommufd is outside the model (object IDs are per context: the
    # trace's id could name another object in the device's context)
    enabled = z3.And(sel(s.qlive, q), z3.Or(have, free_slot(s.hlive, hnew)), z3.Or(z3.Not(bound), sel(s.qictx, q) == i))
    return ch, st, enabled


def _detach(s, p):
    d = p["dev"]
    bound, _ = bound_ictx(s, d)
    ch = Checks()
    ch.fail(z3.Not(bound), "EINVAL")
    st, _ = _detach_dev(s, d, True, "Detach")
    return ch, st, z3.BoolVal(True)


# ---------------------------------------------------------------- IOAS
def _ioas_alloc(s, p):
    q, i = p["slot"], p["ictx"]
    st = s.updated(qlive=upd(s.qlive, q, True), qictx=upd(s.qictx, q, i))
    return Checks(), st, free_slot(s.qlive, q)


def _area_overlaps(s, q, iova, ln):
    return z3.Or([z3.And(s.alive[a], s.aioas[a] == q, z3.Not(disjoint(s.aiova[a], s.alen[a], iova, ln)))
                  for a in range(s.cfg.n_area)])


def _ioas_map(s, p):
    cfg = s.cfg
    q, iova, ln, va, a, o = p["ioas"], p["iova"], p["len"], p["va"], p["area"], p["obj"]
    ch = Checks()
    ch.fail(_area_overlaps(s, q, iova, ln), "EEXIST")          # iopt_alloc_area_pages: iova in use
    st = s.updated(olive=upd(s.olive, o, True), ova=upd(s.ova, o, va), olen=upd(s.olen, o, ln),
                   omode=upd(s.omode, o, z3.If(s.cap, 0, 1)),
                   opin=[[z3.If(o == oo, 0, s.opin[oo][k]) for k in range(cfg.n_upages)] for oo in range(cfg.n_obj)],
                   oacc=[[z3.If(o == oo, 0, s.oacc[oo][k]) for k in range(cfg.n_upages)] for oo in range(cfg.n_obj)],
                   alive=upd(s.alive, a, True), aioas=upd(s.aioas, a, q), aiova=upd(s.aiova, a, iova),
                   alen=upd(s.alen, a, ln), aobj=upd(s.aobj, a, o), aoff=upd(s.aoff, a, 0))
    base = s.updated(opin=st.opin, oacc=st.oacc)
    st, delta = apply_pins("IoasMap", base, st)
    ch.fail(pin_limit_exceeded(s, delta), "ENOMEM")
    # (user memory beyond the trace's buffer would fail GUP: EFAULT, outside the model)
    enabled = z3.And(sel(s.qlive, q), free_slot(s.alive, a), free_slot(s.olive, o), va + ln <= USER_PAGES)
    return ch, st, enabled


def _ioas_unmap(s, p):
    cfg = s.cfg
    q, iova, ln = p["ioas"], p["iova"], p["len"]
    ch = Checks()
    mine = [z3.And(s.alive[a], s.aioas[a] == q) for a in range(cfg.n_area)]
    hit = [z3.And(mine[a], z3.Not(disjoint(s.aiova[a], s.alen[a], iova, ln))) for a in range(cfg.n_area)]
    inside = [z3.And(mine[a], within(s.aiova[a], s.alen[a], iova, ln)) for a in range(cfg.n_area)]
    ch.fail(z3.Or([z3.And(hit[a], z3.Not(inside[a])) for a in range(cfg.n_area)]), "ENOENT")   # would split
    ch.fail(z3.Not(z3.Or(inside)), "ENOENT")                                                   # nothing there
    st = s.updated(alive=[z3.And(s.alive[a], z3.Not(inside[a])) for a in range(cfg.n_area)])
    st = free_unused_objects(st)
    st, _ = apply_pins("IoasUnmap", s, st)
    return ch, st, sel(s.qlive, q)


def _ioas_copy(s, p):
    cfg = s.cfg
    q1, q2, src, dst, ln, a = p["src_ioas"], p["dst_ioas"], p["src_iova"], p["dst_iova"], p["len"], p["area"]
    ch = Checks()
    ch.fail(sel(s.qictx, q1) != sel(s.qictx, q2), "ENOENT")    # dst id looked up in the src's ictx
    mine = [z3.And(s.alive[b], s.aioas[b] == q1) for b in range(cfg.n_area)]
    hit = [z3.And(mine[b], z3.Not(disjoint(s.aiova[b], s.alen[b], src, ln))) for b in range(cfg.n_area)]
    cover = [z3.And(mine[b], within(src, ln, s.aiova[b], s.alen[b])) for b in range(cfg.n_area)]
    ch.fail(z3.Not(z3.Or(cover)), "ENOENT")                   # iopt_get_pages: a hole in the source
    ch.fail(_area_overlaps(s, q2, dst, ln), "EEXIST")
    srcb = z3.IntVal(0)
    for b in reversed(range(cfg.n_area)):
        srcb = z3.If(cover[b], b, srcb)
    obj = sel(s.aobj, srcb)
    off = sel(s.aoff, srcb) + (src - sel(s.aiova, srcb))
    st = s.updated(alive=upd(s.alive, a, True), aioas=upd(s.aioas, a, q2), aiova=upd(s.aiova, a, dst),
                   alen=upd(s.alen, a, ln), aobj=upd(s.aobj, a, obj), aoff=upd(s.aoff, a, off))
    st, delta = apply_pins("IoasCopy", s, st)
    ch.fail(pin_limit_exceeded(s, delta), "ENOMEM")
    # outside the model: a source range spread over several contiguous areas
    several = z3.Or([z3.And(hit[b], hit[c]) for b in range(cfg.n_area) for c in range(b + 1, cfg.n_area)])
    enabled = z3.And(sel(s.qlive, q1), sel(s.qlive, q2), free_slot(s.alive, a), z3.Not(several),
                     sel(s.qictx, q1) == sel(s.qictx, q2))
    return ch, st, enabled


def _destroy(s, p):
    cfg = s.cfg
    q = p["ioas"]
    ch = Checks()
    ch.fail(has_domain(s, q), "EBUSY")                       # iommufd_object_remove: users
    gone = [z3.And(s.alive[a], s.aioas[a] == q) for a in range(cfg.n_area)]
    st = s.updated(qlive=upd(s.qlive, q, False),
                   alive=[z3.And(s.alive[a], z3.Not(gone[a])) for a in range(cfg.n_area)])
    st = free_unused_objects(st)
    st, _ = apply_pins("Destroy", s, st)
    return ch, st, sel(s.qlive, q)


# ---------------------------------------------------------------- sPAPR TCE v2
def _spapr_common(ch: Checks, s: State, c):
    ci = sel(s.ciommu, c)
    ch.fail(ci == IOMMU_NONE, "EINVAL")                      # vfio_fops_unl_ioctl: no backend
    ch.fail(ci != IOMMU_SPAPR_V2, "ENOTTY")


def _register(s, p):
    cfg = s.cfg
    c, va, ln, r = p["c"], p["va"], p["len"], p["slot"]
    ch = Checks()
    _spapr_common(ch, s, c)
    ident = [z3.And(s.rlive[k], s.rva[k] == va, s.rlen[k] == ln) for k in range(cfg.n_reg)]
    ch.fail(z3.Or([z3.And(ident[k], s.rcont[k] == c) for k in range(cfg.n_reg)]), "EBUSY")  # in prereg_list
    overlap = [z3.And(s.rlive[k], z3.Not(ident[k]), z3.Not(disjoint(s.rva[k], s.rlen[k], va, ln)))
               for k in range(cfg.n_reg)]
    reuse = z3.Or(ident)
    ch.fail(z3.And(z3.Not(reuse), z3.Not(s.cap), s.locked_vm + ln > s.rlimit), "ENOMEM")  # charged first
    ch.fail(z3.Or(overlap), "EINVAL")                        # mm_iommu_do_alloc: overlapping region
    # identical region already in the mm (leaked): mm_iommu_get shares it
    rcont = [z3.If(ident[k], c, s.rcont[k]) for k in range(cfg.n_reg)]
    st = s.updated(rcont=rcont, cen=upd(s.cen, c, True))
    st = st.updated(rlive=upd(st.rlive, r, True, z3.Not(reuse)), rcont=upd(st.rcont, r, c, z3.Not(reuse)),
                    rva=upd(st.rva, r, va, z3.Not(reuse)), rlen=upd(st.rlen, r, ln, z3.Not(reuse)),
                    locked_vm=st.locked_vm + z3.If(reuse, 0, ln))
    # a region shared with another live container is outside the model (one rcont per region)
    shared = z3.Or([z3.And(ident[k], s.rcont[k] >= 0, s.rcont[k] != c) for k in range(cfg.n_reg)])
    enabled = z3.And(z3.Or(reuse, free_slot(s.rlive, r)), z3.Not(shared), va + ln <= USER_PAGES)
    return ch, st, enabled


def _unregister(s, p):
    cfg = s.cfg
    c, va, ln = p["c"], p["va"], p["len"]
    ch = Checks()
    _spapr_common(ch, s, c)
    # (container->mm is set by the model's SetIommu: no EPERM here)
    exact = [z3.And(s.rlive[k], s.rcont[k] == c, s.rva[k] == va, s.rlen[k] == ln) for k in range(cfg.n_reg)]
    ch.fail(z3.Not(z3.Or(exact)), "ENOENT")                  # mm_iommu_get: exact (ua, entries) only
    return ch, put_regions(s, exact), z3.BoolVal(True)


def table_pages(size, ps):
    """Pages a TCE table charges: spapr_tce_get_table_size gives 8 bytes per IOMMU
    page of the window (one level); tce_iommu_create_table charges it >> PAGE_SHIFT."""
    return z3.If(ps == 1, size / 512, size / (512 * 16)) if not isinstance(ps, int) else size / (512 * ps)


# window sizes the model creates: 64 KiB, 1 MiB, 16 MiB, 1 GiB (powers of two, in pages)
WINDOW_SIZES = (16, 256, 4096, 262144)


def _tce_create(s, p):
    cfg = s.cfg
    c, n, ps, size = p["c"], p["num"], p["pgsize"], p["size"]
    ch = Checks()
    _spapr_common(ch, s, c)
    row = [sel([s.wlive[cc][k] for cc in range(cfg.n_cont)], c) for k in range(cfg.n_win)]
    ch.fail(count(row) >= s.max_windows, "ENOSPC")           # tce_iommu_find_free_table
    acct = table_pages(size, ps)
    ch.fail(z3.And(z3.Not(s.cap), s.locked_vm + acct > s.rlimit), "ENOMEM")   # tce_iommu_create_table
    # the kernel takes the first free table slot (tce_iommu_find_free_table); the
    # platform (pseries + QEMU, spapr_tce_create_table) restores the default window at
    # tce32_start (0) for a "default request" in slot 0 (4 KiB pages, at most the 32-bit
    # window), and puts any other window at dma64_win_addr (1 << 59)
    first_free = z3.And(z3.Not(sel(row, n)), z3.And([z3.Or(row[k], k >= n) for k in range(cfg.n_win)]))
    others = z3.Or(row)
    default_req = z3.And(n == 0, ps == 1, size <= DMA32_PAGES)
    start = z3.If(default_req, 0, DDW_BASE_PAGES)
    put = lambda name, v: [[z3.If(z3.And(c == cc, n == k), v, s.get(name)[cc][k])   # noqa: E731
                            for k in range(cfg.n_win)] for cc in range(cfg.n_cont)]
    st = s.updated(wlive=put("wlive", True), wstart=put("wstart", start), wsize=put("wsize", size),
                   wps=put("wps", ps), wacct=put("wacct", acct), locked_vm=s.locked_vm + acct)
    # outside the model: platform refusals (slot 0 while another window exists: EPERM;
    # a second dynamic window: ENODEV, after which the platform refuses every window;
    # a window not a power of two or smaller than one IOMMU page: EINVAL)
    dyn_exists = z3.Or([z3.And(row[k], _win_field(s, "wstart", c, k) == DDW_BASE_PAGES) for k in range(cfg.n_win)])
    fits = z3.And(size >= ps, z3.Or([size == x for x in WINDOW_SIZES]),
                  z3.Or([ps == x for x in SPAPR_MODEL_PAGE_SIZES]), z3.Not(z3.And(n == 0, others)),
                  z3.Not(z3.And(z3.Not(default_req), dyn_exists)))
    enabled = z3.And(first_free, fits)
    return ch, st, enabled


def _tce_remove(s, p):
    cfg = s.cfg
    c = p["c"]
    start = z3.If(p["at"] == 0, 0, DDW_BASE_PAGES)          # the trace's start_addr
    ch = Checks()
    _spapr_common(ch, s, c)
    found, n = _window_of(s, c, start)
    ch.fail(z3.Not(found), "EINVAL")                         # tce_iommu_find_table: no window there
    wl = [[z3.And(s.wlive[cc][k], z3.Not(z3.And(c == cc, n == k))) for k in range(cfg.n_win)]
          for cc in range(cfg.n_cont)]
    acct = _win_field(s, "wacct", c, n)
    tl = [z3.And(s.tlive[t], z3.Not(z3.And(s.tcont[t] == c, s.tnum[t] == n))) for t in range(cfg.n_tce)]
    st = s.updated(wlive=wl, tlive=tl, locked_vm=s.locked_vm - acct)
    return ch, st, z3.BoolVal(True)


def _window_of(s: State, c, iova):
    """(found, num): the window of container c that holds IOVA page `iova`."""
    cfg = s.cfg
    hits = []
    for k in range(cfg.n_win):
        live = sel([s.wlive[cc][k] for cc in range(cfg.n_cont)], c)
        start = sel([s.wstart[cc][k] for cc in range(cfg.n_cont)], c)
        size = sel([s.wsize[cc][k] for cc in range(cfg.n_cont)], c)
        hits.append(z3.And(live, start <= iova, iova < start + size))
    n = z3.IntVal(0)
    for k in reversed(range(cfg.n_win)):
        n = z3.If(hits[k], k, n)
    return z3.Or(hits), n


def _win_field(s: State, name: str, c, n):
    cfg = s.cfg
    return sel([sel([s.get(name)[cc][k] for cc in range(cfg.n_cont)], c) for k in range(cfg.n_win)], n)


def _spapr_map(s, p):
    cfg = s.cfg
    c, iova, va, t = p["c"], p["iova"], p["va"], p["slot"]
    ch = Checks()
    _spapr_common(ch, s, c)
    ch.fail(z3.Not(sel(s.cen, c)), "EPERM")                  # !container->enabled
    found, n = _window_of(s, c, iova)
    ch.fail(z3.Not(found), "ENXIO")                          # tce_iommu_find_table
    ps = _win_field(s, "wps", c, n)
    ch.fail(z3.Not(aligned(va, ps)), "EINVAL")               # vaddr & ~IOMMU_PAGE_MASK
    # an unaligned IOVA fails iommu_tce_put_param_check: the ioctl returns 1, maps nothing
    # (a page aligned inside a window whose start and size are page multiples lies
    # wholly inside it: iommu_tce_check_ioba; stated for the prover's sake)
    does = z3.And(aligned(iova, ps), iova + ps <= _win_field(s, "wstart", c, n) + _win_field(s, "wsize", c, n))
    inreg = [z3.And(s.rlive[r], within(va, ps, s.rva[r], s.rlen[r])) for r in range(cfg.n_reg)]
    ch.fail(z3.And(does, z3.Not(z3.Or(inreg))), "EINVAL")    # mm_iommu_lookup: not pre-registered
    reg = z3.IntVal(0)
    for r in reversed(range(cfg.n_reg)):
        reg = z3.If(inreg[r], r, reg)
    # a TCE already at this IOVA is replaced (iommu_tce_xchg_no_kill returns the old one)
    tl = [z3.And(s.tlive[k], z3.Not(z3.And(s.tcont[k] == c, s.tiova[k] == iova))) for k in range(cfg.n_tce)]
    st = s.updated(tlive=upd(tl, t, True, does), tcont=upd(s.tcont, t, c, does), tnum=upd(s.tnum, t, n, does),
                   tiova=upd(s.tiova, t, iova, does), tva=upd(s.tva, t, va, does), treg=upd(s.treg, t, reg, does))
    enabled = z3.Or(z3.Not(sel(s.tlive, t)), z3.And(sel(s.tcont, t) == c, sel(s.tiova, t) == iova))
    return ch, st, z3.And(enabled, sel(s.ciommu, c) == IOMMU_SPAPR_V2)


def _spapr_unmap(s, p):
    cfg = s.cfg
    c, iova = p["c"], p["iova"]
    ch = Checks()
    _spapr_common(ch, s, c)
    ch.fail(z3.Not(sel(s.cen, c)), "EPERM")
    found, n = _window_of(s, c, iova)
    ch.fail(z3.Not(found), "ENXIO")
    ps = _win_field(s, "wps", c, n)
    does = aligned(iova, ps)                                 # unaligned: returns 1, clears nothing
    tl = [z3.And(s.tlive[k], z3.Not(z3.And(does, s.tcont[k] == c, s.tiova[k] == iova))) for k in range(cfg.n_tce)]
    return ch, s.updated(tlive=tl), sel(s.ciommu, c) == IOMMU_SPAPR_V2


# ---------------------------------------------------------------- mdev
def _mdev_create(s, p):
    t, i, cost = p["type"], p["slot"], p["ports"]
    ch = Checks()
    ch.fail(sel(s.avail, t) < cost, "ENOSPC")               # mtty_init_dev: not enough free ports
    st = s.updated(ilive=upd(s.ilive, i, True), itype=upd(s.itype, i, t), icost=upd(s.icost, i, cost),
                   avail=upd(s.avail, t, sel(s.avail, t) - cost))
    return ch, st, free_slot(s.ilive, i)


def _mdev_remove(s, p):
    """mdev_device_remove; the instance was never opened, so mtty_release_dev returns
    its ports at once."""
    i = p["slot"]
    t = sel(s.itype, i)
    st = s.updated(ilive=upd(s.ilive, i, False), avail=upd(s.avail, t, sel(s.avail, t) + sel(s.icost, i)))
    return Checks(), st, sel(s.ilive, i)


# ---------------------------------------------------------------- the table
def _reqs(name: str) -> tuple[str, ...]:
    """The requirement IDs of an action: those its class in the shared vocabulary
    (vfiospec.reference.actions) names."""
    from vfiospec.reference import actions as vocabulary
    return vocabulary.ALL[name].REQS


def _n(attr):
    return lambda cfg: getattr(cfg, attr)


P_IOVA = Param("iova", 0, IOVA_PAGES, "first IOVA page")
P_VA = Param("va", 0, USER_PAGES, "first page of the user buffer")


def _len(cfg):
    return cfg.n_upages + 1


ACTIONS: list[ActionDef] = [
    ActionDef("OpenGroup", _reqs("OpenGroup"),
              (Param("g", 0, _n("n_grp")),), _open_group, "open(/dev/vfio/$GROUP)"),
    ActionDef("CloseGroup", _reqs("CloseGroup"),
              (Param("g", 0, _n("n_grp")),), _close_group, "close() of the group fd"),
    ActionDef("SetContainer", _reqs("SetContainer"),
              (Param("g", 0, _n("n_grp")), Param("c", 0, _n("n_cont"))), _set_container,
              "VFIO_GROUP_SET_CONTAINER"),
    ActionDef("UnsetContainer", _reqs("UnsetContainer"),
              (Param("g", 0, _n("n_grp")),), _unset_container, "VFIO_GROUP_UNSET_CONTAINER"),
    ActionDef("SetIommu", _reqs("SetIommu"),
              (Param("c", 0, _n("n_cont")), Param("kind", 1, 3)), _set_iommu, "VFIO_SET_IOMMU"),
    ActionDef("MapDma", _reqs("MapDma"),
              (Param("c", 0, _n("n_cont")), P_IOVA, Param("len", 1, _len), P_VA, Param("slot", 0, _n("n_map"))),
              _map_dma, "VFIO_IOMMU_MAP_DMA (type1)", "vtd"),
    ActionDef("UnmapDma", _reqs("UnmapDma"),
              (Param("c", 0, _n("n_cont")), P_IOVA, Param("len", 1, _len)), _unmap_dma,
              "VFIO_IOMMU_UNMAP_DMA (type1)", "vtd"),
    ActionDef("Bind", _reqs("Bind"),
              (Param("dev", 0, _n("n_dev")), Param("ictx", 0, _n("n_ictx"))), _bind, "VFIO_DEVICE_BIND_IOMMUFD", "vtd"),
    ActionDef("Unbind", _reqs("Unbind"), (Param("dev", 0, _n("n_dev")),), _unbind,
              "close() of the device cdev fd", "vtd"),
    ActionDef("IoasAlloc", _reqs("IoasAlloc"),
              (Param("ictx", 0, _n("n_ictx")), Param("slot", 0, _n("n_ioas"))), _ioas_alloc, "IOMMU_IOAS_ALLOC", "vtd"),
    ActionDef("Attach", _reqs("Attach"),
              (Param("dev", 0, _n("n_dev")), Param("ioas", 0, _n("n_ioas")), Param("slot", 0, _n("n_hwpt"))),
              _attach, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "vtd"),
    ActionDef("Detach", _reqs("Detach"), (Param("dev", 0, _n("n_dev")),), _detach,
              "VFIO_DEVICE_DETACH_IOMMUFD_PT", "vtd"),
    ActionDef("IoasMap", _reqs("IoasMap"),
              (Param("ioas", 0, _n("n_ioas")), P_IOVA, Param("len", 1, _len), P_VA,
               Param("area", 0, _n("n_area")), Param("obj", 0, _n("n_obj"))), _ioas_map, "IOMMU_IOAS_MAP", "vtd"),
    ActionDef("IoasUnmap", _reqs("IoasUnmap"),
              (Param("ioas", 0, _n("n_ioas")), P_IOVA, Param("len", 1, _len)), _ioas_unmap, "IOMMU_IOAS_UNMAP", "vtd"),
    ActionDef("IoasCopy", _reqs("IoasCopy"),
              (Param("src_ioas", 0, _n("n_ioas")), Param("dst_ioas", 0, _n("n_ioas")), Param("src_iova", 0, IOVA_PAGES),
               Param("dst_iova", 0, IOVA_PAGES), Param("len", 1, _len), Param("area", 0, _n("n_area"))),
              _ioas_copy, "IOMMU_IOAS_COPY", "vtd"),
    ActionDef("Destroy", _reqs("Destroy"), (Param("ioas", 0, _n("n_ioas")),), _destroy,
              "IOMMU_DESTROY of an IOAS", "vtd"),
    ActionDef("RegisterMemory", _reqs("RegisterMemory"),
              (Param("c", 0, _n("n_cont")), Param("va", 0, USER_PAGES), Param("len", 1, 33),
               Param("slot", 0, _n("n_reg"))), _register, "VFIO_IOMMU_SPAPR_REGISTER_MEMORY", "spapr"),
    ActionDef("UnregisterMemory", _reqs("UnregisterMemory"),
              (Param("c", 0, _n("n_cont")), Param("va", 0, USER_PAGES), Param("len", 1, 33)), _unregister,
              "VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY", "spapr"),
    ActionDef("TceCreate", _reqs("TceCreate"),
              (Param("c", 0, _n("n_cont")), Param("num", 0, _n("n_win")), Param("pgsize", 1, 17),
               Param("size", 1)), _tce_create, "VFIO_IOMMU_SPAPR_TCE_CREATE", "spapr"),
    ActionDef("TceRemove", _reqs("TceRemove"), (Param("c", 0, _n("n_cont")), Param("at", 0, 2, "0: start_addr 0, 1: 1 << 59")),
              _tce_remove, "VFIO_IOMMU_SPAPR_TCE_REMOVE", "spapr"),
    ActionDef("SpaprMapDma", _reqs("SpaprMapDma"),
              (Param("c", 0, _n("n_cont")), Param("iova", 0), Param("va", 0, USER_PAGES),
               Param("slot", 0, _n("n_tce"))), _spapr_map, "VFIO_IOMMU_MAP_DMA (sPAPR, one IOMMU page)", "spapr"),
    ActionDef("SpaprUnmapDma", _reqs("SpaprUnmapDma"),
              (Param("c", 0, _n("n_cont")), Param("iova", 0)), _spapr_unmap,
              "VFIO_IOMMU_UNMAP_DMA (sPAPR, one IOMMU page)", "spapr"),
    ActionDef("MdevCreate", _reqs("MdevCreate"),
              (Param("type", 0, _n("n_mtype")), Param("slot", 0, _n("n_mdev")), Param("ports", 1, 3)), _mdev_create,
              "write of a UUID to mdev_supported_types/<type>/create"),
    ActionDef("MdevRemove", _reqs("MdevRemove"), (Param("slot", 0, _n("n_mdev")),),
              _mdev_remove, "write of 1 to /sys/bus/mdev/devices/<uuid>/remove"),
]

BY_NAME = {a.name: a for a in ACTIONS}


def initial(s: State):
    """Init: a fresh process on a fresh machine (constants free within their domains)."""
    cfg = s.cfg
    cs = [z3.Not(b) for row in s.bind for b in row] + [z3.Not(b) for row in s.attached for b in row]
    cs += [z3.Not(x) for x in s.gopen] + [x == -1 for x in s.gcont] + [x == -1 for x in s.gown]
    cs += [x == IOMMU_NONE for x in s.ciommu] + [z3.Not(x) for x in s.cen]
    for name in ("qlive", "hlive", "alive", "olive", "mlive", "tlive", "rlive", "ilive"):
        cs += [z3.Not(x) for x in s.get(name)]
    cs += [z3.Not(x) for row in s.wlive for x in row]
    cs += [x == 0 for row in s.opin for x in row]
    cs += [s.locked_vm == 0, s.user_locked_vm == 0, s.pinned_vm == 0, s.rlimit >= 0]
    cs += [s.max_windows == cfg.n_win]
    cs += [z3.Not(x) for x in s.demu]
    cs += [x == -1 for x in s.gictx] + [x == 0 for x in s.v1acct] + [x == 0 for row in s.oacc for x in row]
    cs += [s.avail[t] == s.mtotal[t] for t in range(cfg.n_mtype)] + [x >= 0 for x in s.mtotal]
    return z3.And(cs)
