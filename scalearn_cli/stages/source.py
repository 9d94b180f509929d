"""Stage 1: train a source adapter of any kind on a task and save it; load a saved source back as a task model."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from scalearn_cli.artifacts import AdapterSpec, Metadata, check_out_dir
from scalearn_cli.artifacts.outputs import command_inputs
from scalearn_cli.backbone import (
    DEFAULT_MODEL, check_base_revision, check_max_length, enable_gradient_checkpointing, load_backbone,
)
from scalearn_cli.model import TaskHead, TaskModel, build_head, head_outputs, head_spec, task_model_for
from scalearn_cli.resolve import read_source
from scalearn_cli.sources import Attached, get_kind
from scalearn_cli.sources.folder import save_source
from scalearn_cli.stages.common import (
    DataOptions, check_pooling, metric_fn, prepare, resolve_pooling, run_metadata, score, set_thresholds,
)
from scalearn_cli.processes import on_main_process
from scalearn_cli.train import Progress, TrainConfig, count_parameters, fit

logger = logging.getLogger(__name__)

#: early stopping of source training when the caller gives no TrainConfig (the paper's)
SOURCE_PATIENCE = 5


def train_source(
    data: DataOptions,
    out: Path,
    adapter: str = "lora",
    settings: Any = None,
    config: TrainConfig | None = None,
    model: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    extra_meta: dict[str, Any] | None = None,
    pooling: str | None = "auto",
) -> dict[str, Any]:
    """Train one source adapter (+ head) on a frozen encoder; write the folder atomically; return its metadata.

    ``settings``: the kind's settings (dataclass or dict; defaults when None). ``config.lr`` None means the
    kind's default learning rate. ``extra_meta`` (e.g. the zoo recipe) is merged into scalearn.json.
    ``pooling``: how the head reads the sequence (``first`` token, the paper's; ``mean`` over tokens; ``last`` real
    token); ``auto`` or None: the encoder's sentence-transformers pooling config, else ``last`` for a decoder LM and
    ``first`` for an encoder.
    """
    from transformers import set_seed

    kind = get_kind(adapter)
    settings = kind.settings(settings) if settings is None or isinstance(settings, dict) else settings
    generative = data.spec().problem_type == "generation"  # the LM head scores answers: no task head
    config = (config or TrainConfig(patience=SOURCE_PATIENCE)).resolved(data.few_shot is not None, generative)
    config = config.with_lr(kind.default_lr).for_device()
    if pooling is not None:
        check_pooling(pooling)
    inputs = command_inputs(data.data_file, model, folders_of_files=[data.data_dir])
    check_out_dir(out, overwrite, inputs)
    encoder, tokenizer, ref = load_backbone(model or DEFAULT_MODEL, causal_lm=generative)
    check_max_length(config.max_length, encoder, tokenizer, ref.id)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(encoder)
    pooling, why = (None, "generation: no head") if generative else resolve_pooling(
        pooling or "auto", model or DEFAULT_MODEL, ref.model_type)
    logger.info("head pooling: %s (%s)", pooling, why)
    prepared = prepare(data, tokenizer, config)
    set_seed(config.seed)
    head = None if generative else TaskHead(
        ref.hidden_size, head_outputs(prepared.spec.problem_type, prepared.spec.num_labels), pooling=pooling)
    # a generation source wraps the whole causal LM, so vanilla PEFT loads it on AutoModelForCausalLM
    attached = kind.attach(encoder, settings, ref.id)
    settings = attached.settings or settings  # e.g. LoRA's target modules for this architecture
    task_model = task_model_for(attached.model, head, prepared.spec.problem_type)
    params = attached.params + (list(head.parameters()) if head is not None else [])
    result = fit(task_model, params, prepared.train, prepared.dev, config, metric_fn(prepared.spec), progress,
                 main_metric=prepared.spec.main_metric)
    set_thresholds(task_model, prepared)
    spec = AdapterSpec(kind.name, count_parameters(attached.params), settings=asdict(settings))
    meta = run_metadata("source", prepared, ref, config, result, spec, head and head_spec(head),
                        score(task_model, prepared), {"pooling_choice": why, **(extra_meta or {})})
    written: list[Metadata] = []
    on_main_process(lambda: written.append(save_source(out, attached, settings, head, meta, overwrite, inputs)))
    return (written[0] if written else meta).to_dict()


def load_source_model(folder: Path, encoder: nn.Module | None = None) -> tuple[TaskModel, Any, dict[str, Any]]:
    """(task model, tokenizer, metadata) for a saved source, verified; loads the base model unless ``encoder`` is
    given."""
    found = read_source(Path(folder))
    meta = found.meta
    tokenizer = None
    generative = meta.problem_type == "generation"
    if encoder is None:
        encoder, tokenizer, ref = load_backbone(meta.base_model["id"], causal_lm=generative)
        check_base_revision(ref, meta.base_model, f"the adapter {folder}")
    wrapped = get_kind(meta.adapter.kind).load(encoder, found.path)
    model = task_model_for(wrapped, None if generative else build_head(meta.head, found.path), meta.problem_type)
    model.eval()
    return model, tokenizer, meta.to_dict()
