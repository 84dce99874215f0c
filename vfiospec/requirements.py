"""The requirement registry: every specified behaviour has an ID, a one-line
statement, the seed passage and the kernel file/function it comes from.

The registry is reference/requirements/*.toml, one file per kernel object kind:

    [[req]]
    id = "TYPE1-UNMAP-NO-BISECT"
    text = "A v2 UNMAP_DMA that starts or ends inside a mapping fails with EINVAL and unmaps nothing."
    errno = "EINVAL"                       # optional: the errno it pins
    seed = "vfio.rst: 'Bisecting is not supported ...'"
    kernel = "drivers/vfio/vfio_iommu_type1.c: vfio_dma_do_unmap"
    semantics = [36]                       # optional: entries of kernel-semantics.md
    since = "6.18"                         # optional: version bounds of the behaviour
    until = "6.17"
"""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

ID_RE = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
FIELDS = {"id", "text", "errno", "seed", "kernel", "semantics", "since", "until", "notes"}


@dataclass(frozen=True)
class Requirement:
    id: str
    text: str
    seed: str
    kernel: str
    area: str
    errno: str | None = None
    semantics: tuple[int, ...] = ()
    since: str | None = None
    until: str | None = None
    notes: str = ""


class RegistryError(ValueError):
    pass


@lru_cache(maxsize=1)
def load() -> dict[str, Requirement]:
    """Every requirement, by ID."""
    out: dict[str, Requirement] = {}
    root = resources.files("vfiospec.reference").joinpath("requirements")
    for f in sorted(root.iterdir(), key=lambda p: p.name):
        if not f.name.endswith(".toml"):
            continue
        area = f.name[:-5]
        try:
            doc = tomllib.loads(f.read_text())
        except tomllib.TOMLDecodeError as e:
            raise RegistryError(f"reference/requirements/{f.name}: {e}") from None
        for i, r in enumerate(doc.get("req", [])):
            where = f"reference/requirements/{f.name}: req[{i}]"
            extra = set(r) - FIELDS
            if extra:
                raise RegistryError(f"{where}: unknown keys {sorted(extra)}")
            for k in ("id", "text", "seed", "kernel"):
                if not r.get(k):
                    raise RegistryError(f"{where} ({r.get('id', '?')}): '{k}' is required")
            if not ID_RE.match(r["id"]):
                raise RegistryError(f"{where}: id {r['id']!r} is not AREA-WORDS in capitals")
            if r["id"] in out:
                raise RegistryError(f"{where}: id {r['id']} is also in {out[r['id']].area}.toml")
            out[r["id"]] = Requirement(r["id"], r["text"], r["seed"], r["kernel"], area, r.get("errno"),
                                       tuple(r.get("semantics", ())), r.get("since"), r.get("until"),
                                       r.get("notes", ""))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="vfiospec requirements", description="List the requirement registry.")
    ap.add_argument("pattern", nargs="?", default="", help="only IDs containing this text")
    ap.add_argument("-v", "--verbose", action="store_true", help="with the seed passage and kernel source")
    a = ap.parse_args(argv)
    reqs = load()
    for r in sorted(reqs.values(), key=lambda r: r.id):
        if a.pattern.upper() not in r.id:
            continue
        print(f"{r.id:<44} {r.text}")
        if a.verbose:
            print(f"{'':<44} kernel: {r.kernel}\n{'':<44} seed:   {r.seed}")
    print(f"{len(reqs)} requirements")
    return 0
