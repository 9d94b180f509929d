"""PEFT's LoRA merging (``LoraModel.add_weighted_adapter``) as a fixed baseline: one merged LoRA, only the head trains.

The sources are loaded by PEFT (``peft_library``) and merged by PEFT's own ``add_weighted_adapter`` with the
chosen ``combination_type`` (``--merge-type``: linear, cat, svd, ties, ties_svd, dare_linear, dare_ties,
dare_*_svd, magnitude_prune, magnitude_prune_svd), ``density``, ``majority_sign_method`` and ``svd_rank``; nothing
of the merge is re-implemented here. Weights are one per source, 1/N each unless given. DARE's random masks come
from the global RNG, seeded with the run's seed (recorded), so rebuilding a saved composition reproduces them.

Each site then holds the merged (A, B, scaling) and adds ``scaling · B A x`` (PEFT's order of operations), so the
composition is one LoRA per site: it folds (``export`` writes it as one PEFT folder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalearn_cli.combiners import BuildContext, CombinerSpec, TargetContext, WeightedCombiner
from scalearn_cli.combiners import peft_library as lib
from scalearn_cli.combiners.options import parse_numbers
from scalearn_cli.errors import UsageError

logger = logging.getLogger(__name__)

MERGED = "merged"  # the PEFT adapter name of the result
WHAT = "merge (add_weighted_adapter)"
#: combination types that prune or drop entries, so need PEFT's ``density``
NEEDS_DENSITY = ("ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd",
                 "magnitude_prune", "magnitude_prune_svd")


class MergedSite(nn.Module):
    """One site's merged LoRA: delta(x) = scaling · B (A x), A (r, D_in), B (D_out, r)."""

    def __init__(self, down: torch.Tensor, up: torch.Tensor, scaling: float) -> None:
        super().__init__()
        self.register_buffer("down", down.detach().clone())
        self.register_buffer("up", up.detach().clone())
        self.scaling = float(scaling)

    def forward(self, mix: nn.Module, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype)) * self.scaling

    def factors(self, mix: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (r, D_in), scaling · B (D_out, r)): the LoRA ``export`` writes."""
        return self.down, self.up * self.scaling


class Merge(WeightedCombiner):
    name = "merge"
    label = "PEFT merge"
    default_patience: int | None = 5  # of the head

    def spec(self, variant: str | None = None, options: dict[str, Any] | None = None) -> CombinerSpec:
        checked = super().spec(variant, options).options
        if isinstance(checked.get("weights"), str):
            checked["weights"] = parse_numbers(checked["weights"])
        kind = checked["merge_type"]
        if kind in NEEDS_DENSITY and checked.get("density") is None:
            raise UsageError(f"--merge-type {kind} needs --density D in (0, 1] (the fraction of entries it keeps)")
        if kind not in NEEDS_DENSITY and checked.get("density") is not None:
            raise UsageError(f"--density applies to --merge-type {', '.join(NEEDS_DENSITY)}, not {kind}; drop it")
        if checked.get("svd_rank") is not None and not kind.endswith("svd"):
            raise UsageError(f"--svd-rank applies to the *_svd merge types, not {kind}; drop it")
        return CombinerSpec(self.name, None, checked)

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        lib.refuse_non_lora([source.kind.activation for source in target.sources], WHAT)
        n = len(target.sources)
        if len(spec.options.get("weights") or [0] * n) != n:
            raise UsageError(f"--merge-weights gives {len(spec.options['weights'])} weights for {n} sources; "
                             "give one per source")
        weights = spec.options.get("weights") or [1.0 / n] * n
        return CombinerSpec(self.name, None, dict(spec.options) | {"weights": weights, "seed": target.seed})

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        lib.refuse_non_lora([mix.activation for mix in mixes.values()], WHAT)
        n = len(context.sources)
        weights = [float(w) for w in (spec.options.get("weights") or [1.0 / n] * n)]
        if len(weights) != n:
            raise UsageError(f"--merge-weights gives {len(weights)} weights for {n} sources; give one per source")
        merged = merge_with_peft(context, mixes, spec.options, weights)
        module = nn.ModuleDict({site.replace(".", "_"): merged[site] for site in sorted(merged)})
        for site, mix in mixes.items():
            object.__setattr__(mix, "combiner", module[site.replace(".", "_")])
        return module

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> dict[str, torch.Tensor]:
        raise UsageError("a merge composition has no per-site ω (PEFT merged the sources into one LoRA)")


def merge_with_peft(context: BuildContext, mixes: dict[str, nn.Module], options: dict[str, Any],
                    weights: list[float]) -> dict[str, MergedSite]:
    """PEFT's ``add_weighted_adapter`` over the sources; {site: its merged LoRA}."""
    kind = options["merge_type"]
    names = [f"{lib.ADAPTER_PREFIX}{i}" for i in range(len(context.sources))]
    with lib.in_temp_folder() as tmp:
        folders = lib.write_sources(context.sources, set(mixes), context.encoder, Path(tmp))
        model = lib.load_sources(lib.skeleton(context.encoder, mixes), folders)
    try:
        with lib.seeded(int(options.get("seed", 0))):
            model.add_weighted_adapter(names, weights, MERGED, combination_type=kind,
                                       svd_rank=options.get("svd_rank"), density=options.get("density"),
                                       majority_sign_method=options.get("majority_sign_method", "total"))
    except (ValueError, TypeError) as exc:
        raise lib.peft_error(f"add_weighted_adapter ({kind})", exc,
                             "compose sources of one LoRA rank, or use --merge-type cat or svd") from exc
    out = {}
    for site, layer in lib.lora_layers(model).items():
        if MERGED in layer.lora_A:
            out[site] = MergedSite(layer.lora_A[MERGED].weight, layer.lora_B[MERGED].weight, layer.scaling[MERGED])
    logger.info("PEFT merged %d sources (%s) at %d sites", len(names), kind, len(out))
    return out
