"""``python -m router`` is the same as the ``mirror-router`` command."""

import sys

from router.cli import main

sys.exit(main())
