"""``python -m shmsession.cli``: the ``shmsession`` command line, like ``python -m shmsession``."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
