"""LoRA sources through PEFT, saved in PEFT's own format (vanilla ``PeftModel.from_pretrained`` loads them).

For composition, a saved LoRA is read back as plain tensors per site (module path -> A, B, scaling), so that
the N sources at a site become one rank-Σr pair (see ``scaling.LowRankMix``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from scalearn_cli.artifacts import LORA_CONFIG_FILE
from scalearn_cli.errors import ArtifactError, UsageError
from scalearn_cli.formats.peft_lora import LoraSite, read_lora

__all__ = ["ComposedLinear", "LoraSettings", "LoraSite", "attach", "load", "load_sites"]


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters (default r=8, alpha=16 on query and value)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = field(default=("query", "value"))

    def __post_init__(self) -> None:
        if self.r < 1:
            raise UsageError(f"lora r must be >= 1, got {self.r}")
        if not self.target_modules:
            raise UsageError("lora target_modules must name at least one module, e.g. query,value")


def attach(encoder: nn.Module, settings: LoraSettings, base_model_id: str):  # -> peft.PeftModel
    """Wrap ``encoder`` with a fresh trainable LoRA (PEFT); the base stays frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
    )
    try:
        peft_model = get_peft_model(encoder, config)
    except ValueError as exc:
        raise UsageError(f"LoRA target modules {list(settings.target_modules)} not found in the model: {exc}") from exc
    peft_model.peft_config["default"].base_model_name_or_path = base_model_id
    return peft_model


def load(encoder: nn.Module, folder: Path):  # -> peft.PeftModel
    """Load a saved LoRA source onto ``encoder`` with vanilla PEFT (frozen, inference mode)."""
    from peft import PeftModel

    if not (Path(folder) / LORA_CONFIG_FILE).is_file():
        raise ArtifactError(f"{folder} has no {LORA_CONFIG_FILE}: not a LoRA adapter folder")
    return PeftModel.from_pretrained(encoder, str(folder), is_trainable=False)


def load_sites(folder: Path) -> dict[str, LoraSite]:
    """Read a PEFT LoRA folder as {module path in the base encoder: LoraSite} (see ``formats.peft_lora``)."""
    return read_lora(Path(folder)).sites


class ComposedLinear(nn.Module):
    """A frozen base ``nn.Linear`` plus a mix of N LoRA sources: y = W x + b + Σ_i ω_i ⊙ s_i B_i A_i x."""

    def __init__(self, base: nn.Linear, mix: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.mix(x)
