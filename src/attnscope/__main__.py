"""``python -m attnscope`` and the ``attnscope`` command.

The entry point imports the command line itself, inside the ``try``, so Ctrl-C at any moment
(even while torch and transformers are still being imported) ends with one line, not a
traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def main() -> int:
    """Run the ``attnscope`` command; returns its exit status (130 when interrupted)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt_outside_imports)
    try:
        return _run()
    finally:
        _FINISHED.set()  # a Ctrl-C still being deferred has nothing left to interrupt


def _run() -> int:
    try:
        from attnscope.cli import main as run

        return run()
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as err:
        # Ctrl-C that lands inside an import (torch, transformers) can reach us wrapped in
        # another error; it is still the person's Ctrl-C, not a failure.
        if _caused_by_interrupt(err):
            return _interrupted()
        raise


def _interrupt_outside_imports(signum: int, frame) -> None:
    """Ctrl-C, as KeyboardInterrupt, but never in the middle of an import.

    Raised inside an import, the interrupt can land in C++ code that torch runs at import time
    and abort the whole process ("terminate called..."). While an import is running, the
    signal is sent again 50 ms later, until it arrives in attnscope's own code.
    """
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            timer = threading.Timer(0.05, _send_again, (signum,))
            timer.daemon = True
            timer.start()
            return
        frame = frame.f_back
    raise KeyboardInterrupt


_FINISHED = threading.Event()


def _send_again(signum: int) -> None:
    if not _FINISHED.is_set():
        os.kill(os.getpid(), signum)


def _interrupted() -> int:
    print("attnscope: interrupted", file=sys.stderr)
    return 130


def _caused_by_interrupt(err: BaseException | None) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
