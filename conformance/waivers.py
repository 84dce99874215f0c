"""Waivers: expected divergences, as data (a TOML file of [[waiver]] tables).

    [[waiver]]
    id = "LINUX-6.12-TYPE1-MDEV-WRAP"
    reason = "6.12 accepts a map reaching 2^64 in an mdev-only container, then cannot unmap"
    link = "https://git.kernel.org/... (vfio/type1: handle DMA map/unmap up to the addressable limit)"
    # the predicate: every key given must match the divergence
    target = "linux*"          # glob on the target name
    kernel = "<6.18"           # comparison with the platform's kernel version
    mode = "type1v2"           # stateful mode, or "traces"
    trace = "type1-mdev-*"     # glob on the trace name
    call = "VFIO_IOMMU_UNMAP_DMA"   # ioctl name or call
    requirement = "TYPE1-..."  # a requirement ID of the step
    expected = "ok"            # errno name, or "ok"
    observed = "EINVAL"        # errno name, "ok", or "crash" (the target died answering the step)

A divergence whose predicate matches and whose observed result is the waiver's is
XFAIL; one whose predicate matches but whose observed result differs is FAIL
("differs from waiver"); a waiver that matched nothing in a run is stale."""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass

from vfiospec import errnos

from .trace import kernel_matches, parse_condition

KEYS = {"id", "reason", "link", "target", "kernel", "mode", "trace", "call", "requirement", "expected", "observed"}


class WaiverError(ValueError):
    pass


@dataclass
class Waiver:
    id: str
    reason: str
    link: str = ""
    target: str | None = None
    kernel: str | None = None
    mode: str | None = None
    trace: str | None = None
    call: str | None = None
    requirement: str | None = None
    expected: str | None = None
    observed: str | None = None
    hits: int = 0
    mismatches: int = 0

    def applies(self, ctx: dict) -> bool:
        """The predicate, without `observed`."""
        if self.target and not fnmatch.fnmatch(ctx.get("target", ""), self.target):
            return False
        if self.kernel and not kernel_matches(self.kernel, ctx.get("kernel", (0, 0))):
            return False
        if self.mode and self.mode != ctx.get("mode", "traces"):
            return False
        if self.trace and not fnmatch.fnmatch(ctx.get("trace", ""), self.trace):
            return False
        if self.call and self.call != ctx.get("call"):
            return False
        if self.requirement and self.requirement not in ctx.get("requirements", ()):
            return False
        if self.expected and not _same(self.expected, ctx.get("expected")):
            return False
        return True

    def observed_matches(self, observed: str) -> bool:
        return self.observed is None or _same(self.observed, observed)


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    if a == "ok" or b == "ok":
        return a == b
    try:
        return errnos.same(a, b)
    except KeyError:
        return a == b


def load_waivers(path) -> list[Waiver]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise WaiverError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise WaiverError(f"{path}: {e}") from None
    out = []
    for i, w in enumerate(doc.get("waiver", [])):
        where = f"{path}: waiver[{i}]"
        extra = set(w) - KEYS
        if extra:
            raise WaiverError(f"{where}: unknown keys {sorted(extra)}; expected {sorted(KEYS)}")
        if not w.get("id") or not w.get("reason"):
            raise WaiverError(f"{where}: 'id' and 'reason' are required")
        if "kernel" in w:
            try:
                parse_condition(w["kernel"])
            except ValueError as e:
                raise WaiverError(f"{where} ({w['id']}): kernel: {e}") from None
        for k in ("expected", "observed"):
            if k in w and w[k] not in WORDS[k] and not errnos.is_name(w[k]):
                raise WaiverError(f"{where} ({w['id']}): {k}: {w[k]!r} is neither "
                                  f"{' nor '.join(repr(x) for x in WORDS[k])} nor an errno name")
        out.append(Waiver(**w))
    return out


WORDS = {"expected": ("ok",), "observed": ("ok", "crash")}


def result_word(errno: str | None, error: str | None = None) -> str:
    """A step's outcome as a waiver names it: the errno name, "ok", or "crash"
    when the target gave no answer (`error`: it died answering the step)."""
    if error is not None:
        return "crash"
    return errno or "ok"


def apply(waivers: list[Waiver], ctx: dict, observed: str):
    """(verdict, waiver) for a FAIL step: ("XFAIL", w), ("FAIL", w) when it differs, or ("FAIL", None)."""
    for w in waivers:
        if w.applies(ctx):
            if w.observed_matches(observed):
                w.hits += 1
                return "XFAIL", w
            w.mismatches += 1
            return "FAIL", w
    return "FAIL", None
