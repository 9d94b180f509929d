"""Read (and write) AdapterHub bottleneck adapters, as saved by the ``adapters`` library's ``model.save_adapter``.

A folder holds ``adapter_config.json`` ({"config": {...}, "model_name", "model_type", "model_class", "name",
"hidden_size", "version"}) and ``pytorch_adapter.bin`` (or ``adapter.safetensors`` with ``use_safetensors=True``).
Weights are ``[<encoder attr>.]encoder.layer.<l>.output.adapters.<name>.adapter_{down.0,up}.{weight,bias}``.

Only the Pfeiffer placement (``seq_bn``) is read, because it is exactly our bottleneck (sources/bottleneck.py):
with FFN output h and attention-block output x, the library computes
    residual = h                      (residual_before_ln=True)
    z        = LN(h + x)              (original_ln_before=True)
    a        = up(relu(down(z))) · 1.0 + residual          (no ln_before/ln_after, scaling 1.0, no gating)
    out      = LN(a + x)              (original_ln_after=True)   = LN(up(relu(down(z))) + h + x)
Any other placement (Houlsby's extra adapter after attention, parallel adapters, other residuals or layer norms,
other non-linearities, PHM/Compacter, invertible adapters) or another architecture (prefix tuning, LoRA, ...) is
refused with one line naming the config field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scalearn_cli import __version__
from scalearn_cli.artifacts import (
    BOTTLENECK_CONFIG_FILE,
    BOTTLENECK_WEIGHTS_FILE,
    METADATA_FILE,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from scalearn_cli.errors import ArtifactError, printable
from scalearn_cli.formats.bottleneck import load_weights
from scalearn_cli.formats.checks import check_finite_tensors, same_weights
from scalearn_cli.formats.common import load_torch_tensors

CONFIG_FILE = "adapter_config.json"  # the library's names (adapters/utils.py)
WEIGHTS_FILE = "pytorch_adapter.bin"
SAFE_WEIGHTS_FILE = "adapter.safetensors"
PARAMS = ("down.weight", "down.bias", "up.weight", "up.bias")  # our per-layer names, as in sources/bottleneck.py

#: the library's SeqBnConfig (Pfeiffer) as ``adapters`` 1.3 writes it; what we accept and what we export
SEQ_BN = {
    "adapter_residual_before_ln": False, "cross_adapter": False, "dropout": 0.0, "factorized_phm_W": True,
    "factorized_phm_rule": False, "hypercomplex_nonlinearity": "glorot-uniform", "init_weights": "bert",
    "init_weights_seed": None, "inv_adapter": None, "inv_adapter_reduction_factor": None, "is_parallel": False,
    "learn_phm": True, "leave_out": [], "ln_after": False, "ln_before": False, "mh_adapter": False,
    "non_linearity": "relu", "original_ln_after": True, "original_ln_before": True, "output_adapter": True,
    "phm_bias": True, "phm_c_init": "normal", "phm_dim": 4, "phm_init_range": 0.0001, "phm_layer": False,
    "phm_rank": 1, "reduction_factor": 16, "residual_before_ln": True, "scaling": 1.0, "shared_W_phm": False,
    "shared_phm_rule": True, "stochastic_depth": 0.0, "use_gating": False,
}
#: fields that decide the math -> (value our math needs, the library's default when the field is absent)
_REQUIRED = {
    "output_adapter": (True, None),
    "original_ln_before": (True, False),
    "original_ln_after": (True, True),
    "residual_before_ln": (True, True),
    "ln_before": (False, False),
    "ln_after": (False, False),
    "use_gating": (False, False),
    "phm_layer": (False, False),
    "cross_adapter": (False, False),
    "scaling": (1.0, 1.0),
}
_SUPPORTED = "only Pfeiffer adapters (seq_bn: after the FFN, relu, original layer norms, scaling 1.0) are read"
MODEL_CLASSES = {"bert": "BertModel", "roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel",
                 "camembert": "CamembertModel"}

# legacy adapter-transformers names of the output-adapter container, as the library renames them when loading
_KEY = re.compile(r"^(?:.+\.)?encoder\.layer\.(?P<layer>\d+)\.output\."
                  r"(?:adapters|layer_text_task_adapters|layer_text_lang_adapters)\.(?P<name>[^.]+)\."
                  r"adapter_(?P<param>down\.0\.weight|down\.0\.bias|up\.weight|up\.bias)$")


@dataclass(frozen=True)
class AdapterHubRead:
    """An AdapterHub Pfeiffer adapter in our terms: per layer {down.weight, down.bias, up.weight, up.bias} or None."""

    layers: list[dict[str, torch.Tensor] | None]  # None: a leave_out layer (no adapter, the layer is unchanged)
    base_model_name: str | None  # adapter_config.json's model_name ('' or absent -> None)
    name: str
    reduction_factor: float | dict[str, float]
    notes: list[str] = field(default_factory=list)


def detect(folder: Path) -> bool:
    """True when ``folder`` holds an AdapterHub adapter (its config has a nested ``config`` and a weights file)."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        return False
    if not ((folder / WEIGHTS_FILE).is_file() or (folder / SAFE_WEIGHTS_FILE).is_file()):
        return False
    try:
        config = read_json(folder / CONFIG_FILE)
    except ArtifactError:
        return False
    return isinstance(config.get("config"), dict) and "peft_type" not in config


