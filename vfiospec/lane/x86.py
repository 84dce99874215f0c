"""The x86_64 lane: real Linux kernels under QEMU TCG with an emulated Intel
IOMMU (intremap=on, caching-mode=on), QEMU's `edu` device bound to vfio-pci,
the mtty sample mdev parent, and the static agent on the guest's second
serial port.

    python -m vfiospec.lane.x86 boot --kernel 6.12-custom   # stdin/stdout = the agent's protocol
    python -m vfiospec.lane.x86 build [--kernel NAME]...    # build/cache kernels
    python -m vfiospec.lane.x86 list

`boot` is an `exec:` target: `vfiospec replay conformance/traces --target
"exec:python -m vfiospec.lane.x86 boot --kernel 6.12-custom"`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .common import (CACHE, CONFIGS, Bridge, KernelBuild, build_agent, build_kernel, busybox_files,
                     download_deb, ensure_packages, log, make_initramfs)

QEMU = "qemu-system-x86_64"
QEMU_PACKAGES = ["qemu-system-x86", "busybox-static"]

# Kernels built from Debian's linux-source-6.12.
KERNELS: dict[str, KernelBuild] = {
    "6.12-custom": KernelBuild("6.12-custom", "x86", "arch/x86/boot/bzImage",
                               [CONFIGS / "x86_64-vfio.config"]),
    "6.12-compat": KernelBuild("6.12-compat", "x86", "arch/x86/boot/bzImage",
                               [CONFIGS / "x86_64-vfio.config", CONFIGS / "compat.config"]),
}


@dataclass
class StockKernel:
    """A stock Debian kernel package: vmlinuz plus the vfio modules insmod-ed by init."""
    name: str
    package: str                     # linux-image-<abi>-amd64
    series: str                      # "6.1"
    modules: list[str] = field(default_factory=lambda: [
        "vfio_iommu_type1", "vfio_pci", "vfio-pci", "mdev"])

    @property
    def dir(self) -> Path:
        return CACHE / "stock" / self.package

    def cached(self) -> bool:
        return (self.dir / "meta.json").exists() and (self.dir / "vmlinuz").exists()

    def fetch(self) -> Path:
        """apt-get download the package, extract it with dpkg-deb -x (cached)."""
        if self.cached():
            return self.dir / "vmlinuz"
        deb = download_deb(self.package, CACHE / "debs")
        tmp = Path(tempfile.mkdtemp(prefix=".x.", dir=CACHE))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        out = self.dir
        out.mkdir(parents=True, exist_ok=True)
        vmlinuz = sorted((tmp / "boot").glob("vmlinuz-*"))[0]
        release = vmlinuz.name[len("vmlinuz-"):]
        shutil.copy2(vmlinuz, out / "vmlinuz")
        cfg = tmp / "boot" / f"config-{release}"
        if cfg.exists():
            shutil.copy2(cfg, out / "config")
        mroot = tmp / "lib" / "modules" / release
        ensure_packages(["kmod"])
        subprocess.run(["depmod", "-b", str(tmp), release], check=True)
        mods = self.module_closure(mroot)
        mdir = out / "modules"
        mdir.mkdir(exist_ok=True)
        order = []
        for rel in mods:
            src = mroot / rel
            name = Path(rel).name
            data = src.read_bytes()
            if name.endswith(".xz"):
                data = subprocess.run(["xz", "-dc", str(src)], capture_output=True, check=True).stdout
                name = name[:-3]
            elif name.endswith(".zst"):
                data = subprocess.run(["zstd", "-dc", str(src)], capture_output=True, check=True).stdout
                name = name[:-4]
            (mdir / name).write_bytes(data)
            order.append(name)
        (out / "modules.order").write_text("\n".join(order) + "\n")
        (out / "meta.json").write_text(json.dumps({"name": self.name, "package": self.package,
                                                   "deb": deb.name, "release": release,
                                                   "modules": order}, indent=2) + "\n")
        shutil.rmtree(tmp)
        return out / "vmlinuz"

    def module_closure(self, mroot: Path) -> list[str]:
        """The wanted modules and their dependencies (modules.dep), dependencies first."""
        deps: dict[str, list[str]] = {}
        for line in (mroot / "modules.dep").read_text().splitlines():
            k, _, v = line.partition(":")
            deps[k] = v.split()

        def base(p: str) -> str:
            return re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", Path(p).name).replace("-", "_")

        by_name = {base(k): k for k in deps}
        order: list[str] = []

        def visit(k: str) -> None:
            if k in order:
                return
            for d in reversed(deps.get(k, [])):
                visit(d)
            order.append(k)

        for m in self.modules:
            k = by_name.get(m.replace("-", "_"))
            if k:
                visit(k)
        return order


STOCK: dict[str, StockKernel] = {
    "debian-6.1": StockKernel("debian-6.1", "linux-image-6.1.0-56-amd64", "6.1"),
}

ALL = list(KERNELS) + list(STOCK)


def kernel_features(config: Path) -> dict[str, bool]:
    """What a kernel can be asked, from its .config: iommufd, the device cdev, the mtty sample,
    THP (it caps iommufd's IOVA alignment), and who provides /dev/vfio/vfio."""
    from .common import fragment_settings
    c = fragment_settings([config]) if config.exists() else {}
    on = lambda k: c.get(k, "n") in ("y", "m")  # noqa: E731
    return {"iommufd": on("CONFIG_IOMMUFD"), "cdev": c.get("CONFIG_VFIO_DEVICE_CDEV") == "y",
            "mtty": on("CONFIG_SAMPLE_VFIO_MDEV_MTTY"), "group": c.get("CONFIG_VFIO_GROUP", "y") == "y",
            "thp": on("CONFIG_TRANSPARENT_HUGEPAGE"),
            "container": "iommufd" if c.get("CONFIG_IOMMUFD_VFIO_CONTAINER") == "y" else "vfio"}


def kernel_image(name: str) -> tuple[Path, dict]:
    """The cached image of kernel `name` and facts about it (raises if not cached)."""
    if name in KERNELS:
        kb = KERNELS[name]
        if not kb.cached():
            raise FileNotFoundError(f"kernel {name} is not built (key {kb.key()}); run `vfiospec lane kernel "
                                    f"--kernel {name}` or `python -m vfiospec.lane.x86 build --kernel {name}`")
        feats = kernel_features(kb.dir / "config")
        return kb.image_path, {**kb.meta(), "series": kb.series, "container": feats["container"],
                               "features": feats, "modules": None}
    if name in STOCK:
        sk = STOCK[name]
        if not sk.cached():
            raise FileNotFoundError(f"stock kernel {name} is not fetched; run `vfiospec lane kernel --kernel {name}`")
        meta = json.loads((sk.dir / "meta.json").read_text())
        feats = kernel_features(sk.dir / "config")
        return sk.dir / "vmlinuz", {**meta, "series": sk.series, "container": feats["container"],
                                    "features": feats, "modules": sk.dir / "modules"}
    raise KeyError(f"unknown kernel {name!r}; known: {', '.join(ALL)}")


INIT = r"""#!/bin/sh
# vfiospec lane guest init: bind the edu devices to vfio-pci, describe the machine, run the agent.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
say() { echo "vfiospec-init: $*" > /dev/console; }
if [ -f /lib/modules/order ]; then
  for m in $(cat /lib/modules/order); do insmod /lib/modules/$m || say "insmod $m failed"; done
fi
# the edu devices, in PCI address order: the first is g0/dev0, the second g1/dev1
N=/tmp/names.env
: > $N
GROUPS=
i=0
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ] || continue
  A=${d##*/}
  echo vfio-pci > $d/driver_override
  echo $A > /sys/bus/pci/drivers_probe
  DRV=$(readlink $d/driver); DRV=${DRV##*/}
  G=$(readlink $d/iommu_group); G=${G##*/}
  echo "g$i=$G" >> $N
  echo "dev$i=$A" >> $N
  for c in $d/vfio-dev/vfio*; do [ -e "$c" ] && echo "dev$i.cdev=${c##*/}" >> $N && CDEV=${c##*/}; done
  [ -n "$GROUPS" ] && GROUPS="$GROUPS, "
  GROUPS="$GROUPS\"g$i\": {\"number\": $G, \"devices\": {\"dev$i\": {\"driver\": \"$DRV\", \"reset\": false}}}"
  [ $i = 0 ] && EDU=$A && G0=$G
  i=$((i + 1))
done
[ -n "$EDU" ] || say "no edu device"
# the guest is disposable: every /dev/vfio node and mdev path may be used (error-path traces
# name absent groups, devices and UUIDs on purpose)
echo "allow=/dev/vfio/,/dev/iommu,/sys/bus/mdev/,/sys/class/mdev_bus/,/sys/devices/virtual/mtty/" >> $N
echo "allow_all_names=1" >> $N
P=/tmp/platform.json
TYPES=
if [ -d /sys/class/mdev_bus/mtty ]; then
  echo "mdev_parents=mtty" >> $N
  for t in /sys/class/mdev_bus/mtty/mdev_supported_types/*; do
    [ -n "$TYPES" ] && TYPES="$TYPES, "
    TYPES="$TYPES\"${t##*/}\": {\"available_instances\": $(cat $t/available_instances)}"
  done
  # smoke test: one mtty mdev created and removed
  U=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001
  if echo $U > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create; then
    MG=$(readlink /sys/bus/mdev/devices/$U/iommu_group); say "mtty mdev $U created in group ${MG##*/}"
    echo 1 > /sys/bus/mdev/devices/$U/remove
  else
    say "mtty mdev create failed"
  fi
fi
MP=
[ -n "$TYPES" ] && MP=", \"mdev_parents\": {\"mtty\": {\"types\": {$TYPES}}}"
THP=false
[ -d /sys/kernel/mm/transparent_hugepage ] && THP=true
printf '{"target": "linux %s x86_64 @KERNEL@ (vfiospec-agent)", "platform": {"kernel": "@SERIES@", "iommu": @IOMMU@, "vfio_container": "@CONTAINER@", "params": {"transparent_hugepage": %s, "dma_entry_limit": @DMA_ENTRY_LIMIT@}, "groups": {%s}%s}}\n' \
  "$(uname -r)" "$THP" "$GROUPS" "$MP" > $P
say "edu=$EDU driver=$DRV group=$G0 edus=$i cdev=$CDEV iommufd=$([ -e /dev/iommu ] && echo yes || echo no) container=$([ -e /dev/vfio/vfio ] && echo yes || echo no)"
/bin/vfiospec-agent --config $P --config $N --device @DEVICE@ --ready
say "agent exited ($?)"
poweroff -f
"""


def initramfs(name: str, facts: dict, device: str = "/dev/ttyS1") -> Path:
    """busybox + the static agent + init, cached by content."""
    ensure_packages(["busybox-static"])
    agent = build_agent("gcc")
    files, links = busybox_files()
    from . import X86_GUEST_IOMMU, X86_GUEST_PARAMS
    init = (INIT.replace("@KERNEL@", name).replace("@SERIES@", facts["series"])
            .replace("@CONTAINER@", facts["container"]).replace("@DEVICE@", device)
            .replace("@IOMMU@", json.dumps(X86_GUEST_IOMMU))
            .replace("@DMA_ENTRY_LIMIT@", str(X86_GUEST_PARAMS["dma_entry_limit"])))
    files = dict(files)
    files["/init"] = init.encode()
    files["/bin/vfiospec-agent"] = agent
    mods = facts.get("modules")
    if mods:
        order = (Path(mods).parent / "modules.order").read_text().split()
        for m in order:
            files[f"/lib/modules/{m}"] = Path(mods) / m
        files["/lib/modules/order"] = ("\n".join(order) + "\n").encode()
    h = hashlib.sha256()
    for k in sorted(files):
        v = files[k]
        h.update(k.encode() + b"\0" + (v.read_bytes() if isinstance(v, Path) else v))
    h.update(json.dumps(links, sort_keys=True).encode())
    out = CACHE / "initramfs" / f"{name}-{h.hexdigest()[:12]}.cpio.gz"
    if not out.exists():
        make_initramfs(out, files, links, dirs=["proc", "sys", "dev", "tmp", "etc", "root"])
    return out


def qemu_argv(image: Path, initrd: Path, console: Path, sock: Path, memory: str = "512M") -> list[str]:
    """QEMU TCG q35 with VT-d (intremap, caching-mode), split irqchip, two edu devices (g0/dev0
    and g1/dev1 when each is alone in its IOMMU group); ttyS0 console, ttyS1 agent."""
    return [QEMU, "-accel", "tcg", "-machine", "q35,kernel-irqchip=split", "-cpu", "max", "-smp", "1",
            "-m", memory, "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
            "-device", "intel-iommu,intremap=on,caching-mode=on", "-device", "edu", "-device", "edu",
            "-kernel", str(image), "-initrd", str(initrd),
            "-append", "console=ttyS0 intel_iommu=on iommu=pt panic=-1 loglevel=4 no_timer_check",
            "-chardev", f"file,id=con,path={console}", "-serial", "chardev:con",
            "-chardev", f"socket,id=agent,path={sock},server=on,wait=off", "-serial", "chardev:agent"]


def boot(name: str, workdir: Path | None = None) -> Bridge:
    """Boot kernel `name` and return the bridge once the guest agent is ready."""
    ensure_packages(QEMU_PACKAGES)
    image, facts = kernel_image(name)
    initrd = initramfs(name, facts)
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"vfiospec-{name}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    br = Bridge(qemu_argv(image, initrd, workdir / "console.log", workdir / "agent.sock"),
                workdir / "agent.sock", workdir / "console.log")
    br.start()
    log(f"{name}: guest agent ready in {br.boot_seconds:.1f} s ({br.ready_info.get('release')}); "
        f"console {workdir / 'console.log'}")
    return br


def ensure_kernel(name: str) -> None:
    if name in KERNELS:
        build_kernel(KERNELS[name])
    elif name in STOCK:
        STOCK[name].fetch()
    else:
        raise KeyError(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vfiospec.lane.x86")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot", help="boot a kernel; stdin/stdout become the guest agent's protocol stream")
    b.add_argument("--kernel", default="6.12-custom", choices=ALL)
    b.add_argument("--workdir", type=Path)
    bd = sub.add_parser("build", help="build or fetch kernels into the cache")
    bd.add_argument("--kernel", action="append", choices=ALL)
    sub.add_parser("list", help="kernels and whether they are cached")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        for n in ALL:
            try:
                img, facts = kernel_image(n)
                print(f"{n}\tcached\t{img}")
            except FileNotFoundError:
                print(f"{n}\tabsent")
        return 0
    if a.cmd == "build":
        for n in a.kernel or ALL:
            ensure_kernel(n)
        return 0
    br = boot(a.kernel, a.workdir)
    try:
        br.pump()
    finally:
        br.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
