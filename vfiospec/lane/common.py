"""Shared machinery of the real-kernel lanes: Debian packages, kernel builds
cached by version and config, initramfs images, and the host-side bridge that
turns a QEMU guest's agent channel into a `exec:` target's stdin/stdout.

Nothing here knows an architecture: the x86 and pseries lanes pass theirs in
(`KernelBuild.arch`, `cross_compile`, the image path and QEMU's argv).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("VFIOSPEC_CACHE", Path.home() / ".cache" / "vfiospec"))
HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
REPO = HERE.parent.parent
AGENT_DIR = REPO / "conformance" / "examples" / "agent"


def log(msg: str) -> None:
    print(f"[lane {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive flock on `path` (created if absent), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------ Debian packages
def deb_version(pkg: str) -> str | None:
    """The installed version of a Debian package, or None."""
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status}|${Version}", pkg],
                       capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.startswith("install ok installed"):
        return None
    return r.stdout.split("|", 1)[1]


def ensure_packages(pkgs: list[str]) -> None:
    """apt-get install whichever of `pkgs` is missing (waits for dpkg's lock)."""
    missing = [p for p in pkgs if deb_version(p) is None]
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=900",
           "--no-install-recommends", *missing]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        # lists may be absent on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(missing)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def download_deb(pkg: str, dest: Path) -> Path:
    """`apt-get download` one package into `dest` (cached); returns the .deb."""
    dest.mkdir(parents=True, exist_ok=True)
    have = sorted(dest.glob(f"{pkg}_*.deb"))
    if have:
        return have[-1]
    r = subprocess.run(["apt-get", "download", "-q", pkg], cwd=dest, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        r = subprocess.run(["apt-get", "download", "-q", pkg], cwd=dest, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"apt-get download {pkg} failed: {r.stderr[-1000:]}")
    return sorted(dest.glob(f"{pkg}_*.deb"))[-1]


# ------------------------------------------------------------ kernel source
def source_tree(series: str = "6.12") -> Path:
    """Debian's linux-source-<series> unpacked once under
    CACHE/src/linux-source-<deb version>/linux-source-<series>/ (marked complete
    by `.vfiospec-extracted`)."""
    pkg = f"linux-source-{series}"
    ensure_packages([pkg])
    ver = deb_version(pkg)
    root = CACHE / "src" / f"linux-source-{ver.replace('~', '_')}"
    tree = root / pkg
    marker = tree / ".vfiospec-extracted"
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):
        if marker.exists():
            return tree
        tarball = Path(f"/usr/src/{pkg}.tar.xz")
        log(f"unpacking {tarball}")
        tmp = Path(tempfile.mkdtemp(prefix=".unpack.", dir=root))
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(tmp)], check=True)
        if tree.exists():
            shutil.rmtree(tree)
        (tmp / pkg).rename(tree)
        tmp.rmdir()
        marker.write_text(ver + "\n")
    return tree


# ------------------------------------------------------------ kernel builds
@dataclass
class KernelBuild:
    """One kernel built from Debian's linux-source: `base` config target plus fragments."""
    name: str                       # e.g. "6.12-custom"
    arch: str                       # kernel ARCH= (x86, powerpc)
    image: str                      # path of the boot image in the build tree
    fragments: list[Path]
    series: str = "6.12"
    base: str = "tinyconfig"
    cross_compile: str | None = None
    make_target: str | None = None  # default: the image's file name (bzImage, vmlinux)
    build_deps: list[str] = field(default_factory=lambda: [
        "bc", "bison", "flex", "libelf-dev", "libssl-dev", "cpio", "xz-utils", "make", "gcc", "libc6-dev"])

    def source_version(self) -> str:
        """The version of the linux-source package built (installed from the machine's sources)."""
        return deb_version(f"linux-source-{self.series}") or "uninstalled"

    def source(self) -> Path:
        """The unpacked source tree (source_tree)."""
        return source_tree(self.series)

    def source_label(self) -> str:
        return f"linux-source-{self.series} {self.source_version()}"

    def key(self) -> str:
        """sha256 over the source version and everything that shapes the config."""
        h = hashlib.sha256()
        h.update(json.dumps([self.series, self.source_version(), self.arch, self.base, self.image,
                             self.cross_compile or ""]).encode())
        for f in self.fragments:
            h.update(b"\0" + Path(f).read_bytes())
        return h.hexdigest()[:16]

    @property
    def dir(self) -> Path:
        return CACHE / "kernels" / self.key()

    @property
    def image_path(self) -> Path:
        return self.dir / Path(self.image).name

    def cached(self) -> bool:
        return (self.dir / "meta.json").exists() and self.image_path.exists()

    def meta(self) -> dict:
        return json.loads((self.dir / "meta.json").read_text())

    def make_cmd(self, build: Path, *targets: str) -> list[str]:
        cmd = ["make", "-s", f"O={build}", f"ARCH={self.arch}"]
        if self.cross_compile:
            cmd.append(f"CROSS_COMPILE={self.cross_compile}")
        return cmd + list(targets)


