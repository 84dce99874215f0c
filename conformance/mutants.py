"""The mutant catalog: seeded bugs in the reference, each one idea tied to a
requirement ID, and `vfiospec mutants`, which runs the suite against each and
prints the kill matrix (mutant x what killed it x time to kill).

A mutant is applied inside the process that serves it (mutant:NAME is the
reference server with --mutant NAME), never in the harness's own reference."""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

from vfiospec.reference.errors import Errno


@dataclass
class Mutant:
    name: str
    requirement: str
    idea: str
    patch: Callable[[], None]

    def apply(self) -> None:
        self.patch()


def _attr(path: str):
    mod, _, rest = path.partition(":")
    obj = importlib.import_module(f"vfiospec.reference.{mod}")
    parts = rest.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    return obj, parts[-1]


def replace(path: str, make):
    """Patch `module:Class.attr` with make(original)."""
    def patch():
        obj, name = _attr(path)
        setattr(obj, name, make(getattr(obj, name)))
    return patch


def drop_errno(req: str, only: str | None = None):
    """The check that raises Errno(..., req) is skipped: the failing call reports success
    (the bug of a missing check, seen from userspace)."""
    def patch():
        from vfiospec.reference import kernel as K
        orig = K.Kernel._call

        def _call(self, fn, *args):
            r = orig(self, fn, *args)
            if r.errno and r.reqs and r.reqs[-1] == req and (only is None or r.errno == only):
                return K.Result(ret=0, out=r.out, reqs=r.reqs)
            return r
        K.Kernel._call = _call
    return patch


def swap_errno(req: str, new: str):
    """The errno of requirement `req` is another one (a wrong-errno bug)."""
    def patch():
        from vfiospec.reference import kernel as K
        orig = K.Kernel._call

        def _call(self, fn, *args):
            r = orig(self, fn, *args)
            if r.errno and r.reqs and r.reqs[-1] == req:
                r.errno = new
            return r
        K.Kernel._call = _call
    return patch


def raise_instead(path: str, errno: str, req: str):
    """A function that should succeed fails with `errno`."""
    def make(orig):
        def f(*a, **kw):
            raise Errno(errno, req)
        return f
    return replace(path, make)


CATALOG: dict[str, Mutant] = {}


def mutant(name, requirement, idea, patch):
    CATALOG[name] = Mutant(name, requirement, idea, patch)


# --- container / group / device (vfio core) -------------------------------------
mutant("group-double-open", "GROUP-SINGLE-OPEN", "a group node can be opened twice",
       drop_errno("GROUP-SINGLE-OPEN"))
mutant("set-iommu-twice", "CONTAINER-SET-IOMMU-TWICE", "SET_IOMMU may be called again on a set container",
       drop_errno("CONTAINER-SET-IOMMU-TWICE"))
mutant("set-iommu-no-group", "CONTAINER-SET-IOMMU-NO-GROUP", "SET_IOMMU without a group gives ENODEV, not EINVAL",
       swap_errno("CONTAINER-SET-IOMMU-NO-GROUP", "ENODEV"))
mutant("ioctl-before-set-iommu-enotty", "CONTAINER-IOCTL-BEFORE-SET-IOMMU",
       "an ioctl before SET_IOMMU gives ENOTTY (the iommufd-compat answer) instead of EINVAL",
       swap_errno("CONTAINER-IOCTL-BEFORE-SET-IOMMU", "ENOTTY"))
mutant("unset-container-busy", "GROUP-UNSET-CONTAINER-BUSY", "UNSET_CONTAINER succeeds with a device fd open",
       drop_errno("GROUP-UNSET-CONTAINER-BUSY"))
def _detach_keeps_iommu(orig):
    def detach_group(self, group):
        if self.iommu_data is not None:
            self.iommu_data.detach_group(group)
        if group.type == "iommu":
            group.release_dma_owner()
        group.container = None
        group.container_users = 0
        self.group_list.remove(group)
    return detach_group


mutant("last-group-keeps-iommu", "CONTAINER-LAST-GROUP-RELEASES-IOMMU",
       "the backend survives the last group leaving the container",
       replace("vfio.container:Container.detach_group", _detach_keeps_iommu))


