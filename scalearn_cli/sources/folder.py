"""A source folder written atomically: the kind's files, the head, scalearn.json (with hashes) and a model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from scalearn_cli.artifacts import HEAD_FILE, Metadata, save_tensors, write_folder
from scalearn_cli.cards import metrics_table
from scalearn_cli.sources import Attached, get_kind


def save_source(
    out: Path, attached: Attached, settings: Any, head: nn.Module | None, meta: Metadata | dict, overwrite: bool = False,
    inputs: tuple[Path, ...] | list[Path] = (),
) -> Metadata:
    """Write a source folder atomically: the kind's files, the head, scalearn.json (with hashes), model card.

    ``inputs``: what the run read (data files, a local base model), never replaced by ``out``."""
    meta = meta if isinstance(meta, Metadata) else Metadata.from_dict(meta)
    kind = get_kind(meta.adapter.kind)
    with write_folder(out, overwrite, inputs) as folder:
        kind.save(folder.path, attached, settings)
        if head is not None:
            save_tensors(folder.path / HEAD_FILE, head.state_dict())
        title = f"{meta.adapter.kind} source adapter for {meta.task_name}"
        return folder.finish(meta, title, _card_body(meta, kind.card_usage(meta.to_dict())))


def _card_body(meta: Metadata, usage: str) -> str:
    return (
        f"Trained with [scalearn](https://arxiv.org/abs/2310.01217) {meta.scalearn_version} on task "
        f"`{meta.task_name}`, base model `{meta.base_model['id']}`, "
        f"{meta.adapter.parameters:,} adapter parameters.\n\n{usage}\n## Results\n\n"
        f"{metrics_table(meta.metrics)}\n"
    )
