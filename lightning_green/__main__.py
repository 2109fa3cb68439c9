"""``python -m lightning_green``: the ``lightning-green`` command."""

import sys

from lightning_green.cli import main

if __name__ == "__main__":
    sys.exit(main())
