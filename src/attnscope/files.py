"""Writing files safely: atomically, and with one clear sentence when the system says no.

Every file attnscope writes goes through :func:`atomic_write`: the bytes go to a temporary file
in the same folder, are flushed to disk, and the temporary file is renamed over the target.
A failure, Ctrl-C or a kill at any moment leaves either the previous file whole or the new one
whole, never half a file, and no temporary file is left behind (except after SIGKILL, which no
process can clean up after; such leftovers are hidden dot-files named ``.NAME.*.tmp``).

    with atomic_write("page.html", "w") as fh:
        fh.write(html)

    write_text("notes.txt", "hello")
    write_bytes("figure.png", png_bytes)
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from attnscope.errors import AttnscopeError

__all__ = ["atomic_write", "check_writable", "describe_os_error", "write_bytes", "write_text"]


def describe_os_error(err: OSError) -> str:
    """The reason in an ``OSError``, in words a person can act on (no errno numbers)."""
    reasons = {
        errno.EACCES: "permission denied",
        errno.EPERM: "the operation is not permitted",
        errno.EROFS: "the file system is read-only",
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.ENAMETOOLONG: "the file name is too long",
        errno.EISDIR: "it is a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.ENOENT: "the folder does not exist",
        errno.EEXIST: "it already exists",
        errno.EXDEV: "the folder is on another file system",
    }
    return reasons.get(err.errno or 0, (err.strerror or type(err).__name__).lower())


def check_writable(path: str | os.PathLike[str], what: str = "the file", *,
                   probe: bool = False) -> Path:
    """Fail early, in one sentence, when ``path`` clearly cannot be written.

    Checks that the folder exists and is a folder, and that ``path`` is not a folder. With
    ``probe``, also creates and removes an empty temporary file in the folder, which catches
    read-only and special file systems (/proc) before minutes of work are spent; the command
    line does this before loading a model. :func:`atomic_write` still reports any error the
    system gives later.
    """
    path = Path(path)
    parent = path.parent
    try:
        encoded = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate, from Python text or a badly decoded name
        encoded = b"\0"
    if b"\0" in encoded:  # the system cannot take it either
        raise AttnscopeError(
            f"Cannot write {what} {str(path)!a}: the path holds characters that cannot be "
            "a file name."
        )
    if len(os.fsencode(path.name)) > 255 or len(encoded) >= 4096:
        raise AttnscopeError(f"Cannot write {what} '{path}': the file name is too long.")
    try:
        if path.is_dir():
            raise AttnscopeError(f"Cannot write {what} '{path}': it is a folder.")
        if not parent.exists():
            raise AttnscopeError(
                f"Cannot write {what} '{path}': folder '{parent}' does not exist."
            )
        if not parent.is_dir():
            raise AttnscopeError(f"Cannot write {what} '{path}': '{parent}' is not a folder.")
    except OSError as err:  # a path too long as a whole, a loop of links...
        raise AttnscopeError(f"Cannot write {what} '{path}': {describe_os_error(err)}.") from None
    if probe:
        try:
            with tempfile.NamedTemporaryFile(prefix=".attnscope-probe.", dir=parent):
                pass
        except OSError as err:
            raise AttnscopeError(
                f"Cannot write {what} '{path}': {_creation_error(err)}."
            ) from None
    return path


def _creation_error(err: OSError) -> str:
    """Why a new file could not be made in a folder that exists."""
    # A folder that exists yet has "no such file" for a new name: /proc, /sys...
    if err.errno == errno.ENOENT:
        return "the folder does not accept new files"
    return describe_os_error(err)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, what: str = "the file",
    encoding: str = "utf-8",
) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; rename it over ``path`` on success.

    Args:
        path: the file to (re)place.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, in ``encoding``; a character the encoding
            cannot hold, such as a lone surrogate in a token, is written as its ``\\udcxx``
            escape, so it shows as text instead of failing the write).
        what: how to name the file in an error message ("the page", "the trace"...).

    Raises:
        AttnscopeError: the folder is missing, read-only, the name is too long, the disk is
            full... in one sentence. The previous file, if any, is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes with mode 'w' or 'wb', not {mode!r}")
    path = check_writable(path, what)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:200]}.", suffix=".tmp",
                                        dir=path.parent)
    except OSError as err:
        raise AttnscopeError(f"Cannot write {what} '{path}': {_creation_error(err)}.") from None
    tmp = Path(tmp_name)
    done = False
    try:
        kwargs: dict[str, Any] = (
            {"encoding": encoding, "errors": "backslashreplace", "newline": ""}
            if mode == "w" else {})
        with os.fdopen(fd, mode, **kwargs) as handle, _interrupts_kept():
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _keep_permissions(path, tmp)
        os.replace(tmp, path)
        done = True
    except OSError as err:
        raise AttnscopeError(
            f"Cannot write {what} '{path}': {describe_os_error(err)}."
        ) from None
    finally:
        if not done:
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def _interrupts_kept() -> Iterator[None]:
    """Make sure Ctrl-C during a write ends as ``KeyboardInterrupt``.

    Ctrl-C raises ``KeyboardInterrupt`` wherever Python happens to be. Inside a library's
    compiled code (matplotlib's renderer, for one) that error can be caught and replaced by
    an unrelated one ("ValueError: Invalid affine transformation matrix") or swallowed. While
    the file is written, the SIGINT handler also notes each interrupt it raises, so the write
    ends as the interrupt it was, with the previous file left in place.
    """
    previous = signal.getsignal(signal.SIGINT)
    if (not callable(previous)
            or threading.current_thread() is not threading.main_thread()):
        yield  # only the main thread can handle signals; SIG_IGN / SIG_DFL need no help
        return
    interrupted = False

    def note_and_pass_on(signum: int, frame: FrameType | None) -> Any:
        nonlocal interrupted
        try:
            return previous(signum, frame)
        except KeyboardInterrupt:  # (a handler may also put the interrupt off: not noted)
            interrupted = True
            raise

    signal.signal(signal.SIGINT, note_and_pass_on)
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        if interrupted:
            raise KeyboardInterrupt from err
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:  # swallowed somewhere inside: the write is not what the person asked for
        raise KeyboardInterrupt


def _keep_permissions(path: Path, tmp: Path) -> None:
    """Give the new file the old file's permission bits, or the usual ones for a new file
    (mkstemp creates 0600 files; a page or figure is normally readable by others)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)


def write_text(path: str | os.PathLike[str], text: str, *, what: str = "the file") -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", what=what) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, what: str = "the file") -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb", what=what) as handle:
        handle.write(data)
    return Path(path)
