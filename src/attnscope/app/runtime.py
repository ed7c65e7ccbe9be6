"""What the explorer holds while it runs: the allowed models, a cache of captures, and the gate
that bounds how many model runs happen at once.

Everything here is plain Python (no web framework), so the limits are tested on their own:

* :class:`Limits` -- every limit a user can set when starting ``attnscope serve``.
* :class:`RunGate` -- at most ``runs`` pieces of work at a time on a thread pool, at most
  ``queue`` more waiting; past that :class:`Busy` at once (the API answers 503 with
  Retry-After). A run that outlives ``timeout_s`` answers :class:`Busy` too; the thread
  finishes its run in the background and keeps its place until then, so a slow run can never
  let more work in than the limits allow.
* :class:`Models` -- the allowlist given at start-up. Requests name a model by its name in
  that list and nothing else: a request can never make the server load a path or a hub model.
  Each model has its own lock, so two threads never run one model at the same time and their
  results never mix.
* :class:`Captures` -- an LRU cache of Traces by (model, text, second text), with what was
  derived from each (views, head table, flow graph), so switching views costs nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from attnscope.app.limits import Limits
from attnscope.errors import AttnscopeError

__all__ = ["Busy", "CaptureEntry", "Captures", "Models", "RunGate", "TooLarge", "check_chars"]

T = TypeVar("T")


class Busy(Exception):
    """The server cannot take this run now: too many waiting, or the run took too long.
    ``retry_after`` is the seconds a client should wait before trying again."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(AttnscopeError):
    """A text over the character or token limit."""


def check_chars(text: str, what: str, limit: int) -> None:
    """Refuse a request's text that is not Unicode, is longer than ``limit`` characters
    (:class:`TooLarge`), or is empty, in one sentence naming ``what`` it is."""
    from attnscope.tokens import check_text

    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AttnscopeError(f"The {what} is not valid Unicode text (it holds a lone "
                             "surrogate character).") from None
    if len(text) > limit:
        raise TooLarge(f"The {what} has {len(text)} characters; this explorer takes at most "
                       f"{limit} (start it with a larger --max-chars for longer texts).")
    check_text(text, what)


