"""The pseries lane's host-side pieces that need no guest: kernel fragments,
cache keys, QEMU argv, platform matching, console parsing, and the shipped
sPAPR kernel-run traces (they must load and normalise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vfiospec.lane import pseries
from vfiospec.lane.common import fragment_settings

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "conformance" / "traces" / "spapr-kernel"


def test_fragments_select_page_size_and_spapr_backend():
    four = fragment_settings(pseries.fragments("4k"))
    sixty = fragment_settings(pseries.fragments("64k"))
    for s in (four, sixty):
        for opt in ("CONFIG_PPC_PSERIES", "CONFIG_VFIO_IOMMU_SPAPR_TCE", "CONFIG_SPAPR_TCE_IOMMU",
                    "CONFIG_VFIO_PCI", "CONFIG_VFIO_CONTAINER", "CONFIG_PPC_OF_BOOT_TRAMPOLINE",
                    "CONFIG_HVC_CONSOLE", "CONFIG_EEH"):
            assert s[opt] == "y", opt
        assert s.get("CONFIG_MODULES", "n") == "n"
    assert four["CONFIG_PPC_4K_PAGES"] == "y" and four["CONFIG_PPC_64K_PAGES"] == "n"
    assert sixty["CONFIG_PPC_64K_PAGES"] == "y" and sixty["CONFIG_PPC_4K_PAGES"] == "n"
    assert sixty["CONFIG_FRAME_WARN"] == "2048"
    with pytest.raises(ValueError):
        pseries.fragments("16k")


def test_kernel_builds_differ_by_page_size():
    a, b = pseries.kernel("4k"), pseries.kernel("64k")
    assert a.arch == b.arch == "powerpc" and a.cross_compile == pseries.CROSS
    assert a.key() != b.key()
    assert a.key() == pseries.kernel("4k").key()


def test_qemu_argv_puts_an_edu_alone_on_each_of_two_phbs_and_uses_vof():
    argv = pseries.qemu_argv(Path("/k"), Path("/i"), Path("/s"), Path("/c"), Path("/log"))
    assert argv[0] == "qemu-system-ppc64"
    assert "-nodefaults" in argv
    m = argv[argv.index("-M") + 1]
    assert m.startswith("pseries,") and "x-vof=on" in m
    assert argv.count("-device") == 5 and "edu" in argv and "edu,bus=phb1.0" in argv
    assert "spapr-pci-host-bridge,index=1,id=phb1" in argv
    assert "spapr-vty,chardev=agent" in argv and "spapr-vty,chardev=ctl" in argv


def test_platform_mismatch():
    spapr = {"iommu": {"kind": "spapr"}}
    assert pseries.platform_mismatch(spapr, "4k", []) is None
    assert pseries.platform_mismatch(spapr, "64k", []) is None
    assert "sPAPR" in pseries.platform_mismatch({}, "4k")
    assert "sPAPR" in pseries.platform_mismatch({"iommu": {"kind": "vtd"}}, "4k")
    p64 = {"iommu": {"kind": "spapr"}, "process": {"page_size": 65536}}
    assert pseries.platform_mismatch(p64, "64k", []) is None
    assert "65536" in pseries.platform_mismatch(p64, "4k", [])


def test_platform_mismatch_counts_what_the_steps_use():
    """The reference's sPAPR default has EEH; the guest's edu is not EEH-capable."""
    spapr = {"iommu": {"kind": "spapr"}}
    eeh = [{"call": "ioctl", "fd": "container", "cmd": "VFIO_EEH_PE_OP", "arg": {"op": "VFIO_EEH_PE_ENABLE"}}]
    assert "iommu.eeh" in pseries.platform_mismatch(spapr, "4k", eeh)
    assert "iommu.eeh" in pseries.platform_mismatch(spapr, "4k")       # no steps: everything counts
    assert pseries.platform_mismatch({"iommu": {"kind": "spapr", "eeh": False}}, "4k", eeh) is None
    create = [{"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_CREATE"}]
    assert "iommu.ddw" in pseries.platform_mismatch({"iommu": {"kind": "spapr", "ddw": False}}, "4k", create)
    assert pseries.platform_mismatch({"iommu": {"kind": "spapr", "ddw": False}}, "4k", []) is None
    assert "dma32_window" in pseries.platform_mismatch(
        {"iommu": {"kind": "spapr", "dma32_window": [0, "0x10000000"]}}, "4k", [])


def test_platform_mismatch_machine():
    spapr = {"iommu": {"kind": "spapr"}}
    two = {**spapr, "groups": {"g0": {"devices": {"dev0": "vfio-pci"}}, "g1": {"devices": {"dev1": "vfio-pci"}}}}
    assert pseries.platform_mismatch(two, "4k", []) is None
    three = {**spapr, "groups": {"g1": {"devices": {"dev1": "vfio-pci", "dev2": "vfio-pci"}}}}
    assert "one PHB each" in pseries.platform_mismatch(three, "4k", [])
    assert "g2" in pseries.platform_mismatch({**spapr, "groups": {"g2": {"devices": {"dev2": "vfio-pci"}}}}, "4k", [])
    one = {**spapr, "groups": {"g0": {"devices": {"dev0": {"driver": "vfio-pci"}}}}}
    assert pseries.platform_mismatch(one, "4k", []) is None
    # the agent takes a trace's RLIMIT_MEMLOCK and drops capabilities for it
    assert pseries.platform_mismatch({**spapr, "process": {"rlimit_memlock": 4096, "caps": []}}, "4k", []) is None
    assert "caps" in pseries.platform_mismatch({**spapr, "process": {"caps": ["CAP_SYS_ADMIN"]}}, "4k", [])
    assert "platform" in pseries.platform_mismatch({"iommu": {"kind": "spapr", "levels": "x"}}, "4k", [])
    huge = [{"call": "mmap", "length": "0x400000", "as": "huge", "hugepage": True}]
    assert "PageHuge" in pseries.platform_mismatch(spapr, "4k", huge)


def test_guest_platform_matches_page_size():
    assert pseries.guest_platform("4k")["process"]["page_size"] == 4096
    assert pseries.guest_platform("64k")["process"]["page_size"] == 65536
    assert pseries.guest_platform("4k")["iommu"]["kind"] == "spapr"


def test_warnings_in_console():
    console = ("[    0.9] nvram: WARNING: nvram corruption detected: 0-length partition\n"
               "[    1.0] WARNING: CPU: 0 PID: 1 at arch/powerpc/kernel/boot.c:1 early+0x0/0x8\n"
               "vfiospec-guest: dev0=0000:00:00.0 g0=0 driver=vfio-pci kernel=6.12.117\n"
               "[    2.5] ------------[ cut here ]------------\n"
               "[    2.5] WARNING: CPU: 0 PID: 42 at arch/powerpc/mm/book3s64/mmu_context.c:276 "
               "destroy_context+0x5c/0x80\n"
               "[    2.6] ---[ end trace 0000000000000000 ]---\n")
    w = pseries.warnings_in(console)
    assert w == ["WARNING: CPU: 0 PID: 42 at arch/powerpc/mm/book3s64/mmu_context.c:276 "
                 "destroy_context+0x5c/0x80"]
    assert pseries.warnings_in("all fine\n") == []
    newer = ("vfiospec-guest: dev0=x\n[ 9.0] WARNING: arch/powerpc/mm/book3s64/mmu_context.c:274 "
             "at 0xc000000000039f38, CPU#0: vfiospec-agent/39\n")
    assert pseries.warnings_in(newer) == ["WARNING: arch/powerpc/mm/book3s64/mmu_context.c:274 "
                                          "at 0xc000000000039f38, CPU#0: vfiospec-agent/39"]
    assert pseries.warnings_in("[ 0.1] nvram: WARNING: nvram corruption detected\n") == []


def test_kernel_run_traces_load_and_normalise():
    from vfiospec.conformance import steps
    from vfiospec.conformance.replay import load_all
    traces = load_all([TRACES])
    assert len(traces) >= 10
    for t in traces:
        assert t.source == "kernel-run", t.name
        assert t.platform["iommu"]["kind"] == "spapr"
        saved = {}
        for s in t.steps:
            for _, name in s.get("save", {}).items():
                saved[name] = 0x800000000000000
            steps.normalize(s, saved)


def test_page_size_dependent_traces_name_their_page_size():
    """A trace whose result depends on the kernel's page size says so in
    process.page_size, so the lane runs it only on the matching kernel."""
    for p in TRACES.glob("*.json"):
        doc = json.loads(p.read_text())
        if "-4k" in doc["name"] or "-64k" in doc["name"]:
            want = 4096 if doc["name"].endswith("-4k") else 65536
            assert doc["platform"]["process"]["page_size"] == want, doc["name"]


def test_write_reports_side_by_side(tmp_path):
    def doc(ps, errno):
        step = {"index": 0, "call": "ioctl(container, VFIO_IOMMU_MAP_DMA, {})", "verdict": "PASS",
                "expected": "ok", "observed": {"ret": -1 if errno else 0, "errno": errno}}
        return {"pagesize": ps, "source": "linux-source-6.12 x", "kernel": str(tmp_path / "none"),
                "boot_seconds": [2.0, 3.0], "seconds": 9.0,
                "traces": [{"name": "t1", "verdict": "PASS", "seconds": 4.5, "steps": [step],
                            "kernel_warnings": ["WARNING: CPU: 0 PID: 1 at a.c:1 f"] if errno else []}]}
    raw, md = tmp_path / "r.json", tmp_path / "r.md"
    pseries.write_reports([doc("4k", "EINVAL"), doc("64k", None)], raw, md, "T", notes="## Notes\nx")
    text = md.read_text()
    assert "| t1 | PASS (4.5 s) | PASS (4.5 s) | a.c:1 |" in text
    assert "| EINVAL | ret 0 |" in text and "## Notes" in text
    assert set(json.loads(raw.read_text())["runs"]) == {"4k", "64k"}


def test_poisons_phb_only_after_the_platform_refused_a_window():
    create = {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_CREATE"}
    for errno in ("ENODEV", "EPERM", "ENOMEM", "EBUSY"):
        assert pseries.poisons_phb(create, {"ret": -1, "errno": errno})
    for errno in ("EINVAL", "ENOSPC", "EFAULT", "ENOTTY", "ENXIO"):      # VFIO's own checks
        assert not pseries.poisons_phb(create, {"ret": -1, "errno": errno})
    assert not pseries.poisons_phb(create, {"ret": 0, "errno": None})
    assert pseries.poisons_phb(create, {"error": "guest agent: timeout"})
    remove = {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_REMOVE"}
    assert not pseries.poisons_phb(remove, {"ret": -1, "errno": "ENODEV"})


class _FakeGuest:
    """A booted guest as Lane sees it: answers requests, restarts its agent, powers off."""
    booted: list = []

    def __init__(self, answers):
        self.answers = answers
        self.number = len(_FakeGuest.booted) + 1
        self.restarts = self.finished = 0
        self.bridge = type("Bridge", (), {"proc": None})()
        _FakeGuest.booted.append(self)

    def request(self, msg, timeout=120):
        if msg.get("type") == "hello":
            return {"type": "hello", "target": "agent"}
        if msg.get("type") in ("begin", "end"):
            return {"ok": True}
        return self.answers(msg["step"])

    def restart_agent(self):
        self.restarts += 1
        return [f"warning of agent {self.restarts} on boot {self.number}"]

    def finish(self):
        self.finished += 1
        return ["warning at poweroff"]

    def console(self):
        return ""

    def warnings_since_mark(self):
        return ["Oops: Kernel access of bad area, sig: 11 [#1]"]

    def stop(self):
        pass


def _lane(monkeypatch, answers, fresh=False):
    _FakeGuest.booted = []
    monkeypatch.setattr(pseries.common, "ensure_packages", lambda pkgs: None)
    lane = pseries.Lane("4k", fresh=fresh, preboot=False)
    monkeypatch.setattr(lane, "_start_guest", lambda: _FakeGuest(answers))
    return lane


def _trace(lane, steps):
    lane.begin({"type": "begin", "trace": "t", "platform": {"iommu": {"kind": "spapr", "eeh": False}}})
    for s in steps:
        lane.step({"type": "step", "step": s})
    return lane.end({"type": "end"})


def test_lane_reuses_its_guest_with_a_new_agent_per_trace(monkeypatch):
    lane = _lane(monkeypatch, lambda s: {"ret": 0, "errno": None})
    info = {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_GET_INFO"}
    a, b = _trace(lane, [info]), _trace(lane, [info])
    assert len(_FakeGuest.booted) == 1 and _FakeGuest.booted[0].restarts == 2
    assert a["guest"] == {"boot": 1, "new": True} and b["guest"] == {"boot": 1, "new": False}
    assert b["kernel_warnings"] == ["warning of agent 2 on boot 1"]


def test_lane_reboots_after_a_trace_that_poisoned_the_phb(monkeypatch):
    refuse = lambda s: {"ret": -1, "errno": "ENODEV"} if s.get("cmd") == "VFIO_IOMMU_SPAPR_TCE_CREATE" \
        else {"ret": 0, "errno": None}  # noqa: E731
    lane = _lane(monkeypatch, refuse)
    create = {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_SPAPR_TCE_CREATE"}
    a = _trace(lane, [create])
    assert a["guest"] == {"boot": 1, "new": True, "rebooted": "phb"}
    assert a["kernel_warnings"] == ["warning at poweroff"] and _FakeGuest.booted[0].finished == 1
    b = _trace(lane, [])
    assert b["guest"] == {"boot": 2, "new": True} and lane.reboots["phb"] == 1


def test_lane_fresh_boots_a_guest_per_trace(monkeypatch):
    lane = _lane(monkeypatch, lambda s: {"ret": 0, "errno": None}, fresh=True)
    _trace(lane, [])
    _trace(lane, [])
    assert [g.finished for g in _FakeGuest.booted] == [1, 1] and lane.reboots["fresh"] == 2


def test_lane_reports_a_dead_agent_and_boots_again(monkeypatch):
    def dies(s):
        raise EOFError("agent channel closed")
    lane = _lane(monkeypatch, dies)
    lane.begin({"type": "begin", "trace": "t", "platform": {"iommu": {"kind": "spapr", "eeh": False}}})
    ans = lane.step({"type": "step", "step": {"call": "open", "path": "/dev/vfio/vfio"}})
    assert "agent channel closed" in ans["error"]
    assert "earlier step" in lane.step({"type": "step", "step": {"call": "close", "fd": "c"}})["unsupported"]
    end = lane.end({"type": "end"})
    assert end["guest"] == {"crashed": True} and end["kernel_warnings"][0].startswith("Oops")
    assert _trace(lane, [])["guest"]["boot"] == 2 and lane.reboots["crash"] == 1


def test_warning_place_names_the_file_or_the_oops():
    assert pseries.warning_place("WARNING: CPU: 0 PID: 53 at drivers/vfio/vfio_iommu_spapr_tce.c:371 0xc0000000002") \
        == "drivers/vfio/vfio_iommu_spapr_tce.c:371"
    assert pseries.warning_place("WARNING: mm/vmalloc.c:4037 at 0xc000000000153f10, CPU#0: vfiospec-agent/49") \
        == "mm/vmalloc.c:4037"
    assert pseries.warning_place("BUG: Unable to handle kernel data access on read at 0xc008000001040000") \
        == "BUG: Unable to handle kernel data access on read"


def test_a_failed_boot_is_tried_once_more(monkeypatch):
    starts = []

    class Flaky:
        def __init__(self, *a):
            self.boot_seconds = 1.0

        def start(self):
            starts.append(self)
            if len(starts) == 1:
                raise RuntimeError("agent channel closed during boot:\nqemu-system-ppc64: OS terminated")
            return self

        def stop(self):
            pass
    monkeypatch.setattr(pseries.common, "ensure_packages", lambda pkgs: None)
    monkeypatch.setattr(pseries, "Guest", Flaky)
    lane = pseries.Lane("4k", preboot=False)
    g = lane._start_guest()
    assert len(starts) == 2 and g is starts[1] and g.number == 2 and lane.boots == [1.0]
    starts.clear()
    monkeypatch.setattr(Flaky, "start", lambda self: (_ for _ in ()).throw(RuntimeError("no boot")))
    with pytest.raises(RuntimeError, match="no boot"):
        lane._start_guest()


def test_archive_kernel_is_a_kernel_build_from_another_source(monkeypatch):
    """The sid kernel goes through common.build_kernel like the others: only its
    source (version, tree, label) differs, and its key is built from that version."""
    a = pseries.archive_kernel("4k", "7.2", "7.2.13-1")
    assert isinstance(a, pseries.KernelBuild) and a.build_deps == pseries.BUILD_DEPS
    assert a.source_version() == "7.2.13-1" and a.source_label() == "linux-source-7.2 7.2.13-1 (sid)"
    assert a.key() != pseries.archive_kernel("4k", "7.2", "7.2.14-1").key()
    seen = []
    monkeypatch.setattr(pseries, "archive_source_tree", lambda *a: seen.append(a) or Path("/src"))
    assert a.source() == Path("/src") and seen == [("7.2", "7.2.13-1", "sid")]
