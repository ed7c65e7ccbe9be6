"""A record of a corpus that gave no usable text, as every reader reports it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """A record that gave no usable text: where it is, what kind, and one sentence why.

    ``kind`` is one of "empty", "not-utf8", "malformed", "missing-field", "duplicate",
    "truncated" (the text was used, cut at the model's limit, or cut while read), "unusable",
    or "unread" (a pipe or device sent a line with no end in sight: the reading stopped).
    """

    position: int
    kind: str
    message: str
