"""``python -m annt ...``: the ``annt`` command without its console script (e.g. PYTHONPATH=src)."""

import sys

from annt.cli.main import main

sys.exit(main())
