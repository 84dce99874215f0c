"""The sPAPR TCE lane: a real Linux kernel's VFIO sPAPR backend in a ppc64le
pseries guest under QEMU TCG (issue 9).

    python -m vfiospec.lane.pseries build [--pagesize 4k|64k|all] [--series 6.12|7.2]
    python -m vfiospec.lane.pseries boot --pagesize 4k     # stdin/stdout = the agent's protocol
    python -m vfiospec.lane.pseries run [TRACES...] --pagesize all --raw FILE
    python -m vfiospec.lane.pseries report RAW... --notes NOTES.md
    python -m vfiospec.lane.pseries status

Pieces (all cached under ~/.cache/vfiospec/, never in git):

- ``kernel(pagesize)``: Debian's ``linux-source-6.12`` cross-built by
  common.build_kernel with ``tinyconfig`` + ``pseries-base.config`` +
  ``pseries-<pagesize>.config`` into ``kernels/<key>/vmlinux``;
  ``--series 7.2`` takes the newest linux-source of Debian sid instead
  (a private apt state; the machine's sources stay as they are).
- ``build_initramfs()``: a static ppc64le busybox (Debian ``busybox-static``
  for ppc64el, private apt state), the static C agent
  (conformance/examples/agent/agent.c, cross-compiled) and an ``/init`` that
  binds the edu device to vfio-pci and runs the agent on ``/dev/hvc1``.
- ``Guest``: QEMU ``-M pseries`` with hvc0 (console) in a file, hvc1 (agent)
  and hvc2 (control: a line there ends the agent) on unix sockets.
- ``Lane``: the protocol endpoint; one guest for trace after trace with a
  new agent process for each (the unregister-while-mapped leak and its
  exit-time warning stay with their trace), rebooted after a refused window
  creation (it poisons the PHB until reboot) or a crash; kernel warnings come
  back in the ``end`` answer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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
BUILD_DEPS = ["bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio", "xz-utils", "make",
              "gcc-powerpc64le-linux-gnu", "libc6-dev-ppc64el-cross"]


def log(*a):
    print("[pseries]", *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------- kernel

def kernel(pagesize: str, series: str = DEFAULT_SOURCE) -> KernelBuild:
    """The pseries guest kernel for `pagesize` ("4k" or "64k") from Debian's
    linux-source-<series>, cached by common.KernelBuild.key()."""
    return KernelBuild(
        f"pseries-{series}-{pagesize}", "powerpc", "vmlinux", fragments(pagesize),
        series=series, cross_compile=CROSS, build_deps=BUILD_DEPS)


def fragments(pagesize: str) -> list[Path]:
    if pagesize not in PAGESIZES:
        raise ValueError(f"pagesize must be one of {', '.join(PAGESIZES)}, not {pagesize!r}")
    return [HERE / "pseries-base.config", HERE / f"pseries-{pagesize}.config"]


def cached_kernel(pagesize: str, series: str = DEFAULT_SOURCE) -> Path | None:
    """The cached vmlinux, or None (also when no source for `series` is known)."""
    return kernel_image(pagesize, series, build=False)


class ArchiveKernelBuild(KernelBuild):
    """A KernelBuild whose source is a linux-source-<series> .deb fetched from a
    newer Debian suite through a private apt state (the machine's own sources
    stay as they are); `deb_version` is that package's version."""

    def __init__(self, *a, deb_version: str, suite: str = "sid", **kw):
        super().__init__(*a, **kw)
        self.deb_version, self.suite = deb_version, suite

    def source_version(self) -> str:
        return self.deb_version

    def source(self) -> Path:
        return archive_source_tree(self.series, self.deb_version, self.suite)

    def source_label(self) -> str:
        return f"linux-source-{self.series} {self.deb_version} ({self.suite})"


