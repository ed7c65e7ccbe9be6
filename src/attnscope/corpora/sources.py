"""Where corpus texts come from: files, Python iterables and ``datasets`` datasets.

:func:`open_source` turns what a person gives into a :class:`Source`, which yields
:class:`~attnscope.analysis.corpus.CorpusItem` for each usable text and :class:`Problem` for
each record that is not (an empty line, a line that is not UTF-8, malformed JSON, a malformed
CoNLL-U sentence, a lone surrogate...), always with its line (or row, or item) number. Nothing
is dropped silently and nothing raises mid-way: a whole-file mistake (a missing file, a missing
column) raises one :class:`~attnscope.errors.AttnscopeError` before any work starts.

Formats, by file suffix:

* ``.txt``: one text per line;
* ``.jsonl`` / ``.ndjson``: one JSON object per line, the text in ``text_field``;
* ``.csv`` / ``.tsv``: a header row, the text in column ``text_field``;
* ``.parquet``: the text in column ``text_field``;
* ``.conllu``: Universal Dependencies sentences with their gold heads (see
  :mod:`attnscope.corpora.conllu`);
* a folder saved with ``datasets.Dataset.save_to_disk``;
* a pipe, FIFO or device with no suffix (``<(zcat corpus.txt.gz)``): one text per line.

``text_field`` defaults to ``"text"`` (or the only column there is); ``pair_field`` names a
second column for sentence pairs.

**Memory stays bounded whatever the input.** Every reader keeps at most
:attr:`Source.max_chars` characters of one text (what the model can use: about 64 characters a
token, see :func:`text_char_limit`); a longer text is cut there and flagged with a
"truncated" problem, and the rest of its line (or field) is skipped without being held in
memory. The input is read once, as it streams: a pipe is never read twice, records are
counted for the progress bar only in regular files, and reading stops at ``limit`` texts.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import IO, Any, NamedTuple

from attnscope.analysis.corpus import CorpusItem, text_key
from attnscope.corpora.lines import BLOCK as _BLOCK
from attnscope.corpora.lines import RawLine, raw_lines
from attnscope.corpora.problems import Problem
from attnscope.errors import AttnscopeError

__all__ = ["Problem", "Source", "open_source", "text_char_limit"]

_TEXT_SUFFIXES = {".txt", ".text"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_CSV_SUFFIXES = {".csv", ".tsv"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_CONLLU_SUFFIXES = {".conllu", ".conll"}

#: Characters kept of one text for each token the model can take: tokens rarely cover more
#: than a few characters, so what is kept always holds more than the model can take.
CHARS_PER_TOKEN = 64
#: Characters kept of one text for a model that sets no token limit.
MAX_CHARS_WITHOUT_LIMIT = 1_000_000
#: Most columns a CSV header may have.
_MAX_COLUMNS = 65_536
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_char_limit(max_length: int | None) -> int:
    """Characters of one text worth reading for a model taking ``max_length`` tokens."""
    if not max_length:
        return MAX_CHARS_WITHOUT_LIMIT
    return max_length * CHARS_PER_TOKEN + 1024


class Source:
    """An iterable of :class:`CorpusItem` and :class:`Problem`, in input order, read once.

    ``label`` names the input (a path, or a description of a Python object), ``unit`` says
    what ``position`` counts ("line", "row" or "item"), and ``max_chars`` is the most
    characters kept of one text (set it before iterating; longer texts are cut and flagged).
    """

    def __init__(self, records: Callable[[int], Iterator[CorpusItem | Problem]], label: str,
                 unit: str, counter: Callable[[int | None], int | None] | None = None) -> None:
        self._records = records
        self._counter = counter
        self.label = label
        self.unit = unit
        self.max_chars = MAX_CHARS_WITHOUT_LIMIT

    def __iter__(self) -> Iterator[CorpusItem | Problem]:
        return self._records(self.max_chars)

    def count(self, stop: int | None = None) -> int | None:
        """Records in the input when they can be counted without consuming it (a regular
        file, a sized object), else None; counting stops past ``stop``."""
        return self._counter(stop) if self._counter is not None else None

    @property
    def total(self) -> int | None:
        return self.count()


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
    if isinstance(source, bytes | bytearray):
        raise AttnscopeError("Give the corpus as a path, a list of texts or a dataset, "
                             "not bytes.")
    if isinstance(source, Mapping):
        raise AttnscopeError(
            f"Cannot read a corpus from a {type(source).__name__}: its keys would be counted "
            "as texts; give a list of texts or of records ([{'text': ...}, ...]), a path or a "
            "dataset."
        )
    if not isinstance(source, Iterable):
        raise AttnscopeError(
            f"Cannot read a corpus from a {type(source).__name__}: give a path, a list of "
            "texts or (text, text_b) pairs, or a datasets Dataset."
        )
    sized = source if isinstance(source, Sized) else None
    return Source(lambda max_chars: _from_iterable(source, text_field or "text", pair_field,
                                                   max_chars),
                  f"<{type(source).__name__}>", "item",
                  (lambda stop: len(sized)) if sized is not None else None)


def _open_path(path: Path, text_field: str | None, pair_field: str | None) -> Source:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AttnscopeError(f"Cannot read '{path}': no such file or folder.") from None
    except OSError as err:
        raise AttnscopeError(f"Cannot read '{path}': {err.strerror or err}.") from None
    if stat.S_ISDIR(mode):
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
    regular = stat.S_ISREG(mode)
    suffix = path.suffix.lower()
    if not suffix and not regular:  # a pipe, a FIFO or a device: one text per line
        suffix = ".txt"
    # only a regular file is counted ahead: counting a pipe would consume it
    lines = (lambda stop: _count_lines(path, stop)) if regular else None
    if suffix in _TEXT_SUFFIXES:
        return Source(lambda max_chars: _text_lines(path, max_chars, regular), str(path),
                      "line", lines)
    if suffix in _JSONL_SUFFIXES:
        return Source(lambda max_chars: _jsonl(path, text_field or "text", pair_field,
                                               max_chars, regular),
                      str(path), "line", lines)
    if suffix in _CSV_SUFFIXES:
        return _csv(path, text_field, pair_field, regular)
    if suffix in _PARQUET_SUFFIXES:
        if not regular:
            raise AttnscopeError(f"Cannot read '{path}' as Parquet: it is not a regular file "
                                 "(Parquet is read from its end, so a pipe cannot hold it).")
        return _parquet(path, text_field, pair_field)
    if suffix in _CONLLU_SUFFIXES:
        from attnscope.corpora.conllu import count_sentences, read_conllu

        return Source(lambda max_chars: read_conllu(path, max_chars, regular), str(path),
                      "line", (lambda stop: count_sentences(path, stop)) if regular else None)
    raise AttnscopeError(
        f"Cannot read '{path}': give a .txt, .jsonl, .csv, .tsv, .parquet or .conllu file, or "
        "a folder saved with datasets."
    )


def _count_lines(path: Path, stop: int | None = None) -> int:
    """Lines in a file (the last one need not end in a newline), read in 1 MiB blocks;
    counting ends once more than ``stop`` lines are seen."""
    count, last = 0, b"\n"
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            count += block.count(b"\n")
            last = block[-1:]
            if stop is not None and count > stop:
                return count
    return count + (last != b"\n")


def decode_cut(raw: bytes, cut: bool) -> str:
    """``raw`` as UTF-8; where the bytes were cut, a character split by the cut is left out.
    Raises UnicodeDecodeError for bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if cut and err.end == len(raw) and len(raw) - err.start < 4:
            return raw[:err.start].decode("utf-8")
        raise


