"""``python -m chat``: the same as the ``trio-chat`` command."""

import sys

from chat.cli import main

sys.exit(main())