def read_adapterhub(folder: Path, num_layers: int | None = None) -> AdapterHubRead:
    """Read an AdapterHub Pfeiffer adapter folder; refuses, in one line, every other adapter architecture.

    ``num_layers`` (the encoder's) sizes the result; without it, it is one past the last layer that has weights
    or is in ``leave_out``.
    """
    folder = Path(folder)
    meta = read_json(folder / CONFIG_FILE)
    config = meta.get("config")
    if not isinstance(config, dict):
        raise ArtifactError(f"{folder}/{CONFIG_FILE} has no 'config' object: not an AdapterHub adapter")
    check_config(folder, config)
    tensors = _load_weights(folder)
    check_finite_tensors(str(folder), tensors)
    notes = _check_invertible(folder, config, tensors)
    by_layer = _split_keys(folder, tensors)
    leave_out = _leave_out(folder, config, by_layer, num_layers)
    count = num_layers if num_layers is not None else max([*by_layer, *leave_out], default=-1) + 1
    layers: list[dict[str, torch.Tensor] | None] = []
    for layer in range(count):
        layers.append(_layer(folder, by_layer.pop(layer, None), layer, layer in leave_out))
    if by_layer:
        raise ArtifactError(f"{folder} has weights for layer {min(by_layer)}, beyond the encoder's {count} layers; "
                            "use the base model the adapter was trained on")
    if all(state is None for state in layers):
        raise ArtifactError(f"{folder} holds no adapter weights; re-create or re-download it")
    name = str(meta.get("name") or "")
    return AdapterHubRead(layers, meta.get("model_name") or None, name, config.get("reduction_factor"), notes)


def _leave_out(folder: Path, config: dict[str, Any], by_layer: dict[int, Any], num_layers: int | None) -> set[int]:
    """``config.leave_out`` as layer indices, each one a layer the model has: below ``num_layers`` when known,
    else next to the adapter's own layers (a gap of layers neither adapted nor left out means a wrong index)."""
    raw = config.get("leave_out") or []
    if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in raw):
        raise ArtifactError(f"{folder}: config.leave_out must be a list of layer indices, got "
                            f"{printable(repr(raw))}; fix it")
    leave_out = set(raw)
    if num_layers is not None:
        beyond = sorted(i for i in leave_out if i >= num_layers)
        if beyond:
            raise ArtifactError(f"{folder}: config.leave_out names layer {beyond[0]}, but the model has {num_layers} "
                                f"layers (0-{num_layers - 1}); fix leave_out or use the model the adapter was made for")
        return leave_out
    end = max(by_layer, default=-1) + 1
    while end in leave_out:
        end += 1
    stray = sorted(i for i in leave_out if i >= end)
    if stray and by_layer:
        raise ArtifactError(f"{folder}: config.leave_out names layer {stray[0]}, beyond the adapter's layers "
                            f"0-{end - 1}: the model has no such layer; fix leave_out")
    return leave_out


