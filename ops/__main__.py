"""``python -m ops``: the connector's command line (see ``ops.cli``)."""

import sys

from ops.cli import main

sys.exit(main())
