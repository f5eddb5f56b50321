"""`python -m rmt_cli` runs the `rmt` command line."""

import sys

from rmt_cli.main import main

sys.exit(main())
