"""A LoRA trained and saved with plain PEFT, as someone who never heard of scalearn would, for the quickstart.

Only torch, transformers and peft: ``get_peft_model`` + a throwaway linear head + a short AdamW loop over a
``train.jsonl``, then ``save_pretrained`` (``adapter_config.json`` + ``adapter_model.safetensors``, no
``scalearn.json``). The quickstart passes the folder to ``transfer`` as a source, to show that adapters trained
elsewhere compose. Nothing here imports scalearn.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_peft_lora(
    data_dir: Path,
    out: Path,
    model_path: str,
    base_model_id: str,
    text_fields: tuple[str, ...],
    num_labels: int,
    epochs: int = 2,
    lr: float = 2e-3,
    batch_size: int = 32,
    max_length: int = 64,
    seed: int = 42,
) -> dict[str, Any]:
    """Train a rank-8 LoRA on query/value of ``model_path`` for ``data_dir/train.jsonl``; save it with PEFT to ``out``.

    ``base_model_id`` is written as the adapter's ``base_model_name_or_path`` (what a Hub user would record).
    Returns the number of training rows, LoRA parameters, the validation accuracy of the throwaway head, and the
    files written.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = get_peft_model(AutoModel.from_pretrained(model_path), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"], bias="none"))
    head = nn.Linear(model.config.hidden_size, num_labels)
    lora = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora + list(head.parameters()), lr=lr)
    train = _rows(Path(data_dir) / "train.jsonl")

    def logits(batch: list[dict[str, Any]]) -> torch.Tensor:
        texts = [[row[f] for row in batch] for f in text_fields]
        inputs = tokenizer(*texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return head(model(**inputs).last_hidden_state[:, 0])  # (batch, num_labels) from the first token

    model.train()
    for epoch in range(epochs):
        order = list(range(len(train)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = [train[i] for i in order[start:start + batch_size]]
            loss = nn.functional.cross_entropy(logits(batch), torch.tensor([row["label"] for row in batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    validation = _rows(Path(data_dir) / "validation.jsonl")
    with torch.no_grad():
        predicted = torch.cat([logits(validation[i:i + 64]).argmax(-1) for i in range(0, len(validation), 64)])
    accuracy = float((predicted == torch.tensor([row["label"] for row in validation])).float().mean())
    model.peft_config["default"].base_model_name_or_path = base_model_id
    model.save_pretrained(str(out), save_embedding_layers=False)  # LoRA on query/value only: nothing to check
    return {"train_examples": len(train), "parameters": sum(p.numel() for p in lora),
            "validation_accuracy": accuracy, "files": sorted(p.name for p in Path(out).iterdir())}
