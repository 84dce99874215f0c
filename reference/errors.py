"""Errors the reference returns: a Linux errno name and the requirement that decided it."""


class Unmodelled(Exception):
    """A behaviour the reference deliberately does not model (a target reports it UNSUPPORTED)."""


class Errno(Exception):
    """A failing syscall: `name` is the Linux errno name, `req` the requirement ID."""

    def __init__(self, name: str, req: str | None = None, why: str = "", out: dict | None = None):
        super().__init__(f"{name} ({req})" if req else name)
        self.name = name
        self.req = req
        self.why = why
        self.out = out      # the struct as the kernel left it, where it writes back on failure
