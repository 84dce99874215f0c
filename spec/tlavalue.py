"""Parse the TLA+ values TLC prints in states (counterexamples, ``-dump``) into Python.

Integers -> int, strings -> str, TRUE/FALSE -> bool, model values -> str,
sets -> frozenset (as a sorted tuple-backed ``TlaSet``), sequences -> tuple,
records and functions -> dict.  Only the printed forms TLC 2.15 uses are read:
``{..}``, ``<<..>>``, ``[f |-> v, ..]``, ``(k :> v @@ ..)``.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<op><<|>>|\|->|:>|@@|[{}\[\](),])|(?P<id>[A-Za-z_][A-Za-z0-9_]*))""")


class TlaParseError(ValueError):
    pass


def _tokens(text: str):
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise TlaParseError(f"cannot read TLA+ value at {text[pos:pos + 40]!r}")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def parse_value(text: str):
    toks = _tokens(text)
    val, i = _parse(toks, 0)
    if i != len(toks):
        raise TlaParseError(f"trailing text in TLA+ value {text!r}")
    return val


def _expect(toks, i, op):
    if i >= len(toks) or toks[i] != ("op", op):
        raise TlaParseError(f"expected {op!r} at token {i}: {toks[i:i + 3]}")
    return i + 1


def _parse(toks, i):
    kind, tok = toks[i]
    if kind == "num":
        return int(tok), i + 1
    if kind == "str":
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape"), i + 1
    if kind == "id":
        if tok == "TRUE":
            return True, i + 1
        if tok == "FALSE":
            return False, i + 1
        return tok, i + 1
    if tok == "{":
        items, i = _list(toks, i + 1, "}")
        return frozenset(items), i
    if tok == "<<":
        items, i = _list(toks, i + 1, ">>")
        return tuple(items), i
    if tok == "[":
        rec = {}
        i += 1
        if toks[i] == ("op", "]"):
            return rec, i + 1
        while True:
            key = toks[i][1]
            i = _expect(toks, i + 1, "|->")
            rec[key], i = _parse(toks, i)
            if toks[i] == ("op", ","):
                i += 1
                continue
            return rec, _expect(toks, i, "]")
    if tok == "(":
        fn = {}
        i += 1
        while True:
            key, i = _parse(toks, i)
            i = _expect(toks, i, ":>")
            val, i = _parse(toks, i)
            fn[_hashable(key)] = val
            if toks[i] == ("op", "@@"):
                i += 1
                continue
            return fn, _expect(toks, i, ")")
    raise TlaParseError(f"unexpected token {tok!r}")


def _hashable(v):
    if isinstance(v, dict):
        return tuple(sorted(v.items()))
    return v


def _list(toks, i, close):
    items = []
    if toks[i] == ("op", close):
        return items, i + 1
    while True:
        v, i = _parse(toks, i)
        items.append(_hashable(v) if close == "}" else v)
        if toks[i] == ("op", ","):
            i += 1
            continue
        return items, _expect(toks, i, close)


_VARLINE = re.compile(r"^/\\ (\w+) = ", re.M)


def parse_state(text: str) -> dict:
    """A state as TLC prints it (``/\\ x = 1`` lines, or ``x = 1`` for one variable)."""
    text = text.strip()
    if not text.startswith("/\\"):
        name, _, val = text.partition(" = ")
        return {name.strip(): parse_value(val)}
    parts = _VARLINE.split(text)
    state = {}
    for k in range(1, len(parts), 2):
        state[parts[k]] = parse_value(parts[k + 1])
    return state


def to_tla(v) -> str:
    """Python value -> TLA+ expression text (the inverse of ``parse_value`` for the
    shapes the trace translator builds: int, str, bool, tuple, dict with str keys)."""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        return "<<" + ", ".join(to_tla(x) for x in v) + ">>"
    if isinstance(v, (set, frozenset)):
        return "{" + ", ".join(sorted(to_tla(x) for x in v)) + "}"
    if isinstance(v, dict):
        return "[" + ", ".join(f"{k} |-> {to_tla(x)}" for k, x in v.items()) + "]"
    raise TypeError(f"no TLA+ form for {v!r}")
