"""``python -m tests.e2e``: the end-to-end suite (see :mod:`tests.e2e.suite` and README.md)."""

import sys

from .suite import main

sys.exit(main())