def _not_utf8(number: int, err: UnicodeDecodeError) -> Problem:
    return Problem(number, "not-utf8", f"line {number} is not UTF-8 text (byte "
                   f"{err.start + 1} cannot be read); it was skipped")


def _unended(line: RawLine, unit: str) -> Problem:
    return Problem(line.number, "unread",
                   f"{unit} {line.number} still had no end after {line.skipped:,} bytes past "
                   "what a text can use; the input was not read further")


def _cut_message(position: int, unit: str, max_chars: int, skipped: str = "") -> Problem:
    return Problem(position, "truncated",
                   f"{unit} {position} is longer than the model can use: only its first "
                   f"{max_chars:,} characters were read{skipped}")


def _item(position: int, text: str, text_b: str | None, unit: str, max_chars: int,
          cut: bool = False) -> list[CorpusItem | Problem]:
    """A text (and its pair) as an item, or the problem that makes it unusable. A text longer
    than ``max_chars`` (or already ``cut`` while reading) is kept to ``max_chars``, with a
    "truncated" problem before the item."""
    for value in (text, text_b):
        if value is None:
            continue
        if not value.strip():
            return [_empty(position, unit)]
        bad = _SURROGATE.search(value)
        if bad is not None:
            return [Problem(position, "not-utf8", f"{unit} {position} holds "
                            f"U+{ord(bad.group()):04X} at character {bad.start()}, which is "
                            "not a character (a lone surrogate, or bytes that are not UTF-8); "
                            "it was skipped")]
    out: list[CorpusItem | Problem] = []
    if cut or len(text) > max_chars or (text_b is not None and len(text_b) > max_chars):
        out.append(_cut_message(position, unit, max_chars))
        text = text[:max_chars]
        text_b = text_b[:max_chars] if text_b is not None else None
    out.append(CorpusItem(position=position, text=text, text_b=text_b,
                          key=text_key(text, text_b)))
    return out


