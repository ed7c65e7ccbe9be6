"""Lines of a file or pipe read in bounded pieces: however long a line is, memory stays within
one block and the part of the line that is kept. Corpus sources and the CoNLL-U reader share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, NamedTuple

__all__ = ["BLOCK", "MAX_SKIP_UNSEEKABLE", "RawLine", "raw_lines"]

#: Bytes read at a time.
BLOCK = 2**20
#: Past a cut, bytes a pipe or device may still send before its line ends: beyond this, a line
#: with no end in sight (``/dev/zero``) stops the reading instead of being skipped for ever.
MAX_SKIP_UNSEEKABLE = 64 * 2**20


class RawLine(NamedTuple):
    """One line of a file: its number, its first bytes (without the line end), how many bytes
    past those were skipped, and whether it ended (False: the input stopped being read)."""

    number: int
    raw: bytes
    skipped: int
    ended: bool = True


def raw_lines(fh: IO[bytes], max_bytes: int, regular: bool) -> Iterator[RawLine]:
    """The lines of the binary stream ``fh``, each kept to at most ``max_bytes`` bytes; memory
    stays within one block and one kept line however long a line is. In a pipe or device
    (``regular`` False) a line still going :data:`MAX_SKIP_UNSEEKABLE` bytes past its cut
    ends the reading (``ended`` False)."""
    number = 0
    kept = bytearray()
    skipped = 0
    while block := fh.read(BLOCK):
        start = 0
        while True:
            end = block.find(b"\n", start)
            stop = end if end >= 0 else len(block)
            if not kept and not skipped and end >= 0 and stop - start <= max_bytes:
                number += 1  # the common case: a whole line inside the block
                yield RawLine(number, block[start:stop].rstrip(b"\r"), 0)
                start = end + 1
                continue
            room = max(max_bytes - len(kept), 0)
            kept += block[start:min(stop, start + room)]
            skipped += max(stop - start - room, 0)
            if end < 0:
                break
            number += 1
            yield RawLine(number, bytes(kept).rstrip(b"\r") if not skipped else bytes(kept),
                          skipped)
            kept.clear()
            skipped = 0
            start = end + 1
        if not regular and skipped > MAX_SKIP_UNSEEKABLE:
            yield RawLine(number + 1, bytes(kept), skipped, ended=False)
            return
    if kept or skipped:
        yield RawLine(number + 1, bytes(kept).rstrip(b"\r") if not skipped else bytes(kept),
                      skipped)
