"""The cross-check: the z3 transition relation against the reference.

`sample(n, seed)` walks the reference at random: at each step it takes the
reference's current state (a snapshot, as model values), picks an action the
model can express there with random parameters, asks the model for the errno
and post-state (the transition relation, compiled from its z3 terms), performs
the same action on the reference (the trace steps tracegen writes for it, run
through ReferenceSession), and compares errno and post-state.  Each (state,
action) pair is judged on its own: the next pair starts from the reference's
state, so one disagreement does not cascade.

Post-states are compared in a canonical form that does not depend on slot
numbers (objects are described by their contents and what refers to them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import runtime
from . import transitions as _tr
from .schema import ERRNOS, VARS, Config, State, key
from .tracegen import _Writer, emit, platform_of

# the sizes the cross-check evaluates the model at (the reference states stay within)
CROSS_CFG_VTD = Config(grp_of=(0, 1, 1), n_ictx=2, n_cont=2, n_ioas=2, n_hwpt=2, n_area=4, n_obj=4, n_upages=4,
                       n_map=4, n_win=2, n_tce=1, n_reg=1, n_mtype=1, n_mdev=2)
CROSS_CFG_SPAPR = Config(grp_of=(0, 1, 1), n_ictx=1, n_cont=2, n_ioas=1, n_hwpt=1, n_area=1, n_obj=1, n_upages=1,
                         n_map=1, n_win=2, n_tce=4, n_reg=4, n_mtype=1, n_mdev=1)


# how often the random walk picks each action (default 1)
WEIGHTS = {"RegisterMemory": 4, "UnregisterMemory": 3, "TceCreate": 3, "TceRemove": 1, "SpaprMapDma": 6,
           "SpaprUnmapDma": 3, "IoasMap": 4, "IoasUnmap": 3, "IoasCopy": 4, "Attach": 3, "MapDma": 3,
           "UnmapDma": 2, "SetIommu": 2}


@dataclass
class Disagreement:
    action: str
    params: dict
    model_errno: str
    reference_errno: str | None
    differences: list

    def __str__(self):
        d = "; ".join(self.differences[:6])
        return (f"{self.action}({', '.join(f'{k}={v}' for k, v in self.params.items())}): model {self.model_errno}, "
                f"reference {self.reference_errno}" + (f"; post-state differs: {d}" if d else ""))


_COMPILED: dict = {}


def _compiled(action, cfg: Config):
    """fn(flat values, params) -> (enabled, errno, post flat values) for one action."""
    k = (action.name, cfg)
    if k not in _COMPILED:
        s = State.fresh(cfg, "x.")
        p = action.param_terms("p.")
        out = _tr.transition(action, s, p)
        names = {term: kk for kk, term in s.flat().items()}
        names.update({term: "p." + n for n, term in p.items()})
        post = out.post.flat()
        keys = list(post)
        fn = runtime.compile_terms([out.enabled, out.errno] + [post[x] for x in keys], names)
        _COMPILED[k] = (fn, keys)
    return _COMPILED[k]


def model_step(action, cfg: Config, flat: dict, params: dict):
    fn, keys = _compiled(action, cfg)
    v = dict(flat)
    v.update({"p." + n: x for n, x in params.items()})
    r = fn(v)
    return bool(r[0]), ERRNOS[r[1]], dict(zip(keys, r[2:]))


def _unflat(cfg: Config, flat: dict) -> dict:
    out = {}
    for name, (_, shape, _) in VARS.items():
        def build(idx=()):
            if len(idx) == len(shape):
                return flat[key(name, idx)]
            return [build(idx + (i,)) for i in range(getattr(cfg, shape[len(idx)]))]
        out[name] = build()
    return out


def canonical(cfg: Config, v: dict) -> dict:
    """The state without slot numbers."""
    objs = {o: (v["ova"][o], v["olen"][o], tuple(v["opin"][o][:v["olen"][o]]), v["omode"][o])
            for o in range(cfg.n_obj) if v["olive"][o]}
    ioas_areas = {}
    for a in range(cfg.n_area):
        if v["alive"][a]:
            ioas_areas.setdefault(v["aioas"][a], []).append(
                (v["aiova"][a], v["alen"][a], objs.get(v["aobj"][a]), v["aoff"][a]))
    ioas = {q: (v["qictx"][q], tuple(sorted(ioas_areas.get(q, []), key=repr))) for q in range(cfg.n_ioas)
            if v["qlive"][q]}
    hwpt = {h: (ioas.get(v["hioas"][h]), v["hauto"][h]) for h in range(cfg.n_hwpt) if v["hlive"][h]}
    regs = {r: (v["rva"][r], v["rlen"][r], v["rcont"][r]) for r in range(cfg.n_reg) if v["rlive"][r]}
    out = {
        "devices": [(tuple(v["bind"][d]), tuple(sorted(repr(hwpt.get(h)) for h in range(cfg.n_hwpt)
                                                       if v["attached"][d][h])))
                    for d in range(cfg.n_dev)],
        "groups": [(v["gopen"][g], v["gcont"][g], v["gictx"][g], v["gown"][g]) for g in range(cfg.n_grp)],
        "containers": [(v["ciommu"][c], v["cen"][c]) for c in range(cfg.n_cont)],
        "ioas": sorted(map(repr, ioas.values())),
        "hwpts": sorted(map(repr, hwpt.values())),
        "type1": sorted((v["mcont"][m], v["miova"][m], v["mlen"][m], v["mva"][m], v["macct"][m])
                        for m in range(cfg.n_map) if v["mlive"][m]),
        "windows": sorted((c, n, v["wstart"][c][n], v["wsize"][c][n], v["wps"][c][n], v["wacct"][c][n])
                          for c in range(cfg.n_cont) for n in range(cfg.n_win) if v["wlive"][c][n]),
        "tces": sorted((v["tcont"][t], v["tnum"][t], v["tiova"][t], v["tva"][t], regs.get(v["treg"][t]))
                       for t in range(cfg.n_tce) if v["tlive"][t]),
        "regs": sorted(regs.values()),
        "mdev": (tuple(v["avail"]), tuple(sorted((v["itype"][i], v["icost"][i]) for i in range(cfg.n_mdev)
                                                 if v["ilive"][i]))),
        "counters": (v["locked_vm"], v["user_locked_vm"], v["pinned_vm"]),
    }
    return out


def _diff(a: dict, b: dict) -> list[str]:
    return [f"{k}: model {a[k]} vs reference {b[k]}" for k in a if a[k] != b[k]]


def _first_free(live) -> int:
    for i, x in enumerate(live):
        if not x:
            return i
    return len(live)


class _Session:
    """A reference session driven by abstract actions through tracegen's writer."""

    def __init__(self, platform: dict, s0: dict, cfg: Config):
        from vfiospec.conformance import steps as S
        from vfiospec.conformance.targets.reference import ReferenceSession
        self.S = S
        self.sess = ReferenceSession(platform)
        self.writer = _Writer(cfg, s0)
        self.saved: dict = {}
        self.cfg = cfg
        # open the containers and iommufds in index order so that snapshot indices match
        for c in range(cfg.n_cont):
            self.writer.cont(c)
        if not s0["spapr"]:
            for i in range(cfg.n_ictx):
                self.writer.iommufd(i)
        self.done = 0
        self.flush()

    def flush(self):
        """Run the steps written since the last flush; the errno of the action's main
        step (the last one, or the SET_IOMMU before the cancel of a pending window)."""
        new = self.writer.steps[self.done:]
        errnos = []
        for st in new:
            obs = self.sess.perform(self.S.normalize(st, self.saved))
            if obs.errno is None:
                for fld, name in st.get("save", {}).items():
                    self.saved[name] = obs.out.get(fld)
            errnos.append(obs.errno or "OK")
        self.done = len(self.writer.steps)
        if not new:
            return None
        main = len(new) - 1
        if (main > 0 and new[main].get("cmd") == "VFIO_IOMMU_SPAPR_TCE_REMOVE"
                and new[main - 1].get("cmd") == "VFIO_SET_IOMMU"):
            main -= 1
        return errnos[main]

    def values(self, cfg: Config) -> tuple[Config, dict]:
        st = self.sess.state()
        # the model's IOAS q is the snapshot's q-th IOAS: name its id for the next steps
        for q, ioas in enumerate(st.ioas):
            self.saved[f"ioas{q}"] = ioas.id
        c, v = runtime.valuation(st, cfg)
        # user addresses relative to the trace's buffer, as the model counts them
        base = self.sess.bufs.get("buf", 0) // runtime.UNIT
        for name in ("ova", "mva", "rva", "tva"):
            v[name] = [x - base if x else x for x in v[name]]
        for name, live in (("ova", "olive"), ("mva", "mlive"), ("rva", "rlive"), ("tva", "tlive")):
            v[name] = [x if l else 0 for x, l in zip(v[name], v[live])]
        return c, v


