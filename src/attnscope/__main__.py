"""``python -m attnscope`` and the ``attnscope`` command.

The entry point imports the command line itself, inside the ``try``, so Ctrl-C at any moment
(even while torch and transformers are still being imported) ends with one line, not a
traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Run the ``attnscope`` command; returns its exit status (130 when interrupted)."""
    try:
        from attnscope.cli import main as run

        return run()
    except KeyboardInterrupt:
        print("attnscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