SUITES = {"sid": "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                 "http://deb.debian.org/debian sid main",
          "experimental": "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                          "http://deb.debian.org/debian experimental main"}


def _suite_apt(suite: str) -> tuple[Path, dict]:
    root = CACHE / f"apt-{suite}"
    for d in ("lists/partial", "cache/archives/partial"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "status").touch()
    (root / "sources.list").write_text(SUITES[suite] + "\n")
    conf = root / "apt.conf"
    conf.write_text(f'Dir::State "{root}";\nDir::State::Lists "{root}/lists";\n'
                    f'Dir::State::status "{root}/status";\nDir::Cache "{root}/cache";\n'
                    f'Dir::Etc::SourceList "{root}/sources.list";\nDir::Etc::SourceParts "/nonexistent";\n')
    return root, dict(os.environ, APT_CONFIG=str(conf))


_NEWEST: dict[str, tuple[str, str]] = {}


def newest_archive_source(suite: str = "sid", update: bool = True) -> tuple[str, str]:
    """(series, version) of the newest linux-source-X.Y package in `suite`
    (asked of apt once per process unless `update`: apt-cache takes seconds)."""
    if not update and suite in _NEWEST:
        return _NEWEST[suite]
    root, env = _suite_apt(suite)
    if update or not any((root / "lists").glob("*Packages*")):
        subprocess.run(["apt-get", "update", "-q"], env=env, cwd=root, capture_output=True)
    r = subprocess.run(["apt-cache", "depends", "linux-source"], env=env, capture_output=True, text=True)
    m = re.search(r"Depends: linux-source-(\d+\.\d+)", r.stdout)
    if not m:
        raise RuntimeError(f"no linux-source in {suite}: {r.stdout[-500:]}{r.stderr[-500:]}")
    series = m.group(1)
    v = subprocess.run(["apt-cache", "show", "--no-all-versions", f"linux-source-{series}"], env=env,
                       capture_output=True, text=True).stdout
    ver = re.search(r"^Version: (\S+)", v, re.M).group(1)
    _NEWEST[suite] = series, ver
    return series, ver


def archive_source_tree(series: str, version: str, suite: str = "sid") -> Path:
    """linux-source-<series> <version> from `suite`, unpacked like common.source_tree."""
    root = CACHE / "src" / f"linux-source-{version.replace('~', '_')}"
    tree = root / f"linux-source-{series}"
    if (tree / ".vfiospec-extracted").exists():
        return tree
    aroot, env = _suite_apt(suite)
    debs = sorted(aroot.glob(f"linux-source-{series}_{version.replace(':', '%3a')}_all.deb"))
    if not debs:
        r = subprocess.run(["apt-get", "download", "-q", f"linux-source-{series}={version}"], env=env,
                           cwd=aroot, capture_output=True, text=True)
        debs = sorted(aroot.glob(f"linux-source-{series}_*_all.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download linux-source-{series} failed: {r.stderr[-800:]}")
    root.mkdir(parents=True, exist_ok=True)
    with common.file_lock(root / ".lock"):
        if (tree / ".vfiospec-extracted").exists():
            return tree
        tmp = Path(tempfile.mkdtemp(prefix=".unpack.", dir=root))
        subprocess.run(f"dpkg-deb --fsys-tarfile {debs[-1]} | tar -xO ./usr/src/linux-source-{series}.tar.xz"
                       f" | tar -xJ -C {tmp}", shell=True, check=True)
        if tree.exists():
            shutil.rmtree(tree)
        (tmp / f"linux-source-{series}").rename(tree)
        tmp.rmdir()
        (tree / ".vfiospec-extracted").write_text(version + "\n")
    return tree


def archive_kernel(pagesize: str, series: str, version: str) -> ArchiveKernelBuild:
    return ArchiveKernelBuild(
        f"pseries-{series}-{pagesize}", "powerpc", "vmlinux", fragments(pagesize),
        series=series, cross_compile=CROSS, build_deps=BUILD_DEPS, deb_version=version)


def kernel_build(pagesize: str, series: str = DEFAULT_SOURCE) -> KernelBuild:
    """The build of `series`: from the machine's own linux-source-<series> when
    apt offers it, else from the newest suite that has it (sid)."""
    if common.deb_version(f"linux-source-{series}") is not None or series == DEFAULT_SOURCE:
        return kernel(pagesize, series)
    s, ver = newest_archive_source("sid", update=False)
    if s != series:
        raise RuntimeError(f"linux-source-{series} is neither installed nor the newest in sid ({s})")
    return archive_kernel(pagesize, series, ver)


def kernel_image(pagesize: str, series: str = DEFAULT_SOURCE, build: bool = True) -> Path | None:
    """The vmlinux of kernel_build, built (common.build_kernel) unless cached or not `build`."""
    kb = kernel_build(pagesize, series)
    if kb.cached():
        return kb.image_path
    return common.build_kernel(kb, jobs=os.cpu_count() or 2) if build else None


def kernel_label(pagesize: str, series: str = DEFAULT_SOURCE) -> str:
    try:
        return kernel_build(pagesize, series).source_label()
    except (RuntimeError, OSError):
        return f"linux-source-{series} ?"


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
    """The static C agent cross-compiled for ppc64le (common.build_agent; agent.c
    encodes ioctl numbers with its target's _IO(), which differs on powerpc)."""
    return common.build_agent(cc=CROSS + "gcc")


INIT = r"""#!/bin/sh
# vfiospec pseries guest: bind the edu devices to vfio-pci and run the agent on
# hvc1, again each time it exits; on hvc2 (the control channel) a line
# "restart" ends the agent (a new one, a new mm, announces itself ready) and
# "quit" ends it for good, then power off.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
# the edu devices, in PCI address order (one per PHB: each PHB is an IOMMU group):
# the first is g0/dev0, the second g1/dev1
: > /tmp/names
i=0
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ] || continue
  A=${d##*/}
  echo vfio-pci > $d/driver_override
  echo $A > /sys/bus/pci/drivers_probe
  G=$(basename "$(readlink $d/iommu_group)")
  printf 'g%s=%s\ndev%s=%s\n' $i "$G" $i "$A" >> /tmp/names
  [ $i = 0 ] && EDU=$A && G0=$G && DRV=$(basename "$(readlink $d/driver)")
  [ $i = 1 ] && EDU1=$A && G1=$G
  i=$((i + 1))
done
echo "vfiospec-guest: dev0=$EDU g0=$G0 driver=$DRV kernel=$(uname -r) dev1=$EDU1 g1=$G1"
(while read line; do
   [ "$line" = quit ] && : > /tmp/quit
   kill $(cat /tmp/agent.pid)
 done < /dev/hvc2) &
while :; do
  /bin/vfiospec-agent --config /tmp/names --device /dev/hvc1 --ready 2>/dev/hvc0 &
  echo $! > /tmp/agent.pid
  wait $!
  echo "vfiospec-guest: agent exited $?"
  [ -e /tmp/quit ] && break
  /bin/true
done
poweroff -f
"""

BB_APPLETS = ("sh", "mount", "mkdir", "cat", "echo", "printf", "ls", "basename", "readlink",
              "uname", "kill", "poweroff", "sleep", "dmesg", "grep", "[", "test", "true")


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


def qemu_argv(vmlinux: Path, initrd: Path, sock: Path, ctl: Path, console: Path,
              memory: str = "1G") -> list[str]:
    """QEMU pseries under TCG; hvc0 (console) to a file, hvc1 (agent) and hvc2
    (control) on unix sockets; an edu device on each of two PHBs. A PHB is an
    IOMMU group (every device on one shares it), so the two are g0 and g1;
    -nodefaults keeps anything else off them."""
    return [QEMU, "-M", MACHINE, "-cpu", "POWER9", "-accel", "tcg", "-smp", "1", "-m", memory,
            "-nodefaults", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con",
            "-kernel", str(vmlinux), "-initrd", str(initrd),
            "-append", "console=hvc0 panic=-1",
            "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
            "-device", "spapr-vty,chardev=agent",
            "-chardev", f"socket,id=ctl,path={ctl},server=on,wait=off",
            "-device", "spapr-vty,chardev=ctl",
            "-device", "edu",
            "-device", "spapr-pci-host-bridge,index=1,id=phb1", "-device", "edu,bus=phb1.0"]


# WARN splats: "WARNING: CPU: 0 PID: 40 at FILE:LINE func" (6.12) and
# "WARNING: FILE:LINE at func, CPU#0: comm/pid" (newer kernels, 7.2)
WARN_RE = re.compile(r"(WARNING: CPU: \d+ PID: \d+ at .*|WARNING: \S+\.[ch]:\d+ at .*"
                     r"|BUG: .*|Oops: .*|Kernel panic - .*)")
WARN_LOC_RE = re.compile(r"(\S+\.[ch]:\d+)")
GUEST_MARK = "vfiospec-guest: dev0="


def warning_place(line: str) -> str:
    """Where a kernel warning line points (FILE:LINE), or its start when it names no file (an oops)."""
    m = WARN_LOC_RE.search(line)
    return m.group(1) if m else line.split(" at 0x")[0][:60]


class Guest:
    """One booted pseries guest with its agent ready (common.Bridge)."""

    def __init__(self, pagesize: str, series: str = DEFAULT_SOURCE, workdir: Path | None = None):
        self.pagesize = pagesize
        vmlinux = kernel_image(pagesize, series)
        initrd = build_initramfs()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vfiospec-pseries-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console_log = self.workdir / "hvc0.log"
        self.ctl = self.workdir / "ctl.sock"
        self.bridge = Bridge(qemu_argv(vmlinux, initrd, self.workdir / "agent.sock", self.ctl, self.console_log),
                             self.workdir / "agent.sock", self.workdir / "qemu.log")
        self.boot_seconds: float | None = None
        self.mark = 0               # console offset of the agent's last (re)start
        self.number = 0             # which boot of its Lane

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

    def control(self, word: str) -> None:
        """One line on hvc2: "restart" (a new agent) or "quit" (then poweroff)."""
        import socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(self.ctl))
            c.sendall(word.encode() + b"\n")
            time.sleep(0.05)    # QEMU reads the line before the connection drops

    def warnings_since_mark(self) -> list[str]:
        """Kernel warning lines printed since the agent last (re)started; moves the mark."""
        c = self.console()
        w = warnings_in(c[self.mark:], whole=self.mark > 0)
        self.mark = len(c)
        return w

    def restart_agent(self, timeout: float = 60) -> list[str]:
        """End the agent (its mm is torn down, so exit-time kernel warnings are
        printed; the new agent's exec drops the last lazy reference) and wait
        for the next one /init starts; returns the kernel warnings of the
        ended agent's time."""
        self.control("restart")
        self.bridge.wait_ready(time.time() + timeout)
        time.sleep(0.05)
        return self.warnings_since_mark()

    def finish(self, timeout: float = 20) -> list[str]:
        """Make the agent exit for good, wait for poweroff, and return the
        kernel warning lines the console showed after /init started the agent."""
        try:
            self.control("quit")
            deadline = time.time() + timeout
            while time.time() < deadline and self.bridge.proc and self.bridge.proc.poll() is None:
                time.sleep(0.05)
        except OSError:
            pass
        self.stop()
        return self.warnings_since_mark()

    def stop(self) -> None:
        self.bridge.stop()


def warnings_in(console: str, whole: bool = False) -> list[str]:
    """Kernel WARNING/BUG/Oops/panic lines of a console log printed after /init
    started the agent (boot-time messages are not the trace's doing), or of
    all of `console` when `whole`."""
    i = -1 if whole else console.find(GUEST_MARK)
    if i >= 0:
        console = console[i:]
    return [m.group(1).strip() for m in map(WARN_RE.search, console.splitlines()) if m]


# --------------------------------------------------------------------- protocol

def guest_platform(pagesize: str, series: str = DEFAULT_SOURCE) -> dict:
    """The trace-format platform this lane *is* (measured on the guest: GET_INFO
    of a v2 container; page size of the kernel build)."""
    return {"kernel": series,
            "iommu": {"kind": "spapr", "dma32_window": [0, "0x40000000"],
                      "pgsizes": [4096, 65536, 2097152, 16777216],
                      "max_windows": 2, "levels": 1, "ddw": True, "eeh": False},
            "vfio_container": "vfio",
            "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}, "g1": {"devices": {"dev1": "vfio-pci"}}},
            "process": {"page_size": 4096 if pagesize == "4k" else 65536},
            # pseries-base.config builds no TRANSPARENT_HUGEPAGE
            "params": {"transparent_hugepage": False}}


# VFIO's own checks of a TCE_CREATE (tce_iommu_ioctl: v1 container, no group,
# the argument copy, flags; tce_iommu_create_window: page size, levels, window
# count) come before the platform is asked; any other
# refusal came from spapr_tce_create_table / the RTAS DDW calls, after which this
# PHB creates no window until reboot (measured on 6.12 and 7.2).
CREATE_CHECKS = frozenset({"EINVAL", "ENOSPC", "EFAULT", "ENOTTY", "ENXIO"})


def poisons_phb(step: dict, ans: dict) -> bool:
    """Whether this step's answer leaves the guest's PHB changed for good."""
    if step.get("call") != "ioctl" or step.get("cmd") != "VFIO_IOMMU_SPAPR_TCE_CREATE":
        return False
    return "error" in ans or "unsupported" in ans or ans.get("errno") not in (None, *CREATE_CHECKS)


class Lane:
    """The protocol endpoint of the lane. One guest serves trace after trace,
    its agent restarted in between (a new process, so a new mm: the
    unregister-while-mapped leak and its exit-time kernel warning stay with
    their trace); the guest is rebooted after a trace that poisoned the PHB
    (poisons_phb), after the agent died, and before every trace when `fresh`.

    `end` answers with the kernel warnings printed since the trace began
    (`kernel_warnings`, an extension the harness ignores) and `guest`: which
    boot served it and whether the guest was new for it."""

    def __init__(self, pagesize: str, series: str = DEFAULT_SOURCE, fresh: bool = False,
                 workdir: Path | None = None, preboot: bool = True):
        self.pagesize, self.series, self.fresh, self.preboot = pagesize, series, fresh, preboot
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vfiospec-pseries-"))
        self.guest: Guest | None = None
        self.hello_answer: dict | None = None
        self.boots: list[float] = []
        self.reboots: dict[str, int] = {"fresh": 0, "phb": 0, "crash": 0, "asked": 0}
        self.n = 0
        self.on_guest = 0           # traces begun on the current guest
        self.dirty = ""             # why the current guest serves no further trace
        self.crashed = False        # the guest died during the current trace
        self._thread: threading.Thread | None = None
        self._pending = None
        self.crash_warnings: list[str] = []
        common.ensure_packages(RUN_PACKAGES)

    def _start_guest(self, tries: int = 2) -> Guest:
        """A booted guest; a boot that fails is tried once more (and logged)."""
        for attempt in range(tries):
            self.n += 1
            g = Guest(self.pagesize, self.series, self.workdir / f"boot{self.n}")
            g.number = self.n
            try:
                g.start()
            except RuntimeError as e:
                g.stop()
                if attempt + 1 == tries:
                    raise
                log(f"boot {self.n} failed, booting again: {str(e).splitlines()[0]}")
                continue
            self.boots.append(g.boot_seconds or 0.0)
            return g

    def _preboot(self) -> None:
        """Boot the next guest in the background, so that `begin` does not wait a whole boot."""
        def run():
            try:
                self._pending = self._start_guest()
            except Exception as e:  # reported by the begin that needs it
                self._pending = e
        self._pending = None
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def _boot(self) -> None:
        g = None
        if self._thread is not None:
            self._thread.join()
            self._thread, g = None, self._pending
            if isinstance(g, Exception):
                raise g
        g = g or self._start_guest()
        ans = g.request({"type": "hello", "protocol": 1})
        if ans.get("type") != "hello":
            g.stop()
            raise RuntimeError(f"guest agent answered hello with {ans}")
        ans["platform"] = guest_platform(self.pagesize, self.series)
        ans["target"] = f"{ans.get('target', 'agent')} in pseries guest " \
                        f"({kernel_label(self.pagesize, self.series)}, {self.pagesize} pages, QEMU TCG)"
        self.hello_answer = ans
        self.guest, self.on_guest, self.dirty = g, 0, ""

    def _retire(self, why: str) -> list[str]:
        """Power the current guest off (its warnings returned) and boot the next in the background."""
        w = self.guest.finish()
        self.last_console = self.guest.console()
        self.guest = None
        self.reboots[why] += 1
        if self.preboot and self._thread is None:
            self._preboot()
        return w

    def hello(self, msg: dict) -> dict:
        if self.guest is None:
            self._boot()
        return self.hello_answer

    def begin(self, msg: dict) -> dict:
        why = platform_mismatch(msg.get("platform") or {}, self.pagesize, msg.get("steps"))
        if why:
            return {"unsupported": why}
        if self.guest is None:
            self._boot()
        self.on_guest += 1
        self.crashed = False
        return self.guest.request(msg)

    def step(self, msg: dict, timeout: float = 120) -> dict:
        if self.guest is None:
            if self.crashed:
                return {"unsupported": "the guest died at an earlier step of this trace"}
            return {"error": "no guest (begin first)"}
        try:
            ans = self.guest.request(msg, timeout=timeout)
            if ans.get("type") == "ready":
                raise EOFError("the agent died answering (/init started another)")
        except (TimeoutError, EOFError, OSError, ValueError) as e:
            # the agent died (an oops kills it) or hangs: the guest serves no
            # further step; what the kernel printed meanwhile is kept
            time.sleep(1.0)
            self.guest.stop()
            console = self.guest.console()
            tail = "\n".join(console.splitlines()[-30:])
            self.crash_warnings = self.guest.warnings_since_mark()
            self.guest = None
            self.crashed = True
            self.reboots["crash"] += 1
            if self.preboot and self._thread is None:
                self._preboot()
            return {"error": f"guest agent: {e}; console tail:\n{tail}"}
        if not self.dirty and poisons_phb(msg.get("step") or {}, ans):
            self.dirty = "phb"
            if self.preboot and self._thread is None:
                self._preboot()     # the next trace's guest boots while this one ends
        return ans

    def end(self, msg: dict) -> dict:
        if self.guest is None:  # the guest died during the trace: report what the kernel said
            w, self.crash_warnings, self.crashed = self.crash_warnings, [], False
            return {"ok": True, "kernel_warnings": w, "guest": {"crashed": True}}
        info = {"boot": self.guest.number, "new": self.on_guest == 1}
        ans = self.step(msg)
        if self.guest is None:
            ans["kernel_warnings"], self.crash_warnings = self.crash_warnings, []
        elif self.fresh or self.dirty:
            info["rebooted"] = "fresh" if self.fresh else self.dirty
            ans["kernel_warnings"] = self._retire(info["rebooted"])
        else:
            try:
                ans["kernel_warnings"] = self.guest.restart_agent()
            except (RuntimeError, OSError) as e:
                self.guest.stop()
                self.guest = None
                self.reboots["crash"] += 1
                return {"error": f"guest agent did not restart: {e}"}
        ans["guest"] = info
        return ans

    def reboot(self) -> None:
        """The next trace gets a new guest."""
        if self.guest is not None:
            self._retire("asked")

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
        if self._thread is not None:
            self._thread.join()
            if isinstance(self._pending, Guest):
                self._pending.stop()
            self._thread = self._pending = None
        if self.guest is not None:
            w = self.guest.finish()
            self.last_console = self.guest.console()
            self.guest = None
            return w
        return []


def relay(pagesize: str, series: str, fresh: bool = False, fin=None, fout=None) -> int:
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


# iommu properties a trace depends on only through the steps that read them
_SPAPR_USES = {"eeh": ("EEH",), "ddw": ("TCE_CREATE", "TCE_REMOVE", "TCE_GET_INFO"),
               "levels": ("TCE_CREATE", "TCE_GET_INFO"), "max_windows": ("TCE_CREATE", "TCE_GET_INFO"),
               "pgsizes": ("TCE_CREATE", "TCE_GET_INFO")}


def platform_mismatch(trace_platform: dict, pagesize: str, steps: list | None = None) -> str | None:
    """Why this guest cannot be the trace's platform, or None: the guest is
    guest_platform() (g0 and g1, an edu device on vfio-pci each; the agent takes the
    trace's process.rlimit_memlock and process.caps for the trace). An
    iommu property in _SPAPR_USES counts only when `steps` use it (all count
    without `steps`), and huge-page memory is seen only in `steps`; a trace
    that names no process.page_size runs on both page sizes."""
    from vfiospec.reference.platform import parse_platform
    plat = trace_platform or {}
    iommu = plat.get("iommu") or {}
    if iommu.get("kind", "vtd") != "spapr":
        return f"the pseries lane is an sPAPR machine; the trace asks for iommu {iommu.get('kind', 'vtd')!r}"
    guest = guest_platform(pagesize)
    try:
        want = parse_platform({k: v for k, v in plat.items() if k != "kernel"})
    except ValueError as e:         # PlatformError, or a number that is none
        return f"platform: {e}"
    have = parse_platform({k: v for k, v in guest.items() if k != "kernel"})
    text = json.dumps(steps) if steps is not None else None
    for k in ("dma32_window", "pgsizes", "max_windows", "levels", "ddw", "eeh"):
        if getattr(want.iommu, k) != getattr(have.iommu, k) and (
                text is None or k not in _SPAPR_USES or any(w in text for w in _SPAPR_USES[k])):
            return f"platform iommu.{k} = {getattr(want.iommu, k)}; the guest's PHB has {getattr(have.iommu, k)}"
    if "page_size" in (plat.get("process") or {}) and want.page_size != have.page_size:
        return f"the trace needs a {want.page_size}-byte page kernel; this guest has {have.page_size}"
    groups = plat.get("groups") or {"g0": {"devices": {"dev0": "vfio-pci"}}}
    for gname, g in groups.items():
        devs = (g or {}).get("devices") or {}
        if gname not in guest["groups"] or set(g or {}) - {"devices"} \
                or set(devs) - set(guest["groups"][gname]["devices"]) \
                or any(d not in ("vfio-pci", {"driver": "vfio-pci"}) for d in devs.values()):
            return f"platform group {gname} {json.dumps(g)}: the guest's groups are g0 = dev0 and " \
                   f"g1 = dev1 (edu on vfio-pci, one PHB each)"
    if plat.get("mdev_parents"):
        return "platform mdev_parents: the pseries guest has no mdev parent"
    if want.vfio_container != have.vfio_container:
        return f"platform vfio_container {want.vfio_container}: the guest's /dev/vfio/vfio is VFIO's own"
    for k in ("dma_entry_limit", "enable_unsafe_noiommu_mode"):
        if getattr(want, k) != getattr(have, k):
            return f"platform {k} = {getattr(want, k)}; the guest has the default"
    if not want.caps <= have.caps:
        return f"platform process.caps {sorted(want.caps)}: the agent gives a trace only {sorted(have.caps)}"
    if text is not None and '"hugepage": true' in text:
        # mm_iommu_do_alloc raises a registration's pageshift only for PageHuge
        # (hugetlbfs) pages, which the reference gives a hugepage mmap; THP pages
        # do not count (seen on 6.12 4K with THP built in), and the agent's is THP
        return "a step maps huge-page memory: the reference backs it with hugetlbfs pages " \
               "(PageHuge), the agent only with THP, which mm_iommu_do_alloc does not count"
    return None


def make_target(pagesize: str, series: str = DEFAULT_SOURCE, fresh: bool = False):
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
            self.target.last_guest = ans.get("guest", {})

    class PseriesTarget(Target):
        name = f"pseries-{series}-{pagesize}"
        platform = guest_platform(pagesize, series)

        def __init__(self):
            self.lane = Lane(pagesize, series, fresh)
            self.last_warnings: list[str] = []
            self.last_guest: dict = {}

        def begin(self, trace):
            why = platform_mismatch(trace.platform, pagesize, trace.steps)
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


STATEFUL_MODES = ("spapr-v1", "spapr-v2")
DEFAULT_TRACES = [REPO / "conformance" / "traces"]


def run_traces(paths: list[str], pagesize: str, series: str = DEFAULT_SOURCE,
               fresh: bool = False, out: Path | None = None, quiet: bool = False,
               budget: float = 0.0, seed: int = 0, report_dir: Path | None = None) -> dict:
    """Replay the sPAPR traces among `paths` on the lane's guests (Lane), then
    explore each of STATEFUL_MODES for `budget` seconds against the same guests
    (conformance.stateful.run_mode, the reference being this guest's platform);
    returns (and writes to `out`) the raw per-step results with timings and the
    kernel warnings seen per trace.

    A trace that does not pass on a guest that served an earlier trace is run
    again on a new guest, and the new guest's result counts; the first result
    is kept under `shared_guest` (a state the reboot rule missed: reported)."""
    from vfiospec.conformance.replay import load_all
    from vfiospec.conformance.run import judge_with_waivers
    from vfiospec.conformance.runner import run_trace
    from vfiospec.lane import load_lane_waivers
    waivers = load_lane_waivers()
    every = load_all(paths)
    traces = [t for t in every if ((t.platform or {}).get("iommu") or {}).get("kind") == "spapr"]
    for t in traces:
        # the guest *is* its kernel: conditional expectations are chosen for it
        t.platform = dict(t.platform or {}, kernel=series)
    t0 = time.time()
    target = make_target(pagesize, series, fresh)
    results, raw, stateful = [], [], []
    prev = None
    try:
        for t in traces:
            target.last_warnings, target.last_guest = [], {}
            r = run_trace(t, target)
            first = None
            if r.verdict not in ("PASS", "UNSUPPORTED") and target.last_guest.get("new") is False:
                first = {"verdict": r.verdict, "after": prev, "warnings": list(target.last_warnings),
                         "steps": [s for s in r.to_json()["steps"] if s["verdict"] != "PASS"][:3]}
                log(f"{r.verdict} {t.name} on a guest that ran {prev} first: again on a new guest")
                target.lane.reboot()
                r = run_trace(t, target)
            j = judge_with_waivers(r, waivers, {"target": target.name, "kernel": t.parsed_platform.kernel,
                                                "mode": "traces"})
            results.append(j["verdict"])
            j["kernel_warnings"] = list(target.last_warnings)
            j["guest"] = dict(target.last_guest)
            if first:
                j["shared_guest"] = first
            raw.append(j)
            if r.verdict != "UNSUPPORTED":
                prev = t.name
            if not quiet:
                log(f"{j['verdict']:11s} {t.name} ({r.seconds:.1f} s, boot {target.last_guest.get('boot', '-')})"
                    + (f" kernel: {target.last_warnings}" if target.last_warnings else ""))
        traces_s = time.time() - t0
        if budget > 0:
            from vfiospec.conformance import stateful as st
            for m in STATEFUL_MODES:
                res = st.run_mode(m, target.name, budget, seed, target_obj=target, per_batch=2,
                                  report_dir=report_dir or (out.parent if out else Path(".")))
                res.pop("platform", None)
                stateful.append(res)
                log(f"{res['verdict']:11s} stateful {m}: {res['examples']} examples, {res['steps']} steps "
                    f"in {res['seconds']:.1f} s" + "".join(f"\n  {f['message']} ({f['trace']})"
                                                          for f in res["failures"])
                    + (f"\n  {res['error']}" if res.get("error") else ""))
    finally:
        target.shutdown()
    doc = {"target": target.name, "hello": target.lane.hello_answer, "pagesize": pagesize,
           "source": kernel_label(pagesize, series),
           "kernel": str(kernel_image(pagesize, series, build=False)),
           "boot_seconds": [round(b, 2) for b in target.lane.boots], "reboots": target.lane.reboots,
           "fresh": fresh, "seconds": round(time.time() - t0, 1), "traces_seconds": round(traces_s, 1),
           "not_spapr": len(every) - len(traces), "traces": raw, "stateful": stateful,
           "waivers": [{"id": w.id, "hits": w.hits, "mismatches": w.mismatches} for w in waivers
                       if w.hits or w.mismatches]}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{len(results)} sPAPR traces: " + ", ".join(f"{results.count(v)} {v.lower()}" for v in
                                                     ("PASS", "XFAIL", "FAIL", "ERROR", "UNSUPPORTED")))
    for res in stateful:
        print(f"stateful {res['mode']}: {res['verdict']}, {res['examples']} examples, {res['steps']} steps")
    doc["ok"] = all(v in ("PASS", "XFAIL", "UNSUPPORTED") for v in results) and all(
        res["verdict"] == "PASS" for res in stateful)
    return doc


