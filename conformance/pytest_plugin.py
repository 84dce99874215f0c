"""pytest plugin (entry point `vfiospec`): `--vfiospec-target T` chooses the target
the shipped state machines and the `vfiospec_target` fixture run against."""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("vfiospec")
    group.addoption("--vfiospec-target", default="reference", metavar="TARGET",
                    help="vfiospec conformance target: reference, exec:COMMAND, linux[:CONFIG], mutant:NAME")


@pytest.fixture
def vfiospec_target(request):
    """The conformance target named by --vfiospec-target (default: the reference)."""
    from vfiospec.conformance.targets import get_target
    t = get_target(request.config.getoption("--vfiospec-target"))
    yield t
    t.shutdown()
