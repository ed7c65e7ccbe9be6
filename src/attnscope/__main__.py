"""``python -m attnscope`` runs the CLI."""

import sys

from attnscope.cli import main

sys.exit(main())
