"""Trace files: every bad file gives one sentence naming it, never a traceback or a wrong Trace.

The traces come from a tiny T5 run for real (encoder, decoder and cross attention, with
queries, keys and values), saved by ``Trace.save``; bad files are real files made from them.
"""

from __future__ import annotations

import io
import json
import math
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

import attnscope as at
from attnscope.errors import AttnscopeError
from attnscope.trace import InvalidTraceError

Members = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def trace(tiny_models) -> at.Trace:
    """A real encoder-decoder trace with every field filled (7 encoder, 5 decoder tokens)."""
    return at.capture(tiny_models["t5"], "leaves fall", "in autumn", qkv=True)


@pytest.fixture(scope="module")
def good_file(trace, tmp_path_factory) -> Path:
    return trace.save(tmp_path_factory.mktemp("good") / "trace.npz")


@pytest.fixture(scope="module")
def members(good_file) -> Members:
    """The saved file's members (``__meta__`` and the arrays), as numpy reads them."""
    with np.load(good_file) as data:
        return {name: data[name] for name in data.files}


def write_npz(path: Path, members: Members) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **members)
    return path


def meta_of(members: Members) -> dict:
    return json.loads(str(members["__meta__"]))


def with_meta(members: Members, **changes) -> Members:
    meta = meta_of(members)
    for key, value in changes.items():
        if value is _DROP:
            meta.pop(key, None)
        else:
            meta[key] = value
    return {**members, "__meta__": np.array(json.dumps(meta))}


def with_arrays(members: Members, **changes) -> Members:
    out = dict(members)
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key)
        else:
            out[key] = value
    return out


_DROP = object()


def load_error(path: Path) -> str:
    """The message ``Trace.load(path)`` raises, checked to be one sentence naming the file."""
    with pytest.raises(AttnscopeError) as caught:
        at.Trace.load(path)
    message = str(caught.value)
    assert message.startswith(f"Cannot load the trace '{path}': "), message
    assert "\n" not in message and message.endswith("."), message
    assert "Traceback" not in message
    return message


def test_a_saved_trace_loads_back_exactly(trace, good_file):
    back = at.Trace.load(good_file)
    for name in ("tokens", "decoder_tokens", "text", "text_b", "architecture", "extra"):
        assert getattr(back, name) == getattr(trace, name)
    for name in ("attentions", "queries", "cross_attentions", "decoder_hidden_states",
                 "special_mask", "offsets"):
        assert np.array_equal(getattr(back, name), getattr(trace, name))
        assert getattr(back, name).dtype == getattr(trace, name).dtype
    assert back.parts == ("self", "decoder", "cross")
    # Loading checked every part's attention already: analyses do not scan it again.
    assert back.__dict__["_checked_parts"] == {"self", "decoder", "cross"}


# ----- files that are not trace archives at all ------------------------------------------------

def test_files_that_are_not_traces(tmp_path, good_file, members):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert "the file is empty" in load_error(empty)

    text = tmp_path / "notes.npz"
    text.write_text("these are my notes, not a trace\n")
    assert "not an .npz archive" in load_error(text)

    single = tmp_path / "attention.npz"
    with open(single, "wb") as handle:
        np.save(handle, members["attentions"])
    assert "one numpy array (.npy)" in load_error(single)

    noise = tmp_path / "noise.npz"
    noise.write_bytes(b"PK" + np.random.default_rng(0).bytes(3000))
    assert "damaged or truncated" in load_error(noise)

    other_zip = tmp_path / "other.npz"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "'readme.txt', which is not a trace field" in load_error(other_zip)

    assert "is a folder" in load_error(tmp_path)
    assert "does not exist" in load_error(tmp_path / "missing.npz")
    assert "not a regular file" in load_error(Path("/dev/zero"))
    assert "a part of the path is a file" in load_error(good_file / "inside.npz")
    for odd in ("nul\0inside.npz", "lone \ud800 surrogate.npz"):
        with pytest.raises(AttnscopeError, match="holds characters that cannot be a file name"):
            at.Trace.load(tmp_path / odd)


