"""AdapterFusion (Pfeiffer et al. 2021): attention over the sources' outputs at every site (input dependent)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalearn_cli.artifacts import FUSION_FILE
from scalearn_cli.combiners import CombinerSpec, TargetContext
from scalearn_cli.errors import UsageError
from scalearn_cli.scaling import FusionAttention


class AdapterFusion:
    name = "adapterfusion"
    label = "AdapterFusion"
    weights_file = FUSION_FILE
    default_lr = 5e-5  # the paper's
    default_patience = 5
    foldable = False  # the attention weights depend on each input
    has_omega = False
    variants: tuple[str, ...] = ()

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        return CombinerSpec(self.name, None, dict(options or {}))

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        return spec

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec) -> nn.Module:
        module = nn.ModuleDict({
            _key(site): FusionAttention(mix.down.shape[1], mix.up.shape[0]) for site, mix in sorted(mixes.items())
        })
        for site, mix in mixes.items():
            mix.fusion = module[_key(site)]
        return module

    def state(self, module: nn.ModuleDict) -> dict[str, torch.Tensor]:
        return dict(module.state_dict())

    def load_state(self, module: nn.ModuleDict, tensors: dict[str, torch.Tensor]) -> None:
        module.load_state_dict(tensors)

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> None:
        raise UsageError("an AdapterFusion composition has no ω (its attention over sources depends on each input); "
                         "inspect works on scalearn, average and adaptersoup compositions")


def _key(site: str) -> str:
    return site.replace(".", "_")  # ModuleDict keys cannot hold dots
