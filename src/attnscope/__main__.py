"""``python -m attnscope`` and the ``attnscope`` command.

The entry point imports the command line itself, inside the ``try``, so Ctrl-C at any moment
(even while torch and transformers are still being imported) ends with one line, not a
traceback. Once the command is done and its output written, Ctrl-C is ignored: what remains is
Python shutting down, and an interrupt there could only print "Exception ignored ..." after
the command's own success.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading


def main() -> int:
    """Run the ``attnscope`` command; returns its exit status (130 when interrupted).

    This is the process's entry point: it leaves Ctrl-C ignored when it returns.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGINT, _interrupt_outside_imports)
    if sys.stdout is not None and not isinstance(sys.stdout, _GuardedOutput):
        sys.stdout = _GuardedOutput(sys.stdout)
    try:
        try:
            status = _run()
            status = _flush_output(status)
        except KeyboardInterrupt:  # (after the command: while its output was flushed)
            status = _interrupted()
        if main_thread:  # done: from here on Ctrl-C has nothing left to stop
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:  # in the last instructions above
        status = _interrupted()
        if main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    finally:
        _FINISHED.set()  # a Ctrl-C still being deferred has nothing left to interrupt
        if isinstance(sys.stdout, _GuardedOutput):
            sys.stdout = sys.stdout._inner
    return status


def _run() -> int:
    try:
        from attnscope.cli import main as run

        return run()
    except KeyboardInterrupt:
        return _interrupted()
    except _OutputFailed as failed:
        return _output_error(failed.err)
    except Exception as err:
        # Ctrl-C that lands inside an import (torch, transformers) can reach us wrapped in
        # another error; it is still the person's Ctrl-C, not a failure.
        if _caused_by_interrupt(err):
            return _interrupted()
        raise


class _OutputFailed(Exception):
    """Standard output refused what the command printed (a full disk, a closed pipe)."""

    def __init__(self, err: OSError) -> None:
        super().__init__(str(err))
        self.err = err


class _GuardedOutput:
    """``sys.stdout`` as it is, except that a failed write or flush is :class:`_OutputFailed`,
    so the command line can tell it from any other error."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            return self._inner.write(text)
        except OSError as err:
            raise _OutputFailed(err) from None

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as err:
            raise _OutputFailed(err) from None

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def _flush_output(status: int) -> int:
    """Write out what the command printed."""
    try:
        sys.stdout.flush()
    except _OutputFailed as failed:
        return _output_error(failed.err)
    except OSError as err:
        return _output_error(err)
    except (AttributeError, ValueError):  # no stdout, or closed
        pass
    return status


def _output_error(err: OSError) -> int:
    """Say why the output could not be written, and let Python's last flush at exit go
    nowhere (it would print the same error again as "Exception ignored")."""
    from attnscope.files import describe_os_error

    reason = describe_os_error(err)
    if err.errno == errno.EPIPE:
        reason = "the program reading it stopped"
    if isinstance(sys.stdout, _GuardedOutput):
        sys.stdout = sys.stdout._inner
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):
        pass
    print(f"attnscope: error: cannot write the output to standard output: {reason}.",
          file=sys.stderr)
    return 2


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
