"""``python -m router`` is the same as the ``mirror-router`` command."""

import sys

from router.cli.main import main

sys.exit(main())
