"""The target interface: a Target opens one Session per trace; a Session performs
normalised steps (steps.normalize) and answers with a judge.Observed."""

from __future__ import annotations

from vfiospec.conformance.judge import Observed


class TargetError(Exception):
    """The target (or the harness talking to it) broke."""


from vfiospec.reference.errors import Unmodelled


class Unsupported(Unmodelled):
    """The target cannot perform this step or provide this platform (the reference's
    Unmodelled is one case of it)."""


class Session:
    def perform(self, step: dict) -> Observed:
        raise NotImplementedError

    def state(self):
        """The abstract state after the last step, where the target can tell it (or None)."""
        return None

    def close(self) -> None:
        pass


class Target:
    name = "target"
    #: the trace-format platform the target *is*, or None when it can simulate any
    platform: dict | None = None

    def begin(self, trace) -> Session:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"target": self.name}

    def shutdown(self) -> None:
        pass
