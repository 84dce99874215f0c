import sys

from vfiospec.cli import main

sys.exit(main())