def _empty(position: int, unit: str) -> Problem:
    return Problem(position, "empty", f"{unit} {position} is empty; it was skipped")


def _text_lines(path: Path, max_chars: int, regular: bool) -> Iterator[CorpusItem | Problem]:
    with open(path, "rb") as fh:
        for line in raw_lines(fh, 4 * max_chars, regular):  # UTF-8: at most 4 bytes a character
            raw = line.raw.removeprefix(b"\xef\xbb\xbf") if line.number == 1 else line.raw
            try:
                text = decode_cut(raw, line.skipped > 0)
            except UnicodeDecodeError as err:
                yield _not_utf8(line.number, err)
            else:
                yield from _item(line.number, text, None, "line", max_chars, line.skipped > 0)
            if not line.ended:
                yield _unended(line, "line")
                return


def _record_texts(record: Mapping, text_field: str, pair_field: str | None, position: int,
                  unit: str, max_chars: int, cut: bool = False) -> list[CorpusItem | Problem]:
    """The text (and pair) of one JSON object, CSV row or dataset row."""
    texts: list[str | None] = []
    for name in (text_field, pair_field):
        if name is None:
            texts.append(None)
            continue
        if name not in record:
            return [Problem(position, "missing-field",
                            f"{unit} {position} has no field {name!r}; it was skipped")]
        value = record[name]
        if value is None or (isinstance(value, float) and value != value):  # null or NaN
            return [_empty(position, unit)]
        if not isinstance(value, str):
            return [Problem(position, "malformed", f"{unit} {position}: field {name!r} holds "
                            f"a {type(value).__name__}, not a text; it was skipped")]
        texts.append(value)
    assert texts[0] is not None  # the text field is always asked for
    return _item(position, texts[0], texts[1], unit, max_chars, cut)


# The longest run of a JSON string's body that is whole: plain characters and full escapes.
_JSON_STRING_BODY = re.compile(r'(?:[^"\\\x00-\x1f]+|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')
# Members before the one wanted: "key": "string" or a plain scalar, then a comma.
_JSON_MEMBERS = r'\s*\{\s*(?:"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|[-+.\w]+)\s*,\s*)*'


