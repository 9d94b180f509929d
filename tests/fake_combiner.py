"""A test-only combiner, to prove the combiner seam: this module, plus one ``register_combiner`` line in the tests.

``first``: source 0 weighted by ``--first-weight`` (default 1), every other source 0, at every site; nothing
between the sources is learned (only the head trains). Linear with fixed weights, so it folds and has an ω.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scalearn_cli.combiners import BuildContext, CombinerSpec, WeightedCombiner
from scalearn_cli.scaling import FixedWeights


class First(WeightedCombiner):
    name = "first"
    label = "first-source"

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        return self.install(mixes, FixedWeights(len(context.sources), self.values(spec, len(context.sources))))

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> dict[str, torch.Tensor]:
        return {site: torch.tensor(self.values(spec, n)) for site in sites}

    @staticmethod
    def values(spec: CombinerSpec, n: int) -> list[float]:
        return [float(spec.options["weight"])] + [0.0] * (n - 1)
