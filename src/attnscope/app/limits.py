"""The explorer's limits, each an option of ``attnscope serve`` (kept apart from the rest of
the app so the command line reads its defaults without importing a web framework)."""

from __future__ import annotations

from dataclasses import dataclass

from attnscope.errors import AttnscopeError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """The explorer's limits; every one is an option of ``attnscope serve``.

    Attributes:
        max_chars: the most characters in one text.
        max_tokens: the most tokens in one text (after tokenization, special tokens included).
        timeout_s: the most seconds one request may wait for and spend on its model run.
        runs: model runs (captures, head tables, flows) that may run at the same time.
        queue: requests that may wait for a run; one more gets 503 with Retry-After.
        flow_budget_s: the most seconds attention flow may spend on one output token.
        cache: captures kept (least recently used ones are dropped first).
        cache_mb: memory the kept captures and their answers may take, about, in MiB.
    """

    max_chars: int = 2000
    max_tokens: int = 256
    timeout_s: float = 20.0
    runs: int = 2
    queue: int = 32
    flow_budget_s: float = 10.0
    cache: int = 64
    cache_mb: float = 512.0

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_tokens", "runs", "cache"):
            if getattr(self, name) < 1:
                raise AttnscopeError(f"The limit {name} must be at least 1.")
        if self.queue < 0:
            raise AttnscopeError("The limit queue must be 0 or more.")
        for name in ("timeout_s", "flow_budget_s", "cache_mb"):
            if not getattr(self, name) > 0:
                raise AttnscopeError(f"The limit {name} must be more than 0.")
