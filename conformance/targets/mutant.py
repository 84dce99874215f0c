"""`mutant:NAME`: the reference with one seeded bug from the catalog
(conformance/mutants.py), served in its own process so that the lockstep
reference beside it stays unmutated."""

from __future__ import annotations

import sys

from .base import TargetError
from .exec import ExecTarget


class MutantTarget(ExecTarget):
    def __init__(self, name: str, **kw):
        from vfiospec.conformance.mutants import CATALOG
        if name not in CATALOG:
            raise TargetError(f"unknown mutant {name!r}; `vfiospec mutants --list` lists the catalog")
        super().__init__(f"{sys.executable} -m vfiospec.conformance.examples.reference_server --mutant {name}", **kw)
        self.name = f"mutant:{name}"
