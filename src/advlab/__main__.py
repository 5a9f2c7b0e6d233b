"""``python -m advlab``: the same command line as ``advlab``."""

import sys

from advlab.cli import main

sys.exit(main())
