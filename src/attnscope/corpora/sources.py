"""Where corpus texts come from: files, Python iterables and ``datasets`` datasets.

:func:`open_source` turns what a person gives into a :class:`Source`, which yields
:class:`~attnscope.analysis.corpus.CorpusItem` for each usable text and :class:`Problem` for
each record that is not (an empty line, a line that is not UTF-8, malformed JSON, a malformed
CoNLL-U sentence...), always with its line (or row, or item) number. Nothing is dropped
silently and nothing raises mid-way: a whole-file mistake (a missing file, a missing column)
raises one :class:`~attnscope.errors.AttnscopeError` before any work starts.

Formats, by file suffix:

* ``.txt``: one text per line;
* ``.jsonl`` / ``.ndjson``: one JSON object per line, the text in ``text_field``;
* ``.csv`` / ``.tsv``: a header row, the text in column ``text_field``;
* ``.parquet``: the text in column ``text_field``;
* ``.conllu``: Universal Dependencies sentences with their gold heads (see
  :mod:`attnscope.corpora.conllu`);
* a folder saved with ``datasets.Dataset.save_to_disk``.

``text_field`` defaults to ``"text"`` (or the only column there is); ``pair_field`` names a
second column for sentence pairs.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

from attnscope.analysis.corpus import CorpusItem, text_key
from attnscope.corpora.problems import Problem
from attnscope.errors import AttnscopeError

__all__ = ["Problem", "Source", "open_source"]

_TEXT_SUFFIXES = {".txt", ".text"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_CSV_SUFFIXES = {".csv", ".tsv"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_CONLLU_SUFFIXES = {".conllu", ".conll"}


class Source:
    """An iterable of :class:`CorpusItem` and :class:`Problem`, in input order.

    ``label`` names the input (a path, or a description of a Python object), ``unit`` says
    what ``position`` counts ("line", "row" or "item"), and ``total`` is the number of records
    when it can be known cheaply (for the progress bar), else None.
    """

    def __init__(self, records: Iterable[CorpusItem | Problem], label: str, unit: str,
                 total: int | None) -> None:
        self._records = records
        self.label = label
        self.unit = unit
        self.total = total

    def __iter__(self) -> Iterator[CorpusItem | Problem]:
        return iter(self._records)


def open_source(source: Any, *, text_field: str | None = None,
                pair_field: str | None = None) -> Source:
    """A :class:`Source` for ``source``: a path (str or PathLike; see the module docstring for
    formats), a ``datasets.Dataset``, or any iterable of strings, (text, text_b) pairs or dicts.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, str | os.PathLike):
        return _open_path(Path(source), text_field, pair_field)
    if type(source).__module__.startswith("datasets"):
        return _from_dataset(source, text_field, pair_field, repr(source).split("(")[0])
    if isinstance(source, bytes):
        raise AttnscopeError("Give the corpus as a path, a list of texts or a dataset, "
                             "not bytes.")
    if not isinstance(source, Iterable):
        raise AttnscopeError(
            f"Cannot read a corpus from a {type(source).__name__}: give a path, a list of "
            "texts or (text, text_b) pairs, or a datasets Dataset."
        )
    total = len(source) if isinstance(source, Sized) else None
    return Source(_from_iterable(source, text_field or "text", pair_field),
                  f"<{type(source).__name__}>", "item", total)


def _open_path(path: Path, text_field: str | None, pair_field: str | None) -> Source:
    if not path.exists():
        raise AttnscopeError(f"Cannot read '{path}': no such file or folder.")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            try:
                import datasets
            except ImportError:
                raise AttnscopeError("Reading a saved dataset needs the datasets package: "
                                     "pip install datasets.") from None
            return _from_dataset(datasets.load_from_disk(str(path)), text_field, pair_field,
                                 str(path))
        raise AttnscopeError(f"Cannot read '{path}': it is a folder, not a file or a saved "
                             "datasets dataset.")
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        return Source(_text_lines(path), str(path), "line", _count_lines(path))
    if suffix in _JSONL_SUFFIXES:
        return Source(_jsonl(path, text_field or "text", pair_field), str(path), "line",
                      _count_lines(path))
    if suffix in _CSV_SUFFIXES:
        return _csv(path, text_field, pair_field)
    if suffix in _PARQUET_SUFFIXES:
        return _parquet(path, text_field, pair_field)
    if suffix in _CONLLU_SUFFIXES:
        from attnscope.corpora.conllu import count_sentences, read_conllu

        return Source(read_conllu(path), str(path), "line", count_sentences(path))
    raise AttnscopeError(
        f"Cannot read '{path}': give a .txt, .jsonl, .csv, .tsv, .parquet or .conllu file, or "
        "a folder saved with datasets."
    )