class RunGate:
    """Runs blocking work on a pool of ``limits.runs`` threads, with a bounded queue.

    ``await gate.run(fn, *args)`` returns ``fn(*args)``; it raises :class:`Busy` when
    ``runs + queue`` pieces of work are already admitted, or when the result is not ready
    within ``limits.timeout_s``. Used from one event loop.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.admitted = 0  # running + waiting; changed only on the event loop's thread
        self._pool = ThreadPoolExecutor(max_workers=limits.runs, thread_name_prefix="attnscope")

    @property
    def capacity(self) -> int:
        return self.limits.runs + self.limits.queue

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.admitted >= self.capacity:
            raise Busy(
                f"The explorer is busy: {self.limits.runs} model runs are going and "
                f"{self.limits.queue} are waiting; try again in a moment."
            )
        loop = asyncio.get_running_loop()
        self.admitted += 1
        future = loop.run_in_executor(self._pool, fn, *args)

        def release(_: asyncio.Future) -> None:
            self.admitted -= 1

        future.add_done_callback(release)
        try:
            # shield: a timed-out run finishes in its thread (threads cannot be stopped) and
            # keeps its place in the gate until then.
            return await asyncio.wait_for(asyncio.shield(future), self.limits.timeout_s)
        except TimeoutError:
            future.add_done_callback(_swallow)
            raise Busy(
                f"The model run took longer than the {self.limits.timeout_s:g} s limit; "
                "try a shorter text, or start the explorer with a larger --timeout.",
                retry_after=max(1, round(self.limits.timeout_s)),
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _swallow(future: asyncio.Future) -> None:
    # A timed-out run's own error has no one left to read it.
    if not future.cancelled():
        future.exception()


class Models:
    """The models the explorer may run, loaded once at start-up, by name.

    Args:
        loaded: LoadedModel objects in picker order; the first is the default.
    """

    def __init__(self, loaded: list[Any]) -> None:
        if not loaded:
            raise AttnscopeError("The explorer needs at least one model.")
        self._models: dict[str, Any] = {}
        for model in loaded:
            self._models.setdefault(model.name, model)
        self._locks = {name: threading.Lock() for name in self._models}
        self.default = next(iter(self._models))

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str | None) -> Any:
        """The model called ``name`` (None: the default); an unknown name is an
        :class:`AttnscopeError` listing the allowed ones."""
        if name is None:
            name = self.default
        if name not in self._models:
            shown = name if len(name) <= 80 else name[:77] + "..."
            raise AttnscopeError(
                f"Unknown model {shown!r}: this explorer serves "
                f"{', '.join(repr(n) for n in self._models)}."
            )
        return self._models[name]

    def lock(self, name: str) -> threading.Lock:
        """The lock that serializes runs of one model."""
        return self._locks[name]


class CaptureEntry:
    """One capture and what was derived from it (each made the first time it is asked for).

    ``body(key, make)`` keeps ready JSON response bodies (bytes), the ``BODIES`` most recently
    used; ``state(key, make)`` keeps small working objects (a flow graph, flow progress, a
    lock) for as long as the capture is cached. ``nbytes`` is the memory both hold, about.
    """

    #: Response bodies kept per capture (views of other heads, head table, explanations...).
    BODIES = 8

    def __init__(self, trace: Any, seconds: float, on_grow: Callable[[], None] | None = None
                 ) -> None:
        self.trace = trace
        self.seconds = seconds
        self.bodies: OrderedDict[Any, bytes] = OrderedDict()
        self.states: dict[Any, Any] = {}
        self.trace_bytes = _trace_bytes(trace)
        self._on_grow = on_grow
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self.trace_bytes + sum(len(b) for b in list(self.bodies.values()))

    def cached_body(self, key: Any) -> bytes | None:
        with self._lock:
            body = self.bodies.get(key)
            if body is not None:
                self.bodies.move_to_end(key)
            return body

    def body(self, key: Any, make: Callable[[], bytes]) -> bytes:
        """The body for ``key``, made now if it is not kept."""
        found = self.cached_body(key)
        if found is not None:
            return found
        made = make()
        with self._lock:
            self.bodies[key] = made
            while len(self.bodies) > self.BODIES:
                self.bodies.popitem(last=False)
        if self._on_grow is not None:
            self._on_grow()
        return made

    def state(self, key: Any, make: Callable[[], T]) -> T:
        # Two threads may both make a missing value; the first one stored wins for both.
        if key not in self.states:
            self.states.setdefault(key, make())
        return self.states[key]


def _trace_bytes(trace: Any) -> int:
    total = 0
    for value in getattr(trace, "__dict__", {}).values():
        total += getattr(value, "nbytes", 0)
    return total


class Captures:
    """An LRU cache of :class:`CaptureEntry` by ``(model name, text, second text)``, at most
    ``size`` captures and about ``max_mb`` MiB (the least recently used go first; the one
    most recently used always stays).

    Safe to use from several threads; ``get_or_capture`` runs ``capture`` at most once at a
    time per key (a second request for the same text waits for the first one's result).
    """

    def __init__(self, size: int, max_mb: float = 512.0) -> None:
        self.size = size
        self.max_bytes = int(max_mb * 2**20)
        self._entries: OrderedDict[tuple, CaptureEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def _trim(self) -> None:
        """Drop the least recently used captures while over the count or the memory limit."""
        with self._lock:
            sizes = {k: e.nbytes for k, e in self._entries.items()}
            total = sum(sizes.values())
            while len(self._entries) > 1 and (len(self._entries) > self.size
                                              or total > self.max_bytes):
                key, _ = self._entries.popitem(last=False)
                total -= sizes[key]

    def peek(self, key: tuple) -> CaptureEntry | None:
        """The entry for ``key`` if cached (and mark it recently used), else None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return entry

    def get_or_capture(self, key: tuple, capture: Callable[[], Any]) -> CaptureEntry:
        """The cached entry for ``key``, or a new one from ``capture()`` (run in this thread)."""
        entry = self.peek(key)
        if entry is not None:
            return entry
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            entry = self.peek(key)
            if entry is not None:
                return entry
            try:
                start = time.perf_counter()
                trace = capture()
                entry = CaptureEntry(trace, time.perf_counter() - start, self._trim)
                with self._lock:
                    self.misses += 1
                    self._entries[key] = entry
                    self._entries.move_to_end(key)
                self._trim()
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            return entry