def _random_params(rng: random.Random, action, cfg: Config, v: dict) -> dict:
    p = {}
    for prm in action.params:
        lo, hi = prm.bounds(cfg)
        n = prm.name
        if n in ("slot", "area", "obj"):
            live = {"slot": {"IoasAlloc": "qlive", "Attach": "hlive", "MapDma": "mlive", "RegisterMemory": "rlive",
                             "SpaprMapDma": "tlive", "MdevCreate": "ilive", "MdevRemove": "ilive"}.get(action.name),
                    "area": "alive", "obj": "olive"}[n]
            if action.name == "MdevRemove":
                lives = [i for i, x in enumerate(v["ilive"]) if x]
                p[n] = rng.choice(lives) if lives else 0
            elif live:
                p[n] = _first_free(v[live])
            else:
                p[n] = 0
        elif n == "c":
            p[n] = 0 if rng.random() < 0.85 else rng.randrange(cfg.n_cont)
        elif n == "kind":
            p[n] = 2 if v["spapr"] else 1
        elif n == "pgsize":
            p[n] = rng.choice((1, 16))
        elif n == "size":
            p[n] = rng.choice((16, 256, 4096, 262144))
        elif n == "num":
            c = p.get("c", 0)
            if action.name == "TceCreate":
                p[n] = _first_free(v["wlive"][c])
            else:
                p[n] = rng.randrange(cfg.n_win)
        elif n in ("iova",) and action.name.startswith("Spapr"):
            c = p.get("c", 0)
            wins = [(v["wstart"][c][k], v["wsize"][c][k], v["wps"][c][k]) for k in range(cfg.n_win)
                    if v["wlive"][c][k]]
            if wins and rng.random() < 0.85:
                st, size, ps = rng.choice(wins)
                p[n] = st + ps * rng.randrange(min(4, size // ps)) + (rng.random() < 0.1)
            else:
                p[n] = rng.randrange(0, 64)
        elif n == "va" and action.name in ("SpaprMapDma", "RegisterMemory", "UnregisterMemory"):
            regs = [(v["rva"][r], v["rlen"][r]) for r in range(cfg.n_reg) if v["rlive"][r]]
            if action.name == "UnregisterMemory" and regs and rng.random() < 0.7:
                va, ln = rng.choice(regs)
                p[n] = va
                p["_len"] = ln if rng.random() < 0.7 else max(1, ln - 1)
            else:
                p[n] = rng.choice((0, 16, 32, 48)) if rng.random() < 0.6 else rng.randrange(0, 64)
        elif n == "len" and "_len" in p:
            p[n] = p.pop("_len")
        elif n == "len" and action.name in ("RegisterMemory", "UnregisterMemory"):
            p[n] = rng.choice((1, 2, 16, 32))
        else:
            hi = hi if hi is not None else lo + 8
            p[n] = rng.randrange(lo, hi)
    p.pop("_len", None)
    return p


def sample(n: int, seed: int = 1, platform: str = "vtd", walk: int = 12):
    """Check `n` (state, action) pairs; returns (checked, disagreements).  Afterwards
    `sample.coverage` counts the pairs per (action, model errno)."""
    rng = random.Random(seed)
    cfg = CROSS_CFG_SPAPR if platform == "spapr" else CROSS_CFG_VTD
    acts = [a for a in _tr.ACTIONS if a.platform in ("any", platform)]
    if platform == "vtd":
        acts = [a for a in acts if not a.name.startswith("Mdev")] + [a for a in acts if a.name.startswith("Mdev")]
    checked, bad = 0, []
    seen = {}
    while checked < n:
        s0 = {"cap": rng.random() < 0.3, "rlimit": rng.choice((4, 8, 64, 1024)), "spapr": platform == "spapr",
              "max_windows": 2, "mtotal": [rng.choice((0, 1, 2, 3))]}
        sess = _Session(platform_of(s0, cfg), s0, cfg)
        script = []
        if rng.random() < 0.8:
            # most walks start from a set-up container (sPAPR) or a bound device (vtd)
            if platform == "spapr":
                script = [("OpenGroup", {"g": 0}), ("SetContainer", {"g": 0, "c": 0}),
                          ("SetIommu", {"c": 0, "kind": 2})]
            elif rng.random() < 0.5:
                script = [("Bind", {"dev": 1, "ictx": 0}), ("IoasAlloc", {"ictx": 0, "slot": 0}),
                          ("Attach", {"dev": 1, "ioas": 0, "slot": 0})]
            else:
                script = [("OpenGroup", {"g": 0}), ("SetContainer", {"g": 0, "c": 0}),
                          ("SetIommu", {"c": 0, "kind": 1})]
        for _ in range(walk + len(script)):
            c2, v = sess.values(cfg)
            if c2 != cfg:
                break                       # the reference outgrew the cross-check's sizes
            flat = runtime._flat(cfg, v)
            for _try in range(20):
                if script:
                    name, p = script.pop(0)
                    a = _tr.BY_NAME[name]
                else:
                    a = rng.choices(acts, [WEIGHTS.get(x.name, 1) for x in acts])[0]
                    p = _random_params(rng, a, cfg, v)
                enabled, errno, post = model_step(a, cfg, flat, p)
                if enabled:
                    break
            else:
                break
            states = [v, _unflat(cfg, post)]
            emit(sess.writer, a.name, p, errno, states[0], states[1], cfg)
            ref_errno = sess.flush()
            c3, after = sess.values(cfg)
            checked += 1
            seen[(a.name, errno)] = seen.get((a.name, errno), 0) + 1
            mine, theirs = canonical(cfg, states[1]), canonical(c3, after)
            if c3.grp_of != cfg.grp_of:
                # an mdev brought a device and a group: compare what does not depend on them
                for k in ("devices", "groups"):
                    mine.pop(k), theirs.pop(k)
            diffs = _diff(mine, theirs)
            if ref_errno != errno or diffs:
                bad.append(Disagreement(a.name, p, errno, ref_errno, diffs))
                bad[-1].steps = list(sess.writer.steps)
                bad[-1].platform = platform_of(s0, cfg)
            if c3 != cfg:
                break                       # the reference outgrew the cross-check's sizes: a new walk
            if checked >= n:
                break
    sample.coverage = seen
    return checked, bad


