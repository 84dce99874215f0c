"""Stateful exploration against a machine that *is* one platform (a real kernel):
the reference takes that machine's facts (stateful.mode_on), the target object is
reused and kept, and a step the target could not answer is a divergence."""

from __future__ import annotations

from vfiospec.conformance import stateful
from vfiospec.conformance.judge import Observed
from vfiospec.conformance.targets.reference import ReferenceSession, ReferenceTarget
from vfiospec.reference.platform import parse_platform


class Machine(ReferenceTarget):
    """The reference standing in for one fixed machine: it ignores the trace's platform."""

    name = "machine"

    def __init__(self, platform: dict):
        super().__init__()
        self.platform = platform
        self.sessions = 0
        self.shut = False

    def begin(self, trace):
        self.sessions += 1
        return ReferenceSession(parse_platform(self.platform))

    def shutdown(self):
        self.shut = True


GUEST = {"kernel": "6.1", "iommu": {"kind": "vtd", "coherent": False}, "vfio_container": "vfio",
         "params": {"transparent_hugepage": False},
         "groups": {"g0": {"number": 7, "devices": {"dev0": {"driver": "vfio-pci", "reset": False}}}}}


def test_mode_on_takes_the_machines_facts():
    m = stateful.mode_on(stateful.MODES["type1"], GUEST)
    assert m.platform["kernel"] == "6.1"
    assert m.platform["params"] == {"transparent_hugepage": False}
    assert m.platform["groups"]["g0"]["number"] == 7
    assert m.platform["iommu"] == {"kind": "vtd", "coherent": False}
    assert (m.name, m.family, m.iommu) == ("type1", "type1", "VFIO_TYPE1_IOMMU")
    assert stateful.MODES["type1"].platform.get("kernel") is None      # the mode itself is unchanged


def test_mode_on_keeps_the_modes_iommu_properties_and_adds_the_machines():
    spapr = stateful.MODES["spapr-v2"]
    m = stateful.mode_on(spapr, {"iommu": {"kind": "spapr", "eeh": False}, "process": {"page_size": 65536}})
    assert m.platform["iommu"]["eeh"] is False and m.platform["iommu"]["max_windows"] == 2
    assert m.platform["process"] == {"page_size": 65536}
    # an IOMMU of another kind is not merged into the mode's
    assert stateful.mode_on(spapr, {"iommu": {"kind": "vtd"}}).platform["iommu"]["kind"] == "spapr"
    assert stateful.mode_on(spapr, None) is spapr


def test_run_mode_explores_on_the_machines_platform_and_keeps_the_target(tmp_path):
    t = Machine(GUEST)
    r = stateful.run_mode("type1v2", "machine", budget=0, seed=3, max_examples=4, target_obj=t,
                          report_dir=tmp_path)
    assert r["verdict"] == "PASS", r
    assert r["platform"]["kernel"] == "6.1" and r["platform"]["params"]["transparent_hugepage"] is False
    assert t.sessions >= 4 and not t.shut


def test_run_mode_on_the_default_platform_diverges_from_another_machine(tmp_path):
    """Without mode_on the reference would be the default machine, whose VT-d enforces
    cache coherency; on this machine's (QEMU's) VFIO_CHECK_EXTENSION(VFIO_DMA_CC_IOMMU)
    answers 0, not 1, once the container has a domain."""
    class Old(Machine):
        def __init__(self, platform):
            super().__init__(platform)
            self.platform = None        # hides its platform: run_mode cannot take its facts

        def begin(self, trace):
            self.sessions += 1
            return ReferenceSession(parse_platform(GUEST))
    r = stateful.run_mode("type1", "old", budget=0, seed=0, max_examples=30, target_obj=Old(GUEST),
                          report_dir=tmp_path)
    assert r["verdict"] == "FAIL" and "VFIO_DMA_CC_IOMMU" in r["failures"][0]["message"]


def test_a_step_the_target_could_not_answer_is_a_divergence(tmp_path):
    class Broken(Machine):
        def begin(self, trace):
            s = super().begin(trace)
            perform = s.perform
            n = [0]

            def broken(step):
                n[0] += 1
                return Observed(ret=None, error="guest agent: agent channel closed") if n[0] == 6 else perform(step)
            s.perform = broken
            return s
    r = stateful.run_mode("type1", "broken", budget=0, seed=0, max_examples=3, target_obj=Broken(GUEST),
                          report_dir=tmp_path)
    assert r["verdict"] == "FAIL"
    assert "target error: guest agent: agent channel closed" in r["failures"][0]["message"]
