"""LoRA sources through PEFT, saved in PEFT's own format (vanilla ``PeftModel.from_pretrained`` loads them).

For composition, a saved LoRA is read back as plain tensors per site (module path -> A, B, scaling), so that
the N sources at a site become one rank-Σr pair (see ``scaling.LowRankMix``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalearn_cli.artifacts import LORA_CONFIG_FILE
from scalearn_cli.dense_site import dense_linear
from scalearn_cli.errors import ArtifactError, CompositionError, UsageError
from scalearn_cli.formats.peft_lora import LoraSite, read_lora
from scalearn_cli.sources import Attached, SiteWeights

#: PEFT's key prefix in adapter_model.safetensors (the PeftModel's base_model.model)
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters (default r=8, alpha=16 on the architecture's default modules).

    ``target_modules`` empty means PEFT's default for the model type (BERT/RoBERTa: query, value; Llama, Qwen2,
    Mistral: q_proj, v_proj; GPT-2: c_attn; see :func:`default_targets`), filled in when the LoRA is attached.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.r < 1:
            raise UsageError(f"lora r must be >= 1, got {self.r}")


def default_targets(encoder: nn.Module) -> tuple[str, ...]:
    """PEFT's own default LoRA targets for the encoder's model type (the table ``get_peft_model`` falls back on)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(getattr(encoder, "config", None), "model_type", None)
    if model_type not in DEFAULTS:
        raise UsageError(
            f"no default LoRA target modules for model type '{model_type}'; pass --lora-targets with names of its "
            f"Linear layers, e.g. --lora-targets {','.join(linear_names(encoder)[:4])}"
        )
    return tuple(DEFAULTS[model_type])


def resolve_settings(encoder: nn.Module, settings: LoraSettings) -> LoraSettings:
    """``settings`` with the architecture's default targets filled in when none were given."""
    return settings if settings.target_modules else replace(settings, target_modules=default_targets(encoder))


def attach(encoder: nn.Module, settings: LoraSettings, base_model_id: str):  # -> peft.PeftModel
    """Wrap ``encoder`` with a fresh trainable LoRA (PEFT); the base stays frozen."""
    from peft import LoraConfig, get_peft_model

    settings = resolve_settings(encoder, settings)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        fan_in_fan_out=any(is_conv1d(m) for m in encoder.modules()),  # GPT-2: PEFT would set it, with a warning
    )
    try:
        peft_model = get_peft_model(encoder, config)
    except ValueError as exc:
        raise UsageError(
            f"LoRA target modules {', '.join(settings.target_modules)} not found in the model; pass --lora-targets "
            f"with names of its Linear layers, e.g. --lora-targets {','.join(linear_names(encoder)[:4])}"
        ) from exc
    peft_model.peft_config["default"].base_model_name_or_path = base_model_id
    return peft_model


def is_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): a Linear whose weight is stored transposed, (D_in, D_out)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def site_dims(module: nn.Module) -> tuple[int, int] | None:
    """(D_in, D_out) of a layer LoRA can adapt (``nn.Linear`` or GPT-2's ``Conv1D``); None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if is_conv1d(module):
        return int(module.weight.shape[0]), int(module.nf)  # weight (D_in, D_out): y = x W + b
    return None


def linear_names(encoder: nn.Module) -> list[str]:
    """The distinct last names of the encoder's Linear (and Conv1D) layers, in model order (what ``--lora-targets``
    matches)."""
    names = [name.rpartition(".")[2] for name, module in encoder.named_modules() if site_dims(module) is not None]
    return list(dict.fromkeys(names))


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
    """A frozen base ``nn.Linear`` plus a mix of N LoRA sources: y = W x + b + Σ_i ω_i ⊙ s_i B_i A_i x.

    The base may be GPT-2's ``Conv1D`` (y = x W + b, W stored (D_in, D_out)): the sources' delta on the output is
    the same, only a merge has to transpose it (``export``).

    Three ways to run it, same result: inference with fixed weights folds ΔW lazily (cached); with gradients, a
    site with many sources runs W + ΔW(ω) as one GEMM (the mix's ``dense_for``), and otherwise the base plus the
    mix's two low-rank GEMMs.
    """

    def __init__(self, base: nn.Module, mix: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = self.mix
        if getattr(mix, "foldable", bool)():
            if not self.training and not torch.is_grad_enabled():
                # inference with fixed weights: y = (W + ΔW) x + b, ΔW cached by the mix (bare-model speed)
                return self._with_delta(x, mix.delta_weight())
            if mix.dense_for(x):
                # many sources: ΔW(ω) formed once, one GEMM; ω's gradient flows through it (scaling.dense_is_cheaper)
                weight = self.base.weight if isinstance(self.base, nn.Linear) else self.base.weight.T
                return dense_linear(x, weight, self.base.bias, mix)
        return self.base(x) + mix(x)

    def _with_delta(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The base layer run with W + ΔW, ``delta`` of shape (D_out, D_in)."""
        delta = delta.to(self.base.weight.dtype)
        if isinstance(self.base, nn.Linear):
            return F.linear(x, self.base.weight + delta, self.base.bias)
        weight = self.base.weight + delta.T  # Conv1D stores W as (D_in, D_out)
        return torch.addmm(self.base.bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], -1)


