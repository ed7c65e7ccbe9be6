"""The ``attnscope`` command.

Every sub-command is a small function over the Python API. A person's mistake (empty text,
layer out of range, unknown model, missing folder...) prints one sentence and exits with
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from attnscope.errors import AttnscopeError, check_count, check_index
from attnscope.files import check_writable, describe_os_error, write_text

__all__ = ["main"]

SEED_SENTENCE = "The girl poured water into a tall glass until it overflowed."

def _add_text_arguments(parser: argparse.ArgumentParser, *, pair: bool = True) -> None:
    parser.add_argument("text", nargs="?", help="the text to look at (or use --file)")
    if pair:
        parser.add_argument(
            "text_b", nargs="?",
            help="a second sentence (a BERT sentence pair), or the decoder's text for "
                 "encoder-decoder models such as T5 and BART",
        )
    parser.add_argument("-f", "--file", type=Path, help="read the text from this UTF-8 file")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--model", default=None,
        help="a Hugging Face model name or a local directory (default: the embedded "
             "sentence-transformers/all-MiniLM-L6-v2)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: auto)")
    parser.add_argument("--no-truncate", action="store_true",
                        help="fail on text longer than the model's limit instead of cutting it")
    parser.add_argument("--words", action="store_true",
                        help="merge sub-word tokens into words")
    parser.add_argument("--no-special-tokens", action="store_true",
                        help="tokenize without [CLS], [SEP], <s>... (add_special_tokens=False)")


# Characters read from --file for each token the model can take: tokens rarely cover more
# than a few characters, so the text read always holds more than the model can take.
_CHARS_PER_TOKEN = 64
_MAX_CHARS_WITHOUT_LIMIT = 1_000_000


def _read_text(args: argparse.Namespace, facts=None) -> tuple[str, str | None]:
    text_b = getattr(args, "text_b", None)
    if args.file is not None:
        if args.text is not None and text_b is not None:
            raise AttnscopeError("Give the text either as arguments or with --file, not both.")
        # With --file, a single positional argument is the second text.
        text_b = args.text if args.text is not None else text_b
        limit = _MAX_CHARS_WITHOUT_LIMIT
        if facts is not None and facts.max_length:
            limit = facts.max_length * _CHARS_PER_TOKEN + 1024
        text = _read_file(args.file, limit, truncate=not getattr(args, "no_truncate", False))
    else:
        if args.text is None:
            raise AttnscopeError("Give a text to look at, or --file PATH.")
        text = args.text
    return text, text_b


def _read_file(path: Path, limit: int, *, truncate: bool) -> str:
    """The text of ``path``, reading at most ``limit`` characters (memory stays bounded for a
    huge file or a device such as /dev/zero); warns with how much was left unread."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(limit + 1)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise AttnscopeError(f"Cannot read '{path}': no such file.") from None
    except IsADirectoryError:
        raise AttnscopeError(f"Cannot read '{path}': it is a folder.") from None
    except UnicodeDecodeError as err:
        raise AttnscopeError(
            f"Cannot read '{path}': it is not UTF-8 text (byte {err.start} of a block)."
        ) from None
    except OSError as err:
        raise AttnscopeError(f"Cannot read '{path}': {describe_os_error(err)}.") from None
    if len(text) > limit:
        if not truncate:
            raise AttnscopeError(
                f"'{path}' is longer than the model can take (more than {limit:,} characters); "
                "leave out --no-truncate to cut it."
            )
        from attnscope.tokens import TruncationWarning

        rest = f"of its {size:,} bytes " if size > limit else ""
        warnings.warn(
            f"'{path}' is longer than the model can take: only its first {limit:,} characters "
            f"were read, the rest {rest}is dropped.",
            TruncationWarning, stacklevel=2,
        )
        text = text[:limit]
    return text.strip("\n")


def _output_path(path: Path, suffixes: Sequence[str]) -> Path:
    if path.suffix.lower() not in suffixes:
        raise AttnscopeError(
            f"Cannot write '{path}': the file name must end in {', '.join(suffixes)}."
        )
    return check_writable(path, probe=True)


def _check_indices(args: argparse.Namespace, facts) -> None:
    """Check --layer and --head against the model's config, before the slow load."""
    if facts is None:
        return
    part = getattr(args, "part", "self")
    if part in ("decoder", "cross") and facts.architecture != "encoder-decoder":
        raise AttnscopeError(
            f"--part {part} needs an encoder-decoder model (T5, BART); this one is "
            f"{facts.architecture}-only."
        )
    layers = facts.num_decoder_layers if part in ("decoder", "cross") else facts.num_layers
    if getattr(args, "layer", None) is not None and not getattr(args, "all_layers", False):
        check_index(args.layer, layers, "layer")
    if getattr(args, "head", None) is not None and not getattr(args, "all_heads", False):
        check_index(args.head, facts.num_heads, "head")


#: Keys of config.json that hold the layer and head counts of an encoder or decoder, as
#: transformers' configs spell them (BERT-like, GPT-2, DistilBERT, T5's encoder).
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers")
_HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads")


