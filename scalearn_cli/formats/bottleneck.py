"""scalearn's own bottleneck folder (``bottleneck_config.json`` + ``bottleneck_model.safetensors``) as tensors: read
by the bottleneck kind (``sources.bottleneck``) and by the AdapterHub writer (``formats.adapterhub``)."""

from __future__ import annotations

from pathlib import Path

import torch

from scalearn_cli.artifacts import BOTTLENECK_CONFIG_FILE, BOTTLENECK_WEIGHTS_FILE, load_tensors, read_json
from scalearn_cli.errors import ArtifactError


def load_weights(folder: Path) -> tuple[dict, list[dict[str, torch.Tensor]]]:
    """Read a saved bottleneck adapter: (config, per-layer {down.weight, down.bias, up.weight, up.bias})."""
    config = read_json(Path(folder) / BOTTLENECK_CONFIG_FILE)
    tensors = load_tensors(Path(folder) / BOTTLENECK_WEIGHTS_FILE)
    layers = []
    for i in range(int(config["num_layers"])):
        try:
            layers.append({k: tensors[f"layer.{i}.{k}"] for k in ("down.weight", "down.bias", "up.weight", "up.bias")})
        except KeyError as exc:
            raise ArtifactError(f"{folder} lacks weights for layer {i} ({exc}); re-create or re-pull it") from exc
    return config, layers