# --------------------------------------------------------------------- reports

def _obs_text(o: dict) -> str:
    if o.get("unsupported") is not None:
        return "UNSUPPORTED"
    if o.get("error") is not None:
        return "no answer"
    if o.get("errno"):
        return o["errno"]
    return f"ret {o.get('ret')}"


def write_reports(raw_docs: list[dict], raw_out: Path, md_out: Path, title: str,
                  notes: str = "") -> None:
    """Combine per-page-size raw run documents into one raw JSON and a short
    Markdown summary (verdict and errno per step, page sizes side by side)."""
    by_ps = {d["pagesize"]: d for d in raw_docs}
    raw_out.parent.mkdir(parents=True, exist_ok=True)
    # kept small: a trace that passed (or did not run) keeps its verdict, not its steps (the
    # Markdown has every step's errno; `run --raw` has every field)
    small = {ps: {**d, "traces": [t if t["verdict"] not in ("PASS", "UNSUPPORTED") else
                                  {**t, "steps": [], "nsteps": len(t["steps"])} for t in d["traces"]]}
             for ps, d in by_ps.items()}
    raw_out.write_text(json.dumps({"vfiospec_spapr_raw": 1, "runs": small}, separators=(",", ":")) + "\n")
    pss = [p for p in PAGESIZES if p in by_ps]
    lines = [f"# {title}", ""]
    for ps in pss:
        d = by_ps[ps]
        kmeta = {}
        try:
            kmeta = json.loads((Path(d["kernel"]).parent / "meta.json").read_text())
        except (OSError, ValueError, TypeError):
            pass
        ran = [t for t in d["traces"] if t["verdict"] != "UNSUPPORTED"]
        counts = {v: sum(t["verdict"] == v for t in d["traces"])
                  for v in ("PASS", "XFAIL", "FAIL", "ERROR", "UNSUPPORTED")}
        rb = d.get("reboots") or {}
        st = "; ".join(f"stateful {m['mode']} {m['verdict']} ({m['examples']} examples, {m['steps']} steps, "
                       f"{m['seconds']:.0f} s)" for m in d.get("stateful", []))
        lines.append(f"- **{ps} pages**: {d['source']}, release {kmeta.get('release', '?')}; "
                     f"cold build {kmeta.get('build_seconds', '?')} s; "
                     f"boots {min(d['boot_seconds']) if d['boot_seconds'] else '?'}–"
                     f"{max(d['boot_seconds']) if d['boot_seconds'] else '?'} s to agent ready. "
                     f"{len(ran)} traces run in {d.get('traces_seconds', d['seconds'])} s "
                     f"({counts['PASS']} pass, {counts['XFAIL']} waived, {counts['FAIL']} fail, "
                     f"{counts['ERROR']} error; "
                     f"{counts['UNSUPPORTED']} not this guest's platform) on {len(d['boot_seconds'])} boots"
                     + (", a fresh guest each" if d.get("fresh", True) else
                        f" (a new agent per trace; rebooted after {rb.get('phb', 0)} PHB-poisoning and "
                        f"{rb.get('crash', 0)} crashing traces, {rb.get('asked', 0)} retries)")
                     + (f"; {st}" if st else "") + f"; {d['seconds']} s in all.")
    if notes:
        lines += ["", notes.strip()]
    retried = [(ps, t) for ps in pss for t in by_ps[ps]["traces"] if t.get("shared_guest")]
    if retried:
        lines += ["", "## Traces that failed on a guest an earlier trace had used", "",
                  "Each passed or failed again on a new guest (that result counts): a state the "
                  "reboot rule (`poisons_phb`) does not know.", ""]
        for ps, t in retried:
            lines.append(f"- {ps}: `{t['name']}` {t['shared_guest']['verdict']} after "
                         f"`{t['shared_guest']['after']}`, then {t['verdict']} on a new guest")
    stateful = [(ps, m) for ps in pss for m in by_ps[ps].get("stateful", [])]
    if stateful:
        lines += ["", "## Stateful exploration", "",
                  "conformance.stateful's sPAPR machines in lockstep with the reference on the guest's "
                  "platform (stateful.mode_on), Hypothesis seed 0, on the same guests as the traces.", "",
                  "| pages | mode | verdict | examples | steps | s | outcomes seen | failure |",
                  "|---|---|---|---|---|---|---|---|"]
        for ps, m in stateful:
            why = "; ".join(f"{f['message']} (`{Path(f['trace']).name}`)" for f in m.get("failures", [])) \
                or m.get("error", "")
            lines.append(f"| {ps} | {m['mode']} | {m['verdict']} | {m['examples']} | {m['steps']} | "
                         f"{m['seconds']:.0f} | {len(m.get('coverage', {}))} | {why.replace('|', '/')[:300]} |")
    skipped = sorted({(t["name"], t.get("error") or "") for ps in pss for t in by_ps[ps]["traces"]
                      if t["verdict"] == "UNSUPPORTED"})
    if skipped:
        lines += ["", "## Not run: the trace's platform is not this guest", ""]
        lines += [f"- `{n}`: {why}" for n, why in skipped]
    lines += ["", "## Traces", "", "| trace | " + " | ".join(pss) + " | kernel warnings |",
              "|---|" + "---|" * len(pss) + "---|"]
    names = sorted({t["name"] for d in raw_docs for t in d["traces"] if t["verdict"] != "UNSUPPORTED"})
    for n in names:
        cells, warns = [], set()
        for ps in pss:
            t = next((t for t in by_ps[ps]["traces"] if t["name"] == n), None)
            cells.append("-" if t is None else f"{t['verdict']} ({t['seconds']:.1f} s)")
            if t and t["verdict"] != "UNSUPPORTED":
                warns.update(warning_place(w) for w in t.get("kernel_warnings", []))
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {'; '.join(sorted(warns)) or '-'} |")
    lines += ["", "## Every step", "",
              "Observed result per page size (`ret N` or the errno name); `!` marks a step "
              "that did not match its expectation.", ""]
    for n in names:
        ts = {ps: next((t for t in by_ps[ps]["traces"] if t["name"] == n), None) for ps in pss}
        ref = next(t for t in ts.values() if t is not None and t["verdict"] != "UNSUPPORTED") \
            if any(t and t["verdict"] != "UNSUPPORTED" for t in ts.values()) else None
        if ref is None:
            continue
        lines += [f"### {n}", "", "| # | call | expected | " + " | ".join(pss) + " |",
                  "|---|---|---|" + "---|" * len(pss)]
        for i, st in enumerate(ref["steps"]):
            cells = []
            for ps in pss:
                t = ts[ps]
                if t is None or t["verdict"] == "UNSUPPORTED" or i >= len(t["steps"]):
                    cells.append("-")
                    continue
                s2 = t["steps"][i]
                mark = "" if s2["verdict"] == "PASS" else \
                    f" (waived: {s2['waiver']})" if s2["verdict"] == "XFAIL" else " !"
                cells.append(_obs_text(s2["observed"]) + mark)
            call = st["call"].replace("|", "\\|")
            lines.append(f"| {i} | `{call}` | {st['expected']} | " + " | ".join(cells) + " |")
        lines.append("")
    md_out.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------- CLI

