"""The paper's Pfeiffer bottleneck adapter after each layer's feed-forward block, by wrapping modules.

In layer l, with FFN output h (after dropout, before the residual) and attention-block output x:
    z   = LN_l(h + x)                        # the layer's own pre-trained output LayerNorm
    a   = W_up · ReLU(W_down · z + b_down) + b_up
    out = LN_l(a + h + x)
``AdapterOutput`` wraps the layer's output module; its ``block`` maps z to the adapter term ``a`` and is either
one trainable ``BottleneckAdapter`` (a source) or a ``LowRankMix`` of frozen sources (a composition).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalearn_cli.artifacts import BOTTLENECK_CONFIG_FILE, BOTTLENECK_WEIGHTS_FILE, save_tensors, write_json
from scalearn_cli.backbone import ffn_output_modules
from scalearn_cli.errors import ArtifactError, CompositionError, UsageError
from scalearn_cli.formats import adapterhub
from scalearn_cli.formats.bottleneck import load_weights
from scalearn_cli.sources import Attached, SiteWeights


@dataclass(frozen=True)
class BottleneckSettings:
    """Pfeiffer adapter hyperparameters (paper: reduction factor 16, ReLU)."""

    reduction_factor: int = 16
    non_linearity: str = "relu"

    def __post_init__(self) -> None:
        if self.reduction_factor < 1:
            raise UsageError(f"reduction_factor must be >= 1, got {self.reduction_factor}")
        if self.non_linearity != "relu":
            raise UsageError(f"non_linearity must be 'relu' (the paper's), got '{self.non_linearity}'")


class BottleneckAdapter(nn.Module):
    """One trainable adapter: z (batch, seq, D) -> a (batch, seq, D). Up starts at zero: identity at init."""

    def __init__(self, hidden_size: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(z)))


class AdapterOutput(nn.Module):
    """Wraps a BERT/RoBERTa layer output block: out = LN(block(LN(h + x)) + h + x)."""

    def __init__(self, base: nn.Module, block: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.block = block

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.base.dropout(self.base.dense(hidden_states))
        residual = h + input_tensor
        z = self.base.LayerNorm(residual)
        return self.base.LayerNorm(self.block(z) + residual)


def wrap_outputs(encoder: nn.Module, blocks: list[nn.Module]) -> None:
    """Put ``blocks[l]`` after layer l's FFN (validates the architecture first)."""
    outputs = ffn_output_modules(encoder)
    for layer, base, block in zip(encoder.encoder.layer, outputs, blocks):
        layer.output = AdapterOutput(base, block)


def site_name(layer: int) -> str:
    """The composition site of layer ``layer`` (ω keys use it; ++ variants strip the index)."""
    return f"encoder.layer.{layer}.output"


def attach(encoder: nn.Module, settings: BottleneckSettings) -> list[BottleneckAdapter]:
    """Insert fresh trainable adapters into every layer; returns them in layer order."""
    outputs = ffn_output_modules(encoder)  # a clear ModelError on an unsupported architecture, before building
    hidden = encoder.config.hidden_size
    adapters = [BottleneckAdapter(hidden, max(1, hidden // settings.reduction_factor)) for _ in outputs]
    wrap_outputs(encoder, adapters)
    return adapters


def save(folder: Path, adapters: list[BottleneckAdapter], settings: BottleneckSettings) -> None:
    """Write ``bottleneck_config.json`` + ``bottleneck_model.safetensors``."""
    tensors = {f"layer.{i}.{k}": v for i, a in enumerate(adapters) for k, v in a.state_dict().items()}
    save_tensors(Path(folder) / BOTTLENECK_WEIGHTS_FILE, tensors)
    config = {
        **asdict(settings),
        "bottleneck_size": adapters[0].down.out_features,
        "hidden_size": adapters[0].down.in_features,
        "num_layers": len(adapters),
        "placement": "after_ffn",
        "original_ln_before": True,
        "original_ln_after": True,
    }
    write_json(Path(folder) / BOTTLENECK_CONFIG_FILE, config)


def load(encoder: nn.Module, folder: Path) -> list[BottleneckAdapter]:
    """Insert a saved adapter into ``encoder`` (frozen) and return its modules."""
    config, layers = load_weights(folder)
    settings = BottleneckSettings(int(config["reduction_factor"]), str(config["non_linearity"]))
    shape = (int(config["num_layers"]), int(config["hidden_size"]))
    if shape != (len(encoder.encoder.layer), encoder.config.hidden_size):
        raise ArtifactError(f"{folder} was trained for a different encoder shape; "
                            "use its base model (see scalearn.json)")
    adapters = attach(encoder, settings)
    for adapter, state in zip(adapters, layers):
        adapter.load_state_dict(state)
        adapter.requires_grad_(False)
    return adapters


class BottleneckKind:
    """The paper's Pfeiffer adapter after each layer's FFN; composes through the layer's output block (ReLU)."""

    name = "bottleneck"
    activation = "relu"
    default_lr = 3e-4  # the paper's

    def settings(self, options: dict[str, Any] | None = None) -> BottleneckSettings:
        known = {"reduction_factor", "non_linearity"}
        return BottleneckSettings(**{k: v for k, v in (options or {}).items() if k in known})

    def attach(self, encoder: nn.Module, settings: BottleneckSettings, base_model_id: str) -> Attached:
        modules = attach(encoder, settings)
        return Attached(encoder, [p for m in modules for p in m.parameters()], modules)

    def save(self, folder: Path, attached: Attached, settings: BottleneckSettings) -> None:
        save(folder, attached.handle, settings)

    def load(self, encoder: nn.Module, folder: Path) -> nn.Module:
        load(encoder, folder)
        return encoder

    def read_sites(self, folder: Path) -> dict[str, SiteWeights]:
        if adapterhub.detect(folder):  # AdapterHub's Pfeiffer adapter: the same math; leave_out layers absent
            layers = adapterhub.read_adapterhub(folder).layers
        else:
            _, layers = load_weights(folder)
        return {
            site_name(i): SiteWeights(w["down.weight"], w["up.weight"], w["down.bias"], w["up.bias"])
            for i, w in enumerate(layers) if w is not None
        }

    def install(self, encoder: nn.Module, mixes: dict[str, nn.Module]) -> None:
        outputs = ffn_output_modules(encoder)
        hidden = encoder.config.hidden_size
        for site, mix in mixes.items():
            layer = int(site.split(".")[2])
            if layer >= len(outputs) or mix.down.shape[1] != hidden:
                raise CompositionError(
                    f"bottleneck site '{site}' (width {mix.down.shape[1]}) does not exist in this base model "
                    f"({len(outputs)} layers, hidden {hidden}); use the model the sources were trained on"
                )
        for layer, (module, base) in enumerate(zip(encoder.encoder.layer, outputs)):
            mix = mixes.get(site_name(layer))
            if mix is not None:  # a layer no source adapts stays as it was
                module.output = AdapterOutput(base, mix)

    def card_usage(self, meta: dict[str, Any]) -> str:
        factor = (meta["adapter"].get("settings") or {}).get("reduction_factor", "?")
        return f"A Pfeiffer bottleneck adapter (reduction factor {factor}); load it with `scalearn eval`.\n"
