"""Abstract states and actions in words (for counterexamples and explorer output).

A concrete state here is a `Valuation`: the values of every variable of a State
(nested Python lists of ints/bools), as the z3 model or a snapshot gives them."""

from __future__ import annotations

import z3

from .schema import ERRNOS, IOMMU_NAMES, VARS, Config, State


def evaluate(model: z3.ModelRef, s: State) -> dict:
    """Values of every variable of `s` in `model` (model completion on)."""
    def ev(v):
        if isinstance(v, list):
            return [ev(x) for x in v]
        r = model.eval(v, model_completion=True)
        if z3.is_true(r):
            return True
        if z3.is_false(r):
            return False
        return r.as_long()
    return {name: ev(s.get(name)) for name in VARS}


def describe(v: dict, cfg: Config) -> list[str]:
    """One line per live object and per counter."""
    out = []
    for d in range(cfg.n_dev):
        for i in range(cfg.n_ictx):
            if v["bind"][d][i]:
                out.append(f"dev{d} bound to iommufd{i} (cdev)")
        for h in range(cfg.n_hwpt):
            if v["attached"][d][h]:
                out.append(f"dev{d} attached to hwpt{h}")
    for g in range(cfg.n_grp):
        bits = []
        if v["gopen"][g]:
            bits.append("node open")
        if v["gictx"][g] >= 0:
            bits.append(f"set to iommufd{v['gictx'][g]} (group path)")
        if v["gcont"][g] >= 0:
            bits.append(f"in container{v['gcont'][g]}")
        own = v["gown"][g]
        if own >= 0:
            bits.append(f"owned by container{own}" if own < cfg.n_cont else f"owned by iommufd{own - cfg.n_cont}")
        if bits:
            out.append(f"group g{g}: " + ", ".join(bits))
    for c in range(cfg.n_cont):
        if v["ciommu"][c]:
            out.append(f"container{c}: {IOMMU_NAMES.get(v['ciommu'][c], v['ciommu'][c])}"
                       + (", enabled" if v["cen"][c] else ""))
        for n in range(cfg.n_win):
            if v["wlive"][c][n]:
                out.append(f"container{c} window {n}: at page {v['wstart'][c][n]}, size {v['wsize'][c][n]} pages, IOMMU page "
                           f"{v['wps'][c][n]} pages, table accounts {v['wacct'][c][n]}")
    for q in range(cfg.n_ioas):
        if v["qlive"][q]:
            out.append(f"ioas{q} of iommufd{v['qictx'][q]}")
    for h in range(cfg.n_hwpt):
        if v["hlive"][h]:
            out.append(f"hwpt{h} ({'automatic' if v['hauto'][h] else 'allocated'}) on ioas{v['hioas'][h]}")
    for a in range(cfg.n_area):
        if v["alive"][a]:
            out.append(f"area{a}: ioas{v['aioas'][a]} iova pages [{v['aiova'][a]}, {v['aiova'][a] + v['alen'][a]}) "
                       f"-> iopt_pages{v['aobj'][a]} from page {v['aoff'][a]}")
    for o in range(cfg.n_obj):
        if v["olive"][o] or any(v["opin"][o]):
            out.append(f"iopt_pages{o}{'' if v['olive'][o] else ' (freed)'}: user pages [{v['ova'][o]}, "
                       f"{v['ova'][o] + v['olen'][o]}), pin counts {v['opin'][o]}")
    for m in range(cfg.n_map):
        if v["mlive"][m]:
            out.append(f"vfio_dma{m}: container{v['mcont'][m]} iova pages [{v['miova'][m]}, "
                       f"{v['miova'][m] + v['mlen'][m]}) from user page {v['mva'][m]}")
    for t in range(cfg.n_tce):
        if v["tlive"][t]:
            out.append(f"tce{t}: container{v['tcont'][t]} window {v['tnum'][t]} iova page {v['tiova'][t]} -> "
                       f"user page {v['tva'][t]} (region{v['treg'][t]})")
    for r in range(cfg.n_reg):
        if v["rlive"][r]:
            who = f"container{v['rcont'][r]}" if v["rcont"][r] >= 0 else "no container (leaked)"
            out.append(f"region{r}: user pages [{v['rva'][r]}, {v['rva'][r] + v['rlen'][r]}) registered by {who}")
    for t in range(cfg.n_mtype):
        out.append(f"mdev type{t}: available {v['avail'][t]} of {v['mtotal'][t]}")
    for i in range(cfg.n_mdev):
        if v["ilive"][i]:
            out.append(f"mdev{i} of type{v['itype'][i]}")
    out.append(f"locked_vm {v['locked_vm']}, user locked_vm {v['user_locked_vm']}, pinned_vm {v['pinned_vm']}, "
               f"RLIMIT_MEMLOCK {v['rlimit']} pages, CAP_IPC_LOCK {'yes' if v['cap'] else 'no'}, "
               f"platform {'spapr' if v['spapr'] else 'vtd'} (max windows {v['max_windows']})")
    return out


def describe_action(name: str, params: dict, errno: int | None = None) -> str:
    args = ", ".join(f"{k}={v}" for k, v in params.items())
    s = f"{name}({args})"
    if errno is not None:
        s += " -> " + ("ok" if errno == 0 else ERRNOS[errno])
    return s


def diff(before: dict, after: dict, cfg: Config) -> list[str]:
    b, a = set(describe(before, cfg)), describe(after, cfg)
    return [x for x in a if x not in b]
