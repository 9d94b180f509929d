"""AdapterSoup (Chronopoulou et al., 2023), the ScaLearn paper's weight-averaging baseline.

The k sources whose tasks are most similar to the target are averaged in weight space with equal weights;
nothing between the sources is learned (only the head trains). Similarity follows AdapterSoup's
sentence-similarity selection: the cosine between the centroid of the target's training texts and the centroid
of each source's training texts, both embedded by the frozen base encoder (mean over tokens).

Weight space: for linear kinds (LoRA) the average of the k weight deltas ΔW_i = s_i B_i A_i is exactly the
1/k-weighted sum of their outputs, so it is the ``FixedWeights`` path and folds into one LoRA. For ReLU kinds
(bottleneck) the k adapters' down/up matrices and biases are averaged (they need equal bottleneck sizes).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scalearn_cli.combiners import BuildContext, CombinerSpec, TargetContext, WeightedCombiner
from scalearn_cli.data.batches import example_texts
from scalearn_cli.data.rows import load_raw, recorded_data
from scalearn_cli.errors import ScaLearnError, UsageError
from scalearn_cli.scaling import FixedWeights
from scalearn_cli.tasks import task_from_dict

logger = logging.getLogger(__name__)

#: training texts read per task to place it (centroid of their embeddings)
SAMPLE = 256
SELECTION = "cosine of centroids of mean-pooled base-encoder embeddings of training texts"


class AdapterSoup(WeightedCombiner):
    name = "adaptersoup"
    label = "AdapterSoup"

    def prepare(self, spec: CombinerSpec, target: TargetContext) -> CombinerSpec:
        n = len(target.sources)
        k = min(int(spec.options["k"]), n)
        if k == n:  # every source is in the soup: nothing to rank
            return CombinerSpec(self.name, None, {"k": k, "selected": list(range(n)), "similarity": None})
        anchor = centroid(target.texts, target)
        sims = [float(F.cosine_similarity(anchor, centroid(source_texts(src), target), dim=0))
                for src in target.sources]
        ranked = sorted(range(n), key=lambda i: (-sims[i], i))
        selected = sorted(ranked[:k])
        logger.info("AdapterSoup keeps sources %s (similarity %s)", selected, [round(s, 4) for s in sims])
        return CombinerSpec(self.name, None, {"k": k, "selected": selected, "similarity": sims, "selection": SELECTION})

    def build(self, mixes: dict[str, nn.Module], spec: CombinerSpec, context: BuildContext) -> nn.Module:
        n = next(iter(mixes.values())).n_sources
        weights = _weights(spec, n)
        if all(mix.activation == "identity" for mix in mixes.values()):
            return self.install(mixes, FixedWeights(n, weights))
        selected = [i for i, w in enumerate(weights) if w > 0]
        module = nn.ModuleDict({site.replace(".", "_"): AveragedSite(mix, selected) for site, mix in mixes.items()})
        for site, mix in mixes.items():
            object.__setattr__(mix, "combiner", module[site.replace(".", "_")])
        return module

    def omega(self, spec: CombinerSpec, sites: list[str], n: int, tensors: Any) -> dict[str, torch.Tensor]:
        return {site: torch.tensor(_weights(spec, n)) for site in sites}


def _weights(spec: CombinerSpec, n: int) -> list[float]:
    selected = spec.options.get("selected")
    if selected is None:
        raise UsageError("this AdapterSoup composition records no selected sources; re-run transfer")
    return [1.0 / len(selected) if i in selected else 0.0 for i in range(n)]


class AveragedSite(nn.Module):
    """The k chosen sources' adapters at one site averaged in weight space: one adapter of their common size."""

    def __init__(self, mix: nn.Module, selected: list[int]) -> None:
        super().__init__()
        cols = [(mix.src == i).nonzero().squeeze(-1) for i in selected]
        ranks = {int(c.numel()) for c in cols}
        if len(ranks) != 1:
            raise UsageError(f"AdapterSoup averages weights, so the chosen sources need one bottleneck size at "
                             f"{mix.site} (found {sorted(ranks)}); choose sources of one size")
        self.register_buffer("down", torch.stack([mix.down[c] for c in cols]).mean(0))  # (r, D_in)
        self.register_buffer("up", torch.stack([mix.up[:, c] for c in cols]).mean(0))  # (D_out, r)
        db = None if mix.down_bias is None else torch.stack([mix.down_bias[c] for c in cols]).mean(0)
        ub = None if mix.up_bias is None else mix.up_bias[selected].mean(0)
        self.register_buffer("down_bias", db)
        self.register_buffer("up_bias", ub)

    def forward(self, mix: nn.Module, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        h = F.linear(x, self.down, self.down_bias)  # (batch, seq, r)
        h = F.relu(h) if mix.activation == "relu" else h
        return F.linear(h, self.up, self.up_bias)  # (batch, seq, D_out)


@torch.no_grad()
def centroid(texts: list[str], target: TargetContext) -> torch.Tensor:
    """Mean of the mean-pooled embeddings of up to SAMPLE texts under the frozen base encoder: (hidden,)."""
    if not texts:
        raise UsageError("AdapterSoup needs training texts to rank sources; the data has none")
    target.encoder.eval()
    total, count = None, 0
    for start in range(0, min(len(texts), SAMPLE), 32):
        enc = target.tokenizer(texts[start:start + 32], padding=True, truncation=True,
                               max_length=target.max_length, return_tensors="pt")
        hidden = target.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (batch, hidden)
        total = pooled.sum(0) if total is None else total + pooled.sum(0)
        count += pooled.shape[0]
    return total / count


def source_texts(source: Any) -> list[str]:
    """Up to SAMPLE training texts of a source's own task (its recorded data, else the task's dataset)."""
    meta, average_all = source.meta, "pass --soup-k with the number of sources to average all"
    why = f"AdapterSoup ranks sources by their training texts, and '{source.ref.ref}'"  # every message's start
    if source.ref.format != "scalearn":  # a PEFT or AdapterHub folder names no task and keeps no data
        raise UsageError(f"{why} (a {source.ref.format} folder) records none; leave it out, or {average_all}")
    spec = task_from_dict(meta.task)
    data_dir, data_file = recorded_data(meta.data, spec, todo=f"restore it, or {average_all}", what=why)
    try:
        train = load_raw(spec, data_dir=data_dir, data_file=data_file)["train"]
    except (ScaLearnError, OSError, ConnectionError) as exc:
        reason = str(exc).splitlines()[0]
        raise UsageError(f"{why} has texts that cannot be read ({reason}); restore them, or {average_all}") from exc
    sample = train.shuffle(seed=0).select(range(min(SAMPLE, len(train))))
    return example_texts(sample, spec)
