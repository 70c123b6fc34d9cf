"""``python -m tui [--readonly]``: the same as ``pachctl tui``."""

import sys

from pachctl.cli.cmd_tui import main

sys.exit(main())
