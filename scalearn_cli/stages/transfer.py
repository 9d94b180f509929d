"""Stage 2: learn a combiner (ScaLearn's ω or a baseline) and a fresh head for a target task over frozen sources."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import set_seed

from scalearn_cli.artifacts import (AdapterSpec, COMPOSITION_FILE, CompositionRecord, Metadata, check_out_dir,
                                    save_tensors, write_folder, write_json)
from scalearn_cli.artifacts.outputs import command_inputs
from scalearn_cli.backbone import check_base_revision, check_max_length, enable_gradient_checkpointing, load_backbone
from scalearn_cli.cards import metrics_table
from scalearn_cli.combiners import DEFAULT_METHOD, CombinerSpec, TargetContext, get_combiner
from scalearn_cli.compose import Composition, check_sources, composition_record, inject
from scalearn_cli.data.batches import example_texts
from scalearn_cli.errors import CompositionError, UsageError
from scalearn_cli.model import TaskHead, head_outputs, head_spec, task_model_for
from scalearn_cli.resolve import Resolved, Resolver
from scalearn_cli.scaling import Omega
from scalearn_cli.stages.common import (
    DataOptions, check_pooling, metric_fn, prepare, resolve_pooling, run_metadata, score, set_thresholds,
)
from scalearn_cli.processes import on_main_process
from scalearn_cli.train import Progress, TrainConfig, TrainResult, evaluate, fit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferOptions:
    """Everything one transfer needs. ``train.lr``/``train.patience`` None: the combiner's defaults."""

    sources: tuple[str | Resolved, ...]  # references, or sources already resolved (a shelf, a selection)
    data: DataOptions
    out: Path
    method: str = DEFAULT_METHOD
    variant: str | None = None  # the combiner's default variant
    options: dict[str, Any] = field(default_factory=dict)  # combiner options (e.g. AdapterSoup's k)
    train: TrainConfig | None = None
    resolver: Resolver = field(default_factory=Resolver)
    overwrite: bool = False
    sparsity: float = 0.0
    init_omega: dict[str, torch.Tensor] | None = None  # by ω key; replaces the Normal(2/N, 0.001) init there
    pooling: str | None = None  # of the fresh head; default: the one the sources' heads were trained with
    model: str | None = None  # the base model (hub id or folder); default: the one the sources name
    provenance: dict[str, Any] = field(default_factory=dict)  # where the sources came from: "shelf", "selection"
    inputs: tuple[Path, ...] = ()  # what else the command read (e.g. the composition being pruned): never --out

    @property
    def generative(self) -> bool:
        """A generation target: the frozen LM head scores answers (no fresh head, no pooling)."""
        return self.data.spec().problem_type == "generation"

    def combiner_spec(self) -> CombinerSpec:
        combiner = get_combiner(self.method)
        return combiner.spec(self.variant if combiner.variants else None, self.options)

    def train_config(self) -> TrainConfig:
        combiner = get_combiner(self.method)
        config = (self.train or TrainConfig(patience=combiner.default_patience)).resolved(
            self.data.few_shot is not None, self.generative)
        return config.with_lr(combiner.default_lr)


def group_lasso(comp: Composition, strength: float) -> Callable[[], torch.Tensor] | None:
    """Penalty λ·Σ_i ||ω_i||₂ over sources (all sites' ω of source i form its group): pushes whole sources to 0."""
    if not (math.isfinite(strength) and strength >= 0):
        raise UsageError(f"--sparsity must be >= 0 (0 turns the penalty off), got {strength}")
    if strength == 0:
        return None
    if not isinstance(comp.combiner, Omega):
        raise UsageError("--sparsity needs --method scalearn (it penalises ω)")
    omega = comp.combiner

    def penalty() -> torch.Tensor:
        per_source = torch.stack([v.reshape(v.shape[0], -1).pow(2).sum(1) for v in omega.values]).sum(0)
        return strength * per_source.clamp_min(1e-12).sqrt().sum()

    return penalty


