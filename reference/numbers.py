"""Numbers of the trace format: JSON integers or strings (decimal, 0x hex, U64_MAX, U32_MAX)."""

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
_NAMED = {"U64_MAX": U64_MAX, "U32_MAX": U32_MAX}


def parse_int(v, where: str = "") -> int:
    if isinstance(v, bool):
        raise ValueError(f"{where}: expected a number, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s in _NAMED:
            return _NAMED[s]
        try:
            return int(s, 0) if s.lower().startswith(("0x", "-0x")) else int(s, 10)
        except ValueError:
            pass
    raise ValueError(f"{where}: expected a number (integer, \"0x..\", \"U64_MAX\"), got {v!r}")


def is_int(v) -> bool:
    try:
        parse_int(v)
        return True
    except ValueError:
        return False
