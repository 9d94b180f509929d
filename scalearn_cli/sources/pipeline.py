"""Train a source adapter on a task and save it; load a saved source back as a task model."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from scalearn_cli import artifacts
from scalearn_cli.artifacts import HEAD_FILE, METADATA_FILE, load_tensors, read_json, save_tensors, staged_output
from scalearn_cli.backbone import BaseModelRef, load_backbone
from scalearn_cli.cards import metrics_table, write_model_card
from scalearn_cli.errors import ArtifactError, UsageError
from scalearn_cli.experiment import DataOptions, base_metadata, metric_fn, prepare, score
from scalearn_cli.model import POOLINGS, TaskHead, TaskModel, head_outputs
from scalearn_cli.sources import bottleneck, lora
from scalearn_cli.train import Progress, TrainConfig, count_parameters, fit, on_main_process

logger = logging.getLogger(__name__)


def train_source(
    data: DataOptions,
    out: Path,
    adapter: str = "lora",
    settings: lora.LoraSettings | bottleneck.BottleneckSettings | None = None,
    config: TrainConfig | None = None,
    model: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    extra_meta: dict[str, Any] | None = None,
    pooling: str = "first",
) -> dict[str, Any]:
    """Train one source adapter (+ head) on a frozen encoder; write the folder atomically; return its metadata.

    ``extra_meta`` (e.g. the zoo recipe) is merged into scalearn.json. ``pooling``: how the head reads the
    sequence (``first`` token, the paper's; ``mean`` over tokens, for sentence-transformers encoders).
    """
    from transformers import set_seed

    from scalearn_cli.backbone import DEFAULT_MODEL

    config = config or TrainConfig()
    if adapter not in ("lora", "bottleneck"):
        raise UsageError(f"--adapter must be lora or bottleneck, got '{adapter}'")
    settings = settings or (lora.LoraSettings() if adapter == "lora" else bottleneck.BottleneckSettings())
    check_pooling(pooling)
    check_out_dir(out, overwrite)
    encoder, tokenizer, ref = load_backbone(model or DEFAULT_MODEL)
    prepared = prepare(data, tokenizer, config)
    set_seed(config.seed)
    head = TaskHead(ref.hidden_size, head_outputs(prepared.spec.problem_type, prepared.spec.num_labels), pooling=pooling)
    if adapter == "lora":
        wrapped = lora.attach(encoder, settings, ref.id)
        adapter_params = [p for p in wrapped.parameters() if p.requires_grad]
    else:
        modules = bottleneck.attach(encoder, settings)
        wrapped = encoder
        adapter_params = [p for m in modules for p in m.parameters()]
    task_model = TaskModel(wrapped, head, prepared.spec.problem_type)
    params = adapter_params + list(head.parameters())
    result = fit(task_model, params, prepared.train, prepared.dev, config, metric_fn(prepared.spec), progress)
    metrics = score(task_model, prepared)
    meta = base_metadata("source", prepared, ref, config, result)
    meta["adapter"] = {"kind": adapter, "settings": asdict(settings), "parameters": count_parameters(adapter_params)}
    meta["head"] = head_metadata(head)
    meta["metrics"] = metrics
    meta.update(extra_meta or {})
    on_main_process(lambda: save_source(out, wrapped if adapter == "lora" else modules, settings, head, meta, overwrite))
    return meta


def save_source(
    out: Path,
    trained: Any,
    settings: lora.LoraSettings | bottleneck.BottleneckSettings,
    head: TaskHead,
    meta: dict[str, Any],
    overwrite: bool = False,
) -> None:
    """Write a source folder atomically: adapter files, head, scalearn.json (with file hashes) and model card.

    ``trained`` is the PeftModel (LoRA) or the list of BottleneckAdapter modules; ``meta`` gets ``files`` and
    ``content_hash`` added.
    """
    with staged_output(out, overwrite) as tmp:
        if meta["adapter"]["kind"] == "lora":
            # PEFT's own files; no embedding layers to save (skips PEFT's hub lookup for the base config)
            trained.save_pretrained(str(tmp), save_embedding_layers=False)  # PEFT's own adapter_config.json + adapter_model.safetensors
        else:
            bottleneck.save(tmp, trained, settings)
        save_tensors(tmp / HEAD_FILE, head.state_dict())
        meta["files"] = artifacts.folder_fingerprint(tmp)
        meta["content_hash"] = artifacts.content_hash(meta["files"])
        artifacts.write_json(tmp / METADATA_FILE, meta)
        write_model_card(tmp, meta, f"{meta['adapter']['kind']} source adapter for {meta['task']['name']}", _card_body(meta))


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse early (before training) to overwrite an existing adapter folder."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ArtifactError(f"{out} already holds files; pass --overwrite to replace it or choose another --out")


def _card_body(meta: dict[str, Any]) -> str:
    kind = meta["adapter"]["kind"]
    usage = (
        "Load it with vanilla PEFT:\n\n```python\nfrom transformers import AutoModel\nfrom peft import PeftModel\n"
        f"base = AutoModel.from_pretrained(\"{meta['base_model']['id']}\")\n"
        "model = PeftModel.from_pretrained(base, \"<this folder or repo id>\")\n```\n"
        if kind == "lora"
        else "A Pfeiffer bottleneck adapter (reduction factor "
        f"{meta['adapter']['settings']['reduction_factor']}); load it with `scalearn eval`.\n"
    )
    return (
        f"Trained with [scalearn](https://arxiv.org/abs/2310.01217) {meta['scalearn_version']} on task "
        f"`{meta['task']['name']}`, base model `{meta['base_model']['id']}`, "
        f"{meta['adapter']['parameters']:,} adapter parameters.\n\n{usage}\n## Results\n\n"
        f"{metrics_table(meta['metrics'])}\n"
    )


def read_metadata(folder: Path) -> dict[str, Any]:
    """scalearn.json of an adapter folder, with a clear error when the folder is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"adapter folder {folder} does not exist; check the path or pull it first")
    meta = read_json(folder / METADATA_FILE)
    if meta.get("format_version", 0) > artifacts.FORMAT_VERSION:
        raise ArtifactError(f"{folder} was written by a newer scalearn (format {meta['format_version']}); upgrade scalearn")
    return meta


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, got '{pooling}'")


