"""The faster CPU loop and the strong benchmark's defaults: length-sorted evaluation, length-grouped training batches,
head pooling chosen from the encoder's own sentence-transformers config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import invoke

from scalearn_cli.data.batches import make_loader
from scalearn_cli.data.rows import load_raw
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


class _Toy(torch.nn.Module):
    """forward(**batch) -> (loss, logits), as the stages' task models."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2, 2))

    def forward(self, x, labels):
        logits = x @ self.weight
        return torch.nn.functional.cross_entropy(logits, labels), logits


def _scripted_fit(monkeypatch, select_on: str, patience: int | None, main_metric: str | None = "accuracy"):
    """fit() on a toy model whose dev loss keeps rising while its dev accuracy peaks at epoch 2 (the few-shot
    shape: the model memorizes its k examples, gets more confident and wrong on some, right on more)."""
    from scalearn_cli import train

    losses, accuracies = iter([0.69, 0.5, 0.6, 0.7, 0.8, 0.9]), iter([48.0, 50.0, 70.0, 60.0, 65.0, 62.0])
    real = train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda m, loader, acc=None: (next(losses), *real(m, loader, acc)[1:]))
    data = [{"x": torch.randn(4, 2, generator=torch.Generator().manual_seed(i)), "labels": torch.tensor([0, 1, 0, 1])}
            for i in range(2)]
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    model, weights = _Toy(), []

    class Keep(train.Progress):
        def epoch_end(self, log):
            weights.append(model.weight.detach().clone())

    config = train.TrainConfig(epochs=5, lr=0.1, patience=patience, select_on=select_on)
    result = train.fit(model, [model.weight], loader, loader, config, lambda logits, labels: {"accuracy": next(accuracies)},
                       Keep(), main_metric=main_metric)
    return result, model, weights


def test_select_on_loss_keeps_the_lowest_dev_loss_epoch(monkeypatch):
    result, model, weights = _scripted_fit(monkeypatch, "loss", None)
    assert (result.best_epoch, result.best_dev_loss, len(result.history)) == (1, 0.5, 5)
    assert result.best_dev_metrics == {"accuracy": 50.0} and result.select_on == "loss"
    assert torch.equal(model.weight, weights[0])


def test_select_on_metric_keeps_the_best_dev_metric_epoch_and_stops_on_it(monkeypatch):
    """--select-on metric (the paper's few-shot runs: metric_for_best_model, early stopping on it): epoch 2's 70%
    is kept though its dev loss is higher than epoch 1's, and patience counts epochs without a metric gain."""
    result, model, weights = _scripted_fit(monkeypatch, "metric", 2)
    assert (result.best_epoch, result.best_dev_loss, result.best_dev_metrics) == (2, 0.6, {"accuracy": 70.0})
    assert len(result.history) == 4  # epochs 3 and 4 brought no gain over 70: stopped after epoch 4, not 5
    assert result.initial_dev_metrics == {"accuracy": 48.0} and result.improved_on_initial
    assert torch.equal(model.weight, weights[1])


def test_select_on_metric_needs_the_tasks_main_metric_among_the_dev_metrics(monkeypatch):
    from scalearn_cli.errors import UsageError

    with pytest.raises(UsageError, match="--select-on metric.*use --select-on loss"):
        _scripted_fit(monkeypatch, "metric", None, main_metric="answer_accuracy")


def test_select_on_is_recorded_and_a_bad_value_is_a_one_line_error(tmp_path, tiny_model_dir):
    data = tmp_path / "rte"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(40)))
    (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(12)))
    common = ["train-source", "--model", str(tiny_model_dir), "--task", "rte", "--data-dir", str(data), "--epochs", "2",
              "--batch-size", "8", "--max-length", "16"]
    bad = invoke(*common, "--select-on", "accuracy", "--out", tmp_path / "bad")
    assert bad.exit_code != 0 and "--select-on must be auto, loss or metric, got 'accuracy'" in bad.output
    assert not (tmp_path / "bad").exists()
    ok = invoke(*common, "--select-on", "metric", "--out", tmp_path / "ok")
    assert ok.exit_code == 0, ok.output
    training = json.loads((tmp_path / "ok" / "scalearn.json").read_text())["training"]
    assert training["select_on"] == "metric" and "accuracy" in training["best_dev_metrics"]
    best = training["history"][training["best_epoch"] - 1]["dev_metrics"]["accuracy"]
    assert best == max(h["dev_metrics"]["accuracy"] for h in training["history"])
    # the default, auto: the paper's best dev metric for a few-shot run, the lowest dev loss otherwise
    for extra, want in (([], "loss"), (["--few-shot", "16"], "metric")):
        out = tmp_path / f"auto-{want}"
        run = invoke(*common, "--epochs", "1", *extra, "--out", out, "--json")
        assert run.exit_code == 0, run.output
        assert json.loads((out / "scalearn.json").read_text())["training"]["select_on"] == want
        assert json.loads(run.stdout)["select_on"] == want


def test_select_on_auto_resolves_from_the_data_for_library_callers():
    """TrainConfig's default is auto, resolved by the stages (train_source, TransferOptions.train_config) from the
    data: the paper's best dev metric for a few-shot run, the lowest dev loss otherwise and for generation."""
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.transfer import TransferOptions
    from scalearn_cli.train import TrainConfig

    assert TrainConfig().select_on == "auto"
    assert TrainConfig().resolved(few_shot=True).select_on == "metric"
    assert TrainConfig().resolved(few_shot=False).select_on == "loss"
    assert TrainConfig().resolved(few_shot=True, generation=True).select_on == "loss"
    assert TrainConfig(select_on="loss").resolved(few_shot=True).select_on == "loss"  # an explicit choice stays
    for few_shot, want in ((16, "metric"), (None, "loss")):
        options = TransferOptions(("a",), DataOptions(task="rte", few_shot=few_shot), Path("out"))
        assert options.train_config().select_on == want


def test_fit_reads_an_unresolved_auto_as_the_dev_loss(monkeypatch):
    """fit() sees loaders, not whether a run is few-shot: auto there is the dev loss, and the result says so."""
    result, _, _ = _scripted_fit(monkeypatch, "auto", None)
    assert (result.best_epoch, result.select_on) == (1, "loss")
