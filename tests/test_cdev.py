"""cdev behaviours traces cannot express: the invariants "one bind per device" and
"exclusivity of group path, cdev path and legacy container" over random programs
(Hypothesis stateful), and the documented state attributes."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vfiospec.reference import Kernel

PLATFORM = {"groups": {"g0": {"devices": {"dev0": "vfio-pci", "dev1": "vfio-pci"}},
                       "g1": {"devices": {"dev2": "vfio-pci"}}}}
DEVS = ["dev0", "dev1", "dev2"]


def _bind(k, fd, ictx_fd):
    return k.ioctl(fd, "VFIO_DEVICE_BIND_IOMMUFD", {"argsz": 16, "flags": 0, "iommufd": ictx_fd, "out_devid": 0})


class CdevExclusivity(RuleBasedStateMachine):
    """Random opens, binds, closes, group opens and container use across two groups."""

    def __init__(self):
        super().__init__()
        self.k = Kernel(PLATFORM)
        self.ictx = [self.k.open("/dev/iommu").ret, self.k.open("/dev/iommu").ret]
        self.container = self.k.open("/dev/vfio/vfio").ret
        self.cdevs: list[int] = []
        self.groups: dict[str, int] = {}
        self.devfds: list[int] = []

    @rule(dev=st.sampled_from(DEVS))
    def open_cdev(self, dev):
        r = self.k.open(f"/dev/vfio/devices/{self.k.devices[dev].cdev_name}")
        assert r.errno is None
        self.cdevs.append(r.ret)

    @precondition(lambda self: self.cdevs)
    @rule(i=st.integers(0, 50), which=st.integers(0, 1))
    def bind(self, i, which):
        fd = self.cdevs[i % len(self.cdevs)]
        df = self.k.files[fd]
        before = df.access_granted
        r = _bind(self.k, fd, self.ictx[which])
        assert r.errno in (None, "EINVAL", "EBUSY", "EPERM")
        if before:
            assert r.errno == "EINVAL"           # CDEV-BIND-TWICE
        if r.errno is None:
            assert r.out["out_devid"] == df.device.idev.obj_id

    @precondition(lambda self: self.cdevs)
    @rule(i=st.integers(0, 50))
    def close_cdev(self, i):
        fd = self.cdevs.pop(i % len(self.cdevs))
        assert self.k.close(fd).errno is None

    @rule(g=st.sampled_from(["g0", "g1"]))
    def open_group(self, g):
        if g in self.groups:
            return
        r = self.k.open(f"/dev/vfio/{self.k.platform.groups[g].number}")
        assert r.errno in (None, "EBUSY")
        if r.errno is None:
            self.groups[g] = r.ret

    @precondition(lambda self: self.groups)
    @rule(data=st.data())
    def group_device_fd(self, data):
        g = data.draw(st.sampled_from(sorted(self.groups)))
        gf = self.groups[g]
        grp = self.k.files[gf].group
        if grp.container is None:
            r = self.k.ioctl(gf, "VFIO_GROUP_SET_CONTAINER", self.container)
            assert r.errno in (None, "EPERM")
            if r.errno:
                return
            c = self.k.files[self.container].container
            if c.iommu_data is None:
                assert self.k.ioctl(self.container, "VFIO_SET_IOMMU", 3).errno is None
        dev = data.draw(st.sampled_from(grp.devices))
        r = self.k.ioctl(gf, "VFIO_GROUP_GET_DEVICE_FD", dev.name)
        assert r.errno is None, r
        self.devfds.append(r.ret)

    @precondition(lambda self: self.groups)
    @rule(data=st.data())
    def close_group(self, data):
        g = data.draw(st.sampled_from(sorted(self.groups)))
        assert self.k.close(self.groups.pop(g)).errno is None

    @precondition(lambda self: self.devfds)
    @rule(i=st.integers(0, 50))
    def close_device_fd(self, i):
        assert self.k.close(self.devfds.pop(i % len(self.devfds))).errno is None

    # ------------------------------------------------------------- invariants
    @invariant()
    def one_bind_per_device(self):
        """CDEV-SINGLE-OPEN / CDEV-BIND-TWICE: at most one bound cdev fd per device, and
        a bound device is open once with an iommufd binding matching the fd's ctx."""
        bound = {}
        for f in self.k.files.values():
            if getattr(f, "kind", None) == "vfio-device" and f.group is None and f.access_granted:
                assert f.device.name not in bound
                bound[f.device.name] = f
        for d in self.k.devices.values():
            df = bound.get(d.name)
            if df is not None:
                assert d.cdev_opened and d.open_count == 1
                assert d.idev is not None and d.iommufd_ictx is df.iommufd
                assert d.iommufd_devid == d.idev.obj_id == df.devid
            else:
                assert not d.cdev_opened
                assert d.idev is None or d.group.iommufd is not None

    @invariant()
    def exclusivity(self):
        """CDEV-GROUP-EXCLUSIVE: a group is used through its node (and maybe a legacy
        container) or through cdev binds, never both; ownership follows the binds."""
        for g in self.k.objects["vfio_groups"].values():
            bound = [d for d in g.devices if d.cdev_opened]
            assert g.cdev_device_open_cnt == len(bound)
            if bound:
                assert g.opened_file is None and g.container is None
                assert g.owner is bound[0].iommufd_ictx and g.owner_cnt == len(bound)
                assert all(d.iommufd_ictx is g.owner for d in bound)
            if g.container is not None:
                assert g.owner is g.container


TestCdevExclusivity = CdevExclusivity.TestCase
TestCdevExclusivity.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_CDEV_UNBIND_ON_CLOSE_releases_ctx_reference():
    """The bind holds a reference on the iommufd context (iommufd_ctx_from_fd) that the
    unbind drops; closing the iommufd fd first keeps the context alive."""
    k = Kernel(PLATFORM)
    ictx_fd = k.open("/dev/iommu").ret
    ictx = k.files[ictx_fd].ictx
    cdev = k.open(f"/dev/vfio/devices/{k.devices['dev0'].cdev_name}").ret
    assert _bind(k, cdev, ictx_fd).errno is None
    assert ictx.users >= 2                  # the fd's reference and the device's
    k.close(ictx_fd)
    assert not ictx.file.closed
    assert k.ioctl(cdev, "VFIO_DEVICE_GET_INFO", {"argsz": 24}).errno is None
    k.close(cdev)
    assert ictx.users == 0 and ictx.file.closed
    g = k.devices["dev0"].group
    assert (g.cdev_device_open_cnt, g.owner, g.owner_cnt) == (0, None, 0)
