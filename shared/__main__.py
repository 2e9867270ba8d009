"""``python -m shared …`` still runs the command line the docs name, which lives in ``ops`` (operator
code, never deployed: ``.funcignore`` leaves out ``ops/`` and this file)."""

import sys

from ops.cli import main

sys.exit(main())
