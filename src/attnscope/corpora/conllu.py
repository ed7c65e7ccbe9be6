"""A small, strict CoNLL-U reader for Universal Dependencies treebanks.

Each sentence becomes one :class:`~attnscope.analysis.corpus.CorpusItem` whose text is its
syntactic words joined by spaces (no space where MISC says ``SpaceAfter=No``), with each word's
character span and the gold (dependent, head, relation) arcs. Multi-word token lines
(``1-2``) and empty nodes (``8.1``) are skipped: arcs link syntactic words. Relations are
compared by their universal part (``obl:tmod`` counts as ``obl``), and the root's arc is left
out (it has no head word).

A malformed sentence (a wrong number of columns, word ids out of order, a head that is not a
word of the sentence, a line that is not UTF-8) is reported as a
:class:`~attnscope.corpora.sources.Problem` with the number of the offending line, and the
reader goes on with the next sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from attnscope.analysis.corpus import CorpusItem, text_key
from attnscope.corpora.problems import Problem

__all__ = ["count_sentences", "parse_conllu", "read_conllu"]

_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_ID = re.compile(r"[0-9]+\.[1-9][0-9]*")


def count_sentences(path: Path) -> int:
    """Sentences in a CoNLL-U file: lines whose first column is 1 (cheap, for progress)."""
    count = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.startswith(b"1\t"):
                count += 1
    return count


def read_conllu(path: Path) -> Iterator[CorpusItem | Problem]:
    """Every sentence of a CoNLL-U file, as items or problems (see the module docstring)."""
    with open(path, "rb") as fh:
        yield from parse_conllu(fh)


def parse_conllu(lines) -> Iterator[CorpusItem | Problem]:
    """Parse CoNLL-U from an iterable of byte lines (or str lines), 1-based line numbers."""
    block: list[tuple[int, str]] = []
    start = 0
    bad: Problem | None = None
    number = 0
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                line = ""
                if bad is None:
                    bad = Problem(start or number, "not-utf8",
                                  f"line {number} is not UTF-8 text; its sentence was skipped")
                if not block:
                    start = number
                block.append((number, "#"))
                continue
        else:
            line = raw.rstrip("\r\n")
        if not line.strip():
            if block:
                yield bad or _sentence(start, block)
            block, bad = [], None
            continue
        if not block:
            start = number
        block.append((number, line))
    if block:
        yield bad or _sentence(start, block)


def _sentence(start: int, block: list[tuple[int, str]]) -> CorpusItem | Problem:
    forms: list[str] = []
    space_after: list[bool] = []
    heads: list[int] = []
    relations: list[str] = []
    for number, line in block:
        if line.startswith("#"):
            continue
        columns = line.split("\t")
        if len(columns) != 10:
            return _malformed(start, number, f"has {len(columns)} columns, not 10")
        word_id, form, head, relation, misc = (columns[0], columns[1], columns[6], columns[7],
                                               columns[9])
        if _RANGE_ID.fullmatch(word_id) or _EMPTY_ID.fullmatch(word_id):
            continue  # multi-word tokens and empty nodes: arcs link syntactic words
        if not _WORD_ID.fullmatch(word_id) or int(word_id) != len(forms) + 1:
            return _malformed(start, number, f"has word id {word_id!r} where "
                              f"{len(forms) + 1} was expected")
        if not form or form.isspace():
            return _malformed(start, number, "has an empty word form")
        if not (head == "0" or _WORD_ID.fullmatch(head)):
            return _malformed(start, number, f"has head {head!r}, not a word id")
        if not relation or relation == "_":
            return _malformed(start, number, "has no dependency relation")
        forms.append(form.strip())
        space_after.append("SpaceAfter=No" not in misc.split("|"))
        heads.append(int(head))
        relations.append(relation.split(":")[0])
    if not forms:
        return Problem(start, "empty", f"line {start}: the sentence has no words; it was "
                       "skipped")
    for i, head_id in enumerate(heads):
        if head_id > len(forms):
            line_number = next(n for n, text in block if text.split("\t")[0] == str(i + 1))
            return _malformed(start, line_number, f"points to head {head_id}, but the sentence has "
                              f"{len(forms)} words")
    text_parts: list[str] = []
    spans: list[tuple[int, int]] = []
    at = 0
    for form, space in zip(forms, space_after, strict=True):
        spans.append((at, at + len(form)))
        text_parts.append(form + (" " if space else ""))
        at += len(form) + (1 if space else 0)
    text = "".join(text_parts).rstrip()
    arcs = tuple((i, head - 1, relation)
                 for i, (head, relation) in enumerate(zip(heads, relations, strict=True))
                 if head > 0)
    return CorpusItem(position=start, text=text, words=tuple(spans), arcs=arcs,
                      key=text_key(text, None, arcs))


def _malformed(start: int, number: int, why: str) -> Problem:
    return Problem(start, "malformed",
                   f"line {number} {why}; the sentence starting at line {start} was skipped")