def _settings_value(key: str, value: Any) -> Any:
    return tuple(value) if key == "target_modules" and isinstance(value, (list, tuple)) else value


class LoraKind:
    """LoRA through PEFT: PEFT's own folder format; composes by stacking ranks (linear: exports fold)."""

    name = "lora"
    activation = "identity"
    default_lr = 5e-4  # not in the paper (Pfeiffer adapters at 3e-4); LoRA's own GLUE setup

    def settings(self, options: dict[str, Any] | None = None) -> LoraSettings:
        return LoraSettings(**{k: _settings_value(k, v) for k, v in (options or {}).items()})

    def attach(self, encoder: nn.Module, settings: LoraSettings, base_model_id: str) -> Attached:
        settings = resolve_settings(encoder, settings)
        wrapped = attach(encoder, settings, base_model_id)
        return Attached(wrapped, [p for p in wrapped.parameters() if p.requires_grad], wrapped, settings)

    def save(self, folder: Path, attached: Attached, settings: LoraSettings) -> None:
        # PEFT's own adapter_config.json + adapter_model.safetensors; no embedding layers (skips a hub lookup)
        attached.handle.save_pretrained(str(folder), save_embedding_layers=False)

    def load(self, encoder: nn.Module, folder: Path) -> nn.Module:
        return load(encoder, folder)

    def read_sites(self, folder: Path) -> dict[str, SiteWeights]:
        return {path: SiteWeights(site.a, site.b * site.scaling) for path, site in load_sites(folder).items()}

    def install(self, encoder: nn.Module, mixes: dict[str, nn.Module]) -> None:
        modules = dict(encoder.named_modules())
        missing = sorted(path for path in mixes if site_dims(modules.get(path)) is None)
        if missing:
            model_type = getattr(getattr(encoder, "config", None), "model_type", "this")
            raise CompositionError(
                f"the sources adapt {len(missing)} layer(s) that base model {model_type} lacks (first: '{missing[0]}'; "
                f"its Linear layers: {', '.join(linear_names(encoder)[:6])}); use the base model they were trained on"
            )
        for path, mix in mixes.items():
            base = modules[path]
            if (mix.down.shape[1], mix.up.shape[0]) != site_dims(base):
                d_in, d_out = site_dims(base)
                raise CompositionError(
                    f"LoRA site '{path}' is {mix.down.shape[1]}->{mix.up.shape[0]} in the sources but "
                    f"{d_in}->{d_out} in this base model; use the model they were trained on"
                )
            parent_path, _, child = path.rpartition(".")
            setattr(modules[parent_path], child, ComposedLinear(base, mix))

    def card_usage(self, meta: dict[str, Any]) -> str:
        return (
            "Load it with vanilla PEFT:\n\n```python\nfrom transformers import AutoModel\nfrom peft import PeftModel\n"
            f"base = AutoModel.from_pretrained(\"{meta['base_model']['id']}\")\n"
            "model = PeftModel.from_pretrained(base, \"<this folder or repo id>\")\n```\n"
        )
