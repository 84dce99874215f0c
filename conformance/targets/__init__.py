"""Conformance targets: everything a trace can run against, behind one interface.

    reference        the executable reference (vfiospec.reference)
    exec:COMMAND     any program speaking PROTOCOL.md on stdin/stdout
    linux[:CONFIG]   the running kernel through real ioctls
    mutant:NAME      the reference with one seeded bug
"""

from __future__ import annotations

from .base import Session, Target, TargetError, Unsupported


def get_target(spec: str) -> Target:
    """The target a `--target` value names."""
    if spec == "reference":
        from .reference import ReferenceTarget
        return ReferenceTarget()
    if spec.startswith("exec:"):
        from .exec import ExecTarget
        return ExecTarget(spec[5:])
    if spec == "linux" or spec.startswith("linux:"):
        from .linux import LinuxTarget
        return LinuxTarget(spec[6:] or None)
    if spec.startswith("mutant:"):
        from .mutant import MutantTarget
        return MutantTarget(spec[7:])
    raise TargetError(f"unknown target {spec!r}; expected reference, exec:COMMAND, linux[:CONFIG] or mutant:NAME")


__all__ = ["Session", "Target", "TargetError", "Unsupported", "get_target"]
