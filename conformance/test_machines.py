"""The shipped state machines as pytest tests, for third parties:

    pytest --pyargs vfiospec.conformance.test_machines --vfiospec-target "exec:./my-target"

Each mode runs a fixed number of examples with a fixed seed (deterministic); use
`vfiospec run --budget S` for open-ended exploration."""

import pytest

from vfiospec.conformance.stateful import MODES, run_mode


@pytest.mark.parametrize("mode", list(MODES))
def test_mode(mode, request, tmp_path):
    target = request.config.getoption("--vfiospec-target", default="reference")
    r = run_mode(mode, target, budget=0, seed=0, max_examples=8, report_dir=tmp_path)
    assert r["verdict"] == "PASS", "\n".join(f"{f['message']}\n  replay: {f['replay']}" for f in r["failures"]) \
        or r.get("error")
