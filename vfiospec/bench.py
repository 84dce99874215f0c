"""`vfiospec bench [--quick]`: how fast vfiospec checks, and how its cost grows.

Every figure that is a ratio is measured side by side in the same run (these
machines are noisy): the two sides alternate in rounds and the table gives the
median of the rounds.  Rates are per CPU-second of this (single-threaded)
process, i.e. on one core, so that other jobs on the machine do not count
against vfiospec; the wall-clock rate is kept in the JSON.  Prints a table and
writes JSON (--json FILE)."""

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
    """(units of work, CPU seconds): run `fn` (returning its units) for at least
    `min_seconds` of this process's CPU time."""
    n, cpu, _ = _timeit2(fn, min_seconds)
    return n, cpu


def _timeit2(fn, min_seconds: float) -> tuple[int, float, float]:
    """(units, CPU seconds, wall seconds)."""
    n, c0, w0 = 0, time.process_time(), time.perf_counter()
    while True:
        n += fn()
        dc = time.process_time() - c0
        if dc >= min_seconds:
            return n, dc, time.perf_counter() - w0


def _rounds(quick: bool) -> int:
    return 3 if quick else 5


def _median_rate(samples) -> float:
    """Median of n/cpu over (n, cpu, wall) samples."""
    return statistics.median(n / c for n, c, _ in samples)


def _wall_rate(samples) -> float:
    return statistics.median(n / w for n, _, w in samples)


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

    replay()                     # warm-up: imports, per-trace preparation, caches
    decode()
    secs = 0.5 if quick else 2.0
    a, b = [], []
    for _ in range(_rounds(quick)):          # alternate, so that load changes hit both sides
        a.append(_timeit2(replay, secs))
        b.append(_timeit2(decode, secs))
    r1, r2 = _median_rate(a), _median_rate(b)
    return [{"figure": "reference replay", "value": r1, "unit": "steps/s",
             "note": f"{len(traces)} shipped traces, {nsteps} steps, per CPU-second, median of {len(a)}",
             "wall_steps_per_s": _wall_rate(a), "samples": [n / c for n, c, _ in a], "target": 50000},
            {"figure": "decode-only baseline", "value": r2, "unit": "steps/s", "wall_steps_per_s": _wall_rate(b)},
            {"figure": "replay / baseline", "value": r1 / r2, "unit": "ratio",
             "note": "median of per-round ratios " + f"{statistics.median(x[0] / x[1] / (y[0] / y[1]) for x, y in zip(a, b)):.3g}"}]


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
    """Per-step cost with 10 .. 10,000 live mappings / areas, and 1 .. 100 devices.

    The sessions of one series are built first, then measured round-robin
    (median of the rounds, CPU time); the last row of a series is the cost at
    the largest size over the cost at the smallest (logarithmic growth from 10
    to 10,000 allows a factor of log(10000)/log(10) = 4)."""
    from vfiospec.conformance import steps as S
    rows = []
    sizes = [10, 100, 1000, 10000]
    secs = 0.2 if quick else 0.6

    def pre(step, saved=None):
        return S.normalize(step, saved or {})

    def series(title, unit_name, built):
        """built: [(n, op or exception)]; op() performs some steps and returns how many."""
        samples = {n: [] for n, op in built if callable(op)}
        for _ in range(_rounds(quick)):
            for n, op in built:
                if callable(op):
                    samples[n].append(_timeit2(op, secs))
        out = []
        for n, op in built:
            if not callable(op):
                out.append({"figure": title.format(n=n), "value": None, "unit": "SKIPPED", "note": str(op)})
                continue
            out.append({"figure": title.format(n=n), "value": _median_rate(samples[n]), "unit": "steps/s",
                        "wall_steps_per_s": _wall_rate(samples[n])})
        ok = [r for r in out if r["value"]]
        if len(ok) >= 2:
            out.append({"figure": f"  cost growth {built[0][0]} -> {built[-1][0]} {unit_name}",
                        "value": ok[0]["value"] / ok[-1]["value"], "unit": "ratio",
                        "note": "per-step cost at the largest size / at the smallest"})
        return out

    built = []
    for n in sizes:
        try:
            s = _type1_with(n)
        except Exception as e:
            built.append((n, e))
            continue
        iova = hex((2 * n + 1) * PAGE)
        m = pre({"call": "ioctl", "fd": "c", "cmd": "VFIO_IOMMU_MAP_DMA",
                 "arg": {"flags": ["VFIO_DMA_MAP_FLAG_READ"], "vaddr": "buf", "iova": iova, "size": hex(PAGE)}})
        u = pre({"call": "ioctl", "fd": "c", "cmd": "VFIO_IOMMU_UNMAP_DMA", "arg": {"iova": iova, "size": hex(PAGE)}})

        def op(s=s, m=m, u=u):
            if s.perform(m).errno or s.perform(u).errno:
                raise RuntimeError("map+unmap failed")
            return 2
        built.append((n, op))
    rows += series("type1 map+unmap, {n} live mappings", "mappings", built)

    built = []
    for n in sizes:
        try:
            s, saved = _ioas_with(n)
        except Exception as e:
            built.append((n, e))
            continue
        iova = hex((2 * n + 3) * PAGE)
        m = pre({"call": "ioctl", "fd": "f", "cmd": "IOMMU_IOAS_MAP",
                 "arg": {"flags": ["IOMMU_IOAS_MAP_FIXED_IOVA", "IOMMU_IOAS_MAP_READABLE"], "ioas_id": "$ioas",
                         "user_va": "buf", "length": hex(PAGE), "iova": iova}}, saved)
        u = pre({"call": "ioctl", "fd": "f", "cmd": "IOMMU_IOAS_UNMAP",
                 "arg": {"ioas_id": "$ioas", "iova": iova, "length": hex(PAGE)}}, saved)

        def op2(s=s, m=m, u=u):
            if s.perform(m).errno or s.perform(u).errno:
                raise RuntimeError("map+unmap failed")
            return 2
        built.append((n, op2))
    rows += series("ioas map+unmap, {n} live areas", "areas", built)

    built = []
    for n in (1, 10, 100):
        groups = {f"g{i}": {"devices": {f"dev{i}": "vfio-pci"}} for i in range(n)}
        s = _session({"groups": groups})
        _do(s, {"call": "open", "path": "/dev/vfio/vfio", "as": "c"})
        last = f"g{n - 1}"
        steps3 = [pre({"call": "open", "path": "/dev/vfio/{%s}" % last, "as": "g"}),
                  pre({"call": "ioctl", "fd": "g", "cmd": "VFIO_GROUP_GET_STATUS"}),
                  pre({"call": "close", "fd": "g"})]

        def op3(s=s, steps3=steps3):
            for st in steps3:
                if s.perform(st).errno:
                    raise RuntimeError("group open/status/close failed")
            return 3
        built.append((n, op3))
    rows += series("group open+status+close, {n} devices", "devices", built)
    return rows


