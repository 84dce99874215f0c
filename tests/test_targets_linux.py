"""The linux target: real-syscall code paths exercised against a fake device-node
layer (the reference, decoded from and encoded to the uapi structs' bytes)."""

import errno
import json

import pytest

from vfiospec.conformance.runner import run_trace
from vfiospec.conformance.targets.base import TargetError
from vfiospec.conformance.targets.linux import LinuxTarget, Os
from vfiospec.conformance.trace import parse_trace
from vfiospec.reference import Kernel, uapi
from vfiospec import errnos

_BY_NR: dict[int, list] = {}
for io in uapi.IOCTLS.values():
    _BY_NR.setdefault(io.number, []).append(io)


class FakeNodes(Os):
    """A device-node layer backed by the reference: struct bytes in, struct bytes out."""

    def __init__(self, platform=None):
        self.k = Kernel(platform)
        self.buffers = {}
        self.opened = []

    def _check(self, r):
        if r.errno:
            raise OSError(errnos.value(r.errno), r.errno)
        return r.ret

    def open(self, path, flags):
        self.opened.append(path)
        return self._check(self.k.open(path))

    def close(self, fd):
        self._check(self.k.close(fd))

    def mmap(self, length, hugepage):
        addr = self._check(self.k.mmap(length, hugepage))
        return addr, addr

    def munmap(self, handle):
        self._check(self.k.munmap(handle))

    def buffer_address(self, buf):
        addr = 0x10000000 + 0x10000 * len(self.buffers)
        self.buffers[addr] = buf
        return addr

    def _pick(self, fd, number):
        cands = _BY_NR[number]
        if len(cands) == 1:
            return cands[0]
        f = self.k.files.get(fd)
        kind = getattr(f, "kind", "")
        spapr = self.k.platform.iommu.kind == "spapr"
        for io in cands:
            if kind == "vfio-device" and io.name.startswith("VFIO_DEVICE_"):
                return io
            if kind != "vfio-device" and not io.name.startswith("VFIO_DEVICE_"):
                if spapr == ("SPAPR" in io.name):
                    return io
        return cands[0]

    def ioctl(self, fd, number, arg):
        io = self._pick(fd, number)
        if io.arg in ("none", "int"):
            return self._check(self.k.ioctl(fd, io.name, None if io.arg == "none" else arg))
        if io.arg == "fd":
            return self._check(self.k.ioctl(fd, io.name, int.from_bytes(arg[:4], "little", signed=True)))
        if io.arg == "string":
            return self._check(self.k.ioctl(fd, io.name, bytes(arg).split(b"\0")[0].decode()))
        st = io.struct
        values = st.unpack(bytes(arg))
        for f in st.fields:
            if f.kind == "array" and values[f.name] in self.buffers:
                raw = self.buffers[values[f.name]]
                n = values.get("num_iovas", 0)
                es = f.array_of.size
                values[f.name] = [f.array_of.unpack(bytes(raw[i * es:(i + 1) * es])) for i in range(n)]
        r = self.k.ioctl(fd, io.name, values)
        out = r.out or {}
        if out:
            packed = {k: (0 if isinstance(v, list) else v) for k, v in out.items() if st.has(k)}
            for f in st.fields:
                if f.kind == "array":
                    packed[f.name] = values[f.name] if not isinstance(values[f.name], list) else 0
                    if isinstance(out.get(f.name), list):
                        addr = next((a for a, b in self.buffers.items() if a == st.unpack(bytes(arg))[f.name]), None)
                        if addr is not None:
                            raw = self.buffers[addr]
                            for i, e in enumerate(out[f.name][: len(raw) // f.array_of.size]):
                                raw[i * f.array_of.size:(i + 1) * f.array_of.size] = f.array_of.pack(e)
            arg[:st.size] = st.pack({**st.unpack(bytes(arg)), **packed})
        return self._check(r)

    def read(self, path):
        r = self.k.sysfs_read(path)
        self._check(r)
        return r.data + "\n"

    def write(self, path, data):
        return self._check(self.k.sysfs_write(path, data))


CFG = {"groups": {"g0": 0}, "devices": {"dev0": {"name": "0000:00:03.0", "group": "g0", "cdev": "vfio0"}}}
TRACE = {"vfiospec": 1, "name": "legacy", "steps": [
    {"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
    {"call": "ioctl", "fd": "container", "cmd": "VFIO_GET_API_VERSION", "expect": {"ret": 0}},
    {"call": "open", "path": "/dev/vfio/{g0}", "as": "group"},
    {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_GET_STATUS", "expect": {"out": {"flags": 1}}},
    {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_SET_CONTAINER", "arg": "container", "expect": "ok"},
    {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_GET_STATUS", "expect": {"out": {"flags": 3}}},
    {"call": "open", "path": "/dev/vfio/{g0}", "as": "group2", "expect": {"errno": "EBUSY"}},
    {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_GET_DEVICE_FD", "arg": "0000:00:09.0",
     "expect": {"errno": "ENODEV"}},
    {"call": "ioctl", "fd": "group", "cmd": "VFIO_GROUP_UNSET_CONTAINER", "expect": "ok"},
]}


def target(tmp_path, cfg=CFG, fake=None):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps(cfg))
    return LinuxTarget(str(p), fake or FakeNodes())


def test_linux_target_over_fake_nodes(tmp_path):
    r = run_trace(parse_trace(TRACE, "legacy.json"), target(tmp_path))
    assert [s.verdict for s in r.steps] == ["PASS"] * len(TRACE["steps"]), [s.reason for s in r.steps]


def test_refuses_without_allowlist(tmp_path):
    with pytest.raises(TargetError, match="configuration file"):
        LinuxTarget(None)
    with pytest.raises(TargetError, match="nothing may be touched"):
        target(tmp_path, cfg={"groups": {}})


def test_never_opens_unlisted_nodes(tmp_path):
    fake = FakeNodes({"groups": {"g0": {"devices": {"dev0": "vfio-pci"}}, "g1": {"devices": {"dev1": "vfio-pci"}}}})
    t = target(tmp_path, fake=fake)
    tr = parse_trace({"vfiospec": 1, "name": "other", "steps": [
        {"call": "open", "path": "/dev/vfio/1", "as": "g"},
        {"call": "read", "path": "/sys/bus/pci/devices/0000:00:03.0/driver_override"}]}, "o.json")
    r = run_trace(tr, t)
    assert [s.verdict for s in r.steps] == ["UNSUPPORTED", "UNSUPPORTED"]
    assert "/dev/vfio/1" not in fake.opened


def test_trace_needing_unmapped_group_is_unsupported(tmp_path):
    doc = dict(TRACE, platform={"groups": {"g0": {"devices": {"dev0": "vfio-pci"}},
                                           "g5": {"devices": {"dev5": "vfio-pci"}}}})
    r = run_trace(parse_trace(doc, "x.json"), target(tmp_path))
    assert r.verdict == "UNSUPPORTED" and "g5" in r.error


def test_kapi_is_unsupported(tmp_path):
    tr = parse_trace({"vfiospec": 1, "name": "k", "platform": {
        "mdev_parents": {"mtty": {"types": {"mtty-1": {"available_instances": 2}}}}}, "steps": [
        {"call": "kapi", "fn": "vfio_pin_pages", "device": "dev0", "iova": 0, "npage": 1}]}, "k.json")
    r = run_trace(tr, target(tmp_path))
    assert r.steps[0].verdict == "UNSUPPORTED"


def test_struct_layouts_match_the_uapi_headers():
    """Sizes and minimum sizes the kernel checks (offsetofend of the last mandatory field)."""
    sizes = {"vfio_iommu_type1_dma_map": (32, 32), "vfio_iommu_type1_dma_unmap": (24, 24),
             "vfio_iommu_type1_info": (24, 16), "vfio_group_status": (8, 8),
             "vfio_iommu_spapr_tce_info": (32, 16), "vfio_iommu_spapr_tce_create": (40, 40),
             "vfio_iommu_spapr_register_memory": (24, 24), "vfio_eeh_pe_op": (40, 12),
             "vfio_device_bind_iommufd": (16, 16), "vfio_device_attach_iommufd_pt": (16, 12),
             "iommu_ioas_map": (40, 40), "iommu_ioas_unmap": (24, 24), "iommu_ioas_copy": (40, 40),
             "iommu_ioas_iova_ranges": (32, 32), "iommu_ioas_allow_iovas": (24, 24), "iommu_option": (24, 24),
             "iommu_vfio_ioas": (12, 12), "iommu_destroy": (8, 8), "iommu_ioas_alloc": (12, 12),
             "iommu_hwpt_alloc": (48, 24), "iommu_hw_info": (40, 32)}
    for name, (size, minsz) in sizes.items():
        st = getattr(uapi, name)
        assert (st.size, st.minsz) == (size, minsz), name
    assert uapi.IOCTLS["VFIO_GET_API_VERSION"].number == 0x3B64
    assert uapi.IOCTLS["IOMMU_IOAS_MAP"].number == 0x3B85