def head_metadata(head: TaskHead) -> dict[str, Any]:
    """The ``head`` entry of scalearn.json: enough to rebuild the head before loading its weights."""
    return {"hidden_size": head.dense.in_features, "num_outputs": head.out_proj.out_features, "pooling": head.pooling}


def head_pooling(meta: dict[str, Any], folder: Path | str) -> str:
    """The pooling a saved head was trained with (folders written before the option read the first token)."""
    pooling = meta.get("head", {}).get("pooling", "first")
    if pooling not in POOLINGS:
        raise ArtifactError(f"{folder} has a head with unknown pooling '{pooling}'; upgrade scalearn or re-create it")
    return pooling


def build_head(meta: dict[str, Any], folder: Path) -> TaskHead:
    """The saved task head of an adapter folder."""
    head = TaskHead(int(meta["head"]["hidden_size"]), int(meta["head"]["num_outputs"]), pooling=head_pooling(meta, folder))
    try:
        head.load_state_dict(load_tensors(Path(folder) / HEAD_FILE))
    except RuntimeError as exc:
        raise ArtifactError(f"{folder}/{HEAD_FILE} does not fit its metadata ({exc}); re-create the folder") from exc
    return head


def load_source_model(folder: Path, encoder: nn.Module | None = None) -> tuple[TaskModel, Any, dict[str, Any]]:
    """(task model, tokenizer, metadata) for a saved source; loads the base model unless ``encoder`` is given."""
    meta = read_metadata(folder)
    if meta.get("kind") != "source":
        raise ArtifactError(f"{folder} is a {meta.get('kind')}, not a source adapter")
    verify_files(folder, meta)
    tokenizer = None
    if encoder is None:
        encoder, tokenizer, ref = load_backbone(meta["base_model"]["id"])
        _warn_base_mismatch(ref, meta)
    if meta["adapter"]["kind"] == "lora":
        wrapped = lora.load(encoder, folder)
    else:
        bottleneck.load(encoder, folder)
        wrapped = encoder
    model = TaskModel(wrapped, build_head(meta, folder), meta["task"]["problem_type"])
    model.eval()
    return model, tokenizer, meta


def verify_files(folder: Path, meta: dict[str, Any]) -> None:
    """Refuse a folder whose weight/config files changed since scalearn wrote it."""
    recorded = meta.get("files") or {}
    actual = artifacts.folder_fingerprint(folder)
    for name, digest in recorded.items():
        if name not in actual:
            raise ArtifactError(f"{folder}/{name} is missing; re-create or re-pull the adapter")
        if actual[name] != digest:
            raise ArtifactError(f"{folder}/{name} changed since it was saved (sha256 mismatch); re-create or re-pull it")


def _warn_base_mismatch(ref: BaseModelRef, meta: dict[str, Any]) -> None:
    saved = meta["base_model"].get("revision")
    if saved and ref.revision != saved:
        logger.warning("base model %s is at revision %s, the adapter was trained on %s", ref.id, ref.revision, saved)
