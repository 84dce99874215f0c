"""Real-kernel lanes: Linux kernels booted under QEMU, the static agent in the
guest, the conformance traces driven from the host through the `exec:` target.

    vfiospec lane kernel [--kernel NAME ...] [--report-dir DIR] [--traces PATH ...]
    vfiospec lane boot --kernel NAME       # stdin/stdout = the guest agent (an exec: target)
    vfiospec lane build [--kernel NAME ...]
    vfiospec lane list

`lane_main(argv)` takes the words after `lane`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from .common import REPO, BackgroundBuilds, build_agent, ensure_packages, log

DEFAULT_KERNELS = ["6.12-custom", "6.12-compat", "debian-6.1"]

# What QEMU's intel-iommu (7.2, aw-bits 39) gives the guest, as type1's GET_INFO reports it.
X86_GUEST_IOMMU = {"kind": "vtd", "pgsizes": [4096, 2097152, 1073741824], "aperture": [0, 0x7FFFFFFFFF],
                   "reserved": [[0xFEE00000, 0xFEEFFFFF]], "intremap": True, "dirty_tracking": False,
                   # no snoop control (DMA_CC_IOMMU 0) and no nested translation (NEST_PARENT EOPNOTSUPP)
                   "coherent": False, "nesting": False}
# The guest's one VFIO device: QEMU's edu on vfio-pci, which has no reset (GET_INFO flags 2, RESET EINVAL).
X86_GUEST_DEVICE = {"driver": "vfio-pci", "reset": False}
_DEVICE_USES = ("VFIO_DEVICE_RESET", "VFIO_DEVICE_GET_INFO")


def _expects_success(s) -> bool:
    exp = s.get("expect", "ok")
    return not (isinstance(exp, dict) and "errno" in exp)


# iommu properties a trace that leaves them at the default still depends on: a step whose
# expected success comes from them (DMA_CC_IOMMU answered 1; a NEST_PARENT HWPT allocated)
_IOMMU_USES = {
    "coherent": lambda s: s.get("arg") == "VFIO_DMA_CC_IOMMU" and isinstance(s.get("expect"), dict)
    and s["expect"].get("ret") == 1,
    "nesting": lambda s: "IOMMU_HWPT_ALLOC_NEST_PARENT" in json.dumps(s.get("arg")) and _expects_success(s),
}
X86_GUEST_PARAMS = {"dma_entry_limit": 65535, "enable_unsafe_noiommu_mode": False}
PROBES = Path(__file__).resolve().parent / "probes"
WAIVERS = REPO / "conformance" / "waivers"


def load_lane_waivers(directory: Path = WAIVERS) -> list:
    """Every conformance/waivers/*.toml (sorted by file name): the known kernel divergences."""
    from vfiospec.conformance.waivers import load_waivers
    out = []
    for f in sorted(Path(directory).glob("*.toml")):
        out += load_waivers(f)
    return out


def _x86():
    from . import x86
    return x86


def _uses_device_reset(steps) -> bool:
    """Whether a step expects VFIO_DEVICE_RESET / VFIO_DEVICE_GET_INFO to succeed on an edu device's fd
    (what it answers depends on the device's reset; an expected errno from an earlier check,
    e.g. before bind, does not)."""
    fds = set()
    for s in steps:
        where = json.dumps([s.get("path"), s.get("arg")])
        if s.get("as") and "{dev" in where:
            fds.add(s["as"])
    for s in steps:
        if s.get("call") == "ioctl" and s.get("fd") in fds and _expects_success(s):
            exp = s.get("expect", "ok")
            if s.get("cmd") == "VFIO_DEVICE_RESET" or (s.get("cmd") == "VFIO_DEVICE_GET_INFO" and (
                    "expect" not in s or "flags" in json.dumps(exp))):
                return True
    return False


def guest_params(features: dict | None) -> dict:
    """The x86 guest's platform params: X86_GUEST_PARAMS and whether the kernel has THP."""
    return {**X86_GUEST_PARAMS, "transparent_hugepage": bool((features or {}).get("thp", True))}


def trace_fits(trace, features: dict | None = None, arch: str = "x86",
               guest: dict | None = None) -> tuple[bool, str]:
    """Whether this lane's guest can be the trace's platform: an x86 VT-d machine (not sPAPR),
    with the kernel features the trace's steps use (`features` from x86.kernel_features), and
    the mdev types' instance counts the guest reported (`guest`: its hello platform)."""
    plat = trace.platform or {}
    if arch == "x86" and (plat.get("iommu") or {}).get("kind", "vtd") == "vtd":
        from vfiospec.reference.platform import parse_platform
        want = parse_platform({"iommu": plat.get("iommu") or {}, "params": plat.get("params") or {}})
        have = parse_platform({"iommu": X86_GUEST_IOMMU, "params": guest_params(features)})
        for k in (plat.get("iommu") or {}):
            if k != "kind" and getattr(want.iommu, k) != getattr(have.iommu, k):
                return False, f"platform iommu.{k} = {(plat.get('iommu') or {})[k]}; QEMU's VT-d differs"
        for k, uses in _IOMMU_USES.items():
            if k not in (plat.get("iommu") or {}) and getattr(want.iommu, k) != getattr(have.iommu, k) \
                    and any(uses(s) for s in getattr(trace, "steps", None) or []):
                return False, f"a step depends on iommu.{k} (the default {getattr(want.iommu, k)}); " \
                              f"QEMU's VT-d has {k} = {getattr(have.iommu, k)}"
        for k in (plat.get("params") or {}):
            if getattr(want, k, None) != getattr(have, k, None):
                return False, f"platform params.{k} = {plat['params'][k]}; the guest has the default"
    gpar = (guest or {}).get("mdev_parents") or {}
    for pname, par in (plat.get("mdev_parents") or {}).items():
        for tname, t in ((par or {}).get("types") or {}).items():
            want = (t or {}).get("available_instances")
            have = ((gpar.get(pname) or {}).get("types") or {}).get(tname, {}).get("available_instances")
            if guest is not None and want is not None and str(want) != str(have):
                return False, f"mdev type {pname}/{tname} with {want} instances; the guest has {have}"
    kind = (plat.get("iommu") or {}).get("kind", "vtd")
    if arch == "x86" and kind != "vtd":
        return False, f"platform iommu {kind}: not an x86 VT-d machine"
    if not features:
        return True, ""
    have_groups = {n: set((g or {}).get("devices") or {}) for n, g in
                   ((guest or {}).get("groups") or {"g0": {"devices": {"dev0": "vfio-pci"}}}).items()}
    for gname, g in (plat.get("groups") or {"g0": {"devices": {"dev0": "vfio-pci"}}}).items():
        devs = (g or {}).get("devices", {})
        if gname not in have_groups or set(devs) - have_groups[gname] or (g or {}).get("noiommu") or any(
                (d if isinstance(d, str) else (d or {}).get("driver")) != "vfio-pci" for d in devs.values()):
            return False, f"platform group {gname} {json.dumps(g)}: the guest's groups are " \
                          + ", ".join(f"{n} = {'+'.join(sorted(d))}" for n, d in sorted(have_groups.items())) \
                          + " (edu on vfio-pci)"
        for d in devs.values():
            reset = d.get("reset", True) if isinstance(d, dict) else True
            if reset != X86_GUEST_DEVICE["reset"] and _uses_device_reset(getattr(trace, "steps", None) or []):
                return False, f"trace's device has reset = {reset} and uses {'/'.join(_DEVICE_USES)}; " \
                              f"the guest's edu has reset = {X86_GUEST_DEVICE['reset']}"
    proc = plat.get("process") or {}
    if "caps" in proc and not set(proc["caps"]) <= {"CAP_IPC_LOCK", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE"}:
        return False, f"platform process.caps {sorted(proc['caps'])}: the agent gives a trace only " \
                      "CAP_IPC_LOCK, CAP_SYS_RAWIO and CAP_SYS_RESOURCE"
    series = features.get("series")
    if series and "kernel" in plat and str(plat["kernel"]) != series:
        return False, f"trace is for kernel {plat['kernel']}; this kernel is {series}"
    vc = plat.get("vfio_container", features["container"])
    if vc != features["container"]:
        return False, f"trace needs /dev/vfio/vfio from {vc}; this kernel's comes from {features['container']}"
    text = json.dumps(trace.steps)
    if "/dev/iommu" in text and not features["iommufd"]:
        return False, "trace uses /dev/iommu; this kernel has no IOMMUFD"
    if "/dev/vfio/devices/" in text and not features["cdev"]:
        return False, "trace uses the device cdev; this kernel has no VFIO_DEVICE_CDEV"
    if (plat.get("mdev_parents") or "/sys/class/mdev_bus/" in text) and not features["mtty"]:
        return False, "trace uses mdev parents; this kernel has no mtty sample"
    return True, ""


def stateful_modes(features: dict | None) -> list[str]:
    """The stateful modes (conformance.stateful.MODES) a kernel with `features` can run."""
    f = features or {}
    out = ["type1", "type1v2"] if f.get("container", "vfio") == "vfio" else \
        ["iommufd-compat-type1", "iommufd-compat-type1v2"]
    if f.get("iommufd") and f.get("cdev"):
        out.append("iommufd")
    if f.get("mtty"):
        out.append("mdev")
    return out


def run_kernel(name: str, trace_paths: list[Path], boot_cmd: str, features: dict | None = None,
               waivers: list | None = None, budget: float = 0.0, seed: int = 0,
               report_dir: Path | None = None) -> dict:
    """Boot kernel `name` once (the exec: target restarts it after a crash) and run the traces,
    each judged with the waivers (ctx target "linux-<name>", kernel = the trace's kernel, which is
    this kernel's series unless the trace pins one); then explore each of stateful_modes for
    an equal share of `budget` seconds against the same guest, the reference being the
    machine its hello describes (conformance.stateful.mode_on)."""
    from vfiospec.conformance.replay import load_all
    from vfiospec.conformance.run import judge_with_waivers
    from vfiospec.reference.platform import parse_platform
    from vfiospec.conformance.runner import run_trace
    from vfiospec.conformance.stateful import run_mode
    from vfiospec.conformance.targets import TargetError
    from vfiospec.conformance.targets.exec import ExecTarget

    traces = load_all(trace_paths)
    # a TCG boot on a loaded two-core machine can take minutes
    logdir = Path(tempfile.mkdtemp(prefix=f"vfiospec-lane-{name}-"))
    stderr_log = open(logdir / "boot.stderr", "w")
    target = ExecTarget(boot_cmd + f" --workdir {logdir}", step_timeout=120, start_timeout=600,
                        stderr_log=stderr_log)
    t0 = time.time()
    try:
        hello = target.describe()
    except TargetError as e:
        return {"kernel": name, "error": f"boot failed: {e}", "traces": []}
    boot_s = time.time() - t0
    log(f"{name}: booted, agent answered hello in {boot_s:.1f} s")
    results, skipped, stateful, traces_s = [], [], [], 0.0
    try:
        for t in traces:
            ok, why = trace_fits(t, features, guest=hello.get("platform"))
            if not ok:
                skipped.append({"name": t.name, "path": str(t.path), "reason": why})
                continue
            # a trace that leaves them open is judged as this kernel: its ABI level (not the
            # format's default 6.12) and who provides /dev/vfio/vfio (not the default vfio)
            plat = dict(t.platform or {})
            if features and features.get("series") and "kernel" not in plat:
                plat["kernel"] = features["series"]
            if features and "vfio_container" not in plat:
                plat["vfio_container"] = features["container"]
            if features and "transparent_hugepage" not in (plat.get("params") or {}):
                plat["params"] = {**(plat.get("params") or {}), "transparent_hugepage": bool(features.get("thp"))}
            if plat != (t.platform or {}):
                t = dataclasses.replace(t, platform=plat)
            r = run_trace(t, target)
            ctx = {"target": f"linux-{name}", "kernel": parse_platform(t.platform).kernel, "mode": "traces"}
            d = judge_with_waivers(r, waivers or [], ctx)
            results.append(d)
            log(f"{name}: {d['verdict']:<11} {t.name} ({r.seconds:.2f} s)")
        traces_s = time.time() - t0
        modes = stateful_modes(features) if budget > 0 else []
        for m in modes:
            res = run_mode(m, f"linux-{name}", budget / len(modes), seed, target_obj=target, per_batch=5,
                           report_dir=report_dir or logdir)
            res.pop("platform", None)
            stateful.append(res)
            log(f"{name}: {res['verdict']:<11} stateful {m}: {res['examples']} examples, {res['steps']} steps"
                + "".join(f"\n  {f['message']} ({f['trace']})" for f in res["failures"])
                + (f"\n  {res['error']}" if res.get("error") else ""))
    finally:
        target.shutdown()
        stderr_log.close()
    counts: dict[str, int] = {}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    used = [{"id": w.id, "hits": w.hits, "mismatches": w.mismatches} for w in (waivers or [])
            if w.hits or w.mismatches]
    return {"kernel": name, "logs": str(logdir), "hello": hello, "boot_seconds": round(boot_s, 2),
            "restarts": getattr(target, "restarts", 0),
            "run_seconds": round(time.time() - t0, 2), "traces_seconds": round(traces_s, 2), "counts": counts,
            "skipped": skipped, "waivers": used, "traces": results, "stateful": stateful}


def raw_results(summary: dict) -> dict:
    """What each kernel answered, step by step (no judging): the lead compares it with the reference."""
    out = {"vfiospec_lane_raw": 1, "started": summary["started"], "kernels": {}}
    for k in summary["kernels"]:
        hello = k.get("hello") or {}
        out["kernels"][k["kernel"]] = {
            "target": hello.get("target"), "platform": hello.get("platform"),
            "error": k.get("error"),
            "traces": {t["name"]: {"path": t["path"], "verdict": t["verdict"], "seconds": t["seconds"],
                                   "steps": [{"index": s["index"], "call": s["call"], "expected": s["expected"],
                                              **s["observed"]} for s in t["steps"]]}
                       for t in k.get("traces", [])}}
    return out


def _markdown(summary: dict) -> str:
    lines = ["# Real-kernel lane (x86_64, QEMU TCG, emulated VT-d)", "",
             f"Run {summary['started']} — total {summary['total_seconds']} s.", "",
             "| kernel | release | build s | boot s | traces run | pass | xfail (waived) | fail | error | unsupported | s/trace |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in summary["kernels"]:
        c = k.get("counts", {})
        n = len(k.get("traces", []))
        per = round(sum(t["seconds"] for t in k.get("traces", [])) / n, 2) if n else "-"
        rel = (k.get("hello") or {}).get("target", k.get("error", ""))
        lines.append(f"| {k['kernel']} | {rel} | {k.get('build_seconds', '-')} | {k.get('boot_seconds', '-')} | {n} | "
                     f"{c.get('PASS', 0)} | {c.get('XFAIL', 0)} | {c.get('FAIL', 0)} | {c.get('ERROR', 0)} | {c.get('UNSUPPORTED', 0)} | {per} |")
    lines.append("")
    st = [(k["kernel"], m) for k in summary["kernels"] for m in k.get("stateful", [])]
    if st:
        lines += ["## Stateful exploration (lockstep with the reference on the guest's platform)", "",
                  "| kernel | mode | verdict | examples | steps | s | failure |", "|---|---|---|---|---|---|---|"]
        for kn, m in st:
            why = "; ".join(f"{f['message']} (`{Path(f['trace']).name}`)" for f in m.get("failures", [])) \
                or m.get("error", "")
            lines.append(f"| {kn} | {m['mode']} | {m['verdict']} | {m['examples']} | {m['steps']} | "
                         f"{m.get('seconds', '-')} | {why.replace('|', '/')[:300]} |")
        lines.append("")
    for k in summary["kernels"]:
        bad = [t for t in k.get("traces", []) if t["verdict"] != "PASS"]
        if not bad:
            continue
        lines += [f"## {k['kernel']}: traces that did not pass", ""]
        for t in bad:
            lines.append(f"- {t['verdict']} `{t['name']}`" + (f": {t['error']}" if t.get("error") else ""))
            for s in t["steps"]:
                if s["verdict"] in ("FAIL", "ERROR", "XFAIL"):
                    lines.append(f"  - step {s['index']} {s['verdict']}"
                                 + (f" (waiver {s['waiver']})" if s.get("waiver") else "")
                                 + f": `{s['call']}` expected {s['expected']}, "
                                 f"observed {json.dumps(s['observed'])[:200]}")
        lines.append("")
    return "\n".join(lines) + "\n"


def cmd_kernel(a) -> int:
    x86 = _x86()
    t_start = time.time()
    names = a.kernel or DEFAULT_KERNELS
    for n in names:
        if n not in x86.ALL:
            print(f"vfiospec lane: unknown kernel {n!r}; known: {', '.join(x86.ALL)}", file=sys.stderr)
            return 2
    # 1. kernel builds first: their wall time overlaps everything else
    builds = [x86.KERNELS[n] for n in names if n in x86.KERNELS]
    uncached = [b for b in builds if not b.cached()]
    bg = BackgroundBuilds(uncached).start() if uncached else None
    if uncached:
        log(f"building in the background: {', '.join(b.name for b in uncached)}")
    # 2. meanwhile: packages, stock kernels, the agent
    ensure_packages(x86.QEMU_PACKAGES)
    for n in names:
        if n in x86.STOCK:
            x86.STOCK[n].fetch()
    build_agent("gcc")
    waivers = load_lane_waivers()
    trace_paths = [Path(p) for p in (a.traces or [REPO / "conformance" / "traces", PROBES])]
    trace_paths = [p for p in trace_paths if p.exists()]
    report_dir = Path(a.report_dir) if a.report_dir else None
    summary = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)), "kernels": []}
    # 3. stock kernels first (ready now), then each build as it finishes
    order = [n for n in names if n in x86.STOCK] + [n for n in names if n in x86.KERNELS]
    status = 0
    for n in order:
        if n in x86.KERNELS and bg is not None and n in bg.done:
            try:
                bg.wait(n)
            except RuntimeError as e:
                summary["kernels"].append({"kernel": n, "error": str(e), "traces": []})
                status = 1
                continue
        _, facts = x86.kernel_image(n)
        boot_cmd = f"{sys.executable} -m vfiospec.lane.x86 boot --kernel {n}"
        res = run_kernel(n, trace_paths, boot_cmd, {**facts.get("features", {}), "series": facts["series"]},
                         waivers=waivers, budget=a.budget, seed=a.seed, report_dir=report_dir)
        res["build_seconds"] = facts.get("build_seconds")
        res["facts"] = {k: v for k, v in facts.items() if k not in ("modules",)}
        summary["kernels"].append(res)
        if res.get("error") or any(t["verdict"] in ("ERROR",) for t in res["traces"]) or any(
                m["verdict"] != "PASS" for m in res.get("stateful", [])):
            status = 1
        if report_dir:
            report_dir.mkdir(parents=True, exist_ok=True)
            # kept small: a passing trace's steps are left out (--raw has every step)
            small = {**res, "traces": [t if t["verdict"] != "PASS" else
                                       {**{k: v for k, v in t.items() if k != "steps"}, "steps": [],
                                        "nsteps": len(t.get("steps", []))} for t in res["traces"]]}
            (report_dir / f"kernel-{n}.json").write_text(json.dumps(small, separators=(",", ":"), default=str) + "\n")
    summary["total_seconds"] = round(time.time() - t_start, 1)
    if report_dir:
        # the summary covers every kernel reported in this directory, this run's and earlier ones
        fresh = {k["kernel"] for k in summary["kernels"]}
        for f in sorted(report_dir.glob("kernel-*.json")):
            old = json.loads(f.read_text())
            if old.get("kernel") not in fresh:
                summary["kernels"].append(old)
        (report_dir / "lane-summary.json").write_text(json.dumps(
            {**summary, "kernels": [{k: v for k, v in r.items() if k != "traces"} for r in summary["kernels"]]},
            indent=1, default=str) + "\n")
        (report_dir / "lane-summary.md").write_text(_markdown(summary))
    if a.raw:
        raw = raw_results(summary)
        rp = Path(a.raw)
        if rp.exists():
            # kernels not run this time keep their earlier results
            with contextlib.suppress(ValueError, KeyError):
                prev = json.loads(rp.read_text())["kernels"]
                raw["kernels"] = {**{k: v for k, v in prev.items() if k not in raw["kernels"]}, **raw["kernels"]}
        rp.parent.mkdir(parents=True, exist_ok=True)
        rp.write_text(json.dumps(raw, separators=(",", ":"), default=str) + "\n")
    print(_markdown(summary))
    return status


def lane_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "spapr":
        from .pseries import lane_main as spapr_main
        return spapr_main(argv[1:])
    ap = argparse.ArgumentParser(prog="vfiospec lane", description="real Linux kernels under QEMU as targets")
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kernel", help="build/fetch kernels, boot each, run the traces, write reports")
    k.add_argument("--kernel", action="append", help=f"kernel to run (repeatable; default {' '.join(DEFAULT_KERNELS)})")
    k.add_argument("--report-dir", help="write kernel-<name>.json and lane-summary.{json,md} here")
    k.add_argument("--raw", help="write the raw results (every step's ret/errno/out) of every kernel to this JSON file")
    k.add_argument("--traces", action="append", help="trace files or directories (default: the shipped "
                                                      "traces and the lane's probes)")
    k.add_argument("--budget", type=float, default=30.0,
                   help="seconds of stateful exploration per kernel, shared by its modes; 0: none")
    k.add_argument("--seed", type=int, default=0, help="the stateful exploration's seed")
    b = sub.add_parser("boot", help="boot one kernel; stdin/stdout are the guest agent's protocol stream")
    b.add_argument("--kernel", default="6.12-custom")
    b.add_argument("--workdir")
    bd = sub.add_parser("build", help="build or fetch kernels into ~/.cache/vfiospec")
    bd.add_argument("--kernel", action="append")
    sub.add_parser("list", help="known kernels and whether they are cached")
    a = ap.parse_args(argv)
    if a.cmd == "kernel":
        return cmd_kernel(a)
    x86 = _x86()
    if a.cmd == "boot":
        return x86.main(["boot", "--kernel", a.kernel] + (["--workdir", a.workdir] if a.workdir else []))
    if a.cmd == "build":
        return x86.main(["build"] + sum((["--kernel", n] for n in (a.kernel or [])), []))
    return x86.main(["list"])


__all__ = ["lane_main", "run_kernel", "trace_fits"]
