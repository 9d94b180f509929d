"""LoraHub (Huang et al., 2024, "LoraHub: Efficient Cross-Task Generalization via Dynamic LoRA Composition").

One scalar weight w_i per LoRA source, found without gradients and then fixed. As LoraHub does, the sources'
LoRA matrices are merged *separately* into one LoRA,

    A = Σ_i w_i A_i,   B = Σ_i w_i (s_i B_i),   delta(x) = B A x,

so the composition is not the weighted sum of the sources' outputs (Σ_i w_i s_i B_i A_i): the product has cross
terms w_i w_j B_i A_j, and it is not linear in w. It is still one LoRA of the sources' rank per site, so it folds
(``export`` writes that LoRA, or merges it). All sources need the same rank at every site (LoraHub's own
requirement); their scalings s_i are folded into B_i, which equals LoraHub's merge when all s_i are equal.

The search is LoraHub's published one: nevergrad's ``NGOpt`` (which picks CMA-ES or a relative for this budget
and dimension) over w ∈ [-1.5, 1.5]^N from w = 0, minimising the loss on the few-shot training examples plus the
L1 penalty 0.05 · mean_i |w_i|, for a fixed budget of loss evaluations (default 40, LoraHub's). The seed fixes
nevergrad's random state, so a run is repeatable. Generation targets use the answer-only LM loss and train
nothing afterwards. Classification targets have no trained head during the search, so each candidate is scored by
a leave-one-out nearest-centroid loss on the pooled features (cosine to each class's centroid, scale 10,
cross-entropy; the row itself left out of its class centroid); with w fixed the fresh head then trains as for
``average``. Multi-label targets score each label's centroid likewise, with binary cross-entropy. Regression
targets are refused.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalearn_cli.combiners import BuildContext, CombinerSpec, WeightedCombiner
from scalearn_cli.errors import UsageError

logger = logging.getLogger(__name__)

BOUND = 1.5  # LoraHub's search box [-1.5, 1.5] per weight
L1 = 0.05  # LoraHub's default_l1_regularization: 0.05 · mean |w|
PROTOTYPE_SCALE = 10.0  # cosine -> logits of the classification score


class MergeWeights(nn.Module):
    """The N fixed weights (a buffer: nothing trains them), shared by every site."""

    def __init__(self, n_sources: int, values: list[float] | None = None) -> None:
        super().__init__()
        w = torch.zeros(n_sources) if values is None else torch.tensor(values, dtype=torch.float32)
        self.register_buffer("w", w, persistent=False)

    def set(self, values) -> None:
        self.w.copy_(torch.as_tensor(np.asarray(values, dtype=np.float32)))


class MergedSite(nn.Module):
    """One site: delta(x) = (Σ_i w_i B_i)(Σ_i w_i A_i) x over N sources of one rank r."""

    def __init__(self, mix: nn.Module, weights: MergeWeights) -> None:
        super().__init__()
        ranks = torch.bincount(mix.src, minlength=mix.n_sources).tolist()
        if len(set(ranks)) != 1:
            raise UsageError(f"LoraHub merges the sources' A and B matrices, so every source needs one LoRA rank at "
                             f"every site; {mix.site} has ranks {ranks}: compose sources of one rank and targets")
        self.rank = ranks[0]
        object.__setattr__(self, "weights", weights)  # owned by the Composition

    def factors(self, mix: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (r, D_in), B (D_out, r)) of the merged LoRA."""
        n, r, w = mix.n_sources, self.rank, self.weights.w.to(mix.down.dtype)
        down = (w.view(n, 1, 1) * mix.down.view(n, r, -1)).sum(0)  # (r, D_in)
        up = (mix.up.view(mix.up.shape[0], n, r) * w.view(1, n, 1)).sum(1)  # (D_out, r)
        return down, up

    def forward(self, mix: nn.Module, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        down, up = self.factors(mix)
        return F.linear(F.linear(x, down), up)  # (batch, seq, D_out)


class LoraHub(WeightedCombiner):
    name = "lorahub"
    label = "LoraHub"
    default_patience: int | None = 5  # of the head (classification targets)

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        if any(mix.activation != "identity" for mix in mixes.values()):
            raise UsageError("LoraHub merges LoRA matrices; bottleneck sources cannot be merged that way: use "
                             "--method scalearn or average")
        module = MergeWeights(next(iter(mixes.values())).n_sources, spec.options.get("weights"))
        sites = nn.ModuleDict({site.replace(".", "_"): MergedSite(mix, module) for site, mix in mixes.items()})
        for site, mix in mixes.items():
            object.__setattr__(mix, "combiner", sites[site.replace(".", "_")])
        module.sites = sites
        return module

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> dict[str, torch.Tensor]:
        weights = spec.options.get("weights")
        if weights is None:
            raise UsageError("this LoraHub composition records no weights; re-run transfer")
        return {site: torch.tensor(weights) for site in sites}

    def search(self, comp: nn.Module, model: nn.Module, prepared: Any, seed: int) -> CombinerSpec:
        """LoraHub's gradient-free search (module docstring); the best weights are set and recorded."""
        import nevergrad as ng

        weights: MergeWeights = comp.combiner
        n, budget = weights.w.numel(), int(comp.spec.options["budget"])
        if torch.cuda.is_available():  # the search runs before training moves the model: use the GPU for it too
            model.to("cuda")
        loss = few_shot_loss(model, prepared)

        def objective(w: np.ndarray) -> float:
            weights.set(w)
            return loss() + L1 * float(np.abs(w).sum()) / n

        box = ng.p.Array(init=np.zeros(n), lower=-BOUND, upper=BOUND)
        box.random_state = np.random.RandomState(seed)
        optimizer = ng.optimizers.NGOpt(parametrization=box, budget=budget)
        best = [float(v) for v in optimizer.minimize(objective).value]
        weights.set(best)
        value = objective(np.asarray(best))
        logger.info("LoraHub: weights %s (loss + L1 %.4f after %d evaluations)", [round(v, 4) for v in best],
                    value, budget)
        search = {"optimizer": "nevergrad NGOpt", "budget": budget, "seed": seed, "bounds": [-BOUND, BOUND],
                  "l1": L1, "objective": value, "examples": len(prepared.splits.train)}
        return CombinerSpec(self.name, None, dict(comp.spec.options) | {"weights": best, "search": search})


def few_shot_loss(model: nn.Module, prepared: Any):  # -> Callable[[], float]
    """The search's loss on the training (few-shot) examples, in a fixed order: the answer-only LM loss, or for
    classification the leave-one-out nearest-centroid loss (module docstring)."""
    from torch.utils.data import DataLoader

    spec = prepared.spec
    if spec.problem_type not in ("generation", "classification", "multi_label_classification"):
        raise UsageError(f"LoraHub searches weights for generation and classification targets, not {spec.problem_type}"
                         f"; use --method scalearn or average")
    loader = DataLoader(prepared.train.dataset, batch_size=prepared.train.batch_size,
                        collate_fn=prepared.train.collate_fn)

    def rows():
        device = next(model.parameters()).device
        return ({k: v.to(device) for k, v in batch.items()} for batch in loader)

    @torch.no_grad()
    def generation() -> float:
        model.eval()
        total, count = 0.0, 0
        for batch in rows():
            loss, _ = model(**batch)
            total, count = total + float(loss) * len(batch["labels"]), count + len(batch["labels"])
        return total / count

    @torch.no_grad()
    def classification() -> float:
        model.eval()
        feats, labels = [], []
        for batch in rows():
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            extra = {"position_ids": (inputs["attention_mask"].long().cumsum(-1) - 1).clamp_min(0)} \
                if model.causal else {}
            hidden = model.encoder(**inputs, **extra).last_hidden_state
            feats.append(F.normalize(model.head.pool(hidden, inputs["attention_mask"]).float(), dim=-1).cpu())
            labels.append(batch["labels"].cpu())
        if spec.problem_type == "multi_label_classification":
            return label_prototype_loss(torch.cat(feats), torch.cat(labels))
        return prototype_loss(torch.cat(feats), torch.cat(labels), spec.num_labels)

    return generation if spec.problem_type == "generation" else classification


def prototype_loss(feats: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Leave-one-out nearest-centroid cross-entropy: feats (n, D) unit rows, labels (n,)."""
    onehot = F.one_hot(labels.long(), n_classes).float()  # (n, C)
    sums = onehot.T @ feats  # (C, D)
    counts = onehot.sum(0)  # (C,)
    own = onehot.unsqueeze(-1) * feats.unsqueeze(1)  # (n, C, D): each row's share of its own class sum
    centroids = (sums.unsqueeze(0) - own) / (counts.unsqueeze(0) - onehot).clamp_min(1.0).unsqueeze(-1)
    logits = PROTOTYPE_SCALE * F.cosine_similarity(feats.unsqueeze(1), centroids, dim=-1)  # (n, C)
    return float(F.cross_entropy(logits, labels.long()))


def label_prototype_loss(feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-label :func:`prototype_loss`: each label's leave-one-out centroid of the rows holding it, and binary
    cross-entropy of the scaled cosines against the rows' 0/1 labels. feats (n, D) unit rows, labels (n, C)."""
    hot = labels.float()  # (n, C)
    sums, counts = hot.T @ feats, hot.sum(0)  # (C, D), (C,)
    own = hot.unsqueeze(-1) * feats.unsqueeze(1)  # (n, C, D)
    centroids = (sums.unsqueeze(0) - own) / (counts.unsqueeze(0) - hot).clamp_min(1.0).unsqueeze(-1)
    logits = PROTOTYPE_SCALE * F.cosine_similarity(feats.unsqueeze(1), centroids, dim=-1)  # (n, C)
    return float(F.binary_cross_entropy_with_logits(logits, hot))
