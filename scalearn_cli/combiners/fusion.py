"""AdapterFusion (Pfeiffer et al. 2021): attention over the sources' outputs at every site (input dependent)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalearn_cli.artifacts import FUSION_FILE
from scalearn_cli.combiners import BuildContext, CombinerSpec, TargetContext, check_options
from scalearn_cli.errors import UsageError
from scalearn_cli.scaling import FusionAttention


class AdapterFusion:
    name = "adapterfusion"
    label = "AdapterFusion"
    weights_file = FUSION_FILE
    default_lr = 5e-5  # the paper's
    default_patience = 5
    variants: tuple[str, ...] = ()

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        return CombinerSpec(self.name, None, check_options(self.name, options))

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        return spec

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        module = nn.ModuleDict({
            _key(site): FusionAttention(mix.down.shape[1], mix.up.shape[0]) for site, mix in sorted(mixes.items())
        })
        for site, mix in mixes.items():
            object.__setattr__(mix, "combiner", FusionSite(module[_key(site)]))
        return module

    def search(self, comp: Any, model: nn.Module, prepared: Any, seed: int) -> CombinerSpec:
        return comp.spec  # learned by gradient

    def state(self, module: nn.ModuleDict) -> dict[str, torch.Tensor]:
        return dict(module.state_dict())

    def load_state(self, module: nn.ModuleDict, tensors: dict[str, torch.Tensor]) -> None:
        module.load_state_dict(tensors)

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> None:
        raise UsageError("an AdapterFusion composition has no ω (its attention over sources depends on each input); "
                         "inspect works on scalearn, average and adaptersoup compositions")


class FusionSite(nn.Module):
    """A site's view of its FusionAttention (held by reference, so the saved keys stay the attention's own)."""

    def __init__(self, attention: FusionAttention) -> None:
        super().__init__()
        object.__setattr__(self, "attention", attention)

    def forward(self, mix: nn.Module, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        return self.attention(x if query is None else query, mix.source_outputs(mix.hidden(x)))


def _key(site: str) -> str:
    return site.replace(".", "_")  # ModuleDict keys cannot hold dots
