"""``python -m soniq_ref.cli``: the same as the ``soniq`` command."""

import sys

from . import main

sys.exit(main())
