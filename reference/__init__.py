"""The executable reference of the VFIO / IOMMUFD user API: a uAPI decoder over a
semantic core, one module per kernel object kind (see dispatch.MODULES)."""

from .errors import Errno
from .kernel import Kernel, Result
from .platform import Platform, parse_platform

__all__ = ["Errno", "Kernel", "Result", "Platform", "parse_platform"]