def test_truncated_files_at_every_eighth(tmp_path, good_file):
    data = good_file.read_bytes()
    for eighth in range(1, 8):
        cut = tmp_path / f"cut{eighth}.npz"
        cut.write_bytes(data[: len(data) * eighth // 8])
        assert "damaged or truncated" in load_error(cut)


def test_damaged_bytes_are_caught_by_the_checksum(tmp_path, good_file):
    """A flipped bit inside an array's data gives a sentence, not a Trace with a wrong number."""
    data = bytearray(good_file.read_bytes())
    with zipfile.ZipFile(good_file) as archive:
        info = archive.getinfo("attentions.npy")
    inside = info.header_offset + 30 + len(info.filename) + 200  # past the .npy header
    data[inside] ^= 0x10
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(bytes(data))
    assert "Bad CRC-32" in load_error(flipped)


def test_compressed_and_duplicated_members_are_refused(tmp_path, members):
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, **members)
    assert "is compressed" in load_error(packed)

    twice = tmp_path / "twice.npz"
    with zipfile.ZipFile(twice, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        for name, array in [*members.items(), ("attentions", members["attentions"])]:
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    assert "holds 'attentions.npy' twice" in load_error(twice)


# ----- metadata --------------------------------------------------------------------------------

META_CASES = [
    ({"tokens": _DROP}, "its metadata lacks tokens"),
    ({"model_name": _DROP, "text": _DROP}, "its metadata lacks model_name or text"),
    ({"colour": "red"}, "unknown fields ['colour']"),
    ({"tokens": "leaves fall"}, "field tokens must be a list, not 'leaves fall'"),
    ({"tokens": [1, 2, 3, 4, 5, 6, 7]}, "tokens must all be strings, but token 0 is int"),
    ({"decoder_tokens": ["a", None, "c", "d", "e"]}, "token 1 is NoneType"),
    ({"text_b": 3}, "field text_b must be a string or null, not 3"),
    ({"sentence_b_start": "2"}, "field sentence_b_start must be a whole number or null"),
    ({"sentence_b_start": 99}, "sentence_b_start must be None or a token position from 0 to 7"),
    ({"truncated": -1}, "truncated must be a count of tokens (0 or more), not -1"),
    ({"truncated": True}, "field truncated must be a whole number, not True"),
    ({"truncated": 1.5}, "field truncated must be a whole number, not 1.5"),
    ({"unit": "letter"}, "unit must be 'token' or 'word', not 'letter'"),
    ({"architecture": "rnn"}, "architecture must be 'encoder', 'decoder' or 'encoder-decoder'"),
    ({"format_version": 2}, "it is a trace of format 2; this attnscope reads format 1"),
    ({"format_version": _DROP}, "it is a trace of format None"),
    ({"extra": [1, 2]}, "field extra must be an object, not [1, 2]"),
    ({"decoder_tokens": _DROP}, "is given but decoder_tokens is not"),
    ({"decoder_tokens": ["a", "b"]}, "decoder_attentions must have shape"),
    ({"tokens": ["only", "six", "tokens", "for", "seven", "rows"]},
     "attentions must have shape [L, H, T, T] = [*, *, 6, 6], not [2, 4, 7, 7]"),
]


@pytest.mark.parametrize(("changes", "expected"), META_CASES)
def test_bad_metadata(tmp_path, members, changes, expected):
    path = write_npz(tmp_path / "meta.npz", with_meta(members, **changes))
    assert expected in load_error(path)


def test_metadata_that_is_not_a_json_object(tmp_path, members):
    path = write_npz(tmp_path / "list.npz", {**members, "__meta__": np.array("[1, 2]")})
    assert "its metadata is a JSON list, not an object" in load_error(path)
    path = write_npz(tmp_path / "broken.npz", {**members, "__meta__": np.array("{'a': ")})
    assert "damaged or truncated" in load_error(path)
    path = write_npz(tmp_path / "deep.npz", {**members, "__meta__": np.array("[" * 100_000)})
    assert "damaged or truncated" in load_error(path)  # too deep for JSON, not a crash
    path = write_npz(tmp_path / "number.npz", {**members, "__meta__": np.array(5)})
    assert "'__meta__.npy' holds int64 values" in load_error(path)
    path = write_npz(tmp_path / "nometa.npz", with_arrays(members, __meta__=_DROP))
    assert "it has no metadata (__meta__)" in load_error(path)


# ----- arrays: shapes, types, values -----------------------------------------------------------

def _bad_array_cases(members: Members) -> list[tuple[dict, str]]:
    att = members["attentions"]
    nan = att.copy()
    nan[1, 2, 3, 4] = np.nan
    negative = att.copy()
    negative[0, 0, 0, :2] = [1.5, -0.5]
    negative[0, 0, 0, 2:] = 0
    unnormalised = att * 0.5
    infinite = att.copy()
    infinite[0, 0, 0, 0] = np.inf
    cross_nan = members["cross_attentions"].copy()
    cross_nan[0, 0, 0, 0] = np.nan
    structured = np.zeros(att.shape, dtype=[("a", "<f4")])
    return [
        ({"attentions": _DROP}, "it has no attentions array"),
        ({"input_ids": _DROP, "offsets": _DROP}, "it has no input_ids or offsets array"),
        ({"notes": np.arange(3)}, "'notes.npy', which is not a trace field"),
        ({"input_ids": members["input_ids"][:-1]},
         "input_ids must have shape [T] = [7], not [6]"),
        ({"offsets": np.zeros((7, 3), np.int64)},
         "offsets must have shape [T, 2] = [7, 2], not [7, 3]"),
        ({"hidden_states": members["hidden_states"][:2]},
         "hidden_states must have shape [L+1, T, D] = [3, 7, *], not [2, 7, 32]"),
        ({"queries": members["queries"][:, :3]},
         "queries must have shape [L, H, T, d_head] = [2, 4, 7, *], not [2, 3, 7, 8]"),
        ({"keys": members["keys"][..., :4]},
         "keys must have shape [L, H, T, d_head] = [2, 4, 7, 8], not [2, 4, 7, 4]"),
        ({"cross_attentions": members["cross_attentions"][..., :6]},
         "cross_attentions must have shape [L_dec, H_dec, T_dec, T] = [2, 4, 5, 7]"),
        ({"cross_attentions": _DROP},
         "decoder_attentions and cross_attentions must be given together"),
        ({"decoder_offsets": np.zeros((4, 2), np.int64)},
         "decoder_offsets must have shape [T_dec, 2] = [5, 2], not [4, 2]"),
        ({"decoder_hidden_states": members["decoder_hidden_states"][None]},
         "decoder_hidden_states must have shape [L_dec+1, T_dec, D] = [3, 5, *]"),
        ({"attentions": att[:0]}, "attentions holds 0 layers of 4 heads"),
        ({"attentions": (att > 0.5).astype(np.int64)},
         "attentions must hold floating-point numbers, not int64"),
        ({"attentions": att.astype(np.complex64)},
         "'attentions.npy' holds complex64 values"),
        ({"attentions": structured}, "'attentions.npy' holds [('a', '<f4')] values"),
        ({"attentions": np.empty(att.shape, dtype=object)}, "'attentions.npy' holds object"),
        ({"input_ids": members["input_ids"].astype(np.float64)},
         "input_ids must hold whole numbers, not float64"),
        ({"special_mask": members["special_mask"].astype(np.float32)},
         "special_mask must hold booleans, not float32"),
        ({"attentions": nan}, "the attention holds NaN or infinite values"),
        ({"attentions": infinite}, "the attention holds NaN or infinite values"),
        ({"attentions": negative}, "the attention holds negative values (down to -0.5)"),
        ({"attentions": unnormalised}, "the attention has rows that do not sum to 1"),
        ({"cross_attentions": cross_nan}, "the cross attention holds NaN or infinite values"),
    ]


def test_bad_arrays(tmp_path, members):
    for i, (changes, expected) in enumerate(_bad_array_cases(members)):
        path = write_npz(tmp_path / f"arrays{i}.npz", with_arrays(members, **changes))
        message = load_error(path)
        assert expected in message, (changes.keys(), message)


def test_other_byte_orders_and_layouts_load_as_the_same_trace(tmp_path, trace, members):
    """Big-endian and Fortran-ordered arrays are valid .npy files: they load, as native arrays."""
    swapped = {name: (a.astype(a.dtype.newbyteorder(">")) if a.dtype.kind in "fiu" else a)
               for name, a in members.items()}
    swapped["hidden_states"] = np.asfortranarray(swapped["hidden_states"])
    back = at.Trace.load(write_npz(tmp_path / "big-endian.npz", swapped))
    assert back.attentions.dtype == np.float32 and back.attentions.dtype.isnative
    assert np.array_equal(back.attentions, trace.attentions)
    assert np.array_equal(back.hidden_states, trace.hidden_states)
    assert np.array_equal(back.input_ids, trace.input_ids)


# ----- sizes: a small file never expands ------------------------------------------------------

def _npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array_header_2_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def test_a_header_declaring_100_gb_is_refused_before_any_allocation(tmp_path, members):
    """A file of a few KB whose attentions.npy declares a 100 GB array: refused from the
    header alone, quickly, without allocating anything of that size."""
    path = tmp_path / "huge.npz"
    huge_shape = (25, 1000, 1000, 1000)  # 25e9 float32 = 100 GB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, array in members.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            data = buffer.getvalue()
            if name == "attentions":
                data = _npy_header(huge_shape) + b"\0" * 4096
            archive.writestr(f"{name}.npy", data)
    assert path.stat().st_size < 40_000
    assert math.prod(huge_shape) * 4 == 100 * 10**9

    tracemalloc.start()
    try:
        message = load_error(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "'attentions.npy' declares 100000000000 bytes of data but holds 4096" in message
    assert peak < 5 * 2**20, f"peak memory {peak} bytes while refusing"


def test_impossible_and_lying_sizes(tmp_path, members):
    path = tmp_path / "negative.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("__meta__.npy", _npy_header((), "<U4") + "{}  ".encode("utf-32-le"))
        archive.writestr("attentions.npy", _npy_header((-5, 2)))
    assert "'attentions.npy' declares the impossible shape [-5, 2]" in load_error(path)

    # The central directory says a member holds far more than the file does.
    data = bytearray(write_npz(tmp_path / "ok.npz", members).read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        start = archive.start_dir
        info = archive.getinfo("attentions.npy")
    entry = start  # walk the central directory's entries to the one for attentions.npy
    while data[entry + 46: entry + 46 + len(info.filename)] != b"attentions.npy":
        entry = data.index(b"PK\x01\x02", entry + 4)
    for offset in (20, 24):  # compressed and uncompressed sizes: 2 GiB
        data[entry + offset: entry + offset + 4] = (2**31).to_bytes(4, "little")
    lying = tmp_path / "lying.npz"
    lying.write_bytes(bytes(data))
    message = load_error(lying)
    assert "its members claim" in message and "the file holds" in message


# ----- Trace itself: shapes checked on construction, values only on demand -------------------

def test_construction_checks_shapes_not_values(trace):
    with pytest.raises(InvalidTraceError, match=r"input_ids must have shape \[T\] = \[7\]"):
        trace.replace(input_ids=np.arange(3))
    with pytest.raises(ValueError, match=r"hidden_states must have shape \[L\+1, T, D\]"):
        trace.replace(hidden_states=np.zeros((2, 7, 4), np.float32))
    with pytest.raises(AttnscopeError, match="decoder_tokens must all be strings"):
        trace.replace(decoder_tokens=[b"a", "b", "c", "d", "e"])
    with pytest.raises(AttnscopeError, match="sentence_b_start must be None or a token position"):
        trace.replace(sentence_b_start=-1)
    with pytest.raises(AttnscopeError, match="attentions must hold floating-point numbers"):
        trace.replace(attentions=np.ones(trace.attentions.shape, dtype=object))
    # numpy integers are kept as plain ints, so the trace saves as JSON.
    assert type(trace.replace(sentence_b_start=np.int64(3)).sentence_b_start) is int

    # A large attention full of NaN builds instantly (no scan of the values); check() says it.
    n = 1500
    tokens = tuple(f"t{i}" for i in range(n))
    big = np.full((1, 1, n, n), np.nan, dtype=np.float32)
    plain = at.Trace(
        model_name="m", model_type="bert", architecture="encoder", text="x", text_b=None,
        tokens=tokens, input_ids=np.zeros(n, np.int64), token_type_ids=np.zeros(n, np.int64),
        special_mask=np.zeros(n, bool), word_ids=np.arange(n), offsets=np.zeros((n, 2), int),
        segment_ids=np.zeros(n, np.int64), sentence_b_start=None, attentions=big,
        hidden_states=np.zeros((2, n, 0), np.float32),
    )
    with pytest.raises(AttnscopeError, match="holds NaN or infinite values"):
        plain.check()


def test_lone_surrogates_and_numpy_scalars_in_metadata_round_trip(tmp_path, trace):
    odd = trace.replace(text="broken \ud800 text", extra={**trace.extra, "n": np.int32(4)})
    back = at.Trace.load(odd.save(tmp_path / "odd"))
    assert back.text == "broken \ud800 text"
    assert back.extra["n"] == 4
    with pytest.raises(AttnscopeError, match="its metadata cannot be written as JSON"):
        trace.replace(extra={"model": object()}).save(tmp_path / "object.npz")
    assert not list(tmp_path.glob("object*")) and not list(tmp_path.glob(".*"))


# ----- any mutation of a real file: AttnscopeError or a valid Trace ---------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 20) | st.floats(allow_nan=True)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def mutation_base(good_file, members, tmp_path_factory):
    data = good_file.read_bytes()
    with zipfile.ZipFile(good_file) as archive:
        hot = set(range(archive.start_dir, len(data)))  # the central directory
        for info in archive.infolist():  # local headers and .npy headers
            hot.update(range(info.header_offset, info.header_offset + 30 + 64 + 128))
    hot_positions = sorted(p for p in hot if p < len(data))
    return data, hot_positions, members, tmp_path_factory.mktemp("mutations") / "mutated.npz"


def _mutations(size: int, hot_positions: list[int], names: list[str], meta_keys: list[str]):
    position = st.integers(0, size - 1) | st.sampled_from(hot_positions)
    byte_ops = st.one_of(
        st.tuples(st.just("flip"), st.lists(st.tuples(position, st.integers(0, 7)),
                                             min_size=1, max_size=6)),
        st.tuples(st.just("truncate"), st.integers(0, size - 1)),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=40)),
        st.tuples(st.just("delete"), position, st.integers(1, 300)),
    )
    member_ops = st.one_of(
        st.tuples(st.just("meta"), st.sampled_from([*meta_keys, "new_field"]),
                  _JSON | st.just(_DROP)),
        st.tuples(st.just("swap"), st.sampled_from(names), st.sampled_from(names)),
        st.tuples(st.just("reshape"), st.sampled_from(names[1:]), st.integers(0, 3)),
    )
    return st.lists(byte_ops | member_ops, min_size=1, max_size=3)


def _apply(data: bytes, members: Members, ops) -> bytes:
    rebuilt = dict(members)
    touched = False
    for op in ops:
        if op[0] == "meta" and rebuilt["__meta__"].dtype.kind == "U":  # not swapped away
            rebuilt = with_meta(rebuilt, **{op[1]: op[2]})
            touched = True
        elif op[0] == "swap":
            rebuilt[op[1]], rebuilt[op[2]] = rebuilt[op[2]], rebuilt[op[1]]
            touched = True
        elif op[0] == "reshape":  # same bytes, another shape: drop or add an axis, transpose
            array = rebuilt[op[1]]
            rebuilt[op[1]] = [array.ravel(), array[None], array.T, array[..., :1]][op[2]]
            touched = True
    if touched:
        buffer = io.BytesIO()
        np.savez(buffer, **rebuilt)
        data = buffer.getvalue()
    out = bytearray(data)
    for op in ops:
        if op[0] == "flip":
            for pos, bit in op[1]:
                if pos < len(out):
                    out[pos] ^= 1 << bit
        elif op[0] == "truncate":
            del out[op[1]:]
        elif op[0] == "insert":
            out[op[1]:op[1]] = op[2]
        elif op[0] == "delete":
            del out[op[1]: op[1] + op[2]]
    return bytes(out)


def test_any_mutation_of_a_trace_file_gives_a_trace_or_one_sentence(mutation_base):
    data, hot_positions, members, path = mutation_base
    names = list(members)
    meta_keys = list(meta_of(members))

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(ops=_mutations(len(data), hot_positions, names, meta_keys))
    def check(ops):
        path.write_bytes(_apply(data, members, ops))
        try:
            back = at.Trace.load(path)
        except AttnscopeError as err:
            message = str(err)
            assert message.startswith(f"Cannot load the trace '{path}': ")
            assert "\n" not in message and len(message) < 400, message
        else:  # whatever loads is a whole, consistent trace
            assert back.attentions.shape[2:] == (len(back.tokens),) * 2
            assert back.parts == ("self", "decoder", "cross")

    check()