def _count_lines(path: Path) -> int:
    """Lines in a file (the last one need not end in a newline), read in 1 MiB blocks."""
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(2**20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            yield number, raw.rstrip(b"\r\n")


def _decode(number: int, raw: bytes) -> str | Problem:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Problem(number, "not-utf8", f"line {number} is not UTF-8 text (byte "
                       f"{err.start + 1} cannot be read); it was skipped")


def _item(position: int, text: str, text_b: str | None = None) -> CorpusItem:
    return CorpusItem(position=position, text=text, text_b=text_b, key=text_key(text, text_b))


def _empty(position: int, unit: str) -> Problem:
    return Problem(position, "empty", f"{unit} {position} is empty; it was skipped")


def _text_lines(path: Path) -> Iterator[CorpusItem | Problem]:
    for number, raw in _raw_lines(path):
        # a byte-order mark at the start of the file is not part of the first text
        line = _decode(number, raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw)
        if isinstance(line, Problem):
            yield line
        elif not line.strip():
            yield _empty(number, "line")
        else:
            yield _item(number, line)


def _record_texts(record: dict, text_field: str, pair_field: str | None, position: int,
                  unit: str) -> CorpusItem | Problem:
    """The text (and pair) of one JSON object, CSV row or dataset row."""
    texts: list[str | None] = []
    for name in (text_field, pair_field):
        if name is None:
            texts.append(None)
            continue
        if name not in record:
            return Problem(position, "missing-field",
                           f"{unit} {position} has no field {name!r}; it was skipped")
        value = record[name]
        if value is None or (isinstance(value, float) and value != value):  # null or NaN
            return _empty(position, unit)
        if not isinstance(value, str):
            return Problem(position, "malformed", f"{unit} {position}: field {name!r} holds a "
                           f"{type(value).__name__}, not a text; it was skipped")
        if any("\udc80" <= c <= "\udcff" for c in value):  # undecodable bytes (CSV)
            return Problem(position, "not-utf8", f"{unit} {position} is not UTF-8 text; "
                           "it was skipped")
        if not value.strip():
            return _empty(position, unit)
        texts.append(value)
    text, text_b = texts
    assert text is not None  # the text field always has a name
    return _item(position, text, text_b)


def _jsonl(path: Path, text_field: str, pair_field: str | None) -> Iterator[CorpusItem | Problem]:
    for number, raw in _raw_lines(path):
        line = _decode(number, raw)
        if isinstance(line, Problem):
            yield line
            continue
        if not line.strip():
            yield _empty(number, "line")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield Problem(number, "malformed", f"line {number} is not valid JSON ({err.msg} at "
                          f"column {err.colno}); it was skipped")
            continue
        if not isinstance(record, dict):
            yield Problem(number, "malformed", f"line {number} is a JSON "
                          f"{type(record).__name__}, not an object with a {text_field!r} "
                          "field; it was skipped")
            continue
        yield _record_texts(record, text_field, pair_field, number, "line")


def _pick_field(columns: list[str], wanted: str | None, path: Path, what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise AttnscopeError(f"'{path}' has no column {wanted!r}; its columns are "
                                 f"{', '.join(map(repr, columns))}.")
        return wanted
    if "text" in columns:
        return "text"
    if len(columns) == 1:
        return columns[0]
    raise AttnscopeError(f"'{path}' has no 'text' column: name the {what} column with "
                         f"--text-field (one of {', '.join(map(repr, columns))}).")


def _csv(path: Path, text_field: str | None, pair_field: str | None) -> Source:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        header = next(csv.reader(fh, delimiter=delimiter), None)
    if not header:
        raise AttnscopeError(f"'{path}' is empty: a CSV corpus needs a header row.")
    field = _pick_field(header, text_field, path, "text")
    pair = _pick_field(header, pair_field, path, "pair") if pair_field else None

    def records() -> Iterator[CorpusItem | Problem]:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            try:
                for row in reader:
                    yield _record_texts(row, field, pair, reader.line_num, "line")
            except csv.Error as err:
                yield Problem(reader.line_num, "malformed",
                              f"line {reader.line_num} is not valid CSV ({err}); the rest of "
                              "the file was skipped")

    return Source(records(), str(path), "line", max(_count_lines(path) - 1, 0))


def _parquet(path: Path, text_field: str | None, pair_field: str | None) -> Source:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise AttnscopeError("Reading Parquet needs pyarrow: pip install pyarrow.") from None
    try:
        handle = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a file it cannot read
        raise AttnscopeError(f"Cannot read '{path}' as Parquet: {err}.") from None
    columns = handle.schema_arrow.names
    field = _pick_field(columns, text_field, path, "text")
    pair = _pick_field(columns, pair_field, path, "pair") if pair_field else None

    def records() -> Iterator[CorpusItem | Problem]:
        row = 0
        wanted = [field] + ([pair] if pair else [])
        for batch in handle.iter_batches(batch_size=1024, columns=wanted):
            for record in batch.to_pylist():
                row += 1
                yield _record_texts(record, field, pair, row, "row")

    return Source(records(), str(path), "row", handle.metadata.num_rows)


def _from_dataset(dataset: Any, text_field: str | None, pair_field: str | None,
                  label: str) -> Source:
    if not hasattr(dataset, "column_names") or isinstance(dataset.column_names, dict):
        splits = ", ".join(getattr(dataset, "keys", lambda: [])())
        raise AttnscopeError(f"The dataset has several splits ({splits}): pick one, e.g. "
                             "dataset['train'].")
    path = Path(label)
    field = _pick_field(list(dataset.column_names), text_field, path, "text")
    pair = _pick_field(list(dataset.column_names), pair_field, path, "pair") if pair_field else None

    def records() -> Iterator[CorpusItem | Problem]:
        for row, record in enumerate(dataset, start=1):
            yield _record_texts(record, field, pair, row, "row")

    return Source(records(), label, "row", len(dataset))


def _from_iterable(items: Iterable[Any], text_field: str,
                   pair_field: str | None) -> Iterator[CorpusItem | Problem]:
    for index, value in enumerate(items, start=1):
        if isinstance(value, dict):
            yield _record_texts(value, text_field, pair_field, index, "item")
        elif isinstance(value, str):
            yield _item(index, value) if value.strip() else _empty(index, "item")
        elif (isinstance(value, tuple | list) and len(value) == 2
              and all(isinstance(v, str) for v in value)):
            if not value[0].strip() or not value[1].strip():
                yield _empty(index, "item")
            else:
                yield _item(index, value[0], value[1])
        else:
            yield Problem(index, "malformed", f"item {index} is a {type(value).__name__}, not "
                          "a text or a (text, text_b) pair; it was skipped")
