"""TLC's distributed mode: a TLCServer and two TLCWorker processes on 127.0.0.1
check the mdev model and find the manifest's figures (spec/distributed.py).
About 40 s on 2 cores: marked slow."""

import pytest

from vfiospec.spec import tlc
from vfiospec.spec.distributed import run_distributed


@pytest.mark.slow
def test_server_and_two_workers_on_loopback():
    res = run_distributed("mdev", workers=2, host="127.0.0.1", timeout=300)
    man = tlc.load_manifest("mdev")
    assert res["ok"], res["output"][-2000:]
    assert res["registered"] >= 2
    assert res["distinct"] == man["distinctStates"]
    assert res["depth"] == man["depth"]
