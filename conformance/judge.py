"""Judging a step's observed result against its expectation (trace-format.md,
"Expectations" and "Verdicts")."""

from __future__ import annotations

from dataclasses import dataclass, field

from vfiospec import errnos
from vfiospec.reference.numbers import is_int, parse_int

from .trace import kernel_matches

PASS, FAIL, UNSUPPORTED, ERROR, XFAIL = "PASS", "FAIL", "UNSUPPORTED", "ERROR", "XFAIL"


@dataclass
class Observed:
    """What a target gave for a step."""

    ret: int | None = 0
    errno: str | None = None
    out: dict = field(default_factory=dict)
    data: str | None = None
    unsupported: str | None = None
    error: str | None = None
    reqs: list[str] = field(default_factory=list)

    def brief(self) -> str:
        if self.unsupported is not None:
            return f"UNSUPPORTED ({self.unsupported})"
        if self.error is not None:
            return f"ERROR ({self.error})"
        if self.errno:
            return f"errno {self.errno}"
        s = f"ret {self.ret}"
        if self.data is not None:
            s += f", data {self.data!r}"
        return s

    def to_json(self) -> dict:
        d = {"ret": self.ret, "errno": self.errno}
        if self.out:
            d["out"] = self.out
        if self.data is not None:
            d["data"] = self.data
        if self.unsupported is not None:
            d["unsupported"] = self.unsupported
        if self.error is not None:
            d["error"] = self.error
        return d


def select(expect, platform) -> dict | str | None:
    """The alternative whose condition holds on `platform` (first match)."""
    if not isinstance(expect, list):
        return expect
    for a in expect:
        if a == "ok":
            return a
        if "kernel" in a and not kernel_matches(a["kernel"], platform.kernel):
            continue
        if "vfio_container" in a and a["vfio_container"] != platform.vfio_container:
            continue
        if "iommu" in a and a["iommu"] != platform.iommu.kind:
            continue
        return a
    return None


def describe(exp) -> str:
    if exp is None:
        return "(no expectation)"
    if exp == "ok":
        return "ok"
    parts = []
    if "errno" in exp:
        e = exp["errno"]
        parts.append("errno " + (e if isinstance(e, str) else " or ".join(e)))
    elif "ret" in exp:
        parts.append(f"ret {exp['ret']}")
    else:
        parts.append("ok")
    if "out" in exp:
        parts.append("out " + ", ".join(f"{k}={v}" for k, v in exp["out"].items()))
    if "data" in exp:
        parts.append(f"data {exp['data']!r}")
    return ", ".join(parts)


def _get(out: dict, dotted: str):
    cur = out
    for p in dotted.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return KeyError
        cur = cur[p]
    return cur


def _same_value(want, got) -> bool:
    if want.__class__ is int and got.__class__ is int:     # the common case, no parsing
        return want == got
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(_same_value(a, b) for a, b in zip(want, got))
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _same_value(v, got[k]) for k, v in want.items())
    if is_int(want) and (isinstance(got, int) or is_int(got)):
        return parse_int(want) == parse_int(got)
    return want == got


def judge(exp, obs: Observed, saved: dict | None = None) -> tuple[str, str]:
    """(verdict, reason) for one step."""
    if obs.unsupported is not None:
        return UNSUPPORTED, obs.unsupported
    if obs.error is not None:
        return ERROR, obs.error
    if exp is None:
        return PASS, "recorded"
    if exp == "ok":
        if obs.errno is not None:
            return FAIL, f"expected success, got errno {obs.errno}"
        return PASS, ""
    want_errno = exp.get("errno")
    if want_errno is not None:
        names = [want_errno] if isinstance(want_errno, str) else want_errno
        if obs.errno is None:
            return FAIL, f"expected errno {' or '.join(names)}, the call succeeded (ret {obs.ret})"
        if not any(errnos.same(n, obs.errno) for n in names):
            return FAIL, f"expected errno {' or '.join(names)}, got {obs.errno}"
    else:
        if obs.errno is not None:
            return FAIL, f"expected success, got errno {obs.errno}"
        if "ret" in exp:
            want = exp["ret"]
            if isinstance(want, str) and want.startswith("$") and saved is not None:
                want = saved.get(want[1:], want)
            if not _same_value(want, obs.ret):
                return FAIL, f"expected ret {exp['ret']}, got {obs.ret}"
    if "data" in exp and exp["data"] != obs.data:
        return FAIL, f"expected data {exp['data']!r}, got {obs.data!r}"
    for k, want in exp.get("out", {}).items():
        if isinstance(want, str) and want.startswith("$") and saved is not None:
            want = saved.get(want[1:], want)
        got = _get(obs.out, k)
        if got is KeyError:
            return FAIL, f"expected out.{k} = {want}, the target reported no such field"
        if not _same_value(want, got):
            return FAIL, f"expected out.{k} = {want}, got {hex(got) if isinstance(got, int) else got}"
    return PASS, ""