def _cut_json_text(prefix: str, field: str) -> tuple[str, bool] | None:
    """From the start of a JSON object cut mid-way, the string value of ``field`` (as much of
    it as the prefix holds) and whether it is whole; None when the prefix does not show it."""
    match = re.match(_JSON_MEMBERS + re.escape(json.dumps(field)) + r'\s*:\s*"', prefix)
    if match is None:
        return None
    body_match = _JSON_STRING_BODY.match(prefix, match.end())
    assert body_match is not None  # the pattern matches the empty string
    body = body_match.group()
    whole = prefix[match.end() + len(body):match.end() + len(body) + 1] == '"'
    return json.loads('"' + body + '"'), whole


def _jsonl(path: Path, text_field: str, pair_field: str | None, max_chars: int,
           regular: bool) -> Iterator[CorpusItem | Problem]:
    # a text of max_chars characters takes at most 6 bytes a character as JSON (\uXXXX)
    max_bytes = 6 * max_chars + 2**16
    with open(path, "rb") as fh:
        for line in raw_lines(fh, max_bytes, regular):
            yield from _json_line(line, text_field, pair_field, max_chars)
            if not line.ended:
                yield _unended(line, "line")
                return


def _json_line(line: RawLine, text_field: str, pair_field: str | None,
               max_chars: int) -> list[CorpusItem | Problem]:
    number = line.number
    try:
        text = decode_cut(line.raw, line.skipped > 0)
    except UnicodeDecodeError as err:
        return [_not_utf8(number, err)]
    if not text.strip():
        return [_empty(number, "line")]
    if line.skipped:  # the line was cut: read the text field from the start of the object
        found = None if pair_field is not None else _cut_json_text(text, text_field)
        if found is None:
            return [Problem(number, "unusable", f"line {number} is longer than "
                            f"{len(line.raw):,} bytes and its {text_field!r} field could not "
                            "be read from its start; it was skipped")]
        value, whole = found
        return _item(number, value, None, "line", max_chars, cut=not whole)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return [Problem(number, "malformed", f"line {number} is not valid JSON ({err.msg} at "
                        f"column {err.colno}); it was skipped")]
    except RecursionError:
        return [Problem(number, "malformed", f"line {number} nests JSON too deeply; it was "
                        "skipped")]
    if not isinstance(record, dict):
        return [Problem(number, "malformed", f"line {number} is a JSON "
                        f"{type(record).__name__}, not an object with a {text_field!r} "
                        "field; it was skipped")]
    return _record_texts(record, text_field, pair_field, number, "line", max_chars)


def _columns_shown(columns: list[str]) -> str:
    return ", ".join(map(repr, columns[:50])) + (", ..." if len(columns) > 50 else "")