def load_extra() -> None:
    """Mutants of the modules that may be absent from a build register themselves here."""
    for m in ("conformance.mutants_catalog",):
        try:
            importlib.import_module(f"vfiospec.{m}")
        except ModuleNotFoundError:
            pass


load_extra()      # every process that imports the catalog (the mutant target's server too) sees it all


# ------------------------------------------------------------------ the kill run
def kill(name: str, traces, budget: float, seed: int = 0) -> dict:
    """Run the suite against one mutant until something kills it."""
    from .runner import run_trace
    from .stateful import MODES, run_mode
    from .targets import get_target
    m = CATALOG[name]
    t0 = time.monotonic()
    target = get_target(f"mutant:{name}")
    first = sorted(traces, key=lambda t: m.requirement not in t.requirements)
    try:
        for t in first:
            r = run_trace(t, target)
            # a failing step; a target that could not even begin (a mutant its server
            # does not know, a patch that raises) has not been killed by this trace
            if r.verdict in ("FAIL", "ERROR") and r.failed:
                bad = r.failed[0]
                return {"mutant": name, "requirement": m.requirement, "killed": True,
                        "by": f"trace {t.name}" + (f" step {bad.index}" if bad else ""),
                        "seconds": round(time.monotonic() - t0, 3)}
    finally:
        target.shutdown()
    left = max(budget - (time.monotonic() - t0), 1.0)
    for mode in MODES:
        r = run_mode(mode, f"mutant:{name}", left / len(MODES), seed, max_examples=None)
        # only a divergence from the reference speaks of the mutant: an invariant
        # violation is checked on the (unmutated) reference's state
        if r["verdict"] == "FAIL" and r["failures"] and r["failures"][0]["message"].startswith("Divergence"):
            return {"mutant": name, "requirement": m.requirement, "killed": True,
                    "by": f"stateful {mode}: {r['failures'][0]['message']}"[:160],
                    "seconds": round(time.monotonic() - t0, 3)}
    return {"mutant": name, "requirement": m.requirement, "killed": False, "by": "-",
            "seconds": round(time.monotonic() - t0, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="vfiospec mutants", description="Run the suite against every seeded bug.")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per mutant for stateful exploration")
    ap.add_argument("--list", action="store_true", help="list the catalog")
    ap.add_argument("--only", nargs="*", help="these mutants only")
    ap.add_argument("--json", metavar="FILE", help="write the kill matrix as JSON")
    a = ap.parse_args(argv)
    load_extra()
    if a.list:
        for m in CATALOG.values():
            print(f"{m.name:<36} {m.requirement:<40} {m.idea}")
        print(f"{len(CATALOG)} mutants")
        return 0
    from .replay import load_all
    from .run import shipped_traces_dir
    from .runner import run_trace
    from .targets import get_target
    ref = get_target("reference")
    traces = []
    for t in load_all([shipped_traces_dir()]):
        # a trace that fails on the unmutated reference would "kill" every mutant
        if run_trace(t, ref).verdict == "PASS":
            traces.append(t)
        else:
            print(f"vfiospec mutants: trace {t.name} fails on the reference itself; not used", file=sys.stderr)
    names = a.only or list(CATALOG)
    rows = []
    print(f"{'mutant':<36} {'requirement':<36} {'killed by':<60} seconds")
    for n in names:
        if n not in CATALOG:
            print(f"vfiospec mutants: unknown mutant {n!r}", file=sys.stderr)
            return 2
        row = kill(n, traces, a.budget)
        rows.append(row)
        print(f"{n:<36} {row['requirement']:<36} {row['by'][:60]:<60} {row['seconds']:.2f}", flush=True)
    killed = [r for r in rows if r["killed"]]
    times = [r["seconds"] for r in killed]
    print(f"{len(killed)}/{len(rows)} killed; time to kill: median {statistics.median(times) if times else 0:.2f} s, "
          f"worst {max(times) if times else 0:.2f} s")
    if a.json:
        from .junit import write_atomic
        write_atomic(a.json, json.dumps({"mutants": rows}, indent=1))
    return 0 if len(killed) == len(rows) else 1
