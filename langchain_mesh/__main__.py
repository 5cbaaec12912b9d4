"""``python -m langchain_mesh``: the ``mesh`` command."""

import sys

from .cli import main

sys.exit(main())
