"""Read a LoRA adapter saved by PEFT (by anyone, not only scalearn) as plain per-site tensors.

A PEFT LoRA folder is ``adapter_config.json`` + ``adapter_model.safetensors`` (or the older ``adapter_model.bin``).
Each adapted Linear ``W`` of the base model gains delta(x) = s · B · A · x with A (r, D_in), B (D_out, r) and
s = alpha / r (or alpha / sqrt(r) with rsLoRA), where r and alpha may differ per module through
``rank_pattern`` / ``alpha_pattern`` (matched as PEFT matches them: ``peft.utils.other.get_pattern_key``).

Keys are ``base_model.model.<path>.lora_A[.<adapter name>].weight``. ``<path>`` is a module name of the model PEFT
wrapped: the bare encoder (``encoder.layer.0...``) or a task model (``roberta.encoder.layer.0...``,
``bert.encoder...``); we map it onto the bare encoder's module names (``transformers.AutoModel``).

Only plain LoRA is read: every PEFT feature that changes the forward pass (DoRA, LoRA biases, trained base biases,
embedding LoRA, the LoRA variants, initialisations that rewrite the base weights) is refused with one line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scalearn_cli.artifacts import LORA_CONFIG_FILE, LORA_WEIGHTS_FILE, load_tensors, read_json
from scalearn_cli.errors import ArtifactError
from scalearn_cli.formats.checks import check_finite_tensors, check_layer, check_values, same_weights
from scalearn_cli.formats.common import load_torch_tensors

LORA_BIN_FILE = "adapter_model.bin"  # PEFT's pickle-free-by-us fallback: read only with weights_only=True
PEFT_PREFIX = "base_model.model."

#: attribute names under which transformers' task models hold their encoder (``RobertaFor...().roberta``), and
#: causal LMs their bare decoder (``LlamaForCausalLM().model``, ``GPT2LMHeadModel().transformer``)
ENCODER_ATTRIBUTES = ("bert", "roberta", "deberta", "distilbert", "electra", "albert", "mpnet", "ernie", "longformer",
                      "model", "transformer")

#: config fields that turn plain LoRA into something else -> the feature name shown to the user
_REFUSED_FIELDS = {
    "use_dora": "DoRA (use_dora)",
    "lora_bias": "LoRA biases (lora_bias)",
    "use_qalora": "QA-LoRA (use_qalora)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "arrow_config": "Arrow routing (arrow_config)",
    "velora_config": "VeLoRA (velora_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "kasa_config": "KaSA (kasa_config)",
    "layer_replication": "layer replication (layer_replication)",
    "target_parameters": "LoRA on parameters (target_parameters)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
}
#: initialisations after which the adapter only holds together with a rewritten base model (PEFT's
#: ``save_pretrained(path_initial_model_for_weight_conversion=...)`` converts them and records init_lora_weights=True)
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")

_LORA_KEY = re.compile(r"^(?P<path>.+)\.lora_(?P<ab>A|B)(?:\.(?P<name>[^.]+))?\.(?P<param>weight|bias)$")


@dataclass(frozen=True)
class LoraSite:
    """One LoRA-adapted linear layer of a source: delta(x) = scaling · B · A · x."""

    a: torch.Tensor  # (r, D_in)
    b: torch.Tensor  # (D_out, r)
    scaling: float


@dataclass(frozen=True)
class LoraRead:
    """What a PEFT LoRA folder holds, in the encoder's terms."""

    sites: dict[str, LoraSite]  # module path in the bare encoder -> A, B, scaling
    base_model_name_or_path: str | None
    fan_in_fan_out: bool = False  # recorded only: A and B give the same delta on the output either way
    notes: list[str] = field(default_factory=list)  # what was read but ignored, one line each


def detect(folder: Path) -> bool:
    """True when ``folder`` is a PEFT folder: a weights file beside a config naming a ``peft_type`` (or, without one,
    LoRA's fields); what is not plain LoRA, or lacks ``r``, is then refused by ``read_lora`` in one line."""
    folder = Path(folder)
    if not (folder / LORA_CONFIG_FILE).is_file():
        return False
    if not ((folder / LORA_WEIGHTS_FILE).is_file() or (folder / LORA_BIN_FILE).is_file()):
        return False
    try:
        config = read_json(folder / LORA_CONFIG_FILE)
    except ArtifactError:
        return False
    if "peft_type" in config:  # any PEFT adapter: a non-LoRA one is then refused by name (_check_config)
        return isinstance(config["peft_type"], str)
    # PEFT fills a missing peft_type from the config class; a LoRA config without it still names its LoRA fields
    lora_fields = ("r", "lora_alpha", "target_modules")
    return not isinstance(config.get("config"), dict) and any(k in config for k in lora_fields)


