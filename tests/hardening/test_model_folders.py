"""Model folders that would run code, hang on a prompt, or load into nonsense: each is refused
in one sentence, and no code that came with the folder ever runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import attnscope as at

_EVIL_CODE = """\
import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import BertConfig, BertModel
class EvilConfig(BertConfig):
    model_type = "evilbert"
class EvilModel(BertModel):
    config_class = EvilConfig
"""


def _copy(tiny_dirs, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_dirs["bert"], folder)
    return folder


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _with_code(tiny_dirs, tmp_path: Path, model_type: str) -> tuple[Path, Path]:
    folder = _copy(tiny_dirs, tmp_path, f"code-{model_type}")
    marker = tmp_path / f"ran-{model_type}"
    (folder / "evil.py").write_text(_EVIL_CODE.format(marker=str(marker)))
    _edit_config(folder, model_type=model_type,
                 auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"})
    return folder, marker


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnscope", *args], input=stdin,
                          capture_output=True, text=True, timeout=600)


def test_folder_with_unknown_code_is_refused_and_its_code_never_runs(tiny_dirs, tmp_path):
    folder, marker = _with_code(tiny_dirs, tmp_path, "evilbert")
    # a "y" on stdin would have answered transformers' prompt
    result = _cli("tokens", "hello world", "-m", str(folder), stdin="y\n")
    assert result.returncode == 2
    assert "never runs a model's code" in result.stderr
    assert "trust_remote_code=True" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not marker.exists()
    with pytest.raises(at.AttnscopeError, match="never runs a model's code"):
        at.load(folder)
    assert not marker.exists()


def test_open_stdin_does_not_hang(tiny_dirs, tmp_path):
    folder, marker = _with_code(tiny_dirs, tmp_path, "evilbert")
    process = subprocess.Popen([sys.executable, "-m", "attnscope", "tokens", "hi", "-m",
                                str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        _, err = process.communicate(timeout=600)  # stdin stays open: a prompt would hang
    finally:
        process.kill()
    assert process.returncode == 2 and "never runs" in err
    assert not marker.exists()


def test_known_type_loads_with_transformers_classes_and_ignores_shipped_code(tiny_dirs,
                                                                             tmp_path):
    folder, marker = _with_code(tiny_dirs, tmp_path, "bert")
    model = at.load(folder, device="cpu")
    assert type(model.model).__module__.startswith("transformers.")
    assert at.capture(model, "hello world").num_tokens == 4
    assert not marker.exists()


def test_folder_without_tokenizer_files(tiny_dirs, tmp_path):
    folder = _copy(tiny_dirs, tmp_path, "no-tokenizer")
    for path in folder.iterdir():
        if path.name != "config.json" and not path.name.startswith("model"):
            path.unlink()
    with pytest.raises(at.AttnscopeError, match="no tokenizer files"):
        at.load(folder)


@pytest.mark.parametrize("damage", ["half", "garbage", "empty"])
def test_damaged_weights(tiny_dirs, tmp_path, damage):
    folder = _copy(tiny_dirs, tmp_path, f"weights-{damage}")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"half": data[: len(data) // 2], "garbage": bytes(range(256)) * 20,
                         "empty": b""}[damage])
    with pytest.raises(at.AttnscopeError, match="missing, damaged or do not match"):
        at.load(folder)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("num_attention_heads", 0, "0 attention heads"),
    ("num_hidden_layers", 0, "0 layers"),
    ("num_attention_heads", -3, "-3 attention heads"),
])
def test_config_without_attention(tiny_dirs, tmp_path, field, value, words):
    folder = _copy(tiny_dirs, tmp_path, f"config-{field}-{value}")
    _edit_config(folder, **{field: value})
    with pytest.raises(at.AttnscopeError, match=words):
        at.load(folder)


def test_weights_of_another_shape(tiny_dirs, tmp_path):
    folder = _copy(tiny_dirs, tmp_path, "mismatch")
    _edit_config(folder, hidden_size=64, intermediate_size=40)
    with pytest.raises(at.AttnscopeError, match=r"Cannot load model .*mismatch"):
        at.load(folder)


def test_a_tokenizer_of_its_own_code_is_refused_not_swapped(tiny_dirs, tmp_path):
    folder = _copy(tiny_dirs, tmp_path, "own-tokenizer")
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoTokenizer": ["tok.OwnTokenizer", None]}
    config_file.write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (folder / "tok.py").write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(at.AttnscopeError) as caught:
        at.load(folder, device="cpu")
    assert str(caught.value).startswith(
        f"Model '{folder}' names a tokenizer of its own code (auto_map in "
        "tokenizer_config.json), and attnscope never runs a model's code;")
    assert not marker.exists()
    result = _cli("tokens", "hello world", "-m", str(folder))
    assert result.returncode == 2 and "names a tokenizer of its own code" in result.stderr


def test_load_names_the_real_cause(tmp_path):
    cases = [
        ("/dev/null", "'/dev/null' is not a folder (a device or other special file), not a "
                      "model folder;"),
        (str(tmp_path / "weights.bin"), f"'{tmp_path / 'weights.bin'}' is a file, not a model "
                                        "folder;"),
        (str(tmp_path / "missing"), f"Model directory '{tmp_path / 'missing'}' does not exist."),
    ]
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    for name, expected in cases:
        with pytest.raises(at.AttnscopeError) as caught:
            at.load(name)
        assert str(caught.value).startswith(expected), str(caught.value)
    for value in (5, [1, 2], object()):
        with pytest.raises(at.AttnscopeError) as caught:
            at.load(value)
        assert str(caught.value) == ("load takes a model name, a model folder, or a transformers "
                                     f"model object, not {type(value).__name__}.")
