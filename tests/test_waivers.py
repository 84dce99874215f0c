"""Waivers: a matching divergence is XFAIL, one that differs from its waiver is FAIL,
a waiver that matched nothing is stale (and fails `vfiospec run --strict`)."""

import json

from vfiospec.conformance.run import judge_with_waivers, main as run_main
from vfiospec.conformance.runner import run_trace
from vfiospec.conformance.targets import get_target
from vfiospec.conformance.trace import parse_trace
from vfiospec.conformance.waivers import Waiver, load_waivers

TRACE = {"vfiospec": 1, "name": "w", "platform": {"kernel": "6.12"}, "steps": [
    {"call": "open", "path": "/dev/vfio/vfio", "as": "c"},
    {"call": "ioctl", "fd": "c", "cmd": "VFIO_SET_IOMMU", "arg": "VFIO_TYPE1v2_IOMMU", "expect": "ok"}]}


def judged(waiver):
    t = parse_trace(TRACE, "w.json")
    tr = run_trace(t, get_target("reference"))          # SET_IOMMU without a group: EINVAL, a FAIL
    return judge_with_waivers(tr, [waiver], {"target": "reference", "kernel": (6, 12), "mode": "traces"}), waiver


def test_matching_waiver_is_xfail():
    d, w = judged(Waiver("W1", "r", call="VFIO_SET_IOMMU", kernel="<6.18", expected="ok", observed="EINVAL"))
    assert d["verdict"] == "XFAIL" and d["steps"][1]["waiver"] == "W1" and w.hits == 1


def test_waiver_that_differs_is_fail():
    d, w = judged(Waiver("W2", "r", call="VFIO_SET_IOMMU", expected="ok", observed="ENODEV"))
    assert d["verdict"] == "FAIL" and "differs from waiver W2" in d["steps"][1]["reason"] and w.mismatches == 1


def test_waiver_for_another_kernel_does_not_apply():
    d, w = judged(Waiver("W3", "r", call="VFIO_SET_IOMMU", kernel=">=6.18", observed="EINVAL"))
    assert d["verdict"] == "FAIL" and w.hits == 0 and w.mismatches == 0


def test_stale_waiver_fails_strict_run(tmp_path):
    wf = tmp_path / "w.toml"
    wf.write_text('[[waiver]]\nid = "NEVER"\nreason = "matches nothing"\ncall = "IOMMU_IOAS_COPY"\n')
    tf = tmp_path / "t.json"
    tf.write_text(json.dumps({"vfiospec": 1, "name": "ok", "steps": [
        {"call": "open", "path": "/dev/vfio/vfio", "as": "c"}]}))
    args = ["--traces", str(tf), "--no-stateful", "--waivers", str(wf), "--report-dir", str(tmp_path / "r")]
    assert run_main(args) == 0
    assert run_main(args + ["--strict"]) == 1
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["waivers"][0]["stale"] is True


def test_shipped_waivers_load_and_name_the_upstream_fix():
    from vfiospec.lane import load_lane_waivers
    ws = load_lane_waivers()
    assert any(w.id.startswith("LINUX-6.12-TYPE1-MDEV-WRAP") for w in ws)
    for w in ws:
        assert w.reason and w.kernel, w.id


def test_bad_waiver_file_is_a_precise_error(tmp_path):
    import pytest
    from vfiospec.conformance.waivers import WaiverError
    wf = tmp_path / "w.toml"
    wf.write_text('[[waiver]]\nid = "X"\nreason = "r"\nobserved = "EWHAT"\n')
    with pytest.raises(WaiverError, match=r"waiver\[0\] \(X\): observed"):
        load_waivers(wf)


def test_a_crash_is_waived_by_observed_crash_and_the_steps_left_undone_follow_it():
    """A target that dies answering a step (a kernel oops) gives an ERROR step; a
    waiver with observed = "crash" makes it XFAIL, and the trace, whose later steps
    the dead target could not do (UNSUPPORTED), is XFAIL."""
    from vfiospec.conformance.judge import Observed
    from vfiospec.conformance.targets.base import Session, Target

    class Dies(Target):
        name = "dies"

        def begin(self, trace):
            ref = get_target("reference").begin(trace)
            n = [0]

            class S(Session):
                def perform(self, step):
                    n[0] += 1
                    if n[0] == 2:
                        return Observed(ret=None, error="guest agent: agent channel closed")
                    if n[0] > 2:
                        return Observed(ret=None, unsupported="the guest died at an earlier step")
                    return ref.perform(step)
            return S()
    t = parse_trace({**TRACE, "steps": TRACE["steps"] + [{"call": "close", "fd": "c"}]}, "w.json")
    tr = run_trace(t, Dies())
    ctx = {"target": "dies", "kernel": (6, 12), "mode": "traces"}
    w = Waiver("OOPS", "r", call="VFIO_SET_IOMMU", expected="ok", observed="crash")
    d = judge_with_waivers(tr, [w], ctx)
    assert [s["verdict"] for s in d["steps"]] == ["PASS", "XFAIL", "UNSUPPORTED"] and d["verdict"] == "XFAIL"
    assert w.hits == 1
    # a waiver expecting an errno does not cover a crash
    d = judge_with_waivers(run_trace(t, Dies()), [Waiver("E", "r", call="VFIO_SET_IOMMU", observed="EINVAL")], ctx)
    assert d["steps"][1]["verdict"] == "ERROR" and d["verdict"] == "ERROR"