def read_lora(folder: Path, module_names: set[str] | None = None) -> LoraRead:
    """Read a PEFT LoRA folder as {module path in the bare encoder: LoraSite}.

    With ``module_names`` (the encoder's ``named_modules()`` names) key prefixes are stripped until the path is a
    module of that encoder, and every site must be one; without it ``base_model.model.`` and a task model's
    encoder attribute (``roberta.``, ``bert.``...) are stripped. Sites outside the encoder (a LoRA on a task
    head) and ``modules_to_save`` weights are ignored with a note.
    """
    folder = Path(folder)
    config = read_json(folder / LORA_CONFIG_FILE)
    _check_config(folder, config)
    check_values(folder, config)
    tensors = _load_weights(folder)
    check_finite_tensors(str(folder), tensors)
    pairs, notes = _split_keys(folder, config, tensors)
    prefix = _encoder_prefix(folder, list(pairs), module_names)
    sites: dict[str, LoraSite] = {}
    for raw, (a, b) in sorted(pairs.items()):
        if not raw.startswith(prefix):
            notes.append(f"LoRA on {raw} (outside the encoder) ignored")
            continue
        path = raw[len(prefix):]
        if module_names is not None and path not in module_names:
            raise ArtifactError(f"{folder}: LoRA site '{raw}' is not a module of this encoder; use the base model "
                                f"the adapter was trained on ({config.get('base_model_name_or_path')})")
        sites[path] = _site(folder, config, raw, a, b)
        check_layer(folder, config, raw)
    if not sites:
        raise ArtifactError(f"{folder} holds no LoRA weights on the encoder; re-create or re-pull it")
    return LoraRead(sites, config.get("base_model_name_or_path"), bool(config.get("fan_in_fan_out")), notes)


