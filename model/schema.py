"""The abstract state of vfiospec in z3: bounded, quantifier-free.

Every map of the abstract state is unrolled over a small finite index set (a
Python list of z3 scalars, one per index): `bind[d][i]` is one z3 Bool per
device `d` and iommufd context `i`.  Reading or writing at a *symbolic* index
(an action parameter) is a chain of `If`s over the finite set (`sel`, `upd`),
so every obligation stays in quantifier-free linear integer arithmetic.

Units: addresses and lengths (IOVA, user VA, window start/size) are counted in
pages of the platform page size (4 KiB unless the trace says otherwise), so
the accounting counters (`locked_vm`, in pages) and the lengths compare
directly.

The sizes (`Config`) are the model's bounds: `vfiospec prove` proves the
invariants for every state of that size (every value of every variable, not
only reachable ones), `check_state` builds a Config large enough for the
concrete state it checks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import z3

# Errno codes of the model (the Linux names; OK is success).
ERRNOS = ["OK", "EINVAL", "EBUSY", "EPERM", "ENOENT", "EEXIST", "ENOSPC", "ENOMEM", "ENXIO", "ENODEV",
          "ENOTTY", "EBADF"]
ERRNO_CODE = {n: i for i, n in enumerate(ERRNOS)}

# container IOMMU backends (ciommu)
# (the actions of the model set only 0, 1 and 2; the others appear in snapshots of
# the reference, which runs traces the model does not generate)
IOMMU_NONE, IOMMU_TYPE1V2, IOMMU_SPAPR_V2, IOMMU_TYPE1, IOMMU_SPAPR_V1, IOMMU_NOIOMMU = 0, 1, 2, 3, 4, 5
IOMMU_NAMES = {IOMMU_NONE: "none", IOMMU_TYPE1V2: "VFIO_TYPE1v2_IOMMU", IOMMU_SPAPR_V2: "VFIO_SPAPR_TCE_v2_IOMMU",
               IOMMU_TYPE1: "VFIO_TYPE1_IOMMU", IOMMU_SPAPR_V1: "VFIO_SPAPR_TCE_IOMMU",
               IOMMU_NOIOMMU: "VFIO_NOIOMMU_IOMMU"}
TYPE1_KINDS = (IOMMU_TYPE1V2, IOMMU_TYPE1)
SPAPR_KINDS = (IOMMU_SPAPR_V2, IOMMU_SPAPR_V1)


@dataclass(frozen=True)
class Config:
    """The bounds of the model: how many objects of each kind exist (slots)."""

    grp_of: tuple[int, ...] = (0, 1, 1)   # device -> group (dev0 alone in g0; dev1, dev2 in g1)
    n_ictx: int = 2       # iommufd file descriptors (struct iommufd_ctx)
    n_cont: int = 2       # VFIO containers
    n_ioas: int = 2       # IOAS objects
    n_hwpt: int = 2       # (automatic) HWPTs
    n_area: int = 3       # iopt_area slots
    n_obj: int = 3        # iopt_pages slots
    n_upages: int = 4     # pages of an iopt_pages (object-relative page index bound)
    n_map: int = 2        # type1 vfio_dma slots
    n_win: int = 2        # sPAPR DMA windows (TCE table slots) per container
    n_tce: int = 2        # sPAPR TCE slots (one IOMMU page each)
    n_reg: int = 2        # sPAPR pre-registered regions (mm_iommu_table_group_mem_t)
    n_mtype: int = 1      # mdev pools (one per parent: mtty's ports)
    n_mdev: int = 2       # mdev instance slots

    @property
    def n_dev(self) -> int:
        return len(self.grp_of)

    @property
    def n_grp(self) -> int:
        return max(self.grp_of) + 1 if self.grp_of else 0

    def devs_of(self, g: int) -> list[int]:
        return [d for d, gg in enumerate(self.grp_of) if gg == g]


DEFAULT = Config()

# Variable table: name -> (sort, shape function of Config, description)
# shape is a tuple of dimension names (attributes of Config).
VARS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # devices and groups
    "bind": ("Bool", ("n_dev", "n_ictx"), "device d is bound (VFIO_DEVICE_BIND_IOMMUFD) to iommufd i through its cdev"),
    "attached": ("Bool", ("n_dev", "n_hwpt"), "device d is attached to HWPT h"),
    "demu": ("Bool", ("n_dev",), "device d is emulated (mdev) or in a no-IOMMU group: nothing it does "
                                  "claims DMA ownership of its group (constant)"),
    "gopen": ("Bool", ("n_grp",), "the group node /dev/vfio/$GROUP is open"),
    "gcont": ("Int", ("n_grp",), "the container the group is in, -1 for none"),
    "gictx": ("Int", ("n_grp",), "the iommufd set on the group by SET_CONTAINER (group path), -1 for none"),
    "gown": ("Int", ("n_grp",), "DMA owner of the iommu_group: -1 none, c < n_cont container c, n_cont+i iommufd i"),
    # containers
    "ciommu": ("Int", ("n_cont",), "IOMMU backend of the container: 0 none, 1 TYPE1v2, 2 sPAPR TCE v2"),
    "cen": ("Bool", ("n_cont",), "sPAPR container enabled (v2: by the first REGISTER_MEMORY)"),
    # iommufd objects
    "qlive": ("Bool", ("n_ioas",), "IOAS q exists"),
    "qictx": ("Int", ("n_ioas",), "the iommufd context IOAS q belongs to"),
    "hlive": ("Bool", ("n_hwpt",), "automatic HWPT h exists"),
    "hioas": ("Int", ("n_hwpt",), "the IOAS HWPT h is a domain of"),
    "hauto": ("Bool", ("n_hwpt",), "HWPT h was created automatically by an attach (not IOMMU_HWPT_ALLOC)"),
    "alive": ("Bool", ("n_area",), "iopt_area a exists"),
    "aioas": ("Int", ("n_area",), "the IOAS area a is in"),
    "aiova": ("Int", ("n_area",), "first IOVA page of area a"),
    "alen": ("Int", ("n_area",), "length of area a in pages"),
    "aobj": ("Int", ("n_area",), "the iopt_pages area a maps"),
    "aoff": ("Int", ("n_area",), "first page of the iopt_pages area a maps"),
    "olive": ("Bool", ("n_obj",), "iopt_pages o exists"),
    "ova": ("Int", ("n_obj",), "first user VA page of iopt_pages o"),
    "olen": ("Int", ("n_obj",), "length of iopt_pages o in pages"),
    "opin": ("Int", ("n_obj", "n_upages"), "pin count of page k of iopt_pages o"),
    "oacc": ("Int", ("n_obj", "n_upages"), "in-kernel access pins of page k of iopt_pages o"),
    "omode": ("Int", ("n_obj",), "accounting mode of iopt_pages o: 0 none (CAP_IPC_LOCK), 1 per-user, 2 per-mm"),
    # type1
    "mlive": ("Bool", ("n_map",), "type1 vfio_dma m exists"),
    "mcont": ("Int", ("n_map",), "the container of vfio_dma m"),
    "miova": ("Int", ("n_map",), "first IOVA page of vfio_dma m"),
    "mlen": ("Int", ("n_map",), "length of vfio_dma m in pages"),
    "mva": ("Int", ("n_map",), "first user VA page of vfio_dma m"),
    "macct": ("Int", ("n_map",), "pages vfio_dma m charged to locked_vm"),
    "v1acct": ("Int", ("n_cont",), "pages a v1 sPAPR VFIO_IOMMU_ENABLE charged to locked_vm"),
    # sPAPR
    "wlive": ("Bool", ("n_cont", "n_win"), "DMA window n (TCE table slot n) of container c exists"),
    "wstart": ("Int", ("n_cont", "n_win"), "bus address of window n of container c, in pages"),
    "wsize": ("Int", ("n_cont", "n_win"), "size of window n of container c, in pages"),
    "wps": ("Int", ("n_cont", "n_win"), "IOMMU page size of window n of container c, in pages"),
    "wacct": ("Int", ("n_cont", "n_win"), "pages of locked_vm the TCE table of the window accounts"),
    "tlive": ("Bool", ("n_tce",), "TCE t is set (maps one IOMMU page)"),
    "tcont": ("Int", ("n_tce",), "the container of TCE t"),
    "tnum": ("Int", ("n_tce",), "the window (table slot) of TCE t"),
    "tiova": ("Int", ("n_tce",), "IOVA page of TCE t"),
    "tva": ("Int", ("n_tce",), "user VA page TCE t maps"),
    "treg": ("Int", ("n_tce",), "the pre-registered region TCE t maps from (mm_iommu_mapped_inc)"),
    "rlive": ("Bool", ("n_reg",), "region r is registered in the mm (mm_iommu_get finds it)"),
    "rcont": ("Int", ("n_reg",), "the container that registered region r, -1 when none does (leaked)"),
    "rva": ("Int", ("n_reg",), "first user VA page of region r"),
    "rlen": ("Int", ("n_reg",), "length of region r in pages"),
    # mdev
    "avail": ("Int", ("n_mtype",), "free units of mdev pool t (mtty: avail_ports of the parent)"),
    "mtotal": ("Int", ("n_mtype",), "units mdev pool t offers at boot (constant)"),
    "ilive": ("Bool", ("n_mdev",), "mdev instance i exists"),
    "itype": ("Int", ("n_mdev",), "the pool of mdev instance i"),
    "icost": ("Int", ("n_mdev",), "units instance i holds (mtty: nr_ports of its type)"),
    # accounting and process
    "locked_vm": ("Int", (), "mm->locked_vm, in pages"),
    "user_locked_vm": ("Int", (), "user_struct->locked_vm charged by iommufd, in pages"),
    "pinned_vm": ("Int", (), "mm->pinned_vm charged by iommufd, in pages"),
    "rlimit": ("Int", (), "RLIMIT_MEMLOCK in pages (constant)"),
    "cap": ("Bool", (), "the process holds CAP_IPC_LOCK (constant)"),
    "spapr": ("Bool", (), "the platform IOMMU is sPAPR (constant: selects the actions that exist)"),
    "max_windows": ("Int", (), "DMA windows the sPAPR platform supports per container (constant)"),
}

CONSTANT_VARS = ("rlimit", "cap", "spapr", "max_windows", "mtotal", "demu")


def _indices(cfg: Config, shape: tuple[str, ...]):
    if not shape:
        return [()]
    out = [()]
    for dim in shape:
        n = getattr(cfg, dim)
        out = [o + (i,) for o in out for i in range(n)]
    return out


def key(name: str, idx: tuple[int, ...]) -> str:
    return name + "".join(f"[{i}]" for i in idx)


class State:
    """One abstract state: every variable of VARS as z3 terms (nested Python lists).

    `s.bind[d][i]` is a z3 Bool, `s.locked_vm` a z3 Int.  A State is immutable by
    convention: actions build a new one with `updated`."""

    def __init__(self, cfg: Config, values: dict):
        self.cfg = cfg
        self._v = values           # name -> nested list or term

    @classmethod
    def fresh(cls, cfg: Config, prefix: str) -> "State":
        vals = {}
        for name, (sort, shape, _) in VARS.items():
            mk = z3.Bool if sort == "Bool" else z3.Int
            vals[name] = _build(cfg, shape, lambda idx, n=name, mk=mk: mk(f"{prefix}{key(n, idx)}"))
        return cls(cfg, vals)

    def __getattr__(self, name):
        try:
            return self.__dict__["_v"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name):
        return self._v[name]

    def updated(self, **changes) -> "State":
        vals = dict(self._v)
        for k, v in changes.items():
            if k not in VARS:
                raise KeyError(k)
            vals[k] = v
        return State(self.cfg, vals)

    def flat(self) -> dict[str, z3.ExprRef]:
        """key -> term, e.g. 'bind[1][0]' -> Bool."""
        out = {}
        for name, (_, shape, _) in VARS.items():
            for idx in _indices(self.cfg, shape):
                out[key(name, idx)] = _at(self._v[name], idx)
        return out


def _build(cfg, shape, fn, idx=()):
    if len(idx) == len(shape):
        return fn(idx)
    return [_build(cfg, shape, fn, idx + (i,)) for i in range(getattr(cfg, shape[len(idx)]))]


def _at(v, idx):
    for i in idx:
        v = v[i]
    return v


# ---------------------------------------------------------------- helpers over terms
def sel(lst, i, default=None):
    """lst[i] for a symbolic index i (a chain of Ifs); `default` outside the range."""
    if isinstance(i, int):
        return lst[i] if 0 <= i < len(lst) else default
    if not lst:
        return default
    if default is None:
        default = lst[-1]
        rng = range(len(lst) - 1)
    else:
        rng = range(len(lst))
    out = default
    for k in reversed(rng):
        out = z3.If(i == k, lst[k], out)
    return out


def upd(lst, i, val, when=True):
    """lst with element i (possibly symbolic) replaced by val where `when` holds."""
    return [z3.If(z3.And(i == k, when), val, x) for k, x in enumerate(lst)]


def count(bools):
    return z3.Sum([z3.If(b, 1, 0) for b in bools]) if bools else z3.IntVal(0)


def total(terms):
    return z3.Sum(list(terms)) if terms else z3.IntVal(0)


def disjoint(s1, l1, s2, l2):
    """[s1, s1+l1) and [s2, s2+l2) do not intersect."""
    return z3.Or(s1 + l1 <= s2, s2 + l2 <= s1)


def within(s1, l1, s2, l2):
    """[s1, s1+l1) lies inside [s2, s2+l2)."""
    return z3.And(s2 <= s1, s1 + l1 <= s2 + l2)


# Platform constants of the sPAPR model: the bus address of each table slot
# (pnv/pseries create_table: slot 0 at tce32_start = 0, slot 1 at the 64-bit
# bypass base 1 << 59), in 4 KiB pages.
WINDOW_START_PAGES = (0, (1 << 59) >> 12)
DDW_BASE_PAGES = (1 << 59) >> 12       # QEMU's dma64_win_addr, where a second window goes
DMA32_PAGES = (1 << 30) >> 12          # the default 32-bit window: 1 GiB at 0
SPAPR_PAGE_SIZES = (1, 16, 512, 4096)  # 4 KiB, 64 KiB, 2 MiB, 16 MiB IOMMU pages, in 4 KiB pages
SPAPR_MODEL_PAGE_SIZES = (1, 16)       # the ones the model's TceCreate uses
IOVA_PAGES = 16                        # type1 / IOAS IOVAs the model uses: [0, 16) pages
USER_PAGES = 32                        # the user buffer the model maps from: 32 pages


def window_start(n):
    """Bus address (pages) of table slot n."""
    return sel([z3.IntVal(x) for x in WINDOW_START_PAGES], n) if not isinstance(n, int) else \
        z3.IntVal(WINDOW_START_PAGES[n])


def aligned(x, ps):
    """x is a multiple of the IOMMU page size ps (one of SPAPR_PAGE_SIZES): linear,
    a disjunction over the finite page sizes, so obligations stay in QF_LIA."""
    if isinstance(ps, int):
        return x % ps == 0
    return z3.Or([z3.And(ps == k, x % k == 0) for k in SPAPR_PAGE_SIZES])


def concrete_config(**sizes) -> Config:
    return replace(DEFAULT, **sizes)
