"""The mdev sysfs interface (drivers/vfio/mdev/mdev_sysfs.c): the type attributes
under `mdev_supported_types/<type>/` of a parent and the `remove` attribute of
each mdev.  Paths, per the trace format:

- /sys/class/mdev_bus/P/mdev_supported_types/T/{create,available_instances,
  device_api,name,description,devices}
- /sys/devices/virtual/mtty/mtty/mdev_supported_types/T/... (the mtty parent)
- /sys/bus/mdev/devices/UUID/{remove,mdev_type,iommu_group,vfio-dev}

`mdev_type`, `iommu_group` and `vfio-dev` are links or directories on a real
machine: a read gives the name they point to (the type directory name, the IOMMU
group number, the vfioN name), which is what `readlink`/`ls` shows.  `devices` is
a directory: a read lists the UUIDs in it, one per line.
"""

from __future__ import annotations

from vfiospec.reference import dispatch
from vfiospec.reference.errors import Errno

UUID_STRING_LEN = 36

_TYPE_DIR = r"(?:/sys/class/mdev_bus/([^/]+)|/sys/devices/virtual/mtty/(mtty))/mdev_supported_types/([^/]+)"


def guid_parse(s: str) -> str:
    """lib/uuid.c guid_parse / uuid_is_valid: 36 characters, '-' at 8, 13, 18, 23,
    hex digits elsewhere (characters after the 36th are not looked at).  Returns the
    canonical lower-case form (dev_set_name "%pUl")."""
    if len(s) < UUID_STRING_LEN:
        raise Errno("EINVAL", "MDEV-CREATE-BAD-UUID")
    for i in range(UUID_STRING_LEN):
        c = s[i]
        if i in (8, 13, 18, 23):
            if c != "-":
                raise Errno("EINVAL", "MDEV-CREATE-BAD-UUID")
        elif c not in "0123456789abcdefABCDEF":
            raise Errno("EINVAL", "MDEV-CREATE-BAD-UUID")
    return s[:UUID_STRING_LEN].lower()


def kstrtoul(s: str) -> int:
    """lib/kstrtox.c kstrtoul(s, 0): optional '+', base prefix 0x/0 (octal), one
    trailing newline; anything else, an empty number or overflow fails."""
    if s.endswith("\n"):
        s = s[:-1]
    if s.startswith("+"):
        s = s[1:]
    if not s:
        raise ValueError
    base = 10
    if s[:2].lower() == "0x" and len(s) > 2:
        base, s = 16, s[2:]
    elif s.startswith("0") and len(s) > 1:
        base, s = 8, s[1:]
    digits = "0123456789abcdef"[:base]
    if any(c.lower() not in digits for c in s):
        raise ValueError
    v = int(s, base)
    if v >= 1 << 64:
        raise ValueError
    return v


def _type(kernel, m):
    from .mdev_core import mdev_parents
    pname = m.group(1) or m.group(2)
    parent = mdev_parents(kernel).get(pname)
    tname = m.group(3)
    if parent is None or tname not in parent.types:
        raise Errno("ENOENT", "MDEV-SYSFS")
    return parent, tname


# ---------------------------------------------------------------- type attributes
@dispatch.on_sysfs_write(_TYPE_DIR + r"/create")
def create_store(kernel, m, data: str) -> int:
    """create_store: 36 or 37 bytes (a trailing newline allowed) else EINVAL;
    guid_parse else EINVAL; mdev_device_create; returns the byte count."""
    from .mdev_core import mdev_device_create
    parent, tname = _type(kernel, m)
    if not data:
        # sysfs_kf_write: a zero-length write returns 0 without calling ->store
        kernel.cover("SYSFS-WRITE-EMPTY")
        return 0
    count = len(data.encode())
    if count < UUID_STRING_LEN or count > UUID_STRING_LEN + 1:
        raise Errno("EINVAL", "MDEV-CREATE-LENGTH")
    uuid = guid_parse(data)
    mdev_device_create(kernel, parent, tname, uuid)
    kernel.cover("MDEV-CREATE")
    return count


@dispatch.on_sysfs_read(_TYPE_DIR + r"/available_instances")
def available_instances_show(kernel, m) -> str:
    """available_instances_show: the driver's get_available (mtty: free ports /
    ports per instance)."""
    parent, tname = _type(kernel, m)
    kernel.cover("MDEV-AVAILABLE-INSTANCES")
    return str(parent.get_available(tname))


@dispatch.on_sysfs_read(_TYPE_DIR + r"/device_api")
def device_api_show(kernel, m) -> str:
    parent, tname = _type(kernel, m)
    kernel.cover("MDEV-TYPE-ATTRS")
    return parent.device_api if parent.is_mtty else parent.types[tname].device_api


@dispatch.on_sysfs_read(_TYPE_DIR + r"/name")
def name_show(kernel, m) -> str:
    """name_show: the type's pretty_name, else its sysfs_name."""
    parent, tname = _type(kernel, m)
    kernel.cover("MDEV-TYPE-ATTRS")
    return parent.pretty_name(tname)