def _check_config(folder: Path, config: dict[str, Any]) -> None:
    """Refuse, in one line naming the feature, anything but plain LoRA."""
    if "peft_type" not in config and isinstance(config.get("config"), dict):
        raise ArtifactError(f"{folder} is an AdapterHub adapter, not a PEFT one; read it with formats.adapterhub")
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise ArtifactError(f"{folder} holds a {peft_type} adapter (peft_type); only LoRA adapters are read")
    for key, feature in _REFUSED_FIELDS.items():
        if config.get(key):
            raise ArtifactError(f"{folder} uses {feature}, which ScaLearn cannot compose; use a plain LoRA adapter")
    if config.get("bias", "none") != "none":
        raise ArtifactError(f"{folder} trains base biases (bias='{config['bias']}'), which ScaLearn cannot compose; "
                            "use a LoRA trained with bias='none'")
    init = str(config.get("init_lora_weights", True)).lower()
    if init == "mica":
        raise ArtifactError(f"{folder} uses MiCA (init_lora_weights='mica'), which ScaLearn cannot compose; "
                            "use a plain LoRA adapter")
    rewriting = "lora_ga" if config.get("lora_ga_config") else next(
        (name for name in _BASE_REWRITING_INITS if init.startswith(name)), None)
    if rewriting:
        raise ArtifactError(f"{folder} was initialised with {rewriting} (init_lora_weights), which rewrites the base "
                            "weights; re-save it with path_initial_model_for_weight_conversion")


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The safetensors file, else ``adapter_model.bin`` read with ``weights_only=True`` (a flat dict of tensors).

    A folder holding both is read only when they hold the same tensors: which one a tool reads differs (PEFT
    prefers safetensors), so two different adapters under one name are refused rather than one picked silently.
    """
    if not (folder / LORA_BIN_FILE).is_file():
        return load_tensors(folder / LORA_WEIGHTS_FILE)
    if not (folder / LORA_WEIGHTS_FILE).is_file():
        return load_torch_tensors(folder / LORA_BIN_FILE)
    return same_weights(folder, load_tensors(folder / LORA_WEIGHTS_FILE), load_torch_tensors(folder / LORA_BIN_FILE),
                        LORA_WEIGHTS_FILE, LORA_BIN_FILE)


def _split_keys(folder: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]
                ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str]]:
    """{raw module path: (A, B)} and notes; refuses keys of features we do not read."""
    a_of: dict[str, torch.Tensor] = {}
    b_of: dict[str, torch.Tensor] = {}
    names: set[str] = set()
    ignored: set[str] = set()
    for key, tensor in tensors.items():
        raw = key.removeprefix(PEFT_PREFIX)
        _refuse_key(folder, raw)
        match = _LORA_KEY.match(raw)
        if match is None:
            ignored.add(_modules_to_save_owner(folder, config, raw))
            continue
        if match["param"] == "bias":
            raise ArtifactError(f"{folder} has LoRA biases ({key}), which ScaLearn cannot compose; use plain LoRA")
        names.add(match["name"] or "")
        (a_of if match["ab"] == "A" else b_of)[match["path"]] = tensor
    if len(names) > 1:
        raise ArtifactError(f"{folder} holds several adapters ({sorted(names)}); save each one in its own folder")
    unpaired = sorted(a_of.keys() ^ b_of.keys())
    if unpaired:
        raise ArtifactError(f"{folder} has only one of lora_A/lora_B for {unpaired[0]}; re-create or re-pull it")
    notes = [f"modules_to_save {name} ignored" for name in sorted(ignored)]
    return {p: (a_of[p], b_of[p]) for p in a_of}, notes


def _refuse_key(folder: Path, raw: str) -> None:
    if "lora_magnitude_vector" in raw:
        raise ArtifactError(f"{folder} uses DoRA ({raw}), which ScaLearn cannot compose; use a plain LoRA adapter")
    if "lora_embedding_" in raw:
        raise ArtifactError(f"{folder} has an embedding LoRA ({raw}), which ScaLearn cannot compose; "
                            "target Linear layers only")


def _modules_to_save_owner(folder: Path, config: dict[str, Any], raw: str) -> str:
    """The ``modules_to_save`` entry ``raw`` belongs to (PEFT: a module whose name ends with the entry)."""
    parts = raw.split(".")
    for entry in config.get("modules_to_save") or ():
        for i in range(1, len(parts)):
            module = ".".join(parts[:i])
            if module == entry or module.endswith("." + entry):
                return entry
    raise ArtifactError(f"{folder} holds '{raw}', which is neither a LoRA weight nor in modules_to_save; "
                        "only plain LoRA adapters are read")


def _encoder_prefix(folder: Path, raws: list[str], module_names: set[str] | None) -> str:
    """The prefix in front of the encoder's module names ('' for a bare encoder, 'roberta.' for a task model)."""
    if module_names is None:
        for attribute in ENCODER_ATTRIBUTES:
            if any(raw.startswith(attribute + ".") for raw in raws):
                return attribute + "."
        return ""
    prefixes = set()
    for raw in raws:
        parts = raw.split(".")
        found = next((i for i in range(len(parts)) if ".".join(parts[i:]) in module_names), None)
        if found is not None:
            prefixes.add("".join(p + "." for p in parts[:found]))
    if len(prefixes) > 1:
        raise ArtifactError(f"{folder}: LoRA sites sit under several prefixes {sorted(prefixes)}; "
                            "save the adapter from one model")
    if not prefixes:
        first = raws[0] if raws else "none"
        raise ArtifactError(f"{folder}: no LoRA site is a module of this encoder (first: {first}); "
                            "use the base model the adapter was trained on")
    return prefixes.pop()


def pattern_value(pattern: dict[str, Any], raw: str, default: float) -> float:
    """PEFT's rank_pattern/alpha_pattern lookup: the first key (a regex) matching the end of the module path."""
    for key in pattern:  # keys were compiled by formats.checks.check_values: a bad regex was refused there
        if re.match(rf"(.*\.)?({key})$", raw):
            return float(pattern[key])
    return float(default)


def _site(folder: Path, config: dict[str, Any], raw: str, a: torch.Tensor, b: torch.Tensor) -> LoraSite:
    """Check shapes against the config's rank for ``raw`` and compute the scaling as PEFT does."""
    if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
        raise ArtifactError(f"{folder}: LoRA on {raw} has A {tuple(a.shape)} and B {tuple(b.shape)}, not a Linear "
                            "LoRA pair; only Linear layers are read")
    r = int(pattern_value(config.get("rank_pattern") or {}, raw, config["r"]))
    if r != a.shape[0]:
        raise ArtifactError(f"{folder}: LoRA on {raw} has rank {a.shape[0]} but its config says {r}; "
                            "re-create or re-pull it")
    alpha = pattern_value(config.get("alpha_pattern") or {}, raw, config.get("lora_alpha", 8))
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    return LoraSite(a=a.float(), b=b.float(), scaling=float(scaling))