def _pick_field(columns: list[str], wanted: str | None, path: Path, what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise AttnscopeError(f"'{path}' has no column {wanted!r}; its columns are "
                                 f"{_columns_shown(columns)}.")
        return wanted
    if "text" in columns:
        return "text"
    if len(columns) == 1:
        return columns[0]
    raise AttnscopeError(f"'{path}' has no 'text' column: name the {what} column with "
                         f"--text-field (one of {_columns_shown(columns)}).")


class CsvRow(NamedTuple):
    """One CSV record: the line it starts on, its kept fields (index -> text), how many
    fields it has, whether a kept field was cut, and whether the input ended inside quotes."""

    line: int
    fields: dict[int, str]
    width: int
    cut: bool
    unclosed: bool = False


class CsvReader:
    """The records of a CSV stream (quoting as Python's csv module reads it: ``""`` inside
    quotes is one quote), with memory bounded whatever the input: only the fields in ``keep``
    are held (all of the first :data:`_MAX_COLUMNS` while ``keep`` is None), each to at most
    ``max_chars`` characters; a longer field is cut, its row marked ``cut``, and the rest of
    the field streams past. Blank lines are no records. Both settings may change between rows.
    """

    def __init__(self, fh: IO[str], delimiter: str) -> None:
        self.fh = fh
        self.delimiter = delimiter
        self.keep: set[int] | None = None
        self.max_chars = MAX_CHARS_WITHOUT_LIMIT

    def _kept(self, index: int) -> bool:
        return index < _MAX_COLUMNS if self.keep is None else index in self.keep

    def __iter__(self) -> Iterator[CsvRow]:
        special = re.compile(f"[{re.escape(self.delimiter)}\"\r\n]")
        line = start_line = 1  # the line being read; the line the record starts on
        fields: dict[int, str] = {}
        index = size = 0       # the field being read; its characters so far (kept or not)
        pieces: list[str] = []
        cut = begun = False    # a kept field was cut; the field has begun (a quote opens it)
        quoted = quote_seen = after_cr = False

        def take(piece: str) -> None:
            nonlocal size, cut
            if self._kept(index):
                if size < self.max_chars:
                    pieces.append(piece[:self.max_chars - size])
                cut = cut or size + len(piece) > self.max_chars
            size += len(piece)

        def end_field() -> None:
            nonlocal index, pieces, size, begun
            if self._kept(index):
                fields[index] = "".join(pieces)
            index += 1
            pieces, size, begun = [], 0, False

        def end_record() -> CsvRow | None:
            nonlocal fields, index, cut, start_line
            blank = index == 0 and not begun
            end_field()
            row = None if blank else CsvRow(start_line, fields, index, cut)
            fields, index, cut = {}, 0, False
            start_line = line
            return row

        while block := self.fh.read(_BLOCK):
            i, n = 0, len(block)
            while i < n:
                if after_cr:  # "\r\n" is one line end
                    after_cr = False
                    if block[i] == "\n":
                        i += 1
                        continue
                if quote_seen:
                    quote_seen = False
                    if block[i] == '"':  # "" inside quotes: one quote character
                        take('"')
                        i += 1
                        continue
                    quoted = False  # that was the closing quote
                if quoted:
                    j = block.find('"', i)
                    stop = n if j < 0 else j
                    line += block.count("\n", i, stop)
                    take(block[i:stop])
                    if j < 0:
                        break
                    quote_seen = True
                    i = j + 1
                    continue
                match = special.search(block, i)
                stop = n if match is None else match.start()
                if stop > i:
                    take(block[i:stop])
                    begun = True
                if match is None:
                    break
                char = block[stop]
                i = stop + 1
                if char == '"':
                    if not begun:
                        quoted = begun = True
                    else:
                        take('"')  # a quote inside an unquoted field is kept as it is
                elif char == self.delimiter:
                    end_field()
                else:  # "\r" or "\n": the record ends
                    after_cr = char == "\r"
                    line += 1
                    row = end_record()
                    if row is not None:
                        yield row
        if quoted and not quote_seen:
            end_field()
            yield CsvRow(start_line, fields, index, cut, unclosed=True)
        elif index or begun:
            row = end_record()
            if row is not None:
                yield row


def _csv(path: Path, text_field: str | None, pair_field: str | None, regular: bool) -> Source:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # one handle, read once: the header now, the rows when the run starts
    fh = open(path, encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115
    reader = CsvReader(fh, delimiter)
    rows = iter(reader)
    try:
        header_row = next(rows, None)
        if header_row is None:
            raise AttnscopeError(f"'{path}' is empty: a CSV corpus needs a header row.")
        if header_row.width > _MAX_COLUMNS:
            raise AttnscopeError(f"'{path}' has {header_row.width:,} columns in its header "
                                 f"row; a CSV corpus may have at most {_MAX_COLUMNS:,}.")
        header = [header_row.fields[i] for i in range(header_row.width)]
        field = _pick_field(header, text_field, path, "text")
        pair = _pick_field(header, pair_field, path, "pair") if pair_field else None
    except BaseException:
        fh.close()
        raise
    wanted = {header.index(field)} | ({header.index(pair)} if pair else set())
    reader.keep = wanted

    def records(max_chars: int) -> Iterator[CorpusItem | Problem]:
        reader.max_chars = max_chars
        with fh:
            for row in rows:
                if row.unclosed:
                    yield Problem(row.line, "malformed", f"line {row.line} opens a quoted field "
                                  "that is never closed; the rest of the file was skipped")
                    return
                record = {name: row.fields.get(header.index(name)) for name in
                          (field, pair) if name is not None}
                yield from _record_texts(record, field, pair, row.line, "line", max_chars,
                                         row.cut)

    counter = (lambda stop: max(_count_lines(path, None if stop is None else stop + 1) - 1, 0)
               ) if regular else None
    return Source(records, str(path), "line", counter)


def _sliced(column: Any, max_chars: int) -> list[Any]:
    """A pyarrow string column as Python values, each string kept to ``max_chars + 1``
    characters (one more than a text may use, so a cut is seen), never whole."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_slice_codeunits(column, 0, max_chars + 1)
    return column.to_pylist()


def _arrow_records(batches: Iterable[Any], names: list[str], field: str, pair: str | None,
                   max_chars: int) -> Iterator[CorpusItem | Problem]:
    """Items of pyarrow record batches or tables holding the columns ``names``."""
    row = 0
    for batch in batches:
        columns = [_sliced(batch.column(name), max_chars) for name in names]
        for values in zip(*columns, strict=True):
            row += 1
            yield from _record_texts(dict(zip(names, values, strict=True)), field, pair, row,
                                     "row", max_chars)


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
    wanted = [field] + ([pair] if pair else [])

    def records(max_chars: int) -> Iterator[CorpusItem | Problem]:
        yield from _arrow_records(handle.iter_batches(batch_size=64, columns=wanted), wanted,
                                  field, pair, max_chars)

    return Source(records, str(path), "row", lambda stop: handle.metadata.num_rows)


def _from_dataset(dataset: Any, text_field: str | None, pair_field: str | None,
                  label: str) -> Source:
    if not hasattr(dataset, "column_names") or isinstance(dataset.column_names, dict):
        splits = ", ".join(getattr(dataset, "keys", lambda: [])())
        raise AttnscopeError(f"The dataset has several splits ({splits}): pick one, e.g. "
                             "dataset['train'].")
    path = Path(label)
    field = _pick_field(list(dataset.column_names), text_field, path, "text")
    pair = _pick_field(list(dataset.column_names), pair_field, path, "pair") if pair_field else None
    wanted = [field] + ([pair] if pair else [])

    def records(max_chars: int) -> Iterator[CorpusItem | Problem]:
        if hasattr(dataset, "with_format") and hasattr(dataset, "__len__"):
            # as Arrow tables, so a huge text is sliced before it becomes a Python string
            tables = dataset.select_columns(wanted).with_format("arrow").iter(batch_size=64)
            yield from _arrow_records(tables, wanted, field, pair, max_chars)
        else:  # an IterableDataset: rows as they come
            for row, record in enumerate(dataset, start=1):
                yield from _record_texts(record, field, pair, row, "row", max_chars)

    sized = hasattr(dataset, "__len__")
    return Source(records, label, "row", (lambda stop: len(dataset)) if sized else None)


def _from_iterable(items: Iterable[Any], text_field: str, pair_field: str | None,
                   max_chars: int) -> Iterator[CorpusItem | Problem]:
    for index, value in enumerate(items, start=1):
        if isinstance(value, Mapping):
            yield from _record_texts(value, text_field, pair_field, index, "item", max_chars)
        elif isinstance(value, str):
            yield from _item(index, value, None, "item", max_chars)
        elif (isinstance(value, tuple | list) and len(value) == 2
              and all(isinstance(v, str) for v in value)):
            yield from _item(index, value[0], value[1], "item", max_chars)
        else:
            yield Problem(index, "malformed", f"item {index} is a {type(value).__name__}, not "
                          "a text or a (text, text_b) pair; it was skipped")
