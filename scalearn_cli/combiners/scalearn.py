"""ScaLearn: learned scaling parameters ω per source (four variants, see ``scaling.VARIANTS``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalearn_cli.artifacts import OMEGA_FILE
from scalearn_cli.combiners import BuildContext, CombinerSpec, WeightedCombiner, check_options
from scalearn_cli.errors import UsageError
from scalearn_cli.scaling import VARIANTS, Omega


class ScaLearn(WeightedCombiner):
    name = "scalearn"
    label = "ScaLearn"
    weights_file = OMEGA_FILE
    default_patience = None  # the paper: no early stopping in effect (best epoch by dev loss)
    variants = tuple(VARIANTS)

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        variant = variant or "scalearn"
        if variant not in VARIANTS:
            raise UsageError(f"--variant must be one of {', '.join(VARIANTS)}, got '{variant}'")
        return CombinerSpec(self.name, variant, check_options(self.name, options))

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        dims = {site: mix.up.shape[0] for site, mix in sorted(mixes.items())}
        n = next(iter(mixes.values())).n_sources
        return self.install(mixes, Omega(dims, n, VARIANTS[spec.variant or "scalearn"]))

    def state(self, module: Omega) -> dict[str, torch.Tensor]:
        return module.state()

    def load_state(self, module: Omega, tensors: dict[str, torch.Tensor]) -> None:
        module.load_state(tensors)

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in sorted(tensors.items())}