@dispatch.on_sysfs_read(_TYPE_DIR + r"/description")
def description_show(kernel, m) -> str:
    """Visible only when the driver has show_description (mtty has none: ENOENT)."""
    parent, tname = _type(kernel, m)
    d = parent.description(tname)
    if d is None:
        raise Errno("ENOENT", "MDEV-TYPE-NO-DESCRIPTION")
    kernel.cover("MDEV-TYPE-ATTRS")
    return d


@dispatch.on_sysfs_read(r"(?:/sys/class/mdev_bus/([^/]+)|/sys/devices/virtual/mtty/(mtty))/mdev_supported_types/?")
def supported_types_list(kernel, m) -> str:
    """The parent's `mdev_supported_types` directory (mdev_type_add: one kobject per type),
    read as the trace format reads a directory: its entries, sorted, one a line."""
    from .mdev_core import mdev_parents
    parent = mdev_parents(kernel).get(m.group(1) or m.group(2))
    if parent is None:
        raise Errno("ENOENT", "MDEV-SYSFS")
    kernel.cover("MDEV-TYPE-DEVICES")
    return "\n".join(sorted(parent.types))


@dispatch.on_sysfs_read(_TYPE_DIR + r"/devices/?")
def devices_list(kernel, m) -> str:
    """The `devices` directory: links to the mdevs of this type."""
    from .mdev_core import mdevs
    parent, tname = _type(kernel, m)
    kernel.cover("MDEV-TYPE-DEVICES")
    return "\n".join(sorted(u for u, md in mdevs(kernel).items()
                            if md.parent is parent and md.type_name == tname))


@dispatch.on_sysfs_write(_TYPE_DIR + r"/(available_instances|device_api|name|description)")
def _ro_write(kernel, m, data):
    """Read-only attributes (mode 0444): the open for writing fails."""
    _type(kernel, m)
    raise Errno("EACCES", "MDEV-SYSFS-MODE")


@dispatch.on_sysfs_read(_TYPE_DIR + r"/create")
def _wo_read(kernel, m):
    """create is write-only (0200)."""
    _type(kernel, m)
    raise Errno("EACCES", "MDEV-SYSFS-MODE")


# ---------------------------------------------------------------- mdev attributes
_MDEV = r"/sys/bus/mdev/devices/([0-9a-f-]{36})"


def _mdev(kernel, m):
    from .mdev_core import mdevs
    md = mdevs(kernel).get(m.group(1))
    if md is None:
        raise Errno("ENOENT", "MDEV-SYSFS")
    return md


@dispatch.on_sysfs_write(_MDEV + r"/remove")
def remove_store(kernel, m, data: str) -> int:
    """remove_store: kstrtoul(buf, 0) else EINVAL; 0 does nothing; non-zero removes
    the mdev (mdev_device_remove).  Returns the byte count."""
    from .mdev_core import mdev_device_remove
    md = _mdev(kernel, m)
    if not data:
        # sysfs_kf_write: a zero-length write returns 0 without calling ->store
        kernel.cover("SYSFS-WRITE-EMPTY")
        return 0
    try:
        val = kstrtoul(data)
    except ValueError:
        raise Errno("EINVAL", "MDEV-REMOVE-VALUE") from None
    if val:
        mdev_device_remove(kernel, md)
        kernel.cover("MDEV-REMOVE")
    else:
        kernel.cover("MDEV-REMOVE-ZERO")
    return len(data.encode())


@dispatch.on_sysfs_read(_MDEV + r"/remove")
def _remove_read(kernel, m):
    _mdev(kernel, m)
    raise Errno("EACCES", "MDEV-SYSFS-MODE")


@dispatch.on_sysfs_read(_MDEV + r"/mdev_type")
def mdev_type_link(kernel, m) -> str:
    md = _mdev(kernel, m)
    kernel.cover("MDEV-DEVICE-LINKS")
    return md.type_name


@dispatch.on_sysfs_read(_MDEV + r"/mdev_type/(name|device_api|available_instances|description)")
def mdev_type_attr(kernel, m) -> str:
    md = _mdev(kernel, m)
    attr = m.group(2)
    parent, tname = md.parent, md.type_name
    if attr == "name":
        return parent.pretty_name(tname)
    if attr == "device_api":
        return parent.device_api if parent.is_mtty else parent.types[tname].device_api
    if attr == "available_instances":
        return str(parent.get_available(tname))
    d = parent.description(tname)
    if d is None:
        raise Errno("ENOENT", "MDEV-TYPE-NO-DESCRIPTION")
    return d


@dispatch.on_sysfs_read(_MDEV + r"/iommu_group")
def iommu_group_link(kernel, m) -> str:
    md = _mdev(kernel, m)
    kernel.cover("MDEV-DEVICE-LINKS")
    return str(md.vdev.group.number)


@dispatch.on_sysfs_read(_MDEV + r"/vfio-dev/?")
def vfio_dev_dir(kernel, m) -> str:
    md = _mdev(kernel, m)
    kernel.cover("MDEV-DEVICE-LINKS")
    return md.vdev.cdev_name
