"""Normalising a trace step for a target (PROTOCOL.md, "A trace"): saved values
substituted, numbers as integers, flag lists and constant names as integers,
argsz/size filled in.  Names only a target can resolve (fds, buffers,
placeholders) are left as they are."""

from __future__ import annotations

import copy
import re

from vfiospec.reference import uapi
from vfiospec.reference.numbers import is_int, parse_int


class UndefinedName(KeyError):
    pass


# `{g0}`, `{dev0.cdev}`, `{m0.group}` in strings; `buf` / `buf+0x1000` in address fields
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\.(group|cdev))?\}")
ADDR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\s*\+\s*(0[xX][0-9a-fA-F]+|[0-9]+))?$")


def buffer_address(v, base_of) -> int:
    """An address field's value: a number, or a buffer name plus an offset, with
    `base_of(name)` giving the buffer's address (KeyError for an unknown name)."""
    if isinstance(v, int):
        return v
    if is_int(v):
        return parse_int(v)
    m = ADDR.match(v.strip())
    if not m:
        raise KeyError(v)
    return base_of(m.group(1)) + (int(m.group(2), 0) if m.group(2) else 0)


def subst(v, saved: dict):
    if isinstance(v, str) and v.startswith("$"):
        if v[1:] not in saved:
            raise UndefinedName(v)
        return saved[v[1:]]
    if isinstance(v, dict):
        return {k: subst(x, saved) for k, x in v.items()}
    if isinstance(v, list):
        return [subst(x, saved) for x in v]
    return v


def uses_saved(v) -> bool:
    """Whether a step (or value) refers to a `$name` saved value."""
    if isinstance(v, str):
        return v.startswith("$")
    if isinstance(v, dict):
        return any(uses_saved(x) for k, x in v.items() if k not in ("expect", "save"))
    if isinstance(v, list):
        return any(uses_saved(x) for x in v)
    return False


def _num(v):
    return parse_int(v) if isinstance(v, (int, str)) and is_int(v) else v


_FIELDS: dict[int, tuple] = {}


def _fields(st: uapi.Struct) -> tuple:
    """(zero values of the scalar fields, nested-struct fields, name -> Field) of a struct, computed once."""
    r = _FIELDS.get(id(st))
    if r is None or r[3] is not st:
        nested = [f for f in st.fields if isinstance(f.type, uapi.Struct)]
        zeros = {f.name: ({} if isinstance(f.type, uapi.Struct) else 0) for f in st.fields}
        by_name = {}
        for f in st.fields:
            by_name.setdefault(f.name, f)      # Struct.field returns the first of a name
        r = _FIELDS[id(st)] = (zeros, nested, by_name, st)
    return r


def _struct(st: uapi.Struct, obj: dict) -> dict:
    """Every field of the struct (absent ones zero, as the trace format says)."""
    zeros, nested, by_name, _ = _fields(st)
    out = dict(zeros)
    for f in nested:
        if f.name not in obj:
            out[f.name] = _struct(f.type, {})
    for k, v in obj.items():
        f = by_name.get(k)
        if f is None:
            raise KeyError(k)
        if isinstance(f.type, uapi.Struct):
            out[k] = _struct(f.type, v)
        elif f.kind == "flags" and isinstance(v, list):
            out[k] = uapi.flag_value(st, v)
        elif f.kind == "array" and isinstance(v, list):
            out[k] = [_struct(f.array_of, e) for e in v]
        elif f.kind in ("addr", "fd", "array"):
            out[k] = _num(v)
        else:
            out[k] = parse_int(v)
    return out


def normalize(step: dict, saved: dict) -> dict:
    """The step as a target receives it."""
    s = {k: subst(v, saved) for k, v in step.items() if k not in ("expect", "save", "comment")}
    call = s["call"]
    if call == "mmap":
        s["length"] = parse_int(s["length"])
    elif call == "kapi":
        for k in ("iova", "npage", "length"):
            if k in s:
                s[k] = parse_int(s[k])
    elif call == "ioctl":
        io = uapi.IOCTLS[s["cmd"]]
        arg = s.get("arg")
        if io.arg == "int" and arg is not None:
            s["arg"] = uapi.CONSTANTS[arg] if isinstance(arg, str) and arg in uapi.CONSTANTS else parse_int(arg)
        elif io.arg == "struct":
            obj = _struct(io.struct, arg or {})
            if not arg or io.size_field not in arg:
                obj[io.size_field] = io.struct.size
            s["arg"] = obj
    return s


def struct_size(cmd: str) -> int:
    io = uapi.IOCTLS[cmd]
    return io.struct.size if io.struct else 0


def deepcopy(v):
    return copy.deepcopy(v)
