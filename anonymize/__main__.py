"""``python -m anonymize``: see :mod:`anonymize.cli`."""

import sys

from anonymize.cli import main

if __name__ == "__main__":
    sys.exit(main())
