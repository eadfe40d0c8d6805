"""``python -m bitnet.cli``: the ``bitnet`` command."""

from __future__ import annotations

import sys

from bitnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