def _check_indices_from_config_file(args: argparse.Namespace) -> None:
    """--layer and --head against the counts written in a model folder's config.json, read as
    plain JSON: importing transformers and torch takes seconds, a typo should not. Any doubt
    (no folder, an encoder-decoder, a count left to the config's default) leaves the check to
    :func:`_check_indices`."""
    import json

    from attnscope.models import default_model_dir

    if getattr(args, "part", "self") != "self":
        return
    try:
        folder = Path(args.model).expanduser() if args.model else default_model_dir()
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, AttnscopeError):
        return
    if not isinstance(config, dict) or config.get("is_encoder_decoder"):
        return

    def count(keys: tuple[str, ...]) -> int | None:
        for key in keys:
            value = config.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    layers, heads = count(_LAYER_KEYS), count(_HEAD_KEYS)
    if (layers is not None and getattr(args, "layer", None) is not None
            and not getattr(args, "all_layers", False)):
        check_index(args.layer, layers, "layer")
    if (heads is not None and getattr(args, "head", None) is not None
            and not getattr(args, "all_heads", False)):
        check_index(args.head, heads, "head")


def _text_and_model(args: argparse.Namespace):
    """The text(s) to look at, checked before the slow model load, and the loaded model."""
    import attnscope as at
    from attnscope.models import peek

    def check(text: str, text_b: str | None) -> None:
        at.tokens.check_text(text)
        if text_b is not None:
            at.tokens.check_text(text_b, "second text")

    if args.file is None:  # a text given inline is checked first: it costs nothing
        check(*_read_text(args))
    _check_indices_from_config_file(args)  # before transformers and torch are even imported
    facts = peek(args.model)  # the config alone, well under a second
    _check_indices(args, facts)
    text, text_b = _read_text(args, facts)
    check(text, text_b)
    return text, text_b, at.load(args.model, device=args.device)


def _capture(model, text: str, text_b: str | None, args: argparse.Namespace, *,
             qkv: bool = False, attention: str | None = "eager"):
    """Capture as the options ask. With ``qkv``, also record queries, keys and values where
    the model's family has an adapter (the neuron view and norms use them); other families,
    and merged words, are captured without them. ``attention`` as in :func:`attnscope.capture`
    (None: eager unless its weights would pass the memory budget)."""
    import attnscope as at
    from attnscope.adapters import supported

    merge_words = getattr(args, "words", False)
    qkv = qkv and not merge_words and model.model_type in supported()
    return at.capture(model, text, text_b, truncate=not getattr(args, "no_truncate", False),
                      merge_words=merge_words, qkv=qkv,
                      add_special_tokens=not getattr(args, "no_special_tokens", False),
                      attention=attention)


def _load_and_capture(args: argparse.Namespace, *, qkv: bool = False,
                      attention: str | None = "eager"):
    text, text_b, model = _text_and_model(args)
    return model, _capture(model, text, text_b, args, qkv=qkv, attention=attention)


# ----- sub-commands --------------------------------------------------------------------------

def _cmd_tokens(args: argparse.Namespace) -> int:
    import attnscope as at

    text, text_b, model = _text_and_model(args)
    encoder_decoder = model.architecture == "encoder-decoder"
    table = at.tokenize(model, text, None if encoder_decoder else text_b,
                        truncate=not args.no_truncate,
                        add_special_tokens=not args.no_special_tokens)
    decoder = None
    if encoder_decoder and text_b is not None:
        decoder = at.tokenize(model, text_b, truncate=not args.no_truncate)
    if args.json:
        document = {"model": model.name, "text": text, "text_b": text_b,
                    "tokens": table.rows(), "decoded": table.decoded, "dropped": table.dropped,
                    "sentence_b_start": table.sentence_b_start,
                    "decoder_tokens": None if decoder is None else decoder.rows()}
        print(_json(document))
        return 0
    print(table.table())
    if decoder is not None:
        print("\ndecoder input:")
        print(decoder.table())
    return 0


def _json(document: object) -> str:
    """``document`` as JSON for scripts: NaN (a score that does not apply) becomes null."""
    import json
    import math

    def clean(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(document), ensure_ascii=False, indent=1, allow_nan=False)


