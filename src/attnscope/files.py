"""Writing files safely: atomically, and with one clear sentence when the system says no.

Every file attnscope writes goes through :func:`atomic_write`: the bytes go to a temporary file
in the same folder, are flushed to disk, and the temporary file is renamed over the target.
A failure, Ctrl-C or a kill at any moment leaves either the previous file whole or the new one
whole, never half a file, and no temporary file is left behind. A kill (SIGKILL, power loss)
leaves a hidden ``.NAME.*.tmp`` that no process can remove at that moment: the next save to
the same NAME removes it.

    with atomic_write("page.html", "w") as fh:
        fh.write(html)

    write_text("notes.txt", "hello")
    write_bytes("figure.png", png_bytes)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

from attnscope.errors import AttnscopeError

try:
    import fcntl
except ImportError:  # Windows: no flock; stale temporaries are left as they are
    fcntl = None  # type: ignore[assignment]

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
    # Ctrl-C is held back while the temporary file is made, renamed or removed, and acts at
    # once only while the caller writes: an interrupt never strands a temporary file.
    with _InterruptGuard() as guard:
        _remove_stale_temporaries(path)
        fd, tmp = _locked_temporary(path, what)
        done = False
        try:
            kwargs: dict[str, Any] = (
                {"encoding": encoding, "errors": "backslashreplace", "newline": ""}
                if mode == "w" else {})
            with os.fdopen(fd, mode, **kwargs) as handle:
                with guard.live():
                    yield handle
                handle.flush()
                os.fsync(handle.fileno())
                _keep_permissions(path, tmp)
                os.replace(tmp, path)
                done = True  # (the lock goes with the handle's close)
        except OSError as err:
            raise AttnscopeError(
                f"Cannot write {what} '{path}': {describe_os_error(err)}."
            ) from None
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _temporary_prefix(path: Path) -> str:
    return f".{path.name[:200]}."


def _locked_temporary(path: Path, what: str) -> tuple[int, Path]:
    """A new temporary file beside ``path``, open and locked (see
    :func:`_remove_stale_temporaries`); returns its descriptor and path."""
    while True:
        try:
            fd, name = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp",
                                        dir=path.parent)
        except OSError as err:
            raise AttnscopeError(
                f"Cannot write {what} '{path}': {_creation_error(err)}."
            ) from None
        if fcntl is None:
            return fd, Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another save may have taken the file for stale between mkstemp and the lock.
            if os.stat(name).st_ino == os.fstat(fd).st_ino:
                return fd, Path(name)
        except OSError:
            pass
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove temporary files of ``path``'s own naming (``.NAME.XXXXXXXX.tmp``) that no live
    process holds: the leftovers of a save that was killed (SIGKILL, power loss).

    A save holds an exclusive lock (flock) on its temporary file until it is renamed; the
    system drops the lock when the process dies, so an unlocked one is a leftover.
    """
    if fcntl is None:
        return
    pattern = re.compile(re.escape(_temporary_prefix(path)) + r"[a-z0-9_]{8}\.tmp")
    try:
        names = [entry.name for entry in os.scandir(path.parent)
                 if pattern.fullmatch(entry.name)]
    except OSError:
        return
    for name in names:
        candidate = path.parent / name
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(candidate, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                candidate.unlink()
        except OSError:
            pass  # held by a live save, already gone, or not ours to remove
        finally:
            os.close(fd)


class _InterruptGuard:
    """Hold Ctrl-C back while a save does its bookkeeping; pass it on while the caller writes.

    Outside :meth:`live`, an interrupt is only noted and raised as ``KeyboardInterrupt`` when
    the guard ends (the temporary file removed, or the new file in place). Inside, it acts at
    once. Ctrl-C can also land inside a library's compiled code (matplotlib's renderer, for
    one) and be caught there and replaced by an unrelated error ("ValueError: Invalid affine
    transformation matrix") or swallowed: an interrupt the handler raised is noted, so the
    write still ends as the interrupt it was, with the previous file left in place.
    """

    def __init__(self) -> None:
        self.previous: Any = None
        self.active = False
        self.held = False  # an interrupt came while held back
        self.raised = False  # the previous handler raised KeyboardInterrupt while live
        self.is_live = False

    def __enter__(self) -> _InterruptGuard:
        previous = signal.getsignal(signal.SIGINT)
        # only the main thread can handle signals; SIG_IGN / SIG_DFL need no help
        if callable(previous) and threading.current_thread() is threading.main_thread():
            self.previous, self.active = previous, True
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> Any:
        if not self.is_live:
            self.held = True
            return None
        try:
            return self.previous(signum, frame)
        except KeyboardInterrupt:  # (a handler may also put the interrupt off: not noted)
            self.raised = True
            raise

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        self.is_live = True
        try:
            yield
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            if self.raised:
                raise KeyboardInterrupt from err
            raise
        finally:
            self.is_live = False
        if self.raised:  # swallowed somewhere inside: the write is not what was asked for
            raise KeyboardInterrupt

    def __exit__(self, kind: Any, err: Any, tb: Any) -> None:
        if not self.active:
            return
        signal.signal(signal.SIGINT, self.previous)
        if self.held and not isinstance(err, KeyboardInterrupt):
            # the interrupt held back, handled as it would have been without the guard
            self.previous(signal.SIGINT, None)


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
