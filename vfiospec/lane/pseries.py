"""The sPAPR TCE lane: a real Linux kernel's VFIO sPAPR backend in a ppc64le
pseries guest under QEMU TCG (issue 9).

Pieces (all cached under ~/.cache/vfiospec/, never in git):

- ``build_kernel(pagesize)``: Debian's ``linux-source-6.12`` cross-built with
  ``tinyconfig`` + ``pseries-base.config`` + ``pseries-<pagesize>.config``;
  ``kernels/<key>/vmlinux`` with ``<key>`` = version + hash of the config.
- ``build_initramfs()``: a static ppc64le busybox (Debian ``busybox-static``
  for ppc64el, fetched with a private apt state) + the static C agent
  (conformance/examples/agent/agent.c) + an ``/init`` that binds the edu
  device to vfio-pci and runs the agent on ``/dev/hvc1``.
- ``Guest``: QEMU ``-M pseries`` with the agent's hvc1 on a host pipe pair; the
  ``boot`` command relays stdin/stdout to it, so
  ``--target "exec:python -m vfiospec.lane.pseries boot --pagesize 4k"`` is a
  protocol target.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vfiospec.lane import common
from vfiospec.lane.common import CACHE, Bridge, KernelBuild

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CROSS = "powerpc64le-linux-gnu-"
DEFAULT_SOURCE = "6.12"
PAGESIZES = ("4k", "64k")
RUN_PACKAGES = ["qemu-system-ppc", "gcc-powerpc64le-linux-gnu", "libc6-dev-ppc64el-cross"]


def log(*a):
    print("[pseries]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------- kernel

def kernel(pagesize: str, series: str = DEFAULT_SOURCE) -> KernelBuild:
    """The pseries guest kernel for `pagesize` ("4k" or "64k") from Debian's
    linux-source-<series>, cached by common.KernelBuild.key()."""
    return KernelBuild(
        f"pseries-{series}-{pagesize}", "powerpc", "vmlinux", fragments(pagesize),
        series=series, cross_compile=CROSS,
        build_deps=["bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio", "xz-utils", "make",
                    "gcc-powerpc64le-linux-gnu", "libc6-dev-ppc64el-cross"])


def fragments(pagesize: str) -> list[Path]:
    if pagesize not in PAGESIZES:
        raise ValueError(f"pagesize must be one of {', '.join(PAGESIZES)}, not {pagesize!r}")
    return [HERE / "pseries-base.config", HERE / f"pseries-{pagesize}.config"]


def cached_kernel(pagesize: str, series: str = DEFAULT_SOURCE) -> Path | None:
    """The cached vmlinux, or None (also when linux-source-<series> is not installed)."""
    if common.deb_version(f"linux-source-{series}") is None:
        return None
    kb = kernel(pagesize, series)
    return kb.image_path if kb.cached() else None


def build_kernel(pagesize: str, series: str = DEFAULT_SOURCE) -> Path:
    return common.build_kernel(kernel(pagesize, series), jobs=os.cpu_count() or 2)


# --------------------------------------------------------------------- userspace

def busybox_ppc64el() -> Path:
    """Debian's busybox-static for ppc64el, fetched through a private apt state
    (APT::Architecture=ppc64el) so the machine's dpkg architectures stay as they are."""
    root = CACHE / "apt-ppc64el"
    bb = root / "bb" / "bin" / "busybox"
    if bb.exists():
        return bb
    with common.file_lock(root / ".lock"):
        if bb.exists():
            return bb
        for d in ("lists/partial", "cache/archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        conf = root / "apt.conf"
        conf.write_text(
            'APT::Architecture "ppc64el";\nAPT::Architectures { "ppc64el"; };\n'
            f'Dir::State "{root}";\nDir::State::Lists "{root}/lists";\n'
            f'Dir::State::status "{root}/status";\nDir::Cache "{root}/cache";\n')
        env = dict(os.environ, APT_CONFIG=str(conf))
        debs = sorted(root.glob("busybox-static_*_ppc64el.deb"))
        if not debs:
            subprocess.run(["apt-get", "update", "-q"], env=env, cwd=root, capture_output=True)
            r = subprocess.run(["apt-get", "download", "-q", "busybox-static:ppc64el"], env=env,
                               cwd=root, capture_output=True, text=True)
            debs = sorted(root.glob("busybox-static_*_ppc64el.deb"))
            if not debs:
                raise RuntimeError(f"apt-get download busybox-static (ppc64el) failed: {r.stderr[-1500:]}")
        tmp = Path(tempfile.mkdtemp(dir=root))
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True)
        if (root / "bb").exists():
            shutil.rmtree(root / "bb")
        tmp.rename(root / "bb")
    return bb


