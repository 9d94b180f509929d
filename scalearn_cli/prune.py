"""Drop the sources a trained composition barely uses, then re-learn ω briefly over the ones kept.

Sources are ranked by their share of Σ|ω| (the same number ``scalearn inspect`` shows). ``keep=K`` keeps the K
largest; ``threshold=T`` keeps those whose share is at least T (a fraction in [0, 1]). The kept sources are
re-composed with ``stages.transfer.transfer`` on the task data, method, variant and training options recorded in the
composition's scalearn.json; ω starts from the kept sources' learned ω (the head starts fresh).
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from scalearn_cli.artifacts import HeadSpec
from scalearn_cli.combiners import require
from scalearn_cli.data.rows import recorded_data
from scalearn_cli.errors import UsageError
from scalearn_cli.inspection import load_omega, omega_table, read_composition
from scalearn_cli.resolve import Resolver
from scalearn_cli.stages.common import DataOptions
from scalearn_cli.stages.transfer import TransferOptions, transfer
from scalearn_cli.tasks import task_from_dict
from scalearn_cli.train import Progress, TrainConfig

logger = logging.getLogger(__name__)


def select(shares: list[float], keep: int | None = None, threshold: float | None = None) -> list[int]:
    """Indices of the sources to keep, in their original order."""
    if (keep is None) == (threshold is None):
        raise UsageError("pass exactly one of --keep K or --threshold T")
    n = len(shares)
    if keep is not None:
        if not 1 <= keep <= n:
            raise UsageError(f"--keep must be between 1 and the {n} sources of the composition, got {keep}")
        ranked = sorted(range(n), key=lambda i: (-shares[i], i))  # ties: the earlier source wins
        return sorted(ranked[:keep])
    if not 0 <= threshold <= 1:
        raise UsageError(f"--threshold is a share of Σ|ω| in [0, 1], got {threshold}")
    kept = [i for i, share in enumerate(shares) if share >= threshold]
    if not kept:
        raise UsageError(f"no source has a share >= {threshold} (largest {max(shares):.3f}); lower --threshold")
    return kept


def prune(
    folder: Path,
    out: Path,
    keep: int | None = None,
    threshold: float | None = None,
    epochs: int = 3,
    overwrite: bool = False,
    progress: Progress | None = None,
    resolver: Resolver | None = None,
) -> dict[str, Any]:
    """Keep the sources with the largest ω share, re-train ω + head for ``epochs`` and save to ``out``."""
    require(read_composition(folder).method, "prune", folder)  # the compatibility table: a learned ω ranks sources
    table = omega_table(folder)
    meta, record, omega = load_omega(folder)
    shares = [s["share"] for s in table["sources"]]
    kept = select(shares, keep, threshold)
    resolver = resolver or Resolver()
    kept_sources = [resolver.recorded(record.sources[i]) for i in kept]  # trusted, verified, exact commits
    init = {key: value[kept].clone() for key, value in omega.items()}  # (K, D) or (K,)
    options = TransferOptions(
        sources=tuple(str(src.folder) for src in kept_sources), data=_data_options(meta), out=Path(out),
        method=record.method, variant=record.variant, train=_train_config(meta, epochs), resolver=resolver,
        overwrite=overwrite, init_omega=init, pooling=HeadSpec.from_dict(meta["head"], str(folder)).pooling,
        inputs=(Path(folder),),
    )
    main = meta["task"]["main_metric"]
    report = {  # everything that can fail runs before training: the staged write of ``out`` is the last step
        "out": str(out), "from": str(folder), "metric": main,
        "score": {"before": _test_score(meta, main), "after": None},
        "n_sources": {"before": len(shares), "after": len(kept)},
        "kept": [table["sources"][i] for i in kept],
        "dropped": [s for i, s in enumerate(table["sources"]) if i not in kept],
        "share_of": table["share_of"], "epochs": epochs,
    }
    kinds = {src.kind.activation for src in kept_sources}
    if kinds == {"identity"}:
        everything = [resolver.recorded(ref) for ref in record.sources]
        report["lora_rank"] = {"before": _summed_rank(everything), "after": _summed_rank(kept_sources)}
    after = transfer(options, progress)  # trains, scores, then writes ``out`` (staged: a failure leaves nothing)
    report["score"]["after"] = _test_score(after, main)
    return report


def _data_options(meta: dict[str, Any]):  # -> DataOptions
    """The task data recorded in a composition's scalearn.json (a custom task's must still be there)."""
    spec = task_from_dict(meta["task"])
    saved = meta.get("data") or {}
    data_dir, data_file = recorded_data(saved, spec, todo="restore it to prune", what="the composition")
    return DataOptions(task=spec.name, task_spec=spec, data_dir=data_dir, data_file=data_file,
                       max_train_samples=saved.get("max_train_samples"), few_shot=saved.get("few_shot"),
                       threshold=saved.get("threshold"))


def _train_config(meta: dict[str, Any], epochs: int) -> TrainConfig:
    """The recorded training options, with a brief ``epochs`` (and no step cap)."""
    recorded = meta.get("training") or {}
    known = {f.name for f in fields(TrainConfig)}
    options = {k: v for k, v in recorded.items() if k in known}
    options.update(epochs=epochs, max_steps=None)
    if not torch.cuda.is_available():  # a GPU run's recorded mixed precision: this refit runs (and records) fp32
        options["precision"] = "no"
    return TrainConfig(**options)


def _test_score(meta: dict[str, Any], metric: str) -> float | None:
    value = (meta.get("metrics") or {}).get("test", {}).get(metric)
    return None if value is None else float(value)


def _summed_rank(sources: list) -> int:
    """Σ r_i of linear sources at their widest site: the rank a ``peft-lora`` export would have."""
    per_site: dict[str, int] = {}
    for src in sources:
        for site, weights in src.kind.read_sites(src.folder).items():
            per_site[site] = per_site.get(site, 0) + weights.rank
    return max(per_site.values())
