"""``python -m hwnas.cli``: the ``hwnas`` command."""

import sys

from hwnas.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