def build_agent() -> Path:
    """The static C agent cross-compiled for ppc64le (common.build_agent)."""
    return common.build_agent(cc=CROSS + "gcc")


INIT = r"""#!/bin/sh
# vfiospec pseries guest: bind the edu device to vfio-pci, run the agent on
# hvc1; a line on hvc2 (the control channel) ends the agent, then power off.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
EDU=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ] && EDU=${d##*/}
done
if [ -n "$EDU" ]; then
  echo vfio-pci > /sys/bus/pci/devices/$EDU/driver_override
  echo $EDU > /sys/bus/pci/drivers_probe
  G=$(basename "$(readlink /sys/bus/pci/devices/$EDU/iommu_group)")
  DRV=$(basename "$(readlink /sys/bus/pci/devices/$EDU/driver)")
fi
printf 'g0=%s\ndev0=%s\n' "$G" "$EDU" > /tmp/names
echo "vfiospec-guest: dev0=$EDU g0=$G driver=$DRV kernel=$(uname -r)"
/bin/vfiospec-agent --config /tmp/names --device /dev/hvc1 --ready 2>/dev/hvc0 &
AGENT=$!
(read line < /dev/hvc2; echo "vfiospec-guest: quit"; kill $AGENT) &
wait $AGENT
echo "vfiospec-guest: agent exited $?"
poweroff -f
"""

BB_APPLETS = ("sh", "mount", "mkdir", "cat", "echo", "printf", "ls", "basename", "readlink",
              "uname", "kill", "poweroff", "sleep", "dmesg", "grep", "[", "test")


def build_initramfs() -> Path:
    """gzip'd newc initramfs: busybox, the agent and /init; cached by content hash."""
    bb = busybox_ppc64el()
    agent = build_agent()
    init = INIT
    h = hashlib.sha256(init.encode() + bb.read_bytes() + agent.read_bytes()).hexdigest()[:12]
    out = CACHE / "initramfs" / f"pseries-{h}.cpio.gz"
    if out.exists():
        return out
    files = {"/init": init.encode(), "/bin/busybox": bb, "/bin/vfiospec-agent": agent}
    links = {f"/bin/{a}": "busybox" for a in BB_APPLETS}
    links["/sbin/poweroff"] = "/bin/busybox"
    common.make_initramfs(out, files, symlinks=links, dirs=["/proc", "/sys", "/dev", "/tmp", "/sbin"],
                          executable={"/init", "/bin/busybox", "/bin/vfiospec-agent"})
    return out


# --------------------------------------------------------------------- guest

QEMU = "qemu-system-ppc64"
MACHINE = "pseries,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off,x-vof=on"


def qemu_argv(vmlinux: Path, initrd: Path, sock: Path, ctl: Path, memory: str = "1G") -> list[str]:
    """QEMU pseries under TCG; hvc0 (console) on stdout, hvc1 (agent) and hvc2
    (control: a line there ends the agent) on unix sockets. -nodefaults keeps the edu device alone on the PHB: every device on
    one PHB shares one IOMMU group."""
    return [QEMU, "-M", MACHINE, "-cpu", "POWER9", "-accel", "tcg", "-smp", "1", "-m", memory,
            "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(vmlinux), "-initrd", str(initrd),
            "-append", "console=hvc0 panic=-1",
            "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
            "-device", "spapr-vty,chardev=agent",
            "-chardev", f"socket,id=ctl,path={ctl},server=on,wait=off",
            "-device", "spapr-vty,chardev=ctl",
            "-device", "edu"]


WARN_RE = re.compile(r"(WARNING:.*|BUG:.*|Oops.*|Kernel panic.*|------------\[ cut here \].*)")


