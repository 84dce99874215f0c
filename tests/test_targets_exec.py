"""exec: targets: the protocol end to end, and a broken target gives ERROR while the run goes on."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vfiospec.conformance.runner import run_trace
from vfiospec.conformance.targets import get_target
from vfiospec.conformance.targets.exec import ExecTarget
from vfiospec.conformance.trace import parse_trace

HERE = Path(__file__).parent
TRACE = {"vfiospec": 1, "name": "api", "steps": [
    {"call": "open", "path": "/dev/vfio/vfio", "as": "c"},
    {"call": "ioctl", "fd": "c", "cmd": "VFIO_GET_API_VERSION", "expect": {"ret": 0}},
    {"call": "ioctl", "fd": "c", "cmd": "VFIO_CHECK_EXTENSION", "arg": "VFIO_TYPE1v2_IOMMU"},
]}


def bad(mode, timeout=2.0):
    return ExecTarget(f"{sys.executable} {HERE / 'fixtures' / 'bad_target.py'} {mode}", step_timeout=timeout)


@pytest.mark.parametrize("mode", ["hang", "crash", "garbage", "close-pipe"])
def test_broken_target_is_error_and_run_goes_on(mode):
    t = bad(mode)
    tr = parse_trace(TRACE, "api.json")
    r1 = run_trace(tr, t)
    assert r1.verdict == "ERROR"
    assert r1.steps[1].verdict == "ERROR"
    assert r1.steps[2].verdict == "ERROR" and "not run" in r1.steps[2].observed.error
    r2 = run_trace(tr, t)      # a fresh instance
    assert r2.steps[0].verdict == "PASS" and t.restarts >= 1
    t.shutdown()


def test_early_exit_is_error():
    t = bad("early-exit")
    from vfiospec.conformance.targets.base import TargetError
    with pytest.raises(TargetError, match="exited"):
        t.describe()


def test_call_outside_handshake_is_unsupported():
    t = bad("ok")
    tr = parse_trace(TRACE, "api.json")
    r = run_trace(tr, t)
    assert r.steps[2].verdict == "UNSUPPORTED" and r.verdict == "UNSUPPORTED"
    t.shutdown()


def test_example_server_gives_reference_verdicts(tmp_path):
    """The Python example target serves the reference: same verdicts, step for step."""
    from vfiospec.conformance.run import shipped_traces_dir
    from vfiospec.conformance.replay import load_all
    traces = load_all([shipped_traces_dir()])[:40]
    ref = get_target("reference")
    ex = get_target(f"exec:{sys.executable} -m vfiospec.conformance.examples.reference_server")
    for t in traces:
        a, b = run_trace(t, ref), run_trace(t, ex)
        assert [s.verdict for s in a.steps] == [s.verdict for s in b.steps], t.name
        assert [s.observed.errno for s in a.steps] == [s.observed.errno for s in b.steps], t.name
    ex.shutdown()


def test_ctrl_c_writes_reports(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "vfiospec", "run", "--target", "reference", "--budget", "600",
                          "--report-dir", str(tmp_path / "rep")], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "rep" / "report.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=60)
    assert p.returncode == 3
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["statement"]["interrupted"] is True
    assert (tmp_path / "rep" / "report.html").exists() and (tmp_path / "rep" / "junit.xml").exists()
