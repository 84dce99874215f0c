"""The lane's host-side pieces that need no QEMU: config fragments, cache keys,
the initramfs writer, stock-kernel module ordering."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vfiospec.lane import common, trace_fits
from vfiospec.lane.common import KernelBuild, config_mismatches, fragment_settings, make_initramfs


def test_fragments_carry_the_issue_options():
    s = fragment_settings([common.CONFIGS / "x86_64-vfio.config"])
    for k in ("CONFIG_VFIO", "CONFIG_VFIO_CONTAINER", "CONFIG_VFIO_IOMMU_TYPE1", "CONFIG_VFIO_PCI",
              "CONFIG_VFIO_DEVICE_CDEV", "CONFIG_IOMMUFD", "CONFIG_INTEL_IOMMU", "CONFIG_IRQ_REMAP",
              "CONFIG_SAMPLE_VFIO_MDEV_MTTY", "CONFIG_IOMMUFD_TEST", "CONFIG_VFIO_NOIOMMU"):
        assert s.get(k) == "y", k
    c = fragment_settings([common.CONFIGS / "x86_64-vfio.config", common.CONFIGS / "compat.config"])
    assert c["CONFIG_VFIO_CONTAINER"] == "n" and c["CONFIG_IOMMUFD_VFIO_CONTAINER"] == "y"


def test_config_mismatches_reports_dropped_options(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n")
    assert config_mismatches(cfg, {"CONFIG_A": "y", "CONFIG_B": "n"}) == []
    bad = config_mismatches(cfg, {"CONFIG_B": "y", "CONFIG_C": "y", "CONFIG_D": "n"})
    assert bad == ["CONFIG_B: wanted y, got n", "CONFIG_C: wanted y, got m"]


def test_cache_key_follows_the_fragments(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "deb_version", lambda pkg: "6.12.117-1~deb12u1")
    f1 = tmp_path / "a.config"
    f1.write_text("CONFIG_A=y\n")
    k1 = KernelBuild("k", "x86", "arch/x86/boot/bzImage", [f1]).key()
    assert k1 == KernelBuild("k2", "x86", "arch/x86/boot/bzImage", [f1]).key()  # the name is not in the key
    f1.write_text("CONFIG_A=y\nCONFIG_B=y\n")
    assert KernelBuild("k", "x86", "arch/x86/boot/bzImage", [f1]).key() != k1
    monkeypatch.setattr(common, "deb_version", lambda pkg: "6.12.118-1")
    f1.write_text("CONFIG_A=y\n")
    assert KernelBuild("k", "x86", "arch/x86/boot/bzImage", [f1]).key() != k1


def _parse_newc(data: bytes) -> dict:
    out, i = {}, 0
    while True:
        hdr = data[i:i + 110]
        assert hdr[:6] == b"070701"
        f = [int(hdr[6 + 8 * k:14 + 8 * k], 16) for k in range(13)]
        mode, fsize, nsize = f[1], f[6], f[11]
        name = data[i + 110:i + 110 + nsize - 1].decode()
        i = (i + 110 + nsize + 3) & ~3
        body = data[i:i + fsize]
        i = (i + fsize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_initramfs_is_a_valid_newc_archive(tmp_path):
    src = tmp_path / "tool"
    src.write_bytes(b"\x7fELF rest")
    out = make_initramfs(tmp_path / "i.cpio.gz", {"/init": b"#!/bin/sh\necho hi\n", "/bin/tool": src,
                                                  "/etc/x.json": b"{}"},
                         symlinks={"/bin/sh": "busybox"}, dirs=["proc", "dev"])
    ents = _parse_newc(gzip.decompress(out.read_bytes()))
    assert ents["init"] == (0o100755, b"#!/bin/sh\necho hi\n")
    assert ents["bin/tool"][0] == 0o100755 and ents["etc/x.json"][0] == 0o100644
    assert ents["bin/sh"] == (0o120777, b"busybox")
    assert ents["proc"][0] == 0o040755 and ents["bin"][0] == 0o040755
    if shutil.which("cpio"):
        r = subprocess.run(["cpio", "-it"], input=gzip.decompress(out.read_bytes()), capture_output=True)
        assert r.returncode == 0 and b"bin/tool" in r.stdout


def test_stock_module_closure_puts_dependencies_first(tmp_path):
    from vfiospec.lane.x86 import StockKernel
    (tmp_path / "modules.dep").write_text(
        "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko\n"
        "kernel/drivers/vfio/pci/vfio-pci-core.ko: kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko\n"
        "kernel/drivers/vfio/vfio.ko:\n"
        "kernel/virt/lib/irqbypass.ko:\n"
        "kernel/drivers/vfio/vfio_iommu_type1.ko: kernel/drivers/vfio/vfio.ko\n")
    order = StockKernel("s", "p", "6.1", modules=["vfio_iommu_type1", "vfio-pci"]).module_closure(tmp_path)
    names = [Path(p).name for p in order]
    assert names.index("vfio.ko") < names.index("vfio_iommu_type1.ko")
    assert names.index("irqbypass.ko") < names.index("vfio-pci-core.ko") < names.index("vfio-pci.ko")
    assert len(names) == len(set(names)) == 5


def test_spapr_traces_do_not_fit_the_x86_lane():
    class T:
        platform = {"iommu": {"kind": "spapr"}}
    assert trace_fits(T())[0] is False
    T.platform = {}
    assert trace_fits(T())[0] is True


FEATS = {"container": "vfio", "iommufd": True, "cdev": True, "mtty": True, "series": "6.12"}


class _T:
    def __init__(self, platform, steps=()):
        self.platform, self.steps = platform, list(steps)


def test_trace_fits_compares_the_platform_with_the_guest():
    assert trace_fits(_T({}), FEATS) == (True, "")
    # QEMU's VT-d, written the way traces write it
    assert trace_fits(_T({"iommu": {"pgsizes": ["0x1000", "0x200000", "0x40000000"],
                                    "aperture": ["0x0", "0x7fffffffff"]}}), FEATS)[0]
    assert not trace_fits(_T({"iommu": {"pgsizes": [4096, 65536]}}), FEATS)[0]
    assert not trace_fits(_T({"iommu": {"intremap": False}}), FEATS)[0]
    assert not trace_fits(_T({"params": {"dma_entry_limit": 3}}), FEATS)[0]
    assert not trace_fits(_T({"vfio_container": None}), FEATS)[0]
    assert not trace_fits(_T({"vfio_container": "iommufd"}), FEATS)[0]
    assert trace_fits(_T({"vfio_container": "iommufd"}), {**FEATS, "container": "iommufd"})[0]
    assert not trace_fits(_T({"kernel": "6.18"}), FEATS)[0]
    assert not trace_fits(_T({"groups": {"g1": {"devices": {"dev1": "vfio-pci"}}}}), FEATS)[0]
    assert trace_fits(_T({"process": {"caps": [], "rlimit_memlock": 4096}}), FEATS)[0]
    assert not trace_fits(_T({"process": {"caps": ["CAP_SYS_ADMIN"]}}), FEATS)[0]
    iommufd = [{"call": "open", "path": "/dev/iommu", "as": "i"}]
    assert trace_fits(_T({}, iommufd), FEATS)[0]
    assert not trace_fits(_T({}, iommufd), {**FEATS, "iommufd": False})[0]
    mt = {"mdev_parents": {"mtty": {"types": {"mtty-1": {"available_instances": 3}}}}}
    guest = {"mdev_parents": {"mtty": {"types": {"mtty-1": {"available_instances": 24}}}}}
    assert not trace_fits(_T(mt), FEATS, guest=guest)[0]
    mt["mdev_parents"]["mtty"]["types"]["mtty-1"]["available_instances"] = 24
    assert trace_fits(_T(mt), FEATS, guest=guest)[0]
    assert not trace_fits(_T(mt), {**FEATS, "mtty": False}, guest=guest)[0]


def test_stateful_modes_follow_the_kernels_features():
    from vfiospec.lane import stateful_modes
    from vfiospec.conformance.stateful import MODES
    assert stateful_modes(FEATS) == ["type1", "type1v2", "iommufd", "mdev"]
    assert stateful_modes({"container": "iommufd", "iommufd": True, "cdev": True, "mtty": True}) == \
        ["iommufd-compat-type1", "iommufd-compat-type1v2", "iommufd", "mdev"]
    assert stateful_modes({"container": "vfio", "iommufd": False, "cdev": False, "mtty": False}) == ["type1", "type1v2"]
    assert set(stateful_modes(FEATS)) <= set(MODES)


def test_trace_fits_knows_whether_the_kernel_has_thp():
    thp = _T({"params": {"transparent_hugepage": True}})
    no_thp = _T({"params": {"transparent_hugepage": False}})
    assert trace_fits(thp, {**FEATS, "thp": True})[0] and not trace_fits(no_thp, {**FEATS, "thp": True})[0]
    assert trace_fits(no_thp, {**FEATS, "thp": False})[0] and not trace_fits(thp, {**FEATS, "thp": False})[0]


def test_the_x86_guest_says_what_it_is():
    """/init's hello platform carries QEMU's VT-d, the params (THP as the kernel has it)
    and the edu device without reset, so stateful runs take them (stateful.mode_on)."""
    from vfiospec.lane import X86_GUEST_IOMMU, x86
    from vfiospec.reference.platform import parse_platform
    assert "@IOMMU@" in x86.INIT and "transparent_hugepage" in x86.INIT
    line = [ln for ln in x86.INIT.splitlines() if ln.startswith("printf '{\"target\"")][0]
    fmt = line[len("printf '"):line.rindex("\\n'")]
    doc = json.loads((fmt.replace("@IOMMU@", json.dumps(X86_GUEST_IOMMU)).replace("@DMA_ENTRY_LIMIT@", "65535")
                      .replace("@SERIES@", "6.12").replace("@CONTAINER@", "vfio").replace("@KERNEL@", "k"))
                     % ("6.12.117", "false", '"g0": {"number": 3, "devices": {"dev0": {"driver": "vfio-pci", '
                        '"reset": false}}}, "g1": {"number": 4, "devices": {"dev1": {"driver": "vfio-pci", '
                        '"reset": false}}}', ""))
    p = parse_platform(doc["platform"])
    assert p.iommu.coherent is False and p.transparent_hugepage is False and p.devices["dev0"].reset is False
    assert p.groups["g1"].number == 4 and p.devices["dev1"].reset is False


def test_trace_fits_takes_the_guests_groups():
    two = _T({"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}, "g1": {"devices": {"dev1": "vfio-pci"}}}})
    guest = {"groups": {"g0": {"number": 3, "devices": {"dev0": {"driver": "vfio-pci", "reset": False}}},
                        "g1": {"number": 4, "devices": {"dev1": {"driver": "vfio-pci", "reset": False}}}}}
    assert trace_fits(two, FEATS, guest=guest)[0]
    ok, why = trace_fits(two, FEATS)
    assert not ok and "g0 = dev0" in why
    three = _T({"groups": {"g1": {"devices": {"dev1": "vfio-pci", "dev2": "vfio-pci"}}}})
    assert not trace_fits(three, FEATS, guest=guest)[0]
