"""The ``average`` baseline: every source weighted 1/N at every site; only the head trains."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalearn_cli.combiners import BuildContext, CombinerSpec, WeightedCombiner
from scalearn_cli.scaling import FixedWeights


class Average(WeightedCombiner):
    name = "average"
    label = "the average"

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        return self.install(mixes, FixedWeights(next(iter(mixes.values())).n_sources))

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> dict[str, torch.Tensor]:
        return {site: torch.full((n,), 1.0 / n) for site in sites}
