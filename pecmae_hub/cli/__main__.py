"""``python -m pecmae_hub.cli``: the ``pecmae`` command (also under ``accelerate launch -m``)."""

import sys

from pecmae_hub.cli import main

sys.exit(main())
