"""Routing of paths, sysfs files and in-kernel API calls to the modules that own
them.  A module registers its handlers at import; `MODULES` lists them in boot
order.  Adding a kernel object kind means adding a module here, not changing
the others."""

from __future__ import annotations

import importlib
import re

from .errors import Errno

MODULES = [
    "vfio.vfio_main",          # vfio devices and their fds (drivers/vfio/vfio_main.c)
    "vfio.group",              # /dev/vfio/N (drivers/vfio/group.c)
    "vfio.container",          # /dev/vfio/vfio (drivers/vfio/container.c)
    "vfio.iommu_type1",        # drivers/vfio/vfio_iommu_type1.c
    "vfio.iommu_spapr_tce",    # drivers/vfio/vfio_iommu_spapr_tce.c
    "vfio.noiommu",            # container.c vfio_noiommu_ops
    "vfio.device_cdev",        # /dev/vfio/devices/vfioN (drivers/vfio/device_cdev.c)
    "vfio.iommufd",            # drivers/vfio/iommufd.c
    "iommufd.main",            # /dev/iommu (drivers/iommu/iommufd/main.c)
    "mdev.mdev_core",          # drivers/vfio/mdev/ + samples/vfio-mdev/mtty.c
]

_OPEN: list[tuple[re.Pattern, object]] = []
_READ: list[tuple[re.Pattern, object]] = []
_WRITE: list[tuple[re.Pattern, object]] = []
_KAPI: dict[str, object] = {}
_BOOT: list[object] = []


def on_open(pattern: str):
    """Register `fn(kernel, match) -> File` for paths matching `pattern`."""
    def deco(fn):
        _OPEN.append((re.compile(pattern + r"\Z"), fn))
        return fn
    return deco


def on_sysfs_read(pattern: str):
    def deco(fn):
        _READ.append((re.compile(pattern + r"\Z"), fn))
        return fn
    return deco


def on_sysfs_write(pattern: str):
    def deco(fn):
        _WRITE.append((re.compile(pattern + r"\Z"), fn))
        return fn
    return deco


def on_kapi(name: str):
    def deco(fn):
        _KAPI[name] = fn
        return fn
    return deco


def on_boot(fn):
    """Register `fn(kernel)`, run when a Kernel is created, in MODULES order."""
    _BOOT.append(fn)
    return fn


_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for m in MODULES:
        try:
            importlib.import_module(f"{__package__}.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{m}":
                raise
    _loaded = True


def boot(kernel) -> None:
    _load()
    for fn in _BOOT:
        fn(kernel)


def open_path(kernel, path: str):
    for pat, fn in _OPEN:
        m = pat.match(path)
        if m:
            return fn(kernel, m)
    raise Errno("ENOENT")


def sysfs_read(kernel, path: str) -> str:
    for pat, fn in _READ:
        m = pat.match(path)
        if m:
            return fn(kernel, m)
    raise Errno("ENOENT")


def sysfs_write(kernel, path: str, data: str) -> int:
    for pat, fn in _WRITE:
        m = pat.match(path)
        if m:
            return fn(kernel, m, data)
    raise Errno("ENOENT")


def kapi(kernel, name: str, args: dict):
    fn = _KAPI.get(name)
    if fn is None:
        raise Errno("ENOSYS")
    return fn(kernel, args)
