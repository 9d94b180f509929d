"""Checks of foreign adapter configs and weights against each other, run before anything is composed.

A config another tool wrote is untrusted text: every value it gives (a rank, an alpha, a regex, a layer list) is
checked for what it must be, and the weights for what the config says, so a bad folder is refused in one line
naming the field instead of failing (or worse, training on NaN) later.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from scalearn_cli.errors import ArtifactError, printable

#: PEFT's own layer-index patterns (``peft.tuners.tuners_utils.check_target_module_exists``): the first
#: numbered segment, or the one after a ``layers_pattern``
_LAYER_INDEX = r".*?\.[^.]*\.(?P<idx>\d+)\."
_LAYER_AFTER = r"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\."


def check_values(folder: Path, config: dict[str, Any]) -> None:
    """A PEFT LoRA config's numbers and patterns: ``r`` present and a positive integer, ``lora_alpha`` finite,
    ``rank_pattern`` / ``alpha_pattern`` keys valid regexes with finite values, ``layers_to_transform`` integers."""
    where = f"{folder}/adapter_config.json"
    if "r" not in config:
        raise ArtifactError(f"{where} has no 'r' (the LoRA rank); add \"r\": <rank of lora_A> as PEFT's "
                            "save_pretrained writes it")
    _positive_int(where, "r", config["r"])
    _finite(where, "lora_alpha", config.get("lora_alpha", 8))
    for name in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(name) or {}
        if not isinstance(pattern, dict):
            raise ArtifactError(f"{where}: {name} must be an object of regex -> number; re-create the adapter")
        for key, value in pattern.items():
            try:
                re.compile(rf"(.*\.)?({key})$")
            except re.error as exc:
                raise ArtifactError(f"{where}: {name} key {printable(repr(key))} is not a valid regular expression "
                                    f"({exc}); fix or remove that key") from None
            (_positive_int if name == "rank_pattern" else _finite)(where, f"{name}[{printable(repr(key))}]", value)
    layers = config.get("layers_to_transform")
    if layers is not None:
        items = layers if isinstance(layers, list) else [layers]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
            raise ArtifactError(f"{where}: layers_to_transform must be a layer index or a list of them, got "
                                f"{printable(repr(layers))}; fix it")


def check_layer(folder: Path, config: dict[str, Any], raw: str) -> None:
    """Refuse LoRA weights on a layer ``layers_to_transform`` leaves out: PEFT would not load them there."""
    layers = config.get("layers_to_transform")
    if layers is None or layers == []:
        return
    wanted = set(layers) if isinstance(layers, list) else {layers}
    patterns = config.get("layers_pattern")
    patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
    try:
        regexes = [_LAYER_AFTER.format(pattern=p) for p in patterns] or [_LAYER_INDEX]
        index = next((int(m["idx"]) for rx in regexes if (m := re.match(rx, raw))), None)
    except re.error as exc:
        raise ArtifactError(f"{folder}/adapter_config.json: layers_pattern {printable(repr(patterns))} is not a "
                            f"valid regular expression ({exc}); fix it") from None
    if index is None or index not in wanted:
        raise ArtifactError(f"{folder}: LoRA weights on {printable(raw)} lie outside layers_to_transform "
                            f"{sorted(wanted)}; PEFT would not load them there: fix layers_to_transform or the "
                            "weights")


def same_weights(folder: Path, first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], first_name: str,
                 second_name: str) -> dict[str, torch.Tensor]:
    """``first`` when both weight files of a folder hold the same tensors; otherwise a refusal naming both."""
    same = first.keys() == second.keys() and all(
        first[k].shape == second[k].shape and torch.equal(first[k], second[k].to(first[k].dtype)) for k in first)
    if not same:
        raise ArtifactError(f"{folder} holds both {first_name} and {second_name} with different weights; tools "
                            f"disagree on which one is read: remove the stale one")
    return first


def check_finite_tensors(where: str, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor (training on them yields NaN)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{where}: the weight {printable(name)} holds NaN or infinite values; re-create "
                                "or re-download the adapter")


def _positive_int(where: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() \
            or not math.isfinite(value) or value < 1:
        raise ArtifactError(f"{where}: {name} must be a positive integer (a LoRA rank), got {printable(repr(value))}; "
                            "fix the config")


def _finite(where: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArtifactError(f"{where}: {name} must be a finite number, got {printable(repr(value))}; fix the config")
