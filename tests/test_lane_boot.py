"""Real kernels under QEMU TCG: boot a cached kernel and drive its guest agent.

These need a kernel in ~/.cache/vfiospec (built by `vfiospec lane kernel` or
`python -m vfiospec.lane.x86 build`) and qemu-system-x86_64; without them they
skip, saying so. Each boots QEMU TCG (10-60 s a kernel, more on a loaded
machine), so they run only with VFIOSPEC_LANE=1 (the lane's own command,
`vfiospec lane kernel`, is what CI runs). Marker: `lane`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from vfiospec.lane import x86

pytestmark = pytest.mark.lane


def _need(name: str):
    if os.environ.get("VFIOSPEC_LANE") != "1":
        pytest.skip("LOUD SKIP: QEMU lane tests run only with VFIOSPEC_LANE=1 (they boot real kernels)")
    if shutil.which(x86.QEMU) is None:
        pytest.skip(f"LOUD SKIP: {x86.QEMU} is not installed (apt-get install qemu-system-x86)")
    try:
        x86.kernel_image(name)
    except FileNotFoundError as e:
        pytest.skip(f"LOUD SKIP: {e}")


def drive(name: str, *traces: list[dict]) -> list[list[dict]]:
    """One boot of `name`; each list of steps runs as one trace. Returns [hello], then each trace's answers."""
    msgs = [{"type": "hello", "protocol": 1}]
    for n, steps in enumerate(traces):
        msgs += [{"type": "begin", "trace": f"t{n}"}]
        msgs += [{"type": "step", "index": i, "step": s} for i, s in enumerate(steps)] + [{"type": "end"}]
    r = subprocess.run([sys.executable, "-m", "vfiospec.lane.x86", "boot", "--kernel", name],
                       input="".join(json.dumps(m) + "\n" for m in msgs), capture_output=True, text=True,
                       timeout=600)
    out = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert len(out) == len(msgs), r.stderr[-3000:]
    res, i = [out[:1]], 1
    for steps in traces:
        assert out[i] == {"ok": True} and out[i + len(steps) + 1] == {"ok": True}, out[i:]
        res.append(out[i + 1:i + 1 + len(steps)])
        i += len(steps) + 2
    return res


RW = ["VFIO_DMA_MAP_FLAG_READ", "VFIO_DMA_MAP_FLAG_WRITE"]
TYPE1 = [
    {"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
    {"call": "open", "path": "/dev/vfio/{g0}", "as": "group"},
    {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container"},
    {"call": "ioctl", "fd": "container", "cmd": "VFIO_SET_IOMMU", "arg": 3},
    {"call": "mmap", "length": 0x200000, "as": "buf"},
    {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
     "arg": {"argsz": 32, "flags": 3, "vaddr": "buf", "iova": 0, "size": 0x100000}},
    {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
     "arg": {"argsz": 32, "flags": 1, "vaddr": "buf", "iova": 0x80000, "size": 0x100000}},
    {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA", "arg": {"argsz": 24, "iova": 0, "size": 0x80000}},
    {"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_UNMAP_DMA", "arg": {"argsz": 24, "iova": 0, "size": 0x200000}},
    {"call": "kapi", "fn": "vfio_pin_pages"},
]


IOMMUFD = [
    {"call": "open", "path": "/dev/iommu", "as": "iommufd"},
    {"call": "open", "path": "/dev/vfio/devices/{dev0.cdev}", "as": "dev"},
    {"call": "ioctl", "fd": "dev", "cmd": "VFIO_DEVICE_BIND_IOMMUFD", "arg": {"argsz": 16, "iommufd": "iommufd"}},
    {"call": "ioctl", "fd": "iommufd", "cmd": "IOMMU_IOAS_ALLOC", "arg": {"size": 12}},
]


@pytest.mark.parametrize("name", ["6.12-custom", "6.12-compat", "debian-6.1"])
def test_type1_overlap_and_bisect_on_a_real_kernel(name):
    """One boot per kernel: the type1v2 overlap/bisect answers, and on the
    IOMMUFD kernels a cdev bind and an IOAS allocation."""
    _need(name)
    _, facts = x86.kernel_image(name)
    iommufd = facts["features"]["iommufd"] and facts["features"]["cdev"]
    runs = drive(name, TYPE1, *([IOMMUFD] if iommufd else []))
    hello = runs[0][0]
    assert hello["platform"]["groups"]["g0"]["devices"] == {"dev0": {"driver": "vfio-pci", "reset": False}}
    assert hello["platform"]["vfio_container"] == facts["container"]
    assert hello["platform"]["params"]["transparent_hugepage"] is facts["features"]["thp"]
    assert hello["platform"]["iommu"]["coherent"] is False
    steps = runs[1]
    assert [s.get("errno") for s in steps[:6]] == [None] * 6, steps
    assert steps[6]["errno"] == "EEXIST"
    # an unmap that bisects a mapping is refused: EINVAL from type1's vfio_dma_do_unmap,
    # ENOENT from IOMMUFD's emulation (iopt_unmap_iova_range: an area not wholly covered)
    assert steps[7]["errno"] == ("ENOENT" if facts["container"] == "iommufd" else "EINVAL")
    assert steps[8]["errno"] is None and steps[8]["out"]["size"] == 0x100000
    assert "unsupported" in steps[9]
    if iommufd:
        ist = runs[2]
        assert all(s["errno"] is None for s in ist), ist
        assert ist[3]["out"]["out_ioas_id"] > 0