class Guest:
    """One booted pseries guest with its agent ready (common.Bridge)."""

    def __init__(self, pagesize: str, series: str = DEFAULT_SOURCE, workdir: Path | None = None):
        self.pagesize = pagesize
        vmlinux = cached_kernel(pagesize, series) or build_kernel(pagesize, series)
        initrd = build_initramfs()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vfiospec-pseries-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.workdir / "console.log"
        self.ctl = self.workdir / "ctl.sock"
        self.bridge = Bridge(qemu_argv(vmlinux, initrd, self.workdir / "agent.sock", self.ctl),
                             self.workdir / "agent.sock", self.console_log)
        self.boot_seconds: float | None = None

    def start(self) -> "Guest":
        self.bridge.start()
        self.boot_seconds = self.bridge.boot_seconds
        return self

    def request(self, obj: dict, timeout: float = 120) -> dict:
        line = self.bridge.request(json.dumps(obj).encode(), timeout=timeout)
        return json.loads(line)

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def finish(self, timeout: float = 20) -> list[str]:
        """Make the agent exit (so the process's mm is torn down and any
        exit-time kernel warning is printed), wait for poweroff, and return the
        kernel warning lines the console showed."""
        import socket
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(str(self.ctl))
                c.sendall(b"quit\n")
                deadline = time.time() + timeout
                while time.time() < deadline and self.bridge.proc and self.bridge.proc.poll() is None:
                    time.sleep(0.05)
        except OSError:
            pass
        self.stop()
        return warnings_in(self.console())

    def stop(self) -> None:
        self.bridge.stop()


def warnings_in(console: str) -> list[str]:
    """Kernel WARNING/BUG/Oops lines of a console log (printk timestamps stripped)."""
    out = []
    for line in console.splitlines():
        m = WARN_RE.search(line)
        if m and "cut here" not in m.group(1):
            out.append(m.group(1).strip())
    return out


# --------------------------------------------------------------------- protocol

def guest_platform(pagesize: str, series: str = DEFAULT_SOURCE) -> dict:
    """The trace-format platform this lane *is* (measured on the guest: GET_INFO
    of a v2 container; page size of the kernel build)."""
    return {"kernel": series,
            "iommu": {"kind": "spapr", "dma32_window": [0, "0x40000000"],
                      "pgsizes": [4096, 65536, 2097152, 16777216],
                      "max_windows": 2, "levels": 1, "ddw": True},
            "vfio_container": "vfio",
            "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}},
            "process": {"page_size": 4096 if pagesize == "4k" else 65536}}


class Lane:
    """The protocol endpoint of the lane: a guest per trace (`fresh`, the
    default: a failed window creation poisons the PHB until reboot, and the
    unregister-while-mapped leak stays in the agent's mm) or one guest for all.

    `end` makes the agent exit, so kernel warnings printed at process exit
    (mm teardown) are caught; they come back in the end answer as
    `kernel_warnings` (an extension the harness ignores)."""

    def __init__(self, pagesize: str, series: str = DEFAULT_SOURCE, fresh: bool = True,
                 workdir: Path | None = None):
        self.pagesize, self.series, self.fresh = pagesize, series, fresh
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vfiospec-pseries-"))
        self.guest: Guest | None = None
        self.hello_answer: dict | None = None
        self.boots: list[float] = []
        self.n = 0
        common.ensure_packages(RUN_PACKAGES)

    def _boot(self) -> None:
        self.n += 1
        g = Guest(self.pagesize, self.series, self.workdir / f"boot{self.n}")
        g.start()
        self.boots.append(g.boot_seconds or 0.0)
        ans = g.request({"type": "hello", "protocol": 1})
        if ans.get("type") != "hello":
            g.stop()
            raise RuntimeError(f"guest agent answered hello with {ans}")
        ans["platform"] = guest_platform(self.pagesize, self.series)
        ans["target"] = f"{ans.get('target', 'agent')} in pseries guest " \
                        f"(linux-source-{self.series} {common.deb_version('linux-source-' + self.series)}, " \
                        f"{self.pagesize} pages, QEMU TCG)"
        self.hello_answer = ans
        self.guest = g

    def hello(self, msg: dict) -> dict:
        if self.guest is None:
            self._boot()
        return self.hello_answer

    def begin(self, msg: dict) -> dict:
        if self.guest is None:
            self._boot()
        self.dirty = True
        return self.guest.request(msg)

    def step(self, msg: dict, timeout: float = 120) -> dict:
        if self.guest is None:
            return {"error": "no guest (begin first)"}
        try:
            return self.guest.request(msg, timeout=timeout)
        except (TimeoutError, EOFError, OSError) as e:
            tail = self.guest.bridge.tail(30)
            self.guest.stop()
            self.guest = None
            return {"error": f"guest agent: {e}; console tail:\n{tail}"}

    def end(self, msg: dict) -> dict:
        if self.guest is None:
            return {"ok": True}
        ans = self.step(msg)
        if self.fresh and self.guest is not None:
            ans["kernel_warnings"] = self.guest.finish()
            self.last_console = self.guest.console()
            self.guest = None
        return ans

    def handle(self, msg: dict) -> dict:
        t = msg.get("type")
        if t == "hello":
            return self.hello(msg)
        if t == "begin":
            return self.begin(msg)
        if t == "end":
            return self.end(msg)
        return self.step(msg)

    def close(self) -> list[str]:
        if self.guest is not None:
            w = self.guest.finish()
            self.last_console = self.guest.console()
            self.guest = None
            return w
        return []


