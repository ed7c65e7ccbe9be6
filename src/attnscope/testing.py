"""Tiny random models of every supported family, built from configs, for tests and benchmarks.

No network is needed: tokenizers are built here (byte-level BPE trained on a few sentences, or
the embedded model's WordPiece vocabulary) and saved beside random-weight models, so
:func:`attnscope.load` reads them through transformers' own ``from_pretrained``.

    from attnscope.testing import build_tiny_model
    path = build_tiny_model("gpt2", tmp_dir)   # a directory with config.json + tokenizer
    model = attnscope.load(path)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "CHROMIUM_ARGS",
    "TINY_FAMILIES",
    "build_tiny_model",
    "launch_chromium",
    "networkx_flow_graph",
]

#: Flags for Debian's Chromium driven by Playwright in tests and benchmarks: no sandbox (root in
#: a container), no GPU, and none of the background traffic a browser makes on its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def launch_chromium(playwright: Any, executable_path: str) -> Any:
    """A headless Chromium from ``playwright.chromium`` at ``executable_path``."""
    return playwright.chromium.launch(executable_path=executable_path, args=CHROMIUM_ARGS)


TINY_FAMILIES = ("bert", "distilbert", "roberta", "electra", "gpt2", "llama", "t5", "bart")

_CORPUS = [
    "The girl poured water into a tall glass until it overflowed.",
    "leaves fall in autumn",
    "autumn is marked by colorful foliage",
    "The cat sat on the mat, and the dog slept by the door.",
    "Attention lets every token look at every other token in the sentence.",
    "A quick brown fox jumps over the lazy dog; then it runs away!",
    "Researchers and students visualize heads, layers and patterns of attention.",
    "Numbers like 3.14 and 2026, punctuation (brackets), and <tags> appear too.",
    "Le chat est sur la table. Das ist gut. ¿Qué tal? 東京 café naïve",
]

_SIZE = {"hidden": 32, "layers": 2, "heads": 4, "ffn": 37, "positions": 64}


def _bpe_tokenizer(specials: list[str], template: tuple[str, str] | None,
                   pair_template: str | None = None) -> Any:
    """A byte-level BPE tokenizer trained on a few sentences (about 400 tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 3, trainer)
    if template is not None:
        single, special_names = template
        tok.post_processor = processors.TemplateProcessing(
            single=single,
            pair=pair_template or single + " $B:1",
            special_tokens=[(s, tok.token_to_id(s)) for s in special_names.split()],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    return tok


def build_tiny_model(family: str, root: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``family`` model and its tokenizer under ``root``; returns the dir.

    Families: bert, distilbert, roberta, electra (WordPiece or BPE, bidirectional), gpt2,
    llama (causal; llama has rotary positions and 2 key/value heads for 4 query heads), t5 and
    bart (encoder-decoder). Each has 2 layers, 4 heads, hidden size 32.
    """
    import torch
    import transformers as tf

    from attnscope.models import default_model_dir

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose from {TINY_FAMILIES}")
    path = Path(root) / f"tiny-{family}"
    path.mkdir(parents=True, exist_ok=True)
    h, n_layers, n_heads, ffn, positions = (_SIZE[k] for k in
                                             ("hidden", "layers", "heads", "ffn", "positions"))

    tokenizer: Any
    if family in ("bert", "distilbert", "electra"):
        tokenizer = tf.AutoTokenizer.from_pretrained(default_model_dir())
        tokenizer.model_max_length = positions
    elif family in ("roberta", "bart"):
        tok = _bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                             ("<s> $A </s>", "<s> </s>"), "<s> $A </s> </s> $B:1 </s>:1")
        tokenizer = tf.PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
            unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
            model_max_length=positions,
        )
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    elif family == "gpt2":
        tok = _bpe_tokenizer(["<|endoftext|>"], None)
        tokenizer = tf.PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
            model_max_length=positions,
        )
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    elif family == "llama":
        tok = _bpe_tokenizer(["<unk>", "<s>", "</s>"], ("<s> $A", "<s>"), "<s> $A $B:1")
        tokenizer = tf.PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
            model_max_length=positions,
        )
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    else:  # t5
        tok = _bpe_tokenizer(["<pad>", "</s>", "<unk>"], ("$A </s>", "</s>"),
                             "$A </s> $B:1 </s>:1")
        tokenizer = tf.PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
            model_max_length=positions,
        )
        tokenizer.model_input_names = ["input_ids", "attention_mask"]
    vocab = len(tokenizer)

    common: dict[str, Any] = {"vocab_size": vocab}
    if family == "bert":
        config = tf.BertConfig(hidden_size=h, num_hidden_layers=n_layers,
                               num_attention_heads=n_heads, intermediate_size=ffn,
                               max_position_embeddings=positions, **common)
    elif family == "distilbert":
        config = tf.DistilBertConfig(dim=h, n_layers=n_layers, n_heads=n_heads, hidden_dim=ffn,
                                     max_position_embeddings=positions, **common)
    elif family == "electra":
        config = tf.ElectraConfig(embedding_size=16, hidden_size=h, num_hidden_layers=n_layers,
                                  num_attention_heads=n_heads, intermediate_size=ffn,
                                  max_position_embeddings=positions, **common)
    elif family == "roberta":
        config = tf.RobertaConfig(hidden_size=h, num_hidden_layers=n_layers,
                                  num_attention_heads=n_heads, intermediate_size=ffn,
                                  max_position_embeddings=positions + 2, pad_token_id=1,
                                  bos_token_id=0, eos_token_id=2, type_vocab_size=1, **common)
    elif family == "gpt2":
        config = tf.GPT2Config(n_embd=h, n_layer=n_layers, n_head=n_heads, n_inner=ffn,
                               n_positions=positions, bos_token_id=0, eos_token_id=0, **common)
    elif family == "llama":
        config = tf.LlamaConfig(hidden_size=h, num_hidden_layers=n_layers,
                                num_attention_heads=n_heads, num_key_value_heads=2,
                                intermediate_size=ffn, max_position_embeddings=positions,
                                bos_token_id=1, eos_token_id=2, pad_token_id=None,
                                attention_bias=True, **common)
    elif family == "t5":
        config = tf.T5Config(d_model=h, d_kv=h // n_heads, d_ff=ffn, num_layers=n_layers,
                             num_decoder_layers=n_layers, num_heads=n_heads,
                             relative_attention_num_buckets=8, decoder_start_token_id=0,
                             pad_token_id=0, eos_token_id=1, **common)
    else:  # bart
        config = tf.BartConfig(d_model=h, encoder_layers=n_layers, decoder_layers=n_layers,
                               encoder_attention_heads=n_heads, decoder_attention_heads=n_heads,
                               encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                               max_position_embeddings=positions, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                               **common)

    torch.manual_seed(seed)
    # Decoder-only families keep their language-modelling head, as real checkpoints do, so
    # generation works on them; the others are base models.
    auto = tf.AutoModelForCausalLM if family in ("gpt2", "llama") else tf.AutoModel
    model = auto.from_config(config, attn_implementation="eager")
    # Random init leaves biases and LayerNorms at trivial values; give every parameter some
    # spread so tests can tell the parts of attention apart.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(path)
    return path


def networkx_flow_graph(residual: Any) -> Any:
    """The layered attention graph as Abnar & Zuidema build it, for networkx's max-flow.

    ``residual`` ``[L, T, T]`` holds each layer's residual-augmented attention (query rows, key
    columns). Node ``layer * T + j`` is token j entering layer ``layer``; the edge from query i
    of layer ``l + 1`` to key j of layer ``l`` has capacity ``residual[l][i, j]``. Flow from an
    output token s to an input token t is the max flow from node ``L * T + s`` to node ``t``.
    This is the reference that :func:`attnscope.analysis.attention_flow` is checked against.
    """
    import networkx as nx

    layers, n, _ = residual.shape
    graph = nx.DiGraph()
    for layer in range(layers):
        for i in range(n):
            for j in range(n):
                graph.add_edge((layer + 1) * n + i, layer * n + j,
                               capacity=float(residual[layer][i, j]))
    return graph
