"""The static C agent (conformance/examples/agent): built with the host's gcc,
driven over its stdin/stdout on this host, where no VFIO device exists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "conformance" / "examples" / "agent"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="LOUD SKIP: gcc is not installed")


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("agent") / "vfiospec-agent"
    r = subprocess.run(["make", "-s", "-C", str(AGENT), "CC=gcc", f"OUT={out}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def talk(agent: Path, *msgs, config: dict | None = None, tmp: Path | None = None) -> list[dict]:
    argv = [str(agent)]
    if config is not None:
        cfg = tmp / "agent.json"
        cfg.write_text(json.dumps(config))
        argv += ["--config", str(cfg)]
    text = "".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in msgs)
    r = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def step(s: dict, i: int = 0) -> dict:
    return {"type": "step", "index": i, "step": s}


def test_layouts_h_is_generated_from_uapi():
    r = subprocess.run([sys.executable, str(AGENT / "gen_layouts.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_handshake_lists_calls_and_every_uapi_ioctl(agent):
    from vfiospec.reference import uapi
    (h,) = talk(agent, {"type": "hello", "protocol": 1})
    assert h["type"] == "hello" and h["protocol"] == 1
    assert h["platform"] is None
    assert set(h["calls"]) == {"open", "close", "ioctl", "mmap", "munmap", "read", "write"}
    assert set(h["ioctls"]) == set(uapi.IOCTLS)


def test_platform_and_target_come_from_the_config(agent, tmp_path):
    plat = {"kernel": "6.12", "groups": {"g0": {"number": 7, "devices": {"dev0": "vfio-pci"}}}}
    (h,) = talk(agent, {"type": "hello", "protocol": 1}, config={"target": "t1", "platform": plat}, tmp=tmp_path)
    assert h["platform"] == plat and h["target"] == "t1"


def test_kapi_is_unsupported_and_unknown_ioctl_too(agent):
    r = talk(agent, {"type": "begin", "trace": "t"},
             step({"call": "kapi", "fn": "vfio_pin_pages", "device": "dev0", "iova": 0, "npage": 1}),
             step({"call": "ioctl", "fd": 0, "cmd": "VFIO_NOT_AN_IOCTL"}), {"type": "end"})
    assert r[0] == {"ok": True}
    assert "unsupported" in r[1] and "kapi" in r[1]["unsupported"]
    assert "unsupported" in r[2]
    assert r[3] == {"ok": True}


def test_open_of_a_missing_node_is_enoent(agent):
    if Path("/dev/iommu").exists():
        pytest.skip("this host has /dev/iommu")
    (r,) = talk(agent, step({"call": "open", "path": "/dev/iommu", "as": "iommufd"}))
    assert r["errno"] == "ENOENT" and r["ret"] == -1


def test_paths_outside_the_config_are_refused(agent, tmp_path):
    cfg = {"names": {"g0": "5", "dev0": "0000:00:03.0", "dev0.cdev": "vfio0"}}
    r = talk(agent,
             step({"call": "open", "path": "/dev/vfio/{g1}", "as": "g"}),
             step({"call": "open", "path": "/dev/vfio/6", "as": "g"}),
             step({"call": "open", "path": "/dev/vfio/devices/vfio3", "as": "d"}),
             step({"call": "open", "path": "/etc/passwd", "as": "p"}),
             step({"call": "write", "path": "/sys/bus/pci/devices/0000:00:04.0/driver_override", "data": "vfio-pci"}),
             step({"call": "ioctl", "fd": "g", "cmd": "VFIO_GROUP_GET_STATUS", "arg": {}}),
             step({"call": "open", "path": "/dev/vfio/{g0}", "as": "g"}),
             config=cfg, tmp=tmp_path)
    for x in r[:6]:
        assert "unsupported" in x, x
    # {g0} is configured: the open goes to the kernel (no such node on this host)
    assert r[6]["errno"] == "ENOENT"


def test_ioctl_packs_struct_fields_and_reports_them(agent):
    """A real ioctl on /dev/null: the kernel answers ENOTTY and the agent echoes the struct,
    buffer names resolved from its mmap table and given back as written."""
    cfg_free = talk(agent,
                    step({"call": "mmap", "length": "0x10000", "as": "buf"}),
                    step({"call": "ioctl", "fd": 0, "cmd": "VFIO_IOMMU_MAP_DMA",
                          "arg": {"argsz": 32, "flags": 3, "vaddr": "buf+0x1000", "iova": "0xfffffffffffff000",
                                  "size": "0x2000"}}),
                    step({"call": "ioctl", "fd": 0, "cmd": "IOMMU_IOAS_IOVA_RANGES",
                          "arg": {"size": 32, "ioas_id": 1, "num_iovas": 2,
                                  "allowed_iovas": [{"start": 1, "last": "U64_MAX"}]}}),
                    step({"call": "munmap", "addr": "buf"}),
                    step({"call": "munmap", "addr": "buf"}))
    assert cfg_free[0] == {"ret": 0, "errno": None, "out": {}}
    m = cfg_free[1]
    assert m["errno"] == "ENOTTY"
    assert m["out"] == {"argsz": 32, "flags": 3, "vaddr": "buf+0x1000", "iova": 2**64 - 4096, "size": 0x2000}
    rng = cfg_free[2]["out"]
    assert rng["allowed_iovas"] == [{"start": 1, "last": 2**64 - 1}, {"start": 0, "last": 0}]
    assert cfg_free[3]["ret"] == 0
    # munmap of a range no longer mapped succeeds in Linux; the name keeps its address
    assert cfg_free[4] == {"ret": 0, "errno": None, "out": {}}


def test_fd_names_bind_and_close(agent, tmp_path):
    r = talk(agent, step({"call": "open", "path": "/dev/vfio/vfio", "as": "container"}),
             step({"call": "close", "fd": "container"}), step({"call": "close", "fd": 1000}))
    if r[0]["errno"] is None:
        assert r[1]["ret"] == 0
    else:
        assert r[0]["errno"] == "ENOENT" and "error" in r[1]
    assert r[2]["errno"] == "EBADF"


def test_bad_lines_get_an_error_not_a_crash(agent):
    r = talk(agent, "not json", {"type": "nope"}, {"type": "hello", "protocol": 1})
    assert "error" in r[0] and "error" in r[1] and r[2]["type"] == "hello"


def test_agent_cross_compiles_for_ppc64le(tmp_path):
    cc = "powerpc64le-linux-gnu-gcc"
    if shutil.which(cc) is None:
        pytest.skip(f"LOUD SKIP: {cc} is not installed (apt-get install gcc-powerpc64le-linux-gnu)")
    out = tmp_path / "agent.ppc64le"
    r = subprocess.run(["make", "-s", "-C", str(AGENT), f"CC={cc}", f"OUT={out}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    head = out.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[5] == 1 and int.from_bytes(head[18:20], "little") == 21  # LE, EM_PPC64


def test_read_of_a_sysfs_directory_lists_it_and_of_a_link_names_its_target(agent, tmp_path):
    import os
    d = "/sys/bus"
    link = next((os.path.join("/sys/class/net", n) for n in sorted(os.listdir("/sys/class/net"))), None) \
        if os.path.isdir("/sys/class/net") else None
    steps = [step({"call": "read", "path": d})] + ([step({"call": "read", "path": link})] if link else [])
    r = talk(agent, *steps)
    assert r[0]["errno"] is None and r[0]["data"] == "\n".join(sorted(os.listdir(d)))
    if link:
        assert r[1]["data"] == os.path.basename(os.readlink(link))