def fragment_settings(paths: list[Path]) -> dict[str, str]:
    """CONFIG_X -> 'y'/'m'/value/'n' from fragment files (later files win)."""
    out: dict[str, str] = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            line = line.strip()
            if line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[2:-len(" is not set")]] = "n"
            elif line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


def config_mismatches(config: Path, wanted: dict[str, str]) -> list[str]:
    """Settings of the fragments that `make olddefconfig` did not keep."""
    have = fragment_settings([config])
    bad = []
    for k, v in wanted.items():
        got = have.get(k, "n")
        if got != v:
            bad.append(f"{k}: wanted {v}, got {got}")
    return bad


def build_kernel(kb: KernelBuild, jobs: int | None = None) -> Path:
    """Build `kb` (or reuse the cache); returns the cached image path.

    The result lives in CACHE/kernels/<key>/ with the image, `.config`, the
    build log and meta.json (version, key, build seconds)."""
    if kb.cached():
        return kb.image_path
    with file_lock(CACHE / "kernels" / f".{kb.key()}.lock"):
        if kb.cached():
            return kb.image_path
        ensure_packages(kb.build_deps)
        src = kb.source()
        build = CACHE / "build" / kb.key()
        build.mkdir(parents=True, exist_ok=True)
        jobs = jobs or os.cpu_count() or 2
        logf = build / "build.log"
        t0 = time.time()
        log(f"building {kb.name} ({kb.key()}) in {build}, log {logf}")
        with open(logf, "w") as lf:
            def run(*targets: str) -> None:
                cmd = kb.make_cmd(build, *targets)
                lf.write("$ " + " ".join(cmd) + "\n")
                lf.flush()
                r = subprocess.run(cmd, cwd=src, stdout=lf, stderr=subprocess.STDOUT)
                if r.returncode != 0:
                    raise RuntimeError(f"kernel build {kb.name} failed at `{' '.join(targets)}`; see {logf}")
            run(kb.base)
            with open(build / ".config", "a") as cfg:
                for f in kb.fragments:
                    cfg.write("\n" + Path(f).read_text())
            run("olddefconfig")
            bad = config_mismatches(build / ".config", fragment_settings(kb.fragments))
            if bad:
                raise RuntimeError(f"kernel config {kb.name}: fragment not honoured: {'; '.join(bad)}")
            run(f"-j{jobs}", kb.make_target or Path(kb.image).name)
        secs = time.time() - t0
        out = kb.dir
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / kb.image, out / Path(kb.image).name)
        shutil.copy2(build / ".config", out / "config")
        shutil.copy2(logf, out / "build.log")
        release = (build / "include" / "config" / "kernel.release")
        meta = {"name": kb.name, "key": kb.key(), "arch": kb.arch, "series": kb.series,
                "source": kb.source_label(),
                "release": release.read_text().strip() if release.exists() else None,
                "fragments": [Path(f).name for f in kb.fragments],
                "build_seconds": round(secs, 1), "jobs": jobs,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        log(f"built {kb.name} in {secs:.0f} s -> {out}")
        return kb.image_path


class BackgroundBuilds:
    """Kernel builds run one after another in a background thread, started early
    so their wall time overlaps the lane's other work (two cores: one build at a
    time, each with -j<cpus>)."""

    def __init__(self, builds: list[KernelBuild]):
        self.builds = builds
        self.done: dict[str, threading.Event] = {b.name: threading.Event() for b in builds}
        self.errors: dict[str, str] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "BackgroundBuilds":
        self.thread.start()
        return self

    def _run(self) -> None:
        for b in self.builds:
            try:
                build_kernel(b)
            except Exception as e:  # reported per kernel by wait()
                self.errors[b.name] = str(e)
            finally:
                self.done[b.name].set()

    def wait(self, name: str) -> Path:
        self.done[name].wait()
        if name in self.errors:
            raise RuntimeError(self.errors[name])
        return next(b for b in self.builds if b.name == name).image_path


# ------------------------------------------------------------ agent
def build_agent(cc: str = "gcc", out: Path | None = None) -> Path:
    """The static C agent for `cc`'s target, cached by the hash of its sources."""
    srcs = sorted(p for p in AGENT_DIR.iterdir() if p.suffix in (".c", ".h") or p.name == "Makefile")
    h = hashlib.sha256(cc.encode())
    for p in srcs:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    out = out or CACHE / "agent" / f"vfiospec-agent-{cc}-{h.hexdigest()[:12]}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")      # renamed when whole (see make_initramfs)
    r = subprocess.run(["make", "-s", "-C", str(AGENT_DIR), f"CC={cc}", f"OUT={tmp}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"agent build with {cc} failed:\n{r.stdout}{r.stderr}")
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------ initramfs
def _newc_entry(name: str, mode: int, data: bytes = b"", ino: int = 1, nlink: int = 1) -> bytes:
    hdr = "070701" + "".join(f"{v:08x}" for v in (
        ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
    b = hdr.encode() + name.encode() + b"\0"
    b += b"\0" * (-len(b) % 4)
    b += data
    b += b"\0" * (-len(b) % 4)
    return b


def make_initramfs(out: Path, files: dict[str, bytes | Path], symlinks: dict[str, str] | None = None,
                   dirs: list[str] | None = None, executable: set[str] | None = None) -> Path:
    """A gzip'd newc cpio: `files` maps guest paths to contents or host files."""
    import gzip
    executable = executable or set()
    entries: list[bytes] = []
    ino = 100
    seen: set[str] = set()

    def add_dir(d: str) -> None:
        nonlocal ino
        parts = d.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in seen:
                seen.add(p)
                ino += 1
                entries.append(_newc_entry(p, 0o040755, ino=ino, nlink=2))

    for d in dirs or []:
        add_dir(d)
    for path, content in sorted(files.items()):
        rel = path.strip("/")
        if "/" in rel:
            add_dir(rel.rsplit("/", 1)[0])
        data = content.read_bytes() if isinstance(content, Path) else content
        is_exec = path in executable or (isinstance(content, Path) and os.access(content, os.X_OK)) \
            or data[:4] == b"\x7fELF" or data[:2] == b"#!"
        ino += 1
        entries.append(_newc_entry(rel, 0o100755 if is_exec else 0o100644, data, ino=ino))
    for path, target in sorted((symlinks or {}).items()):
        rel = path.strip("/")
        if "/" in rel:
            add_dir(rel.rsplit("/", 1)[0])
        ino += 1
        entries.append(_newc_entry(rel, 0o120777, target.encode(), ino=ino))
    entries.append(_newc_entry("TRAILER!!!", 0, ino=0))
    out.parent.mkdir(parents=True, exist_ok=True)
    # written aside and renamed: a lane running beside this one (or after an
    # interrupted one) never boots a half-written initramfs
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    with gzip.open(tmp, "wb", compresslevel=6) as f:
        f.write(b"".join(entries))
    os.replace(tmp, out)
    return out


def busybox_files() -> tuple[dict[str, Path], dict[str, str]]:
    """Debian's static busybox at /bin/busybox plus the applet symlinks used by init."""
    ensure_packages(["busybox-static"])
    bb = Path("/bin/busybox")
    links = {f"/bin/{a}": "busybox" for a in (
        "sh", "mount", "mkdir", "cat", "echo", "ls", "ln", "readlink", "basename", "sleep",
        "insmod", "modprobe", "poweroff", "reboot", "mknod", "grep", "sed", "dmesg", "uname",
        "stty", "head", "tr", "cut", "find", "printf", "test", "[")}
    return {"/bin/busybox": bb}, links


# ------------------------------------------------------------ the bridge
READY = b'{"type": "ready"'


class Bridge:
    """Run QEMU with the guest agent's channel on a unix socket, wait for the
    agent's ready line, then pump protocol lines between our stdin/stdout and
    the guest. The console goes to `console_log`."""

    def __init__(self, qemu_argv: list[str], sock: Path, console_log: Path, ready_timeout: float = 540):
        self.qemu_argv = qemu_argv
        self.sock_path = sock
        self.console_log = console_log
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.boot_seconds: float | None = None
        self.ready_info: dict = {}

    def start(self) -> None:
        t0 = time.time()
        if self.sock_path.exists():
            self.sock_path.unlink()
        self.console = open(self.console_log.with_name(self.console_log.name + ".qemu"), "wb")
        self.proc = subprocess.Popen(self.qemu_argv, stdin=subprocess.DEVNULL, stdout=self.console,
                                     stderr=subprocess.STDOUT)
        deadline = t0 + self.ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.proc.returncode}) before the agent was ready; "
                                   f"console: {self.console_log}\n{self.tail()}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.sock_path))
                self.sock = s
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                time.sleep(0.05)
        if self.sock is None:
            self.stop()
            raise RuntimeError(f"qemu's agent socket never appeared; console: {self.console_log}")
        self.buf = b""
        self.wait_ready(deadline)
        self.boot_seconds = time.time() - t0

    def wait_ready(self, deadline: float) -> None:
        """Read the channel until the agent's ready line (after a boot, or after the
        guest restarted its agent); what came before it is dropped."""
        while True:
            left = deadline - time.time()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"guest agent not ready after {self.ready_timeout} s; console "
                                   f"{self.console_log}:\n{self.tail()}")
            r, _, _ = select.select([self.sock], [], [], min(left, 1.0))
            if self.proc.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.proc.returncode}) during boot:\n{self.tail()}")
            if not r:
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"agent channel closed during boot:\n{self.tail()}")
            self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                line = line.strip(b"\r\0 ")
                i = line.find(READY)
                if i >= 0:
                    self.ready_info = json.loads(line[i:])
                    return

    def tail(self, n: int = 40) -> str:
        """The console's last lines, then QEMU's own output."""
        out = []
        for p in (self.console_log, self.console_log.with_name(self.console_log.name + ".qemu")):
            try:
                out += p.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(out)

    def request(self, line: bytes, timeout: float = 60) -> bytes:
        """Send one protocol line, return the agent's one answer line."""
        assert self.sock is not None
        self.sock.sendall(line.rstrip(b"\n") + b"\n")
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("guest agent did not answer")
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("agent channel closed")
                self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return out.strip(b"\r\0")

    def pump(self, fin=None, fout=None, drain_timeout: float = 120) -> None:
        """Copy lines from `fin` (our stdin) to the guest and the guest's to `fout`.
        After `fin` ends, wait (up to `drain_timeout` s) for the answers still owed:
        one line per request line."""
        fin = fin or sys.stdin.buffer
        fout = fout or sys.stdout.buffer
        assert self.sock is not None
        sent = received = 0
        pending_in = b""
        if self.buf:
            received += self.buf.count(b"\n")
            fout.write(self.buf.replace(b"\r", b""))
            fout.flush()
            self.buf = b""
        fdin = fin.fileno()
        eof_at = None
        while True:
            if eof_at is not None and (received >= sent or time.time() - eof_at > drain_timeout):
                return
            watch = [self.sock] if eof_at is not None else [fdin, self.sock]
            r, _, _ = select.select(watch, [], [], 1.0)
            if self.proc is not None and self.proc.poll() is not None:
                return
            if fdin in r:
                data = os.read(fdin, 65536)
                if not data:
                    eof_at = time.time()
                    if pending_in.strip():
                        self.sock.sendall(pending_in + b"\n")
                        sent += 1
                    continue
                pending_in += data
                if b"\n" in pending_in:
                    whole, pending_in = pending_in.rsplit(b"\n", 1)
                    sent += sum(1 for ln in whole.split(b"\n") if ln.strip())
                    self.sock.sendall(whole + b"\n")
            if self.sock in r:
                data = self.sock.recv(65536)
                if not data:
                    return
                data = data.replace(b"\r", b"")
                received += data.count(b"\n")
                fout.write(data)
                fout.flush()

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError, AttributeError):
            self.console.close()
        with contextlib.suppress(OSError):
            self.sock_path.unlink()