def check_config(folder: Path, config: dict[str, Any]) -> None:
    """Refuse everything but the Pfeiffer placement, naming the field (and Houlsby / parallel by name)."""
    architecture = config.get("architecture") or "bottleneck"
    if architecture != "bottleneck":
        raise ArtifactError(f"{folder} is a {architecture} adapter (config.architecture); {_SUPPORTED}")
    if config.get("mh_adapter"):
        raise ArtifactError(f"{folder} is a Houlsby adapter (config.mh_adapter=true: an adapter after attention "
                            f"too, double_seq_bn); {_SUPPORTED}")
    if config.get("is_parallel"):
        raise ArtifactError(f"{folder} is a parallel adapter (config.is_parallel=true, par_bn); {_SUPPORTED}")
    for key, (needed, default) in _REQUIRED.items():
        value = config.get(key, default)
        if value != needed or isinstance(value, bool) != isinstance(needed, bool):
            raise ArtifactError(f"{folder} has config.{key}={value!r} (we need {needed!r}); {_SUPPORTED}")
    if str(config.get("non_linearity")).lower() != "relu":
        raise ArtifactError(f"{folder} has config.non_linearity={config.get('non_linearity')!r} (we need 'relu'); "
                            f"{_SUPPORTED}")


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The safetensors file, else the ``.bin`` (weights only); both: only when they hold the same tensors."""
    if not (folder / WEIGHTS_FILE).is_file():
        return load_tensors(folder / SAFE_WEIGHTS_FILE)
    if not (folder / SAFE_WEIGHTS_FILE).is_file():
        return load_torch_tensors(folder / WEIGHTS_FILE)
    return same_weights(folder, load_tensors(folder / SAFE_WEIGHTS_FILE), load_torch_tensors(folder / WEIGHTS_FILE),
                        SAFE_WEIGHTS_FILE, WEIGHTS_FILE)


def _check_invertible(folder: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> list[str]:
    """Invertible adapters change the embeddings: refuse their weights; a config naming one without weights is a
    legacy task adapter whose unused entry the library itself drops."""
    if any("invertible_adapters." in key or "invertible_lang_adapters." in key for key in tensors):
        raise ArtifactError(f"{folder} has an invertible adapter (config.inv_adapter={config.get('inv_adapter')!r}, "
                            f"seq_bn_inv); {_SUPPORTED}")
    if config.get("inv_adapter"):
        return [f"config.inv_adapter={config['inv_adapter']!r} has no weights (legacy task adapter): ignored"]
    return []


def _split_keys(folder: Path, tensors: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    """{layer: {our param name: tensor}}; any other key (attention adapters, layer norms, gates) is refused."""
    by_layer: dict[int, dict[str, torch.Tensor]] = {}
    names = set()
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise ArtifactError(f"{folder} holds '{key}', which is not a Pfeiffer output-adapter weight; {_SUPPORTED}")
        names.add(match["name"])
        by_layer.setdefault(int(match["layer"]), {})[match["param"].replace(".0.", ".")] = tensor.float()
    if len(names) > 1:
        raise ArtifactError(f"{folder} holds several adapters ({sorted(names)}); save each one in its own folder")
    return by_layer


def _layer(folder: Path, state: dict[str, torch.Tensor] | None, layer: int, left_out: bool
           ) -> dict[str, torch.Tensor] | None:
    """One layer's weights, checked: complete, shapes of a bottleneck, and consistent with leave_out."""
    if state is None:
        if not left_out:
            raise ArtifactError(f"{folder} has no weights for layer {layer}, which is not in leave_out; "
                                "re-create or re-download it")
        return None
    if left_out:
        raise ArtifactError(f"{folder} has weights for layer {layer}, which config.leave_out excludes; "
                            "re-create or re-download it")
    missing = [p for p in PARAMS if p not in state]
    if missing:
        raise ArtifactError(f"{folder} lacks {missing[0]} in layer {layer}; re-create or re-download it")
    down, up = state["down.weight"], state["up.weight"]  # (m, D), (D, m)
    if down.dim() != 2 or up.shape != down.shape[::-1] or state["down.bias"].shape != down.shape[:1]:
        raise ArtifactError(f"{folder}: layer {layer} has down {tuple(down.shape)} and up {tuple(up.shape)}, "
                            "not a bottleneck pair; re-create or re-download it")
    return {p: state[p] for p in PARAMS}


