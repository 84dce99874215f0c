"""`vfiospec bench [--quick]`: how fast vfiospec checks, and how its cost grows.

Every figure that is a ratio is measured side by side in the same run (these
machines are noisy).  Prints a table and writes JSON (--json FILE)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

PAGE = 0x1000


def _timeit(fn, min_seconds: float) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    while True:
        n += fn()
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n, dt


def bench_replay(quick: bool) -> list[dict]:
    """Reference replay steps/s on the shipped traces, and a decode-only baseline."""
    from vfiospec.conformance import steps as S
    from vfiospec.conformance.replay import load_all
    from vfiospec.conformance.run import shipped_traces_dir
    from vfiospec.conformance.runner import run_trace
    from vfiospec.conformance.targets import get_target
    traces = load_all([shipped_traces_dir()])
    target = get_target("reference")
    nsteps = sum(len(t.steps) for t in traces)

    def replay():
        for t in traces:
            run_trace(t, target)
        return nsteps

    def decode():
        for t in traces:
            saved = {}
            for st in t.steps:
                try:
                    S.normalize(st, saved)
                except S.UndefinedName:
                    pass
        return nsteps

    secs = 1.0 if quick else 4.0
    n1, d1 = _timeit(replay, secs)
    n2, d2 = _timeit(decode, secs)
    return [{"figure": "reference replay", "value": n1 / d1, "unit": "steps/s",
             "note": f"{len(traces)} shipped traces, {nsteps} steps"},
            {"figure": "decode-only baseline", "value": n2 / d2, "unit": "steps/s"},
            {"figure": "replay / baseline", "value": (n1 / d1) / (n2 / d2), "unit": "ratio"}]


def _session(platform_doc):
    from vfiospec.conformance.targets.reference import ReferenceSession
    return ReferenceSession(platform_doc)


def _do(s, step, saved=None):
    from vfiospec.conformance import steps as S
    return s.perform(S.normalize(step, saved or {}))


def _type1_with(n: int):
    s = _session({"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}, "params": {"dma_entry_limit": 100000}})
    for st in [{"call": "open", "path": "/dev/vfio/vfio", "as": "c"},
               {"call": "open", "path": "/dev/vfio/{g0}", "as": "g"},
               {"call": "ioctl", "fd": "g", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "c"},
               {"call": "ioctl", "fd": "c", "cmd": "VFIO_SET_IOMMU", "arg": "VFIO_TYPE1v2_IOMMU"},
               {"call": "mmap", "length": hex(PAGE * 4), "as": "buf"}]:
        _do(s, st)
    for i in range(n):
        r = _do(s, {"call": "ioctl", "fd": "c", "cmd": "VFIO_IOMMU_MAP_DMA",
                    "arg": {"flags": ["VFIO_DMA_MAP_FLAG_READ"], "vaddr": "buf", "iova": hex((2 * i) * PAGE),
                            "size": hex(PAGE)}})
        if r.errno:
            raise RuntimeError(f"setting up {n} mappings: map {i} gave {r.errno}")
    return s


def _ioas_with(n: int):
    s = _session({"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}}})
    saved = {}
    _do(s, {"call": "open", "path": "/dev/iommu", "as": "f"})
    r = _do(s, {"call": "ioctl", "fd": "f", "cmd": "IOMMU_IOAS_ALLOC"})
    saved["ioas"] = r.out["out_ioas_id"]
    _do(s, {"call": "mmap", "length": hex(PAGE * 4), "as": "buf"})
    for i in range(n):
        r = _do(s, {"call": "ioctl", "fd": "f", "cmd": "IOMMU_IOAS_MAP",
                    "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_READABLE"], "ioas_id": "$ioas",
                            "user_va": "buf", "length": hex(PAGE), "iova": hex((2 * i + 2) * PAGE)}}, saved)
        if r.errno:
            raise RuntimeError(f"setting up {n} areas: map {i} gave {r.errno}")
    return s, saved


def bench_growth(quick: bool) -> list[dict]:
    """Per-step cost with 10 .. 10,000 live mappings / areas, and 1 .. 100 devices."""
    rows = []
    sizes = [10, 100, 1000, 10000]
    secs = 0.3 if quick else 1.0
    for n in sizes:
        try:
            s = _type1_with(n)
        except Exception as e:
            rows.append({"figure": f"type1 map+unmap, {n} mappings", "value": None, "unit": "SKIPPED", "note": str(e)})
            continue
        iova = hex((2 * n + 1) * PAGE)

        def op():
            _do(s, {"call": "ioctl", "fd": "c", "cmd": "VFIO_IOMMU_MAP_DMA",
                    "arg": {"flags": ["VFIO_DMA_MAP_FLAG_READ"], "vaddr": "buf", "iova": iova, "size": hex(PAGE)}})
            _do(s, {"call": "ioctl", "fd": "c", "cmd": "VFIO_IOMMU_UNMAP_DMA", "arg": {"iova": iova, "size": hex(PAGE)}})
            return 2
        k, d = _timeit(op, secs)
        rows.append({"figure": f"type1 map+unmap, {n} live mappings", "value": k / d, "unit": "steps/s"})
    for n in sizes:
        try:
            s, saved = _ioas_with(n)
        except Exception as e:
            rows.append({"figure": f"ioas map+unmap, {n} areas", "value": None, "unit": "SKIPPED", "note": str(e)})
            continue
        iova = hex((2 * n + 3) * PAGE)

        def op2():
            _do(s, {"call": "ioctl", "fd": "f", "cmd": "IOMMU_IOAS_MAP",
                    "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_READABLE"], "ioas_id": "$ioas",
                            "user_va": "buf", "length": hex(PAGE), "iova": iova}}, saved)
            _do(s, {"call": "ioctl", "fd": "f", "cmd": "IOMMU_IOAS_UNMAP",
                    "arg": {"ioas_id": "$ioas", "iova": iova, "length": hex(PAGE)}}, saved)
            return 2
        k, d = _timeit(op2, secs)
        rows.append({"figure": f"ioas map+unmap, {n} live areas", "value": k / d, "unit": "steps/s"})
    for n in (1, 10, 100):
        groups = {f"g{i}": {"devices": {f"dev{i}": "vfio-pci"}} for i in range(n)}
        s = _session({"groups": groups})
        _do(s, {"call": "open", "path": "/dev/vfio/vfio", "as": "c"})
        last = f"g{n - 1}"

        def op3():
            _do(s, {"call": "open", "path": "/dev/vfio/{%s}" % last, "as": "g"})
            _do(s, {"call": "ioctl", "fd": "g", "cmd": "VFIO_GROUP_GET_STATUS"})
            _do(s, {"call": "close", "fd": "g"})
            return 3
        k, d = _timeit(op3, secs)
        rows.append({"figure": f"group open+status+close, {n} devices", "value": k / d, "unit": "steps/s"})
    return rows


def bench_stateful(quick: bool) -> list[dict]:
    """Stateful steps/s against the reference vs a bare machine with the same number of rules."""
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, rule

    from vfiospec.conformance.stateful import machine_for, run_mode
    n_ex = 10 if quick else 40
    t0 = time.perf_counter()
    r = run_mode("type1v2", "reference", 0, 0, max_examples=n_ex)
    d1 = time.perf_counter() - t0
    steps = r["steps"]
    nrules = len(machine_for("type1v2").RULES)

    class Bare(RuleBasedStateMachine):
        count = 0

    for i in range(nrules):
        def f(self, x):
            type(self).count += 1
        f.__name__ = f"r{i}"
        setattr(Bare, f"r{i}", rule(x=st.integers(0, 16))(f))
    conf = settings(max_examples=n_ex, stateful_step_count=25, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
    t0 = time.perf_counter()
    get_state_machine_test(Bare, settings=conf)()
    d2 = time.perf_counter() - t0
    a, b = steps / d1, Bare.count / d2
    return [{"figure": "stateful type1v2 vs reference", "value": a, "unit": "steps/s",
             "note": f"{n_ex} examples, {steps} steps, invariants checked every step"},
            {"figure": f"bare Hypothesis machine ({nrules} rules)", "value": b, "unit": "steps/s"},
            {"figure": "bare / stateful (cost factor)", "value": b / a if a else None, "unit": "ratio"}]


def bench_mutants(quick: bool) -> list[dict]:
    from vfiospec.conformance import mutants as M
    from vfiospec.conformance.replay import load_all
    from vfiospec.conformance.run import shipped_traces_dir
    M.load_extra()
    traces = load_all([shipped_traces_dir()])
    names = list(M.CATALOG)[: (6 if quick else None)]
    rows = [M.kill(n, traces, 20 if quick else 60) for n in names]
    times = [r["seconds"] for r in rows if r["killed"]]
    return [{"figure": "mutants killed", "value": len(times), "unit": f"of {len(rows)}"},
            {"figure": "time to kill, median", "value": statistics.median(times) if times else None, "unit": "s"},
            {"figure": "time to kill, worst", "value": max(times) if times else None, "unit": "s"}]


def bench_z3(quick: bool) -> list[dict]:
    try:
        from vfiospec.model import bench as mb
    except ImportError as e:
        return [{"figure": "z3 prove", "value": None, "unit": "SKIPPED", "note": f"model bench unavailable: {e}"}]
    return mb.bench(quick=quick)


def bench_tlc(quick: bool) -> list[dict]:
    try:
        from vfiospec.spec import bench as sb
    except ImportError as e:
        return [{"figure": "TLC", "value": None, "unit": "SKIPPED", "note": f"spec bench unavailable: {e}"}]
    rows = []
    for r in sb.bench(workers=(1,) if quick else (1, 2)):
        rows.append({"figure": f"TLC {r.get('model')} workers={r.get('workers')}", "value": r.get("states_per_s"),
                     "unit": "states/s", "note": f"{r.get('distinct')} distinct, {r.get('seconds')} s"})
    return rows


def bench_lane(quick: bool) -> list[dict]:
    try:
        from vfiospec.lane import bench as lb
    except ImportError as e:
        return [{"figure": "kernel lane", "value": None, "unit": "SKIPPED", "note": f"lane bench unavailable: {e}"}]
    return lb.bench(quick=quick)


SECTIONS = {"replay": bench_replay, "stateful": bench_stateful, "growth": bench_growth, "mutants": bench_mutants,
            "z3": bench_z3, "tlc": bench_tlc, "lane": bench_lane}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="vfiospec bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter measurements (under 3 minutes)")
    ap.add_argument("--only", nargs="*", choices=list(SECTIONS), help="these sections only")
    ap.add_argument("--json", metavar="FILE", default="vfiospec-bench.json")
    a = ap.parse_args(argv)
    machine = {"host": platform.node(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
               "platform": platform.platform()}
    out = {"machine": machine, "quick": a.quick, "sections": {}}
    t_all = time.perf_counter()
    for name in a.only or list(SECTIONS):
        t0 = time.perf_counter()
        try:
            rows = SECTIONS[name](a.quick)
        except Exception as e:
            rows = [{"figure": name, "value": None, "unit": "ERROR", "note": f"{type(e).__name__}: {e}"}]
        out["sections"][name] = {"rows": rows, "seconds": round(time.perf_counter() - t0, 2)}
        print(f"\n== {name} ({time.perf_counter() - t0:.1f} s)")
        for r in rows:
            v = r["value"]
            vs = "-" if v is None else (f"{v:,.0f}" if isinstance(v, (int, float)) and abs(v) >= 100 else f"{v:.3g}")
            print(f"  {r['figure']:<48} {vs:>14} {r['unit']:<10} {r.get('note', '')}")
        sys.stdout.flush()
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    print(f"\ntotal {out['seconds']} s on {machine['cpus']} cpus ({machine['platform']})")
    from vfiospec.conformance.junit import write_atomic
    write_atomic(a.json, json.dumps(out, indent=1))
    print(f"wrote {a.json}")
    return 0