def bare_machine(nrules: int):
    """A Hypothesis machine with `nrules` rules that do nothing (one integer drawn each)."""
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, rule

    class Bare(RuleBasedStateMachine):
        count = 0

    for i in range(nrules):
        def f(self, x):
            type(self).count += 1
        f.__name__ = f"r{i}"
        setattr(Bare, f"r{i}", rule(x=st.integers(0, 16))(f))
    return Bare


def bare_test(machine, max_examples: int, steps_per_example: int = 25):
    """The Hypothesis test of the bare machine, with the settings run_mode uses (built
    once, as run_mode builds its test once per process)."""
    from hypothesis import HealthCheck, Phase, Verbosity, settings
    from hypothesis.stateful import get_state_machine_test
    conf = settings(max_examples=max_examples, stateful_step_count=steps_per_example, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet,
                    phases=[Phase.generate, Phase.shrink])
    return get_state_machine_test(machine, settings=conf)


def run_bare(machine, test, seed: int) -> int:
    """Run the bare machine's test with `seed`; the rule steps it took."""
    from hypothesis import seed as hseed
    machine.count = 0
    hseed(seed)(test)()
    return machine.count


def bench_stateful(quick: bool, mode: str = "type1v2") -> list[dict]:
    """Stateful steps/s against the reference vs a bare machine with the same number of rules,
    the same Hypothesis settings and seeds, alternating in rounds (CPU time)."""
    from vfiospec.conformance.stateful import machine_for, run_mode
    n_ex = 10 if quick else 40
    nrules = len(machine_for(mode).RULES)
    bare = bare_machine(nrules)
    test = bare_test(bare, n_ex)
    run_mode(mode, "reference", 0, 0, max_examples=n_ex)    # warm-up: imports, Hypothesis, compiled invariants
    run_bare(bare, test, 0)
    a, b, verdicts = [], [], set()
    for rnd in range(1, _rounds(quick) + 1):
        c0, w0 = time.process_time(), time.perf_counter()
        r = run_mode(mode, "reference", 0, rnd, max_examples=n_ex)
        a.append((r["steps"], time.process_time() - c0, time.perf_counter() - w0, r["examples"]))
        verdicts.add(r["verdict"])
        c0, w0 = time.process_time(), time.perf_counter()
        k = run_bare(bare, test, rnd)
        b.append((k, time.process_time() - c0, time.perf_counter() - w0, n_ex))
    ra, rb = _median_rate(x[:3] for x in a), _median_rate(x[:3] for x in b)
    per_ex = statistics.median((x[1] / x[3]) / (y[1] / y[3]) for x, y in zip(a, b))
    steps = statistics.median(x[0] for x in a)
    return [{"figure": f"stateful {mode} vs reference", "value": ra, "unit": "steps/s",
             "note": f"{n_ex} examples/round, ~{steps:.0f} steps, invariants checked every step, "
                     f"median of {len(a)} rounds ({'/'.join(sorted(verdicts))})",
             "wall_steps_per_s": _wall_rate(x[:3] for x in a)},
            {"figure": f"bare Hypothesis machine ({nrules} rules)", "value": rb, "unit": "steps/s",
             "wall_steps_per_s": _wall_rate(x[:3] for x in b)},
            {"figure": "bare / stateful (cost factor per step)", "value": rb / ra if ra else None, "unit": "ratio",
             "target": 2.0},
            {"figure": "stateful / bare (cost factor per example)", "value": per_ex, "unit": "ratio",
             "note": "25 rule steps per example on both sides; the stateful side also runs its setup steps",
             "target": 2.0}]


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
    """The whole `prove` run, its slowest invariants, and each exploration at its default bound."""
    from vfiospec.model import explorer, formula, prover
    from vfiospec.model.schema import DEFAULT
    t0 = time.perf_counter()
    rep = prover.prove(DEFAULT)
    total = time.perf_counter() - t0
    rows = [{"figure": "z3 prove (all invariants x actions)", "value": total, "unit": "s",
             "note": f"{len(rep.obligations)} obligations, all proved: {rep.ok}"}]
    per = sorted(rep.per_invariant_seconds().items(), key=lambda x: -x[1])
    for inv, sec in per[: (3 if quick else None)]:
        rows.append({"figure": f"  prove {inv}", "value": sec, "unit": "s"})
    platforms = {"subrange-unregister-succeeds": "spapr"}
    for prop in list(formula.CANDIDATES)[: (1 if quick else None)]:
        t = time.perf_counter()
        r = explorer.explore(prop, 6, DEFAULT, platforms.get(prop, "vtd"))
        rows.append({"figure": f"explore {prop}", "value": time.perf_counter() - t, "unit": "s",
                     "note": f"violated at depth {r.depth}" if r.found else f"holds to depth {r.depth}"})
    return rows


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
    """The real kernel, when a cached 6.12 guest kernel is present: ioctls/s through the
    guest agent, and the reference's steps/s on the same traces in the same run."""
    import sys as _sys
    from vfiospec.conformance.replay import load_all
    from vfiospec.conformance.run import shipped_traces_dir
    from vfiospec.conformance.runner import run_trace
    from vfiospec.conformance.targets import TargetError, get_target
    try:
        from vfiospec.lane import trace_fits
        from vfiospec.lane import x86
        features = x86.kernel_image("6.12-custom")[1]["features"]
    except Exception as e:
        return [{"figure": "kernel lane", "value": None, "unit": "SKIPPED",
                 "note": f"no cached 6.12-custom guest kernel ({type(e).__name__}: {e}); `vfiospec lane build`"}]
    traces = [t for t in load_all([shipped_traces_dir() / "type1", shipped_traces_dir() / "iommufd"])
              if trace_fits(t, features)[0]][: (10 if quick else 40)]
    steps = sum(len(t.steps) for t in traces)
    target = get_target(f"exec:{_sys.executable} -m vfiospec.lane.x86 boot --kernel 6.12-custom")
    try:
        t0 = time.perf_counter()
        target.describe()
        boot = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in traces:
            run_trace(t, target)
        guest = time.perf_counter() - t0
    except TargetError as e:
        return [{"figure": "kernel lane", "value": None, "unit": "ERROR", "note": str(e)}]
    finally:
        target.shutdown()
    ref = get_target("reference")
    t0 = time.perf_counter()
    for t in traces:
        run_trace(t, ref)
    refs = time.perf_counter() - t0
    return [{"figure": "guest boot to agent ready (6.12-custom)", "value": boot, "unit": "s"},
            {"figure": "real kernel through the guest agent", "value": steps / guest, "unit": "steps/s",
             "note": f"{len(traces)} traces, {steps} steps (QEMU TCG)"},
            {"figure": "reference, same traces", "value": steps / refs, "unit": "steps/s"}]


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