def transfer(options: TransferOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Compose the sources for the target task; train only the combiner and a head; save to ``options.out``."""
    spec, config = options.combiner_spec(), options.train_config().for_device()
    if options.pooling is not None:
        check_pooling(options.pooling)
    if not (math.isfinite(options.sparsity) and options.sparsity >= 0):  # NaN would surface only as a NaN loss
        raise UsageError(f"--sparsity must be a finite number >= 0 (0 turns the penalty off), got {options.sparsity}")
    options, resolved = _resolve_sources(options)
    encoder, tokenizer, ref, pooling = _load_base(options, resolved, config)
    prepared = prepare(options.data, tokenizer, config)
    set_seed(config.seed)
    decoder = encoder.base_model if options.generative else encoder  # sites are the bare decoder's module paths
    combiner = get_combiner(spec.method)
    spec = combiner.prepare(spec, _target(prepared, resolved, decoder, tokenizer, config))
    comp = inject(decoder, resolved, spec)
    if options.init_omega is not None:
        _init_omega(comp, options.init_omega)
    head = None if options.generative else TaskHead(
        ref.hidden_size, head_outputs(prepared.spec.problem_type, prepared.spec.num_labels), pooling=pooling)
    model = task_model_for(encoder, head, prepared.spec.problem_type)
    model.composition = comp
    comp.spec = combiner.search(comp, model, prepared, config.seed)  # gradient-free weights, fixed before training
    result = _train(model, comp, head, prepared, config, options.sparsity, progress)
    set_thresholds(model, prepared)
    record = replace(composition_record(resolved, comp, options.sparsity), shelf=options.provenance.get("shelf"),
                     selection=options.provenance.get("selection"))
    adapter = AdapterSpec(record.adapter_kind, sum(p.numel() for p in comp.trainable()), method=spec.method,
                          variant=spec.variant)
    meta = run_metadata("composition", prepared, ref, config, result, adapter, head and head_spec(head),
                        score(model, prepared), {"sources": [s.ref.ref for s in resolved],
                                                 "sources_base_model": resolved[0].meta.base_model.get("id")})
    written: list[Metadata] = []
    on_main_process(lambda: written.append(_save(options, comp, head, record, meta)))
    return (written[0] if written else meta).to_dict()


def _resolve_sources(options: TransferOptions) -> tuple[TransferOptions, list[Resolved]]:
    """Every source resolved (each listed once) after ``--out`` is checked against the command's inputs; the
    options record the sources' folders as inputs too."""
    named = [s for s in options.sources if isinstance(s, str)]  # shelf sources come resolved: their folders below
    inputs = [*options.inputs, *command_inputs(*named, options.model, options.data.data_file,
                                               folders_of_files=[options.data.data_dir])]
    check_out_dir(options.out, options.overwrite, inputs, options.resolver.registry)
    refs = [s if isinstance(s, str) else s.name for s in options.sources]
    if len(set(refs)) != len(refs):
        twice = next(s for s in refs if refs.count(s) > 1)
        raise UsageError(f"source '{twice}' is listed twice; list each source once")
    resolved = [options.resolver.source(s) if isinstance(s, str) else s for s in options.sources]
    check_sources(resolved)
    return replace(options, inputs=(*inputs, *(src.folder for src in resolved))), resolved


def _load_base(options: TransferOptions, resolved: list[Resolved], config: TrainConfig):  # -> (encoder, tok, ref, pool)
    """The base model the sources adapt (or ``--model``, checked against it) and the fresh head's pooling."""
    base = resolved[0].meta.base_model
    if options.model is None and not base.get("id"):
        raise UsageError(f"source '{resolved[0].name}' does not say which base model it adapts; pass --model")
    encoder, tokenizer, ref = load_backbone(options.model or base["id"], causal_lm=options.generative)
    check_max_length(config.max_length, encoder, tokenizer, ref.id)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(encoder)
    check_base_model(base, ref, options.model)
    pooling = None if options.generative else (options.pooling or sources_pooling(resolved, "auto"))
    if pooling == "auto":
        pooling = resolve_pooling(pooling, options.model or base["id"], ref.model_type)[0]
    if options.model is not None and base.get("id") and options.model != base["id"]:
        logger.warning("composing sources trained on %s over --model %s (architecture and shapes match)",
                       base["id"], options.model)
    else:
        check_base_revision(ref, base, "the sources")
    return encoder, tokenizer, ref, pooling


def _train(model, comp: Composition, head: TaskHead | None, prepared, config: TrainConfig, sparsity: float,
           progress: Progress | None) -> TrainResult:
    """Train the combiner's parameters and the head (none to train: the composition is only scored)."""
    params = comp.trainable() + (list(head.parameters()) if head is not None else [])
    n_transfer = sum(p.numel() for p in comp.trainable())
    logger.info("training %d transfer parameters (+ %d head)", n_transfer, sum(p.numel() for p in params) - n_transfer)
    penalty = group_lasso(comp, sparsity)  # refused for a method without ω even when nothing trains
    if not params:
        return untrained(model, prepared)
    head_params = list(head.parameters()) if head is not None else []  # --head-lr trains them apart
    return fit(model, params, prepared.train, prepared.dev, config, metric_fn(prepared.spec), progress,
               penalty=penalty, main_metric=prepared.spec.main_metric, head_params=head_params)


def check_base_model(recorded: dict[str, Any], ref, model: str | None) -> None:
    """The loaded base model must be the architecture and shape the sources recorded (foreign ones record none)."""
    for key in ("model_type", "hidden_size", "num_layers"):
        want, got = recorded.get(key), getattr(ref, key)
        if want is not None and want != got:
            raise CompositionError(
                f"the sources were trained on {recorded.get('id')} ({key} {want}) but the base model "
                f"{model or ref.id} has {key} {got}; pass the model they were trained on"
            )


def _target(prepared, resolved: list[Resolved], encoder, tokenizer, config: TrainConfig) -> TargetContext:
    texts = example_texts(prepared.splits.train, prepared.spec)
    return TargetContext(texts, resolved, encoder, tokenizer, config.max_length, config.seed)


def sources_pooling(sources: list[Resolved], default: str = "first") -> str:
    """The pooling the sources' heads share (``default`` when none has a head); mixed sources need a choice."""
    found = {s.name: s.meta.head.pooling for s in sources if s.meta.head is not None}  # foreign ones have no head
    if not found:
        return default
    if len(set(found.values())) > 1:
        listing = ", ".join(f"{ref}: {p}" for ref, p in found.items())
        raise UsageError(f"the sources' heads were trained with different pooling ({listing}); "
                         "pass --pooling first|mean|last")
    return next(iter(found.values()))


def untrained(model, prepared) -> TrainResult:
    """The log of a run with nothing left to train (fixed weights on a generation target: no head)."""
    loss = evaluate(model, prepared.dev)[0]
    logger.info("nothing to train (fixed source weights, no head): dev loss %.4f", loss)
    return TrainResult(best_epoch=0, best_dev_loss=loss, steps=0, train_seconds=0.0, examples_per_second=0.0,
                       initial_dev_loss=loss, improved_on_initial=True)


def _save(options: TransferOptions, comp: Composition, head: TaskHead | None, record: CompositionRecord,
          meta: Metadata) -> Metadata:
    """Write the composition folder atomically (what the combiner learned, head, composition.json, metadata, card)."""
    with write_folder(options.out, options.overwrite, options.inputs, options.resolver.registry) as folder:
        name = comp.impl.weights_file
        if name:
            save_tensors(folder.path / name, comp.state(),
                         metadata={"method": comp.method, "variant": str(comp.variant)})
        if head is not None:
            save_tensors(folder.path / "head.safetensors", head.state_dict())
        write_json(folder.path / COMPOSITION_FILE, record.to_dict())
        title = f"{record.variant or record.method} composition for {meta.task_name}"
        return folder.finish(meta, title, _card(meta, record))


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


def _card(meta: Metadata, record: CompositionRecord) -> str:
    lines = [f"- `{s.ref}` ({s.task}, revision `{s.revision or s.content_hash[:12]}`)" for s in record.sources]
    return (
        f"A {record.method} composition ({record.variant or '-'}) of {record.n_sources} frozen "
        f"{record.adapter_kind} source adapters, trained with scalearn {meta.scalearn_version}: "
        f"{record.transfer_parameters:,} transfer parameters plus the head. The sources are referenced, not "
        f"copied:\n\n" + "\n".join(lines) + f"\n\n## Results\n\n{metrics_table(meta.metrics)}\n"
    )
