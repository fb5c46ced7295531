"""``python -m framefusion``: the same as the ``framefusion`` command."""

import sys

from .cli import main

sys.exit(main())
