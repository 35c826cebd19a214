"""`python -m pool` runs the `pool` command."""

import sys

from pool.cli import main

sys.exit(main())
