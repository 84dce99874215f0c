"""Trace format version 1 (../shared/trace-format.md): loading and validation.

`load_trace(path)` parses a file, checks it against the JSON Schema shipped as
trace_schema.json and then against the uAPI (ioctl names, struct fields, flag and
constant names, errno names, names defined before use).  Every problem is a
TraceError naming the file, the step and the field, and saying what was expected.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from vfiospec import errnos
from vfiospec.reference import uapi
from vfiospec.reference.numbers import is_int
from vfiospec.reference.platform import PlatformError, parse_platform

from .steps import ADDR as _ADDR, PLACEHOLDER as _PLACEHOLDER

KAPI_ARGS = {
    "vfio_pin_pages": {"device", "iova", "npage", "prot", "as"},
    "vfio_unpin_pages": {"device", "iova", "npage"},
    "vfio_dma_rw": {"device", "iova", "length", "write"},
}
CONDITIONS = ("kernel", "vfio_container", "iommu")


class TraceError(Exception):
    """Bad input: `path`, `step` (index or None) and `field` say where."""

    def __init__(self, path, step, field, message):
        self.path, self.step, self.field, self.message = str(path), step, field, message
        where = self.path
        if step is not None:
            where += f": step {step}"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


@dataclass
class Trace:
    path: str
    doc: dict
    name: str
    steps: list[dict]
    platform: dict = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    description: str = ""
    source: str = ""
    stop_on_fail: bool = False
    _prepared: list | None = field(default=None, repr=False, compare=False)
    _platform: object = field(default=None, repr=False, compare=False)

    @property
    def parsed_platform(self):
        """The platform with its defaults (parsed once)."""
        if self._platform is None:
            self._platform = parse_platform(self.platform)
        return self._platform

    def prepared(self) -> list:
        """Per step: (step, its normalised form when it needs no saved value, the expectation
        that applies on this trace's platform).  Computed once per trace."""
        if self._prepared is None:
            from .judge import select
            from .steps import normalize, uses_saved
            plat = self.parsed_platform
            self._prepared = [(st, None if uses_saved(st) else normalize(st, {}),
                               select(st["expect"], plat) if "expect" in st else None) for st in self.steps]
        return self._prepared


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("vfiospec.conformance").joinpath("trace_schema.json").read_text())


@lru_cache(maxsize=1)
def _validator():
    import jsonschema
    return jsonschema.Draft202012Validator(schema())


def _path_of(error) -> tuple[int | None, str]:
    parts = list(error.absolute_path)
    step = None
    if len(parts) >= 2 and parts[0] == "steps" and isinstance(parts[1], int):
        step = parts[1]
        parts = parts[2:]
    return step, ".".join(str(p) for p in parts)


def _schema_error(path, doc, error) -> TraceError:
    # The innermost, most specific error is the useful one.
    best = error
    if error.context:
        import jsonschema
        best = jsonschema.exceptions.best_match(error.context) or error
    step, fld = _path_of(best)
    v = best.validator
    if v == "additionalProperties":
        extra = sorted(set(best.instance) - set(best.schema.get("properties", {})))
        allowed = sorted(best.schema.get("properties", {}))
        name = extra[0] if extra else "?"
        fld = f"{fld}.{name}" if fld else name
        msg = f"unknown key {name!r}; expected one of {allowed}"
    elif v == "required":
        msg = best.message.replace("is a required property", "is required")
    elif v == "enum":
        msg = f"{best.instance!r} is not one of {best.validator_value}"
    elif v == "const":
        msg = f"expected {best.validator_value!r}, got {best.instance!r}"
    elif v == "type":
        msg = f"expected {best.validator_value}, got {type(best.instance).__name__} {best.instance!r}"
    else:
        msg = best.message
    return TraceError(path, step, fld, msg)


def parse_trace(doc, path="<trace>") -> Trace:
    """Validate a decoded trace document; raise TraceError on the first problem."""
    if not isinstance(doc, dict):
        raise TraceError(path, None, "", "expected a JSON object with vfiospec, name and steps")
    errs = sorted(_validator().iter_errors(doc), key=lambda e: (list(e.absolute_path)[:2], e.path))
    if errs:
        raise _schema_error(path, doc, errs[0])
    try:
        platform = parse_platform(doc.get("platform"))
    except PlatformError as e:
        raise TraceError(path, None, f"platform.{e.field}", str(e).split(": ", 1)[1]) from None
    except ValueError as e:
        raise TraceError(path, None, "platform", str(e)) from None
    t = Trace(path=str(path), doc=doc, name=doc["name"], steps=doc["steps"], platform=doc.get("platform") or {},
              requirements=doc.get("requirements", []), description=doc.get("description", ""),
              source=doc.get("source", ""), stop_on_fail=doc.get("stop_on_fail", False))
    _check_semantics(t, platform)
    return t


