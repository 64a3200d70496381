"""``python -m pecmae_hub``: the ``pecmae`` command."""

import sys

from pecmae_hub.cli import main

sys.exit(main())
