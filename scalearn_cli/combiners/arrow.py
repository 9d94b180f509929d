"""PEFT's Arrow routing (Ostapenko et al., 2024) over the LoRA sources, GenKnowSub included; only the head trains.

The sources are loaded by PEFT (``peft_library``) and routed by PEFT's own ``create_arrow_model`` with an
``ArrowConfig(top_k, router_temperature, use_gks, rng_seed)``: per token, the cosine of the input with each
expert's prototype (the top right singular vector of its B A) picks the ``top_k`` experts, mixed by a softmax at
``router_temperature``. With ``--gks-sources`` those sources are the general adapters of GenKnowSub (their mean is
subtracted from every expert) and the others are the experts. ``rng_seed`` is the run's seed (the prototypes'
power iteration starts from a random vector), so a saved composition rebuilds the same router.

Each site calls PEFT's own LoRA layer over a zero base (its output is exactly the routed delta). The routing
depends on the input, so the composition does not fold into fixed weights and has no ω.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalearn_cli.combiners import BuildContext, CombinerSpec, TargetContext, WeightedCombiner
from scalearn_cli.combiners import peft_library as lib
from scalearn_cli.errors import UsageError

logger = logging.getLogger(__name__)

WHAT = "Arrow routing (create_arrow_model)"


class RoutedSite(nn.Module):
    """A site's view of PEFT's routed LoRA layer (held by reference: the PEFT model is the Composition's)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "layer", layer)

    def forward(self, mix: nn.Module, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        return self.layer(x)  # zero base: PEFT's Arrow delta itself


class Arrow(WeightedCombiner):
    name = "arrow"
    label = "Arrow"
    default_patience: int | None = 5  # of the head

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        lib.refuse_non_lora([source.kind.activation for source in target.sources], WHAT)
        general = _positions(spec.options.get("gks_sources"), len(target.sources))
        experts = len(target.sources) - len(general)
        if experts < 1:
            raise UsageError("--gks-sources names every source; leave at least one as an Arrow expert")
        if spec.options["top_k"] > experts:
            raise UsageError(f"--top-k {spec.options['top_k']} is more than the {experts} expert sources; "
                             f"pass --top-k {experts} or fewer")
        return CombinerSpec(self.name, None, dict(spec.options) | {"gks_sources": general, "seed": target.seed})

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        lib.refuse_non_lora([mix.activation for mix in mixes.values()], WHAT)
        model = arrow_model(context, mixes, spec.options)
        layers = lib.lora_layers(model)
        for site, mix in mixes.items():
            object.__setattr__(mix, "combiner", RoutedSite(layers[site]))
        return lib.freeze(model)

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> dict[str, torch.Tensor]:
        raise UsageError("an Arrow composition has no ω (its routing over sources depends on each token)")


def arrow_model(context: BuildContext, mixes: dict[str, nn.Module], options: dict[str, Any]) -> nn.Module:
    """PEFT's ``create_arrow_model`` over the sources (experts, and GenKnowSub's general adapters)."""
    from peft import ArrowConfig, create_arrow_model

    general = _positions(options.get("gks_sources"), len(context.sources))
    config = ArrowConfig(top_k=int(options["top_k"]), router_temperature=float(options["router_temperature"]),
                         use_gks=bool(general), rng_seed=int(options.get("seed", 0)))
    with lib.in_temp_folder() as tmp:
        folders = lib.write_sources(context.sources, set(mixes), context.encoder, Path(tmp))
        experts = [f for i, f in enumerate(folders) if i not in general]
        try:
            model = create_arrow_model(lib.skeleton(context.encoder, mixes), experts, config,
                                       general_adapter_paths=[folders[i] for i in general] or None)
        except (ValueError, TypeError) as exc:
            raise lib.peft_error("create_arrow_model", exc,
                                 "Arrow needs sources of one LoRA rank on the same modules") from exc
    logger.info("PEFT Arrow over %d experts (%d general), top_k %d", len(experts), len(general), config.top_k)
    return model


def _positions(value: Any, n: int) -> list[int]:
    """Source positions from ``"0,2"`` or a list; each must name one of the ``n`` sources."""
    if value in (None, "", []):
        return []
    found = sorted({int(v) for v in (value.split(",") if isinstance(value, str) else value)})
    if found[-1] >= n:
        raise UsageError(f"--gks-sources names source {found[-1]}, but there are {n} (positions 0 to {n - 1})")
    return found