def run_parallel(pagesizes, argv: list[str]) -> int:
    """`run` once per page size, all at once, each in its own process (its lines
    prefixed with its page size); the exit status is the worst of theirs."""
    if "--pagesize" in argv:
        i = argv.index("--pagesize")
        argv = argv[:i] + argv[i + 2:]
    argv = [x for x in argv if not x.startswith("--pagesize=")]
    procs = {ps: subprocess.Popen([sys.executable, "-m", "vfiospec.lane.pseries"] + argv + ["--pagesize", ps],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for ps in pagesizes}

    def pump(ps, proc):
        for line in proc.stdout:
            print(f"[{ps}] {line}", end="", flush=True)
    threads = [threading.Thread(target=pump, args=kv) for kv in procs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return max(p.wait() for p in procs.values())


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
    bt.add_argument("--fresh", action="store_true", help="a new guest for every trace (default: reboot only "
                                                         "after a trace that poisoned the PHB or crashed)")
    r = sub.add_parser("run", help="replay the sPAPR traces and explore v1/v2 on guests; write the raw results")
    r.add_argument("paths", nargs="*", default=[str(p) for p in DEFAULT_TRACES],
                   help="trace files or directories (the sPAPR traces among them run; default: all shipped)")
    r.add_argument("--budget", type=float, default=10.0,
                   help="seconds of stateful exploration per mode (spapr-v1, spapr-v2); 0: none")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--jobs", type=int, default=2, help="page sizes run at once (default 2: one guest per core)")
    r.add_argument("--pagesize", choices=PAGESIZES + ("all",), default="all")
    r.add_argument("--series", default=DEFAULT_SOURCE)
    r.add_argument("--raw", metavar="FILE", help="write raw JSON results here (per page size: {pagesize} in the name)")
    r.add_argument("--fresh", action="store_true", help="a new guest for every trace")
    r.add_argument("-q", "--quiet", action="store_true")
    rp = sub.add_parser("report", help="combine raw run files into reports/spapr-<series>-raw.json and .md")
    rp.add_argument("raws", nargs="+", help="raw files written by `run --raw`")
    rp.add_argument("--series", default=DEFAULT_SOURCE)
    rp.add_argument("--out-dir", default=str(REPO / "reports"))
    rp.add_argument("--notes", help="Markdown inserted after the summary (the findings)")
    st = sub.add_parser("status", help="which kernels are cached")
    st.add_argument("--series", default=DEFAULT_SOURCE)
    a = ap.parse_args(argv)
    if a.cmd == "build":
        for ps in (PAGESIZES if a.pagesize == "all" else (a.pagesize,)):
            t = time.time()
            p = kernel_image(ps, a.series)
            print(f"{ps}: {p} ({time.time() - t:.1f} s)")
        common.ensure_packages(RUN_PACKAGES)
        print(f"initramfs: {build_initramfs()}")
        return 0
    if a.cmd == "boot":
        return relay(a.pagesize, a.series, fresh=a.fresh)
    if a.cmd == "run":
        pss = PAGESIZES if a.pagesize == "all" else (a.pagesize,)
        if len(pss) > 1 and a.jobs > 1:
            # one QEMU per page size at once: each guest is one TCG thread
            kernel_image(pss[0], a.series), kernel_image(pss[1], a.series)  # build (or find) both first
            return run_parallel(pss, list(argv if argv is not None else sys.argv[1:]))
        ok = True
        for ps in pss:
            out = Path(a.raw.replace("{pagesize}", ps)) if a.raw else None
            print(f"== pseries {a.series} {ps} pages")
            ok &= run_traces(a.paths, ps, a.series, fresh=a.fresh, out=out, quiet=a.quiet,
                              budget=a.budget, seed=a.seed)["ok"]
        return 0 if ok else 1
    if a.cmd == "report":
        docs = [json.loads(Path(p).read_text()) for p in a.raws]
        od = Path(a.out_dir)
        write_reports(docs, od / f"spapr-{a.series}-raw.json", od / f"spapr-{a.series}.md",
                      f"sPAPR TCE backend on a real kernel: linux-source-{a.series} in a QEMU pseries guest",
                      Path(a.notes).read_text() if a.notes else "")
        print(od / f"spapr-{a.series}.md")
        return 0
    if a.cmd == "status":
        for ps in PAGESIZES:
            p = kernel_image(ps, a.series, build=False)
            print(f"{ps}: {p or 'not built'}")
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(lane_main())
