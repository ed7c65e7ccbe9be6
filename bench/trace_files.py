"""What does checking a trace file cost, and what does it save?

    python bench/trace_files.py         # about half a minute

1. A BERT-base-shaped trace (12 layers x 12 heads, 384 tokens, hidden 768, with queries,
   keys and values: about 100 MB on disk): ``Trace.load`` (every header checked against the
   bytes stored before any data is read, every CRC, every field's shape and type, and the
   attention's values) against ``np.load`` reading the same arrays with no check at all.
   Time (median of 3, interleaved) and peak memory (tracemalloc) side by side.
2. A file of a few KB whose attentions.npy declares a 100 GB array: the time and peak
   memory ``Trace.load`` needs to refuse it.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

import attnscope as at


def bert_base_trace(n: int = 384, layers: int = 12, heads: int = 12, hidden: int = 768):
    """A Trace shaped like BERT-base's for ``n`` tokens; attention is a softmax of noise."""
    rng = np.random.default_rng(0)
    att = rng.standard_normal((layers, heads, n, n), dtype=np.float32)
    np.exp(att, out=att)
    att /= att.sum(-1, keepdims=True)
    qkv = {name: rng.standard_normal((layers, heads, n, hidden // heads), dtype=np.float32)
           for name in ("queries", "keys", "values")}
    tokens = ["[CLS]", *(f"w{i}" for i in range(n - 2)), "[SEP]"]
    return at.Trace(
        model_name="bert-base-shaped", model_type="bert", architecture="encoder",
        text=" ".join(tokens[1:-1]), text_b=None, tokens=tokens,
        input_ids=np.arange(n), token_type_ids=np.zeros(n, np.int64),
        special_mask=np.array([t.startswith("[") for t in tokens]),
        word_ids=np.arange(n) - 1, offsets=np.zeros((n, 2), np.int64),
        segment_ids=np.zeros(n, np.int64), sentence_b_start=None, attentions=att,
        hidden_states=rng.standard_normal((layers + 1, n, hidden), dtype=np.float32), **qkv,
    )


def plain_np_load(path: Path) -> dict:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def measure(function, path: Path) -> tuple[float, int]:
    """(seconds, peak bytes traced) for one call."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = function(path)
    except at.AttnscopeError:
        result = None
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return seconds, peak


def huge_header_file(folder: Path, members: dict) -> Path:
    path = folder / "huge.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, array in members.items():
            buffer = io.BytesIO()
            if name == "attentions":
                npy_format.write_array_header_2_0(
                    buffer, {"descr": "<f4", "fortran_order": False,
                             "shape": (25, 1000, 1000, 1000)})  # 100 GB
                buffer.write(b"\0" * 4096)
            else:
                np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trace = bert_base_trace()
        path = trace.save(folder / "bert-base-384.npz")
        size = path.stat().st_size
        runs: dict[str, list[tuple[float, int]]] = {"np.load": [], "Trace.load": []}
        for _ in range(3):
            runs["np.load"].append(measure(plain_np_load, path))
            runs["Trace.load"].append(measure(at.Trace.load, path))
        print(f"1. BERT-base-shaped trace, 384 tokens, with q/k/v: {size / 2**20:.0f} MiB file")
        medians = {}
        for name, values in runs.items():
            seconds = statistics.median(v[0] for v in values)
            peak = max(v[1] for v in values)
            medians[name] = (seconds, peak)
            print(f"   {name:<11} {seconds:6.3f} s   peak {peak / 2**20:6.0f} MiB "
                  f"({peak / size:.2f}x the file)")
        ratio = medians["Trace.load"][0] / medians["np.load"][0]
        print(f"   Trace.load / np.load time: {ratio:.2f}x (the price of every check)")

        with np.load(path) as data:  # the metadata and token arrays; attentions lies
            members = {name: data[name] for name in data.files
                       if name not in ("hidden_states", "queries", "keys", "values")}
        huge = huge_header_file(folder, members)
        seconds, peak = measure(at.Trace.load, huge)
        print(f"2. {huge.stat().st_size / 1024:.0f} KiB file declaring a 100 GB array: refused "
              f"in {seconds * 1000:.1f} ms, peak {peak / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