def relay(pagesize: str, series: str, fresh: bool, fin=None, fout=None) -> int:
    """stdin/stdout are the protocol stream (PROTOCOL.md); each line goes to the
    guest's agent through Lane."""
    fin = fin or sys.stdin
    fout = fout or sys.stdout
    lane = Lane(pagesize, series, fresh)
    try:
        for line in fin:
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError as e:
                fout.write(json.dumps({"error": f"bad request line: {e}"}) + "\n")
                fout.flush()
                continue
            try:
                ans = lane.handle(msg)
            except Exception as e:  # a boot failure is the target's error, not a crash
                ans = {"error": f"{type(e).__name__}: {e}"}
            fout.write(json.dumps(ans) + "\n")
            fout.flush()
    finally:
        for w in lane.close():
            log("kernel:", w)
    return 0


# --------------------------------------------------------------------- target

def _observed(ans: dict):
    from vfiospec.conformance.judge import Observed
    if "unsupported" in ans:
        return Observed(ret=None, unsupported=str(ans["unsupported"]))
    if "error" in ans:
        return Observed(ret=None, error=str(ans["error"]))
    return Observed(ret=ans.get("ret"), errno=ans.get("errno"), out=ans.get("out") or {},
                    data=ans.get("data"))


def platform_mismatch(trace_platform: dict, pagesize: str) -> str | None:
    """Why this guest cannot be the trace's platform, or None. A trace that names
    no process.page_size runs on both page sizes."""
    iommu = (trace_platform or {}).get("iommu", {})
    if iommu.get("kind", "vtd") != "spapr":
        return f"the pseries lane is an sPAPR machine; the trace asks for iommu {iommu.get('kind', 'vtd')!r}"
    ps = (trace_platform or {}).get("process", {}).get("page_size")
    if ps is not None:
        from vfiospec.reference.numbers import parse_int
        want = parse_int(ps)
        have = 4096 if pagesize == "4k" else 65536
        if want != have:
            return f"the trace needs a {want}-byte page kernel; this guest has {have}"
    return None


def make_target(pagesize: str, series: str = DEFAULT_SOURCE, fresh: bool = True):
    """A conformance Target (conformance/targets/base.py) on a pseries guest."""
    from vfiospec.conformance.targets.base import Session, Target, TargetError, Unsupported

    class PseriesSession(Session):
        def __init__(self, target):
            self.target = target
            self.index = 0

        def perform(self, step: dict):
            ans = self.target.lane.step({"type": "step", "index": self.index, "step": step})
            self.index += 1
            return _observed(ans)

        def close(self) -> None:
            ans = self.target.lane.end({"type": "end"})
            self.target.last_warnings = ans.get("kernel_warnings", [])

    class PseriesTarget(Target):
        name = f"pseries-{series}-{pagesize}"
        platform = guest_platform(pagesize, series)

        def __init__(self):
            self.lane = Lane(pagesize, series, fresh)
            self.last_warnings: list[str] = []

        def begin(self, trace):
            why = platform_mismatch(trace.platform, pagesize)
            if why:
                raise Unsupported(why)
            try:
                self.lane.hello({"type": "hello", "protocol": 1})
                ans = self.lane.begin({"type": "begin", "trace": trace.name, "platform": trace.platform})
            except Exception as e:
                raise TargetError(f"pseries guest: {e}") from e
            if "unsupported" in ans:
                self.lane.end({"type": "end"})
                raise Unsupported(ans["unsupported"])
            if not ans.get("ok"):
                raise TargetError(f"agent refused begin: {ans}")
            self.last_warnings = []
            return PseriesSession(self)

        def describe(self) -> dict:
            return {"target": self.name, "hello": self.lane.hello_answer}

        def shutdown(self) -> None:
            self.lane.close()

    return PseriesTarget()


