"""``python -m helpers <command>``: the course tooling (see :mod:`helpers.tooling.cli`)."""

import sys

from .tooling.cli import main

if __name__ == "__main__":
    sys.exit(main())
