"""``python -m shared``: the connector's command line (see ``shared.cli``)."""

import sys

from shared.cli import main

sys.exit(main())