def run_traces(paths: list[str], pagesize: str, series: str = DEFAULT_SOURCE,
               fresh: bool = True, out: Path | None = None, quiet: bool = False) -> dict:
    """Replay traces on a fresh guest each; returns (and writes to `out`) the raw
    per-step results with timings and the kernel warnings seen at agent exit."""
    from vfiospec.conformance.replay import load_all, summary_lines
    from vfiospec.conformance.runner import run_trace
    traces = load_all(paths)
    t0 = time.time()
    target = make_target(pagesize, series, fresh)
    results, raw = [], []
    try:
        for t in traces:
            r = run_trace(t, target)
            results.append(r)
            j = r.to_json()
            j["kernel_warnings"] = list(target.last_warnings)
            raw.append(j)
            if not quiet:
                log(f"{r.verdict:11s} {t.name} ({r.seconds:.1f} s)"
                    + (f" kernel: {target.last_warnings}" if target.last_warnings else ""))
    finally:
        target.shutdown()
    doc = {"target": target.name, "hello": target.lane.hello_answer, "pagesize": pagesize,
           "source": f"linux-source-{series} {common.deb_version('linux-source-' + series)}",
           "kernel_key": kernel(pagesize, series).key(),
           "boot_seconds": [round(b, 2) for b in target.lane.boots],
           "seconds": round(time.time() - t0, 1), "traces": raw}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
    for line in summary_lines(results):
        print(line)
    doc["ok"] = all(r.verdict == "PASS" for r in results)
    return doc


# --------------------------------------------------------------------- CLI

def lane_main(argv: list[str] | None = None) -> int:
    """`vfiospec lane spapr ...` / `python -m vfiospec.lane.pseries ...`."""
    ap = argparse.ArgumentParser(prog="vfiospec lane spapr",
                                 description="the sPAPR TCE lane: real kernels in a QEMU pseries guest")
    sub = ap.add_subparsers(dest="cmd")
    b = sub.add_parser("build", help="build (or find cached) kernels, busybox, agent and initramfs")
    b.add_argument("--pagesize", choices=PAGESIZES + ("all",), default="all")
    b.add_argument("--series", default=DEFAULT_SOURCE)
    bt = sub.add_parser("boot", help="boot a guest; stdin/stdout are the agent's protocol stream")
    bt.add_argument("--pagesize", choices=PAGESIZES, default="4k")
    bt.add_argument("--series", default=DEFAULT_SOURCE)
    bt.add_argument("--reuse", action="store_true", help="one guest for all traces (default: a fresh boot per trace)")
    r = sub.add_parser("run", help="replay traces on fresh guests and write the raw results")
    r.add_argument("paths", nargs="*", default=[str(REPO / "conformance" / "traces" / "spapr-kernel")])
    r.add_argument("--pagesize", choices=PAGESIZES + ("all",), default="all")
    r.add_argument("--series", default=DEFAULT_SOURCE)
    r.add_argument("--raw", metavar="FILE", help="write raw JSON results here (per page size: {pagesize} in the name)")
    r.add_argument("--reuse", action="store_true")
    r.add_argument("-q", "--quiet", action="store_true")
    st = sub.add_parser("status", help="which kernels are cached")
    st.add_argument("--series", default=DEFAULT_SOURCE)
    a = ap.parse_args(argv)
    if a.cmd == "build":
        for ps in (PAGESIZES if a.pagesize == "all" else (a.pagesize,)):
            t = time.time()
            p = build_kernel(ps, a.series)
            print(f"{ps}: {p} ({time.time() - t:.1f} s)")
        common.ensure_packages(RUN_PACKAGES)
        print(f"initramfs: {build_initramfs()}")
        return 0
    if a.cmd == "boot":
        return relay(a.pagesize, a.series, fresh=not a.reuse)
    if a.cmd == "run":
        ok = True
        for ps in (PAGESIZES if a.pagesize == "all" else (a.pagesize,)):
            out = Path(a.raw.replace("{pagesize}", ps)) if a.raw else None
            print(f"== pseries {a.series} {ps} pages")
            ok &= run_traces(a.paths, ps, a.series, fresh=not a.reuse, out=out, quiet=a.quiet)["ok"]
        return 0 if ok else 1
    if a.cmd == "status":
        for ps in PAGESIZES:
            p = cached_kernel(ps, a.series)
            print(f"{ps}: {p or 'not built'}")
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(lane_main())