def export_adapterhub(folder: Path, out: Path, name: str = "scalearn", base_model: str | None = None) -> Path:
    """Write our bottleneck adapter (``bottleneck_config.json`` + weights) as an AdapterHub ``seq_bn`` adapter.

    The base model id and type come from ``scalearn.json`` when ``folder`` is a source folder, else from
    ``base_model``. Weights go to ``adapter.safetensors`` (``load_adapter(..., use_safetensors=True)``).
    """
    folder, out = Path(folder), Path(out)
    config, layers = load_weights(folder)
    model_id, model_type = _base_model(folder, base_model)
    hub_config = {**SEQ_BN, "reduction_factor": config["reduction_factor"], "non_linearity": config["non_linearity"]}
    check_config(folder, hub_config)
    tensors = {f"encoder.layer.{i}.output.adapters.{name}.adapter_{p.replace('down.', 'down.0.')}": state[p]
               for i, state in enumerate(layers) for p in PARAMS}
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / SAFE_WEIGHTS_FILE, tensors)
    write_json(out / CONFIG_FILE, {
        "config": hub_config, "hidden_size": int(config["hidden_size"]), "model_class": MODEL_CLASSES.get(model_type),
        "model_name": model_id or "", "model_type": model_type, "name": name, "version": f"scalearn.{__version__}",
    })
    return out


def import_adapterhub(folder: Path, out: Path, num_layers: int | None = None) -> Path:
    """Write an AdapterHub Pfeiffer adapter in our bottleneck format (``bottleneck_config.json`` + weights).

    A ``leave_out`` layer becomes a zero adapter (up = 0, up bias = 0: the layer's output is exactly unchanged),
    because our format has one adapter per layer.
    """
    read = read_adapterhub(folder, num_layers)
    present = [state for state in read.layers if state is not None]
    sizes = {state["down.weight"].shape for state in present}  # (m, D)
    if len(sizes) != 1:
        raise ArtifactError(f"{folder} has bottleneck sizes {sorted(s[0] for s in sizes)} across layers; "
                            "our format needs one size (a single reduction_factor)")
    bottleneck, hidden = sizes.pop()
    zero = {p: torch.zeros_like(present[0][p]) for p in PARAMS}
    tensors = {f"layer.{i}.{p}": (state or zero)[p] for i, state in enumerate(read.layers) for p in PARAMS}
    factor = read.reduction_factor if isinstance(read.reduction_factor, (int, float)) else hidden / bottleneck
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / BOTTLENECK_WEIGHTS_FILE, tensors)
    write_json(out / BOTTLENECK_CONFIG_FILE, {
        "bottleneck_size": bottleneck, "hidden_size": hidden, "non_linearity": "relu",
        "num_layers": len(read.layers), "original_ln_after": True, "original_ln_before": True,
        "placement": "after_ffn", "reduction_factor": int(factor) if float(factor).is_integer() else factor,
    })
    return out


def _base_model(folder: Path, base_model: str | None) -> tuple[str | None, str | None]:
    """(id, model_type) of the base model: ``base_model`` if given, else the source's scalearn.json."""
    if (folder / METADATA_FILE).is_file():
        recorded = read_json(folder / METADATA_FILE).get("base_model") or {}
        return base_model or recorded.get("id"), recorded.get("model_type")
    return base_model, None
