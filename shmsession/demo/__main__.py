"""``python -m shmsession.demo``: run the demo (see :mod:`shmsession.demo`)."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