def _cmd_heatmap(args: argparse.Namespace) -> int:
    import attnscope as at

    out = _output_path(args.output, (".png", ".svg", ".pdf"))
    _, trace = _load_and_capture(args)
    if args.all_layers:
        fig = at.model_grid(trace, part=args.part)
    elif args.all_heads:
        fig = at.heads_grid(trace, args.layer, part=args.part)
    else:
        fig = at.heatmap(trace, args.layer, args.head, part=args.part)
    fig.save(out)
    print(f"wrote {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the default model: the example sentence's tokens and attention figures."""
    import attnscope as at
    from attnscope.models import peek

    steps = _Steps()  # "done in" counts from here: the checks below import transformers
    folder: Path = args.output
    text = SEED_SENTENCE if args.text is None else args.text
    at.tokens.check_text(text)
    if not folder.parent.is_dir():
        raise AttnscopeError(f"Cannot write '{folder}': folder '{folder.parent}' does not exist.")
    if folder.exists() and not folder.is_dir():
        raise AttnscopeError(f"Cannot write into '{folder}': it is a file, not a folder.")
    peek(args.model)  # a folder that would need its own code is refused before anything
    try:
        folder.mkdir(exist_ok=True)
    except OSError as err:
        reason = ("the folder does not accept new folders" if err.errno == errno.ENOENT
                  else describe_os_error(err))
        raise AttnscopeError(f"Cannot create folder '{folder}': {reason}.") from None
    from attnscope.analysis import report
    from attnscope.render.views import all_views

    # Each step prints as it finishes, quickest files first, matplotlib's figures last.
    model = steps.run(lambda: at.load(args.model, device=args.device), "loaded the model")
    tokens = at.tokenize(model, text)
    trace = steps.run(lambda: _capture(model, text, None, args, qkv=True), "captured", trace=1)
    print(tokens.table(), flush=True)
    for name, write in (
        ("tokens.txt", lambda path: write_text(path, tokens.table() + "\n")),
        ("trace.npz", lambda path: trace.save(path)),
        ("view.html", lambda path: all_views(trace).save(path)),
        ("report.html", lambda path: report(trace, model).save(path)),
        ("heatmap.png", lambda path: at.heatmap(trace, layer=-1, head=0).save(path)),
        ("heads_last_layer.png", lambda path: at.heads_grid(trace, layer=-1).save(path)),
        ("all_heads.png", lambda path: at.model_grid(trace).save(path)),
    ):
        steps.run(lambda write=write, name=name: write(folder / name), "wrote", path=1)
    print(f"done in {steps.total:.1f} s: open {folder / 'report.html'}", flush=True)
    return 0


class _Steps:
    """Runs the demo's steps one by one, printing what each did and how long it took (since
    the previous step finished, so the first one counts the checks and imports before it)."""

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._start = self._last = self._clock()

    @property
    def total(self) -> float:
        return self._clock() - self._start

    def run(self, step, what: str, *, trace: int = 0, path: int = 0):
        result = step()
        shown = f" {result!r}" if trace else f" {result}" if path else ""
        now = self._clock()
        print(f"{what}{shown} ({now - self._last:.1f} s)", flush=True)
        self._last = now
        return result


def _cmd_view(args: argparse.Namespace) -> int:
    """One page with the head, model and neuron views and the tokens, plus optional figures."""
    import attnscope as at
    from attnscope.render.views import all_views

    out = _output_path(args.output, (".html", ".htm"))
    _, trace = _load_and_capture(args, qkv=True)
    written = [all_views(trace, layer=args.layer, exact=args.exact).save(out)]
    for suffix, wanted in ((".png", args.png), (".svg", args.svg)):
        if not wanted:
            continue
        stem = out.with_suffix("")
        written.append(at.head_view(trace, args.layer).save(f"{stem}-head{suffix}"))
        written.append(at.model_view(trace).save(f"{stem}-model{suffix}"))
        if trace.queries is not None:
            written.append(at.neuron_view(trace, args.layer).save(f"{stem}-neuron{suffix}"))
    print(f"{trace!r}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_long_view(args: argparse.Namespace) -> int:
    """The long view of a text (captured lazily) or of a saved lazy trace."""
    import attnscope as at
    from attnscope.render.long_view import PAGE_BUDGET

    out = _output_path(args.output, (".html", ".htm"))
    if args.max_mb is not None and not args.max_mb > 0:
        raise AttnscopeError(f"--max-mb must be more than 0, not {args.max_mb:g}.")
    if args.trace is not None:
        if args.text or args.file:
            raise AttnscopeError("Give a text (or --file) or --trace, not both.")
        lazy = at.LazyTrace.load(args.trace)
    else:
        text, text_b, model = _text_and_model(args)
        lazy = at.capture(model, text, text_b, attention="lazy", truncate=not args.no_truncate,
                          add_special_tokens=not args.no_special_tokens)
        if args.save_trace is not None:
            print(f"wrote {lazy.save(args.save_trace)}")
    budget = PAGE_BUDGET if args.max_mb is None else int(args.max_mb * 1e6)
    view = at.long_view(lazy, layer=args.layer, head=args.head, token=args.token,
                        max_bytes=budget)
    print(f"{lazy!r}")
    print(f"wrote {view.save(out)}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    """Every step of one head's attention for one query token, as a table."""
    import attnscope as at

    if args.words:
        raise AttnscopeError("explain works on tokens: leave out --words.")
    query = args.position if args.position is not None else args.token
    if query is None:
        raise AttnscopeError("Name the query token with --token WORD or --position N.")
    check_count(args.dims, "--dims")
    text, text_b, model = _text_and_model(args)
    trace = at.capture(model, text, text_b, truncate=not args.no_truncate,
                       qkv=args.part == "self", add_special_tokens=not args.no_special_tokens,
                       attention="eager")
    explanation = at.explain(trace, args.layer, args.head, query, part=args.part, model=model)
    print(explanation.table(dims=args.dims))
    return 0


def _cmd_explain_token(args: argparse.Namespace) -> int:
    """The sources of one prediction under a context-mixing method, as a figure or a page."""
    from attnscope.analysis.context_mixing import context_mixing

    out = _output_path(args.output, (".png", ".svg", ".pdf", ".html", ".htm"))
    if args.words:
        raise AttnscopeError("explain-token works on tokens: leave out --words.")
    chosen = [(key, value) for key, value in (("token", args.target), ("cosine", args.cosine),
                                              ("dim", args.dim)) if value is not None]
    if len(chosen) > 1:
        raise AttnscopeError("Choose one target: --target, --cosine or --dim.")
    target = dict(chosen) if chosen else None
    text, _, model = _text_and_model(args)
    trace = _capture(model, text, None, args, qkv=True)
    result = context_mixing(trace, model, args.method, target, steps=args.steps)
    sources = result.sources()
    print(f"{result.method}: sources of {result.target or 'the pooled sentence'}")
    for j in sources.argsort()[::-1][: args.top]:
        print(f"  {j:4d}  {trace.tokens[j]!s:<16} {sources[j]:.4f}")
    print(f"wrote {result.save(out, layer=args.layer)}")
    return 0


def _cmd_heads(args: argparse.Namespace) -> int:
    """Every head's pattern scores as a table, and optionally a layers x heads map of labels."""
    from attnscope.analysis import SCORES, head_patterns

    out = _output_path(args.output, (".png", ".svg", ".pdf")) if args.output else None
    gallery = _output_path(args.gallery, (".png", ".svg", ".pdf")) if args.gallery else None
    attention = {"auto": None, "eager": "eager", "lazy": "lazy"}[args.attention]
    if gallery is not None and attention == "lazy":
        raise AttnscopeError("--gallery draws whole heatmaps, which --attention lazy does not "
                             "hold; leave out one of them.")
    _, trace = _load_and_capture(args, attention=attention if gallery is None else "eager")
    table = head_patterns(trace, part=args.part)
    # with --json, stdout holds only the JSON document; what was written goes to stderr
    notes = sys.stderr if args.json else sys.stdout
    if args.json:
        print(_json({"model": trace.model_name, "text": trace.text, "text_b": trace.text_b,
                     "part": table.part, "unit": table.unit, "tokens": list(table.tokens),
                     "num_layers": table.num_layers, "num_heads": table.num_heads,
                     "scores": list(SCORES), "heads": table.records()}))
    else:
        print(f"{trace!r}")
        print(table.to_text())
    if out is not None:
        print(f"wrote {table.label_map().save(out)}", file=notes)
    if gallery is not None:
        print(f"wrote {table.gallery(trace).save(gallery)}", file=notes)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML page with every analysis of one text (or sentence pair)."""
    from attnscope.analysis import report

    out = _output_path(args.output, (".html", ".htm"))
    model, trace = _load_and_capture(args, qkv=True)
    page = report(trace, model, output=args.output_token)
    print(f"{trace!r}")
    print(f"wrote {page.save(out)}")
    return 0


def _cmd_corpus(args: argparse.Namespace) -> int:
    """Per-head statistics over a corpus, streamed into a DuckDB file (resumable)."""
    from attnscope.corpora import corpus

    if args.output.suffix.lower() not in (".duckdb", ".db"):
        raise AttnscopeError(f"Cannot write '{args.output}': the file name must end in .duckdb.")
    result = corpus(args.model, args.input, args.output, text_field=args.text_field,
                    pair_field=args.pair_field, limit=args.limit, batch_size=args.batch_size,
                    top_k=args.top_k, engine=args.engine, ray_address=args.ray_address,
                    workers=args.workers, gpus_per_worker=args.gpus_per_worker, run=args.run,
                    progress=not args.quiet, importance=args.importance,
                    importance_budget=args.importance_budget or None,
                    embeddings=args.embeddings,
                    attention=None if args.attention == "auto" else args.attention,
                    budget=args.memory_budget)
    s = result.summary
    assert s is not None  # corpus() always says what it did
    for message in s.messages[:20]:
        print(f"attnscope: {message}", file=sys.stderr)
    if len(s.messages) > 20:
        print(f"attnscope: ... and {len(s.messages) - 20} more (see the problems table)",
              file=sys.stderr)
    skipped = ", ".join(f"{n} {kind}" for kind, n in sorted(s.problems.items()))
    lazily = f" ({s.lazy} with lazy attention)" if s.lazy else ""
    print(f"run {s.run_id!r}: {s.processed} texts now{lazily} ({s.texts_per_second:.1f} "
          f"texts/s, {s.tokens_per_second:,.0f} tokens/s), {s.already_done} already done, "
          f"{result.num_texts} in all" + (f"; {skipped}" if skipped else ""))
    print(f"wrote {args.output} (attnscope corpus-report {args.output} -o corpus.html)")
    return 0


def _corpus_run(args: argparse.Namespace):
    """The run ``--run`` names, else the store's latest, saying which when there are several."""
    from attnscope.corpora import CorpusResult

    result = CorpusResult(args.store, run=args.run, latest=True)
    if args.run is None and len(result.run_names) > 1:
        others = ", ".join(repr(name) for name in result.run_names[:-1])
        print(f"attnscope: '{args.store}' holds {len(result.run_names)} runs: reading the "
              f"latest, {result.run_id!r} (pick another with --run: {others})", file=sys.stderr)
    return result


def _cmd_corpus_report(args: argparse.Namespace) -> int:
    """The corpus page from a store."""
    from attnscope.corpora.report import corpus_report
    from attnscope.corpora.result import check_count

    check_count("--examples", args.examples, 0)
    out = _output_path(args.output, (".html", ".htm"))
    result = _corpus_run(args)
    page = corpus_report(result, model=args.model, examples=args.examples,
                         views=not args.no_views)
    print(f"wrote {page.save(out)}")
    return 0


def _cmd_atlas(args: argparse.Namespace) -> int:
    """The head atlas from a store."""
    from attnscope.corpora.atlas import atlas
    from attnscope.corpora.result import check_count

    check_count("--examples", args.examples, 0)
    out = _output_path(args.output, (".html", ".htm"))
    page = atlas(_corpus_run(args), examples=args.examples)
    print(f"wrote {page.save(out)}")
    return 0


def _cmd_corpus_search(args: argparse.Namespace) -> int:
    """What each head attends to from one token, across the corpus."""
    from attnscope.corpora.result import check_count

    check_count("--limit", args.limit, 1)
    check_count("--top", args.top, 1)
    result = _corpus_run(args)
    frame = result.search(args.token, model=args.model, limit=args.limit, top=args.top)
    print(frame.to_string(index=False))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake told in one line (like every other mistake)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help').\n")


def _cmd_generate(args: argparse.Namespace) -> int:
    """Generate an answer, streaming its tokens, and write the generation view or the trace.
    Ctrl-C keeps what was generated: it is written, and the exit status is 130."""
    import attnscope as at

    out = _output_path(args.output, (".html", ".htm", ".npz"))
    if not args.prompt or not args.prompt.strip():
        raise AttnscopeError('The prompt is empty: give the text to answer, as in attnscope '
                             'generate "What is the capital of France?" -o gen.html.')
    if args.max_new_tokens < 1:
        raise AttnscopeError(
            f"--max-new-tokens must be 1 or more, not {args.max_new_tokens}.")
    if args.temperature < 0:
        raise AttnscopeError(
            f"--temperature must be 0 (greedy) or more, not {args.temperature:g}.")
    if args.system is not None and not args.system.strip():
        raise AttnscopeError("--system is empty: give the system prompt's text, or leave it out.")
    from attnscope.generation import generate  # the model's generation loop, on first use

    model = at.load(args.model, device=args.device)

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    trace = generate(model, args.prompt, max_new_tokens=args.max_new_tokens,
                     temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                     stop=args.stop or None, system=args.system,
                     chat=bool(args.chat or args.system is not None), on_token=stream,
                     progress=False)
    sys.stdout.write("\n")
    steps = trace.num_tokens - (trace.answer_start or trace.num_tokens)
    if out.suffix.lower() == ".npz":
        written = trace.save(out)
    else:
        written = at.generation_view(trace, model=model).save(out)
    if (trace.generation or {}).get("stopped") == "interrupted":
        print(f"attnscope: interrupted: wrote the {steps} tokens generated so far to {written}",
              file=sys.stderr)
        return 130
    print(f"wrote {written} ({steps} tokens generated)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from attnscope.app import Limits, serve

    limits = Limits(max_chars=args.max_chars, max_tokens=args.max_tokens,
                    timeout_s=args.timeout, runs=args.runs, queue=args.queue,
                    flow_budget_s=args.flow_budget, cache=args.cache, cache_mb=args.cache_mb)
    serve(args.model or None, host=args.host, port=args.port, limits=limits, device=args.device,
          corpus=args.corpus, torch_threads=args.torch_threads or None, long=args.long)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="attnscope",
        description="See, measure and understand self-attention in Hugging Face transformers.",
    )
    from attnscope import __version__

    parser.add_argument("--version", action="version", version=f"attnscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo",
                       help="the example sentence's tokens and attention figures, in a folder",
                       description="Write the tokenization table, heatmaps and the trace of one "
                                   f"sentence (default: {SEED_SENTENCE!r}) into a folder.")
    p.add_argument("text", nargs="?", help="another sentence to use")
    p.add_argument("-o", "--output", type=Path, default=Path("attnscope-demo"),
                   help="folder to write (default: ./attnscope-demo)")
    p.add_argument("-m", "--model", default=None, help="model name or local directory")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("tokens", help="how a text is tokenized, as a table",
                       description="Print position, token, id, type id, mask, special flag and "
                                   "character span of every token, and the decoded text.")
    _add_text_arguments(p)
    _add_model_arguments(p)
    p.add_argument("--json", action="store_true",
                   help="print JSON instead: {model, text, text_b, tokens: [{position, token, "
                        "id, type_id, mask, special, start, end}], decoded, dropped, "
                        "sentence_b_start, decoder_tokens}")
    p.set_defaults(func=_cmd_tokens)

    p = sub.add_parser("heatmap", help="draw one head's attention (or a grid of heads)",
                       description="Draw attention as a heatmap: one head, every head of a "
                                   "layer (--all-heads) or every layer and head (--all-layers).")
    _add_text_arguments(p)
    _add_model_arguments(p)
    p.add_argument("-l", "--layer", type=int, default=-1, help="layer (default -1: the last)")
    p.add_argument("--head", type=int, default=0, help="head (default 0)")
    p.add_argument("--part", default="self", choices=["self", "decoder", "cross"],
                   help="which attention of an encoder-decoder model (default: self)")
    p.add_argument("--all-heads", action="store_true", help="every head of the layer")
    p.add_argument("--all-layers", action="store_true", help="every layer and head")
    p.add_argument("-o", "--output", type=Path, default=Path("attention.png"),
                   help="the figure file: .png, .svg or .pdf (default: attention.png)")
    p.set_defaults(func=_cmd_heatmap)

    p = sub.add_parser("view", help="interactive head, model and neuron views in one HTML page",
                       description="Write one self-contained HTML page (works offline) with the "
                                   "head view, model view, neuron view and tokens of a text.")
    _add_text_arguments(p)
    _add_model_arguments(p)
    p.add_argument("-l", "--layer", type=int, default=-1,
                   help="layer shown first (default -1: the last)")
    p.add_argument("-o", "--output", type=Path, default=Path("attention.html"),
                   help="the page to write (default: attention.html)")
    p.add_argument("--png", action="store_true",
                   help="also write static figures NAME-head.png, NAME-model.png, NAME-neuron.png")
    p.add_argument("--svg", action="store_true", help="the same figures as SVG")
    p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                   help="carry every weight as float16 so readouts show the model's number to "
                        "3 significant digits (default: for pages of up to 2^20 weights)")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("long-view", help="a long text (8k-32k tokens) in one HTML page",
                       description="Capture a long text lazily (exact weights on demand, no "
                                   "T x T arrays) and write the long view: the text coloured "
                                   "by one token's attention, one head's max-pooled overview "
                                   "and per-head strips. Or read a saved lazy trace.")
    _add_text_arguments(p)
    _add_model_arguments(p)
    p.add_argument("--trace", type=Path, default=None,
                   help="a saved lazy trace (LazyTrace.save) instead of a text")
    p.add_argument("--save-trace", type=Path, default=None,
                   help="also save the lazy trace (.npz), e.g. for attnscope serve --long")
    p.add_argument("-l", "--layer", type=int, default=-1, help="layer shown first (default -1)")
    p.add_argument("--head", type=int, default=0, help="head shown first (default 0)")
    p.add_argument("--token", type=int, default=None,
                   help="token selected first (default: the last)")
    p.add_argument("--max-mb", type=float, default=None,
                   help="the page's budget for attention data in MB (default 50)")
    p.add_argument("-o", "--output", type=Path, default=Path("long.html"),
                   help="the page to write (default: long.html)")
    p.set_defaults(func=_cmd_long_view)

    p = sub.add_parser("explain", help="every step of one head's attention for one token",
                       description="Print, for one query token, its query vector, every key, "
                                   "q⊙k, q·k, the scale, any bias or mask and the softmax, "
                                   "beside the model's own attention row.")
    _add_text_arguments(p)
    _add_model_arguments(p)
    p.add_argument("-l", "--layer", type=int, default=0, help="layer (default 0)")
    p.add_argument("--head", type=int, default=0, help="head (default 0)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("-t", "--token", help="the query token, e.g. girl")
    which.add_argument("-p", "--position", type=int, help="the query token's position")
    p.add_argument("--part", default="self", choices=["self", "decoder", "cross"],
                   help="which attention of an encoder-decoder model (default: self)")
    p.add_argument("--dims", type=int, default=4,
                   help="how many values of q⊙k to show per key (default 4)")
    p.set_defaults(func=_cmd_explain)

    from attnscope.mixing import METHODS

    p = sub.add_parser("explain-token",
                       help="which tokens a prediction comes from, by a context-mixing method",
                       description="Score how much each token shapes the target (a causal LM's "
                                   "next token, a masked LM's [MASK] prediction, or the pooled "
                                   "sentence embedding) under one method, and draw its sources.")
    _add_text_arguments(p, pair=False)
    _add_model_arguments(p)
    p.add_argument("--method", default="alti", choices=list(METHODS),
                   help="; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()))
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the figure (.png, .svg, .pdf) or a page (.html)")
    p.add_argument("--target", help="the predicted token to explain (default: the model's own "
                                    "prediction)")
    p.add_argument("--cosine", help="for models without an LM head: explain the cosine of the "
                                    "pooled embedding to this other text")
    p.add_argument("--dim", type=int, help="for models without an LM head: explain this "
                                           "dimension of the pooled embedding")
    p.add_argument("-l", "--layer", type=int, default=None,
                   help="draw this layer's scores instead of the rollout to the input")
    p.add_argument("--steps", type=int, default=20, help="Riemann steps of attattr (20)")
    p.add_argument("--top", type=int, default=10, help="how many sources to print (10)")
    p.set_defaults(func=_cmd_explain_token)

    p = sub.add_parser("heads", help="what each head does: pattern scores and labels",
                       description="Score every head on previous/next/self/first/separator/"
                                   "punctuation/duplicate/induction attention, entropy and "
                                   "distance; print the table and draw a layers x heads map.")
    _add_text_arguments(p)
    _add_model_arguments(p)
    p.add_argument("--part", default="self", choices=["self", "decoder"],
                   help="which self-attention of an encoder-decoder model (default: self)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="draw the layers x heads map of labels here (.png, .svg or .pdf)")
    p.add_argument("--gallery", type=Path, default=None,
                   help="draw the best heads of each pattern here (.png, .svg or .pdf)")
    p.add_argument("--attention", default="auto", choices=["auto", "eager", "lazy"],
                   help="eager: every weight held; lazy: queries and keys, each weight computed "
                        "when it is scored (any length); auto (default): eager unless its "
                        "weights would pass the memory budget")
    p.add_argument("--json", action="store_true",
                   help="print JSON instead: {model, text, text_b, part, unit, tokens, "
                        "num_layers, num_heads, scores, heads: [{layer, head, label, "
                        "label_score, class, <one field per score>}]}; a score that does not "
                        "apply is null")
    p.set_defaults(func=_cmd_heads)

    p = sub.add_parser("report", help="one HTML page with every analysis of a text",
                       description="Write one self-contained HTML page: tokens, interactive "
                                   "views, head patterns, rollout and flow, norm-based "
                                   "attention, layer trends and PCA.")
    _add_text_arguments(p)
    _add_model_arguments(p)
    p.add_argument("--output-token", type=int, default=None,
                   help="output token whose rollout/flow relevance is charted "
                        "(default: [CLS], or the last token of causal models)")
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                   help="the page to write (default: report.html)")
    p.set_defaults(func=_cmd_report)

    from attnscope.app.limits import Limits

    p = sub.add_parser("generate", help="generate an answer and see what each word attended to",
                       description="Generate an answer to a prompt with a generative model "
                                   "(default: SmolLM2-135M-Instruct), streaming its tokens, "
                                   "and write the generation view (.html) or the trace (.npz). "
                                   "Ctrl-C keeps what was generated so far.")
    p.add_argument("prompt", nargs="?", help="the prompt (the user's message with --chat)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the page (.html) or trace (.npz) to write")
    p.add_argument("-m", "--model", default="smollm2",
                   help="a generative model: a name, a local directory or a .gguf file "
                        "(default: smollm2)")
    p.add_argument("--system", default=None, help="a system prompt (implies --chat)")
    p.add_argument("--chat", action="store_true",
                   help="send the prompt through the tokenizer's chat template")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="the most tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 (default) takes the most likely token; above 0 samples")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="when sampling, draw from the most likely tokens that add up to this")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--stop", action="append", default=[],
                   help="a string that ends the answer (repeat for several)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: auto)")
    p.set_defaults(func=_cmd_generate)

    lim = Limits()
    p = sub.add_parser("serve", help="the explorer: a local web app to see, explain and "
                                     "compare attention",
                       description="Serve the explorer on this machine until Ctrl-C: type a "
                                   "text and see its views, head table, explanations, rollout "
                                   "and flow, or compare two texts or models. Its JSON API is "
                                   "documented at /docs. Needs the app extra "
                                   "(pip install 'attnscope[app]').")
    p.add_argument("-m", "--model", action="append", default=[],
                   help="a model visitors may pick (repeat for several; a hub name or a local "
                        "directory; default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: auto)")
    p.add_argument("--corpus", type=Path, default=None,
                   help="a corpus store (.duckdb from attnscope corpus) to browse in the "
                        "Corpus tab; opened read-only")
    p.add_argument("--long", type=Path, action="append", default=None, metavar="LAZY.npz",
                   help="a saved lazy trace (LazyTrace.save) to serve as a long view at "
                        "/long/<file stem>, tiles computed on request (repeat for several)")
    p.add_argument("--max-chars", type=int, default=lim.max_chars,
                   help=f"most characters in one text (default {lim.max_chars})")
    p.add_argument("--max-tokens", type=int, default=lim.max_tokens,
                   help=f"most tokens in one text (default {lim.max_tokens})")
    p.add_argument("--timeout", type=float, default=lim.timeout_s,
                   help=f"seconds a request may take (default {lim.timeout_s:g})")
    p.add_argument("--runs", type=int, default=lim.runs,
                   help=f"model runs at the same time (default {lim.runs})")
    p.add_argument("--queue", type=int, default=lim.queue,
                   help=f"requests that may wait for a run; more get 503 (default {lim.queue})")
    p.add_argument("--flow-budget", type=float, default=lim.flow_budget_s,
                   help=f"seconds attention flow may spend on one output token "
                        f"(default {lim.flow_budget_s:g})")
    p.add_argument("--cache", type=int, default=lim.cache,
                   help=f"captures kept in memory (default {lim.cache})")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="CPU threads per model run (default 1, which keeps requests quick "
                        "when several come at once; 0: one per core)")
    p.add_argument("--cache-mb", type=float, default=lim.cache_mb,
                   help=f"memory the kept captures may take, in MiB (default {lim.cache_mb:g})")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("corpus", help="per-head statistics over a corpus, into DuckDB",
                       description="Run a model over every text of a corpus (.txt, .jsonl, "
                                   ".csv, .parquet, .conllu, a saved dataset) and store each "
                                   "head's statistics in a DuckDB file. Running it again "
                                   "resumes where it stopped.")
    p.add_argument("input", type=Path, help="the corpus file (or saved datasets folder)")
    p.add_argument("-o", "--output", type=Path, default=Path("stats.duckdb"),
                   help="the DuckDB file (default: stats.duckdb)")
    p.add_argument("-m", "--model", default=None, help="model name or local directory")
    p.add_argument("--text-field", default=None, help="column holding the text")
    p.add_argument("--pair-field", default=None, help="column holding a second text")
    p.add_argument("--limit", type=int, default=None, help="use at most N texts")
    p.add_argument("--batch-size", type=int, default=32, help="texts per batch (default 32)")
    p.add_argument("--top-k", type=int, default=5, help="examples kept per head (default 5)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster's address")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs each Ray worker asks for (default 0)")
    p.add_argument("--run", default=None, help="run name (default: model@input)")
    p.add_argument("--importance", nargs="?", const="gradient", default=None,
                   choices=["gradient", "ablation"],
                   help="also store each head's importance per text: the gradient proxy (the "
                        "default when given alone) or exact ablation")
    p.add_argument("--importance-budget", type=float, default=600.0, metavar="SECONDS",
                   help="refuse exact ablation estimated past this (default 600; 0: no limit)")
    p.add_argument("--embeddings", type=int, default=0, metavar="N",
                   help="also keep the queries and keys of N sampled tokens (at most 2000) for "
                        "the atlas's joint query/key embedding (default 0: none)")
    p.add_argument("--attention", default="auto", choices=["auto", "eager", "lazy"],
                   help="auto (the default): eager batches, and lazy attention (exact weights "
                        "streamed in row blocks, the same statistics) for each text whose eager "
                        "weights would pass the memory budget; eager: refuse such a text; "
                        "lazy: every text")
    p.add_argument("--memory-budget", type=int, default=None, metavar="BYTES",
                   help="bytes a batch's eager weights may take (default: half the available "
                        "memory, or ATTNSCOPE_MEMORY_BUDGET)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_corpus)

    p = sub.add_parser("corpus-report", help="one HTML page from a corpus store",
                       description="Write the corpus page: head table, layer plots, "
                                   "syntactic heads, and every head's examples with their "
                                   "head views.")
    p.add_argument("store", type=Path, help="the DuckDB file from attnscope corpus")
    p.add_argument("-o", "--output", type=Path, default=Path("corpus.html"))
    p.add_argument("--run", default=None, help="the run to read (default: the latest)")
    p.add_argument("-m", "--model", default=None, help="capture examples with this model")
    p.add_argument("--examples", type=int, default=3, help="examples per head (default 3)")
    p.add_argument("--no-views", action="store_true", help="list examples without views")
    p.set_defaults(func=_cmd_corpus_report)

    p = sub.add_parser("atlas", help="the head atlas of a corpus store: one page",
                       description="Write the head atlas: a layers x heads map coloured by "
                                   "importance (when the run stored it) or by the strongest "
                                   "pattern score, and a section per head with its scores, "
                                   "positional profile, relations, examples and importance.")
    p.add_argument("store", type=Path, help="the DuckDB file from attnscope corpus")
    p.add_argument("-o", "--output", type=Path, default=Path("atlas.html"))
    p.add_argument("--run", default=None, help="the run to read (default: the latest)")
    p.add_argument("--examples", type=int, default=3, help="examples per head (default 3)")
    p.set_defaults(func=_cmd_atlas)

    p = sub.add_parser("corpus-search", help="what each head attends to from one token",
                       description="For a token (e.g. 'it'), what each head attends to "
                                   "across the corpus, summed by key token.")
    p.add_argument("store", type=Path, help="the DuckDB file from attnscope corpus")
    p.add_argument("token", help="the query token")
    p.add_argument("--run", default=None, help="the run to read (default: the latest)")
    p.add_argument("-m", "--model", default=None)
    p.add_argument("--limit", type=int, default=200, help="texts to read (default 200)")
    p.add_argument("--top", type=int, default=3, help="key tokens per head (default 3)")
    p.set_defaults(func=_cmd_corpus_search)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 a person's mistake, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except AttnscopeError as err:
        print(f"attnscope: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnscope: interrupted", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from attnscope.lazy import LazyAttentionWarning
    from attnscope.tokens import TruncationWarning

    if issubclass(category, TruncationWarning):
        print(f"attnscope: warning: {message}", file=sys.stderr)
    elif issubclass(category, LazyAttentionWarning):
        print(f"attnscope: note: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
