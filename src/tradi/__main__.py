"""``python -m tradi``: the same as the ``tradi`` console script."""

import sys

from tradi.cli import main

sys.exit(main())
