"""The faster CPU loop and the defaults of issue 12: length-sorted evaluation, length-grouped training batches,
head pooling chosen from the encoder's own sentence-transformers config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from scalearn_cli.batches import make_loader
from scalearn_cli.data import load_raw
from scalearn_cli.tasks import get_task


def rows(n: int) -> list[dict[str, Any]]:
    return [{"sentence1": "word " * (1 + (i * 7) % 29), "sentence2": "other", "label": i % 2, "idx": i} for i in range(n)]


@pytest.fixture
def dataset(tmp_path: Path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(96)))
    return load_raw(get_task("rte"), data_dir=tmp_path)["train"]


@pytest.fixture
def tokenizer(minilm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


def test_length_sorted_evaluation_pads_less_and_keeps_every_row(dataset, tokenizer):
    spec = get_task("rte")
    plain = list(make_loader(dataset, spec, tokenizer, 16, 64))
    ordered = list(make_loader(dataset, spec, tokenizer, 16, 64, sort_by_length=True))
    width = [b["input_ids"].shape[1] for b in ordered]
    assert width == sorted(width)
    padded = lambda batches: sum(int((b["attention_mask"] == 0).sum()) for b in batches)  # noqa: E731
    assert padded(ordered) < padded(plain)
    labels = lambda batches: sorted(torch.cat([b["labels"] for b in batches]).tolist())  # noqa: E731
    assert labels(ordered) == labels(plain)  # the same rows: metrics do not depend on the order


def test_length_grouped_training_batches_are_seeded_and_complete(dataset, tokenizer):
    spec = get_task("rte")

    def epoch(seed: int) -> list[list[int]]:
        loader = make_loader(dataset, spec, tokenizer, 8, 64, shuffle=True, seed=seed, group_by_length=True)
        return [b["attention_mask"].sum(1).tolist() for b in loader]

    first = epoch(0)
    assert first == epoch(0) and first != epoch(1)
    assert sum(len(b) for b in first) == len(dataset)
    spread = sum(max(b) - min(b) for b in first)  # grouped batches hold similar lengths
    plain = make_loader(dataset, spec, tokenizer, 8, 64, shuffle=True, seed=0)
    assert spread < sum(int(b["attention_mask"].sum(1).max() - b["attention_mask"].sum(1).min()) for b in plain)


def test_auto_pooling_reads_the_encoders_own_config(minilm_dir, tiny_model_dir):
    from scalearn_cli.backbone import auto_pooling

    assert auto_pooling(str(minilm_dir))[0] == "mean"  # all-MiniLM-L6-v2 was trained with mean pooling
    assert auto_pooling("sentence-transformers/all-MiniLM-L6-v2")[0] == "mean"  # the embedded copy, by id
    assert auto_pooling(str(tiny_model_dir))[0] == "first"  # a plain checkpoint: the paper's first token


def test_train_source_records_the_pooling_it_chose(tmp_path, tiny_model_dir):
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.source import train_source
    from scalearn_cli.train import TrainConfig

    task = tmp_path / "t.jsonl"
    task.write_text("".join(json.dumps({"sentence": f"a {w} film", "label": i % 2}) + "\n"
                            for i, w in enumerate(["good", "bad"] * 20)))
    meta = train_source(DataOptions(task="custom", data_file=task, text_fields=("sentence",)), tmp_path / "s",
                        config=TrainConfig(epochs=1, batch_size=8, max_length=16, group_by_length=True),
                        model=str(tiny_model_dir))
    assert meta["head"]["pooling"] == "first" and "first token" in meta["pooling_choice"]
    assert meta["training"]["group_by_length"] is True and meta["training"]["eval_batch_size"] == 128