def load_trace(path) -> Trace:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise TraceError(p, None, "", f"cannot read: {e.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(p, None, "", f"bad JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return parse_trace(doc, p)


def find_traces(paths) -> list[Path]:
    """Trace files named by PATHs: files as given, directories searched for *.json."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.json") if q.is_file()))
        else:
            out.append(p)
    return out


# ------------------------------------------------------------------ semantics


def _check_semantics(t: Trace, platform) -> None:
    fds: set[str] = set()
    bufs: set[str] = set()
    saved: set[str] = set()
    names = set(platform.groups) | set(platform.devices)
    mdevs: set[str] = set()
    for i, step in enumerate(t.steps):
        E = lambda fld, msg: TraceError(t.path, i, fld, msg)  # noqa: E731

        def check_saved(v, fld):
            if isinstance(v, str) and v.startswith("$"):
                if v[1:] not in saved:
                    raise E(fld, f"{v} is not defined: no earlier step saves {v[1:]!r} (add \"save\": {{\"<field>\": \"{v[1:]}\"}})")
                return True
            return False

        def check_str(s, fld):
            for m in _PLACEHOLDER.finditer(s):
                n = m.group(1)
                if n not in names and n not in mdevs:
                    raise E(fld, f"placeholder {{{n}}} names no group, device or mdev of the platform "
                                 f"(known: {sorted(names | mdevs)})")

        def check_fd(v, fld):
            if check_saved(v, fld):
                return
            if isinstance(v, str) and v not in fds:
                raise E(fld, f"fd {v!r} is not open: no earlier step opened it with \"as\": {v!r}")

        def check_addr(v, fld):
            if check_saved(v, fld) or isinstance(v, int):
                return
            if isinstance(v, str):
                if is_int(v):
                    return
                m = _ADDR.match(v.strip())
                if not m:
                    raise E(fld, f"expected a buffer name (\"buf\", \"buf+0x1000\") or a number, got {v!r}")
                if m.group(1) not in bufs:
                    raise E(fld, f"buffer {m.group(1)!r} is not defined: no earlier mmap step has \"as\": {m.group(1)!r}")
                return
            raise E(fld, f"expected a buffer name or a number, got {v!r}")

        def check_num(v, fld):
            if check_saved(v, fld):
                return
            if not is_int(v):
                raise E(fld, f"expected a number (integer, \"0x..\", \"U64_MAX\"), got {v!r}")

        call = step["call"]
        if call == "open":
            check_str(step["path"], "path")
            fds.add(step["as"])
        elif call == "close":
            check_fd(step["fd"], "fd")
        elif call == "mmap":
            check_num(step["length"], "length")
            bufs.add(step["as"])
        elif call == "munmap":
            check_addr(step["addr"], "addr")
        elif call in ("read", "write"):
            check_str(step["path"], "path")
            if call == "write" and "as" in step:
                mdevs.add(step["as"])
        elif call == "kapi":
            allowed = KAPI_ARGS[step["fn"]] | {"call", "fn", "expect", "save", "comment"}
            for k in step:
                if k not in allowed:
                    raise E(k, f"unknown key for {step['fn']}; expected one of {sorted(allowed - {'call'})}")
            for k in ("iova", "npage", "length"):
                if k in step:
                    check_num(step[k], k)
            if "device" in step:
                dev = step["device"]
                check_str(dev if "{" in dev else "{" + dev + "}", "device")
        elif call == "ioctl":
            check_fd(step["fd"], "fd")
            cmd = step["cmd"]
            io = uapi.IOCTLS.get(cmd)
            if io is None:
                close = [n for n in uapi.IOCTLS if n.split("_")[-1] == cmd.split("_")[-1]][:4]
                raise E("cmd", f"unknown ioctl {cmd!r}" + (f"; did you mean one of {close}?" if close else
                                                           "; expected an ioctl name of vfio.h or iommufd.h"))
            _check_arg(io, step.get("arg"), E, check_fd, check_addr, check_num, check_str, check_saved)
            if "as" in step:
                fds.add(step["as"])
        if "expect" in step:
            _check_expect(step["expect"], step, E)
        for k, v in step.get("save", {}).items():
            if call == "ioctl" and k != "ret":
                io = uapi.IOCTLS[step["cmd"]]
                if io.struct is None or not _has_field(io.struct, k):
                    raise E(f"save.{k}", f"{step['cmd']} has no output field {k!r}")
            saved.add(v)


def _has_field(st, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    if head == "caps" and st.has("cap_offset"):
        return True
    if not st.has(head):
        return False
    f = st.field(head)
    if rest:
        return isinstance(f.type, uapi.Struct) and _has_field(f.type, rest)
    return True


def _check_arg(io, arg, E, check_fd, check_addr, check_num, check_str, check_saved):
    kind = io.arg
    if kind == "none":
        if arg is not None:
            raise E("arg", f"{io.name} takes no argument")
        return
    if arg is None:
        if kind == "struct":
            return
        raise E("arg", {"int": "expected a number or a constant name", "fd": "expected an fd name",
                        "string": "expected a device name string (\"{dev0}\")"}[kind])
    if kind == "int":
        if isinstance(arg, str) and not is_int(arg) and not arg.startswith("$"):
            if arg not in uapi.CONSTANTS:
                raise E("arg", f"unknown constant {arg!r}; expected a number or a name like \"VFIO_TYPE1v2_IOMMU\"")
        elif not isinstance(arg, (int, str)):
            raise E("arg", "expected a number or a constant name")
        else:
            check_num(arg, "arg") if not (isinstance(arg, str) and arg in uapi.CONSTANTS) else None
        return
    if kind == "fd":
        if isinstance(arg, int):
            return
        check_fd(arg, "arg")
        return
    if kind == "string":
        if not isinstance(arg, str):
            raise E("arg", "expected a device name string (\"{dev0}\")")
        check_str(arg, "arg")
        return
    if not isinstance(arg, dict):
        raise E("arg", f"expected an object with the fields of struct {io.struct.name}")
    _check_struct(io.struct, arg, "arg", E, check_fd, check_addr, check_num, check_saved)


def _check_struct(st, obj, prefix, E, check_fd, check_addr, check_num, check_saved):
    for k, v in obj.items():
        fld = f"{prefix}.{k}"
        if not st.has(k):
            raise E(fld, f"struct {st.name} has no field {k!r}; its fields are {[f.name for f in st.fields]}")
        f = st.field(k)
        if isinstance(f.type, uapi.Struct):
            if not isinstance(v, dict):
                raise E(fld, f"expected an object with the fields of struct {f.type.name}")
            _check_struct(f.type, v, fld, E, check_fd, check_addr, check_num, check_saved)
        elif f.kind == "flags" and isinstance(v, list):
            for j, n in enumerate(v):
                if n not in uapi.CONSTANTS:
                    pre = st.flag_prefix or ""
                    known = [c for c in uapi.CONSTANTS if pre and c.startswith(pre)]
                    raise E(f"{fld}[{j}]", f"unknown flag {n!r}; expected one of {known}")
        elif f.kind == "addr":
            check_addr(v, fld)
        elif f.kind == "fd":
            if not isinstance(v, int) and not is_int(v):
                check_fd(v, fld)
        elif f.kind == "array" and isinstance(v, list):
            for j, el in enumerate(v):
                if not isinstance(el, dict):
                    raise E(f"{fld}[{j}]", f"expected an object with the fields of struct {f.array_of.name}")
                _check_struct(f.array_of, el, f"{fld}[{j}]", E, check_fd, check_addr, check_num, check_saved)
        elif f.kind == "array":
            check_addr(v, fld)
        else:
            check_num(v, fld)


def _check_expect(exp, step, E):
    alts = exp if isinstance(exp, list) else [exp]
    for j, a in enumerate(alts):
        fld = "expect" if not isinstance(exp, list) else f"expect[{j}]"
        if a == "ok":
            continue
        en = a.get("errno")
        for n in ([en] if isinstance(en, str) else en or []):
            if not errnos.is_name(n):
                raise E(f"{fld}.errno", f"unknown errno name {n!r}; expected a Linux errno name like \"EINVAL\"")
        if "ret" in a and not is_int(a["ret"]) and not str(a["ret"]).startswith("$"):
            raise E(f"{fld}.ret", f"expected a number, got {a['ret']!r}")
        if "kernel" in a:
            try:
                parse_condition(a["kernel"])
            except ValueError as e:
                raise E(f"{fld}.kernel", str(e)) from None
        if "out" in a and step["call"] == "ioctl":
            st = uapi.IOCTLS[step["cmd"]].struct
            for k in a["out"]:
                if st is None or not _has_field(st, k):
                    raise E(f"{fld}.out.{k}", f"{step['cmd']} has no output field {k!r}")
        if isinstance(exp, list) and j < len(alts) - 1 and not any(c in a for c in CONDITIONS):
            raise E(fld, "an alternative without a condition must be the last one")


_COND = re.compile(r"^\s*(<=|>=|==|!=|<|>)?\s*([0-9]+(?:\.[0-9]+)?)\s*$")


def parse_condition(text: str):
    m = _COND.match(str(text))
    if not m:
        raise ValueError(f"expected a kernel comparison like \"<6.18\" or \">=6.6\", got {text!r}")
    op = m.group(1) or "=="
    major, _, minor = m.group(2).partition(".")
    return op, (int(major), int(minor or 0))


def kernel_matches(cond: str, version: tuple[int, int]) -> bool:
    op, v = parse_condition(cond)
    return {"<": version < v, "<=": version <= v, ">": version > v, ">=": version >= v,
            "==": version == v, "!=": version != v}[op]
