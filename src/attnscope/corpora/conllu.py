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
reader goes on with the next sentence. So is a word that is its own head (no tree has such a
loop). A sentence longer than a text can use is cut after the words that fit (its arcs to words
left out are dropped) and flagged "truncated".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from attnscope.analysis.corpus import CorpusItem, text_key
from attnscope.corpora.lines import raw_lines
from attnscope.corpora.problems import Problem

__all__ = ["count_sentences", "parse_conllu", "read_conllu"]

_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_ID = re.compile(r"[0-9]+\.[1-9][0-9]*")


def count_sentences(path: Path, stop: int | None = None) -> int:
    """Sentences in a CoNLL-U file: lines whose first column is 1 (cheap, for progress);
    counting ends once more than ``stop`` are seen. Lines are read in bounded pieces."""
    count = 0
    with open(path, "rb") as fh:
        for line in raw_lines(fh, 16, True):
            if line.raw.startswith(b"1\t"):
                count += 1
                if stop is not None and count > stop:
                    break
    return count


def read_conllu(path: Path, max_chars: int = 1_000_000,
                regular: bool = True) -> Iterator[CorpusItem | Problem]:
    """Every sentence of a CoNLL-U file, as items or problems (see the module docstring);
    sentences are kept to about ``max_chars`` characters, lines to ``4 * max_chars`` bytes."""
    with open(path, "rb") as fh:
        lines = raw_lines(fh, 4 * max_chars, regular)
        ended = [True]

        def plain() -> Iterator[bytes]:
            for line in lines:
                yield line.raw
                if not line.ended:
                    ended[0] = False
                    return

        yield from parse_conllu(plain(), max_chars)
        if not ended[0]:
            yield Problem(0, "unread", "a line had no end in sight past what a sentence "
                          "can use; the input was not read further")


def parse_conllu(lines, max_chars: int = 1_000_000) -> Iterator[CorpusItem | Problem]:
    """Parse CoNLL-U from an iterable of byte lines (or str lines), 1-based line numbers;
    a sentence whose lines pass ``max_chars`` characters is cut after the words that fit."""
    block: list[tuple[int, str]] = []  # the sentence's word lines (comments are not kept)
    start = 0
    open_sentence = False
    bad: Problem | None = None
    number = 0
    size = 0
    cut = False
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                if not open_sentence:
                    start, open_sentence = number, True
                if bad is None:
                    bad = Problem(start, "not-utf8",
                                  f"line {number} is not UTF-8 text; its sentence was skipped")
                continue
        else:
            line = raw.rstrip("\r\n")
        if not line.strip():
            if open_sentence:
                yield from [bad] if bad else _sentence(start, block, cut)
            block, bad, size, cut, open_sentence = [], None, 0, False, False
            continue
        if not open_sentence:
            start, open_sentence = number, True
        if line.startswith("#") or bad is not None:
            continue  # comments carry no word; a sentence already refused needs no more
        if size + len(line) > max_chars:
            cut = True  # the rest of the sentence streams past
            continue
        size += len(line)
        block.append((number, line))
    if open_sentence:
        yield from [bad] if bad else _sentence(start, block, cut)


def _sentence(start: int, block: list[tuple[int, str]],
              cut: bool = False) -> list[CorpusItem | Problem]:
    """One sentence's item (after a "truncated" problem when ``cut``), or its problem."""
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
        if head == word_id:
            return _malformed(start, number, f"makes word {word_id} its own head")
        if not relation or relation == "_":
            return _malformed(start, number, "has no dependency relation")
        forms.append(form.strip())
        space_after.append("SpaceAfter=No" not in misc.split("|"))
        heads.append(int(head))
        relations.append(relation.split(":")[0])
    if not forms:
        return [Problem(start, "empty", f"line {start}: the sentence has no words; it was "
                        "skipped")]
    for i, head_id in enumerate(heads):
        if head_id > len(forms) and not cut:  # a cut sentence drops its arcs to words left out
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
                 if 0 < head <= len(forms))
    item = CorpusItem(position=start, text=text, words=tuple(spans), arcs=arcs,
                      key=text_key(text, None, arcs))
    if not cut:
        return [item]
    return [Problem(start, "truncated", f"line {start}: the sentence is longer than the model "
                    f"can use; only its first {len(forms)} words were read"), item]


def _malformed(start: int, number: int, why: str) -> list[CorpusItem | Problem]:
    return [Problem(start, "malformed",
                    f"line {number} {why}; the sentence starting at line {start} was skipped")]
