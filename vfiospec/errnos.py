"""Linux errno names and values, compared by value so that aliases match."""

import errno as _errno

# Linux values; the host's errno module is Linux here, but the spec must not
# depend on the host, so the names the uAPI uses are pinned.
_LINUX = {
    "EPERM": 1, "ENOENT": 2, "ESRCH": 3, "EINTR": 4, "EIO": 5, "ENXIO": 6,
    "E2BIG": 7, "ENOEXEC": 8, "EBADF": 9, "ECHILD": 10, "EAGAIN": 11,
    "ENOMEM": 12, "EACCES": 13, "EFAULT": 14, "EBUSY": 16, "EEXIST": 17,
    "EXDEV": 18, "ENODEV": 19, "ENOTDIR": 20, "EISDIR": 21, "EINVAL": 22,
    "ENFILE": 23, "EMFILE": 24, "ENOTTY": 25, "EFBIG": 27, "ENOSPC": 28,
    "ESPIPE": 29, "EROFS": 30, "ERANGE": 34, "EDEADLK": 35, "ENAMETOOLONG": 36,
    "ENOSYS": 38, "ENODATA": 61, "ETIME": 62, "EOVERFLOW": 75, "EBADFD": 77,
    "EMSGSIZE": 90, "EOPNOTSUPP": 95, "EADDRINUSE": 98, "ENOBUFS": 105,
    "ETIMEDOUT": 110, "ECANCELED": 125,
}
_ALIASES = {"ENOTSUP": "EOPNOTSUPP", "EWOULDBLOCK": "EAGAIN", "EDEADLOCK": "EDEADLK"}


def value(name: str) -> int:
    """The Linux value of an errno name (aliases included); KeyError if unknown."""
    name = _ALIASES.get(name, name)
    if name in _LINUX:
        return _LINUX[name]
    v = getattr(_errno, name, None)
    if isinstance(v, int) and name.startswith("E"):
        return v
    raise KeyError(name)


def is_name(name: str) -> bool:
    try:
        value(name)
        return True
    except KeyError:
        return False


_BY_VALUE = {v: k for k, v in _LINUX.items()}


def name(val: int) -> str:
    """The canonical name of a Linux errno value."""
    if val in _BY_VALUE:
        return _BY_VALUE[val]
    return _errno.errorcode.get(val, f"E{val}")


def same(a: str, b: str) -> bool:
    return value(a) == value(b)
