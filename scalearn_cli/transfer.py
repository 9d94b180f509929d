"""Stage 2: learn ScaLearn's ω (or a baseline combiner) and a fresh head for a target task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch

from scalearn_cli import artifacts
from scalearn_cli.artifacts import COMPOSITION_FILE, HEAD_FILE, METADATA_FILE, save_tensors, staged_output
from scalearn_cli.cards import metrics_table, write_model_card
from scalearn_cli.compose import Composition, check_sources, combiner_file, composition_record, inject, resolve_source
from scalearn_cli.errors import UsageError
from scalearn_cli.experiment import DataOptions, base_metadata, metric_fn, prepare, score
from scalearn_cli.model import TaskHead, TaskModel, head_outputs
from scalearn_cli.scaling import Omega
from scalearn_cli.sources.pipeline import check_out_dir, check_pooling, head_metadata, head_pooling
from scalearn_cli.train import Progress, TrainConfig, fit, on_main_process

logger = logging.getLogger(__name__)

#: the paper's learning rates per method (ScaLearn 6e-3 for ω and head; AdapterFusion 5e-5)
DEFAULT_LR = {"scalearn": 6e-3, "average": 6e-3, "adapterfusion": 5e-5}
#: early stopping: AdapterFusion uses patience 5; ScaLearn none in effect (best epoch by dev loss)
DEFAULT_PATIENCE = {"scalearn": None, "average": 5, "adapterfusion": 5}


def group_lasso(comp: Composition, strength: float) -> Callable[[], torch.Tensor] | None:
    """Penalty λ·Σ_i ||ω_i||₂ over sources (all sites' ω of source i form its group): pushes whole sources to 0."""
    if strength <= 0:
        return None
    if not isinstance(comp.combiner, Omega):
        raise UsageError("--sparsity needs --method scalearn (it penalises ω)")
    omega = comp.combiner

    def penalty() -> torch.Tensor:
        per_source = torch.stack([v.reshape(v.shape[0], -1).pow(2).sum(1) for v in omega.values]).sum(0)
        return strength * per_source.clamp_min(1e-12).sqrt().sum()

    return penalty


def transfer(
    sources: list[str],
    data: DataOptions,
    out: Path,
    method: str = "scalearn",
    variant: str = "scalearn",
    config: TrainConfig | None = None,
    registry: str | None = None,
    overwrite: bool = False,
    sparsity: float = 0.0,
    progress: Progress | None = None,
    init_omega: dict[str, torch.Tensor] | None = None,
    pooling: str | None = None,
) -> dict[str, Any]:
    """Compose ``sources`` into a model for ``data.task``; train only the combiner and a head; save to ``out``.

    ``init_omega`` (by ω key, e.g. the kept sources' ω from ``prune``) replaces the Normal(2/N, 0.001) init
    for the keys it holds. ``pooling`` of the fresh head: by default the one the sources' heads were trained with.
    """
    from transformers import set_seed

    from scalearn_cli.backbone import load_backbone

    config = config or TrainConfig(lr=DEFAULT_LR.get(method, 6e-3), patience=DEFAULT_PATIENCE.get(method))
    if pooling is not None:
        check_pooling(pooling)
    check_out_dir(out, overwrite)
    if len(set(sources)) != len(sources):
        dup = next(s for s in sources if sources.count(s) > 1)
        raise UsageError(f"source '{dup}' is listed twice; list each source once")
    resolved = [resolve_source(ref, registry) for ref in sources]
    check_sources(resolved)
    pooling = pooling or sources_pooling(resolved)
    base = resolved[0].meta["base_model"]
    encoder, tokenizer, ref = load_backbone(base["id"])
    if ref.revision != base["revision"]:
        logger.warning("base model %s is at %s; the sources were trained on %s", ref.id, ref.revision, base["revision"])
    prepared = prepare(data, tokenizer, config)
    set_seed(config.seed)
    comp = inject(encoder, resolved, method, variant)
    if init_omega is not None:
        _init_omega(comp, init_omega)
    head = TaskHead(ref.hidden_size, head_outputs(prepared.spec.problem_type, prepared.spec.num_labels), pooling=pooling)
    model = TaskModel(encoder, head, prepared.spec.problem_type)
    model.composition = comp
    params = comp.trainable() + list(head.parameters())
    n_transfer = sum(p.numel() for p in comp.trainable())
    logger.info("training %d transfer parameters (+ %d head)", n_transfer, sum(p.numel() for p in head.parameters()))
    result = fit(model, params, prepared.train, prepared.dev, config, metric_fn(prepared.spec), progress,
                 penalty=group_lasso(comp, sparsity))
    metrics = score(model, prepared)
    record = composition_record(resolved, comp)
    record["sparsity"] = sparsity
    meta = base_metadata("composition", prepared, ref, config, result)
    meta["adapter"] = {"kind": record["adapter_kind"], "method": method, "variant": record["variant"],
                       "parameters": n_transfer}
    meta["head"] = head_metadata(head)
    meta["metrics"] = metrics
    meta["sources"] = [s.record["ref"] for s in resolved]
    on_main_process(lambda: _save(out, overwrite, method, comp, head, record, meta))
    return meta


def sources_pooling(sources: list) -> str:
    """The pooling the sources' heads share; mixed sources need an explicit choice."""
    found = {s.record["ref"]: head_pooling(s.meta, s.record["ref"]) for s in sources}
    if len(set(found.values())) > 1:
        listing = ", ".join(f"{ref}: {p}" for ref, p in found.items())
        raise UsageError(f"the sources' heads were trained with different pooling ({listing}); pass --pooling first|mean")
    return next(iter(found.values()))


def _save(out: Path, overwrite: bool, method: str, comp: Composition, head: TaskHead, record: dict, meta: dict) -> None:
    """Write the composition folder atomically (ω or fusion weights, head, composition.json, metadata, card)."""
    with staged_output(out, overwrite) as tmp:
        name = combiner_file(method)
        if name:
            save_tensors(tmp / name, comp.state(), metadata={"method": method, "variant": str(record["variant"])})
        save_tensors(tmp / HEAD_FILE, head.state_dict())
        artifacts.write_json(tmp / COMPOSITION_FILE, record)
        meta["files"] = artifacts.folder_fingerprint(tmp)
        meta["content_hash"] = artifacts.content_hash(meta["files"])
        artifacts.write_json(tmp / METADATA_FILE, meta)
        write_model_card(tmp, meta, f"{record['variant'] or method} composition for {meta['task']['name']}", _card(meta, record))


def _init_omega(comp: Composition, values: dict[str, torch.Tensor]) -> None:
    """Start ω from ``values`` where a key is given (the rest keeps its fresh init)."""
    if not isinstance(comp.combiner, Omega):
        raise UsageError("an initial ω needs --method scalearn")
    with torch.no_grad():
        for key in comp.combiner.keys:
            if key in values:
                target = comp.combiner.tensor(key)
                if tuple(values[key].shape) != tuple(target.shape):
                    raise UsageError(f"initial ω for {key} has shape {tuple(values[key].shape)}, "
                                     f"expected {tuple(target.shape)}")
                target.copy_(values[key])


def _card(meta: dict[str, Any], record: dict[str, Any]) -> str:
    lines = [f"- `{s['ref']}` ({s['task']}, revision `{s['revision'] or s['content_hash'][:12]}`)" for s in record["sources"]]
    return (
        f"A {record['method']} composition ({record['variant'] or '-'}) of {record['n_sources']} frozen "
        f"{record['adapter_kind']} source adapters, trained with scalearn {meta['scalearn_version']}: "
        f"{record['transfer_parameters']:,} transfer parameters plus the head. The sources are referenced, not "
        f"copied:\n\n" + "\n".join(lines) + f"\n\n## Results\n\n{metrics_table(meta['metrics'])}\n"
    )
