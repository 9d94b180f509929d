"""Bad inputs that used to fail late, silently or with a traceback: each ends in one clear line.

Offline and CPU-only; the models are the tiny BERT of conftest.py.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import one_line, write_jsonl

from scalearn_cli.backbone import load_backbone
from scalearn_cli.errors import ModelError


# ---- pickle weights --------------------------------------------------------------------------------------
def _pickled_copy(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model with its weights as ``pytorch_model.bin`` (torch.save) instead of model.safetensors."""
    from safetensors.torch import load_file

    shutil.copytree(tiny_model_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_local_folder_with_only_pickle_weights_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _pickled_copy(tiny_model_dir, tmp_path / "pickled")
    with pytest.raises(ModelError) as exc:
        load_backbone(str(folder))
    assert one_line(exc).startswith(f"refusing to unpickle {folder / 'pytorch_model.bin'}: use safetensors")


def test_hub_model_whose_pickle_fails_the_weights_only_load_is_refused(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached hub repo (not a local folder) reaches transformers; its weights-only refusal becomes one line."""
    from huggingface_hub import constants

    commit = "c" * 40
    repo = tmp_path / "cache" / "models--org--pickled"
    snapshot = _pickled_copy(tiny_model_dir, repo / "snapshots" / commit)
    torch.save({"x": Path("not/a/tensor")}, snapshot / "pytorch_model.bin")  # a global weights_only refuses
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "org/pickled" is no folder here
    with pytest.raises(ModelError) as exc:
        load_backbone("org/pickled")
    assert one_line(exc).startswith("refusing to unpickle the weights of org/pickled: use safetensors")


# ---- model paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["./no-such-model", "~/no-such-scalearn-model", "models/a/b", "{tmp}/gone"])
def test_missing_model_folder_says_so(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = model.format(tmp=tmp_path)
    with pytest.raises(ModelError) as exc:
        load_backbone(model)
    assert one_line(exc).startswith(f"model folder '{model}' does not exist")


def test_hub_ids_are_not_taken_for_folders() -> None:
    from scalearn_cli.backbone import _looks_like_path

    assert not _looks_like_path("org/name") and not _looks_like_path("bert-base-uncased")
    assert _looks_like_path("./name") and _looks_like_path("a/b/c") and _looks_like_path("/abs/model")


# ---- training: options and non-finite losses -------------------------------------------------------------
@pytest.mark.parametrize("lr", [math.inf, -math.inf, math.nan, 0.0, -1e-3])
def test_train_config_refuses_non_finite_and_non_positive_lr(lr: float) -> None:
    from scalearn_cli.errors import UsageError
    from scalearn_cli.train import TrainConfig

    with pytest.raises(UsageError) as exc:
        TrainConfig(lr=lr)
    assert one_line(exc) == f"--lr must be a finite number > 0, got {lr}"


class _Scale(torch.nn.Module):
    """pred = w * x with a squared error: a huge step sends w, and then the loss, past float32's range."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = x * self.w
        return ((pred - labels) ** 2).mean(), pred


def _loader(n: int = 8) -> Any:
    from torch.utils.data import DataLoader

    rows = [{"x": torch.tensor(float(i + 1)), "labels": torch.tensor(float(i))} for i in range(n)]
    return DataLoader(rows, batch_size=2)  # type: ignore[arg-type]


def test_fit_stops_on_a_non_finite_training_loss() -> None:
    from scalearn_cli.errors import TrainingError
    from scalearn_cli.train import Progress, TrainConfig, fit

    closed = []

    class Spy(Progress):
        def close(self) -> None:
            closed.append(True)

    model = _Scale()
    with pytest.raises(TrainingError) as exc:
        fit(model, [model.w], _loader(), _loader(), TrainConfig(epochs=2, lr=1e30, patience=None),
            lambda logits, labels: {}, progress=Spy())
    message = one_line(exc)
    assert message.startswith("the training loss became inf at step 2 (epoch 1)") and "--lr (now 1e+30)" in message
    assert closed == [True]


def test_fit_stops_on_a_non_finite_dev_loss() -> None:
    from torch.utils.data import DataLoader

    from scalearn_cli.errors import TrainingError
    from scalearn_cli.train import TrainConfig, fit

    model = _Scale()
    dev = DataLoader([{"x": torch.tensor(1.0), "labels": torch.tensor(math.inf)}], batch_size=1)  # type: ignore[arg-type]
    with pytest.raises(TrainingError) as exc:
        fit(model, [model.w], _loader(), dev, TrainConfig(epochs=1, lr=1e-3), lambda logits, labels: {})
    assert one_line(exc).startswith("the dev loss became inf at step 4 (epoch 1)")


def test_train_source_with_exploding_loss_saves_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    from scalearn_cli.errors import TrainingError
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.source import train_source
    from scalearn_cli.train import TrainConfig

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"sentence": f"good movie {i}" if i % 2 else f"bad film {i}", "label": i % 2, "idx": i} for i in range(40)]
    for split, part in (("train", rows[:30]), ("validation", rows[30:])):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    config = TrainConfig(epochs=3, lr=1e30, batch_size=8, max_length=16, patience=None)
    with pytest.raises(TrainingError):
        train_source(DataOptions(task="sst2", data_dir=data), tmp_path / "out", "bottleneck", None, config,
                     str(tiny_model_dir))
    assert not (tmp_path / "out").exists()


# ---- data: labels, sizes, files --------------------------------------------------------------------------
def _pairs(n: int, label_of: Any = lambda i: i % 2) -> list[dict[str, Any]]:
    return [{"sentence1": f"premise {i}", "sentence2": f"hypothesis {i}", "label": label_of(i), "idx": i}
            for i in range(n)]


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "Infinity"])
def test_non_finite_regression_labels_are_refused(bad: str, tmp_path: Path) -> None:
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.errors import DataError
    from scalearn_cli.tasks import get_task

    rows = _pairs(20, lambda i: float(i % 5))
    rows[11]["label"] = bad
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", _pairs(6, lambda i: 1.5))
    spec = get_task("stsb")
    with pytest.raises(DataError) as exc:
        make_splits(spec, load_raw(spec, data_dir=tmp_path))
    message = one_line(exc)  # the loader may already have parsed the string into a float
    assert message.startswith("row 11 of train has label ") and message.endswith("stsb needs finite numeric labels")


@pytest.mark.parametrize("bad", [1e6, "1e6", -1e6, 2, 0.5])
def test_classification_labels_outside_the_label_set_are_refused(bad: Any, tmp_path: Path) -> None:
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.errors import DataError
    from scalearn_cli.tasks import get_task

    rows = _pairs(20)
    rows[5]["label"] = bad
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", _pairs(6))
    with pytest.raises(DataError) as exc:
        make_splits(get_task("rte"), load_raw(get_task("rte"), data_dir=tmp_path))
    assert one_line(exc).startswith("row 5 of train has label ") and "0..1 (entailment, not_entailment)" in str(
        exc.value)


def test_few_shot_above_the_training_rows_is_an_error(tmp_path: Path) -> None:
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.errors import UsageError
    from scalearn_cli.tasks import get_task

    write_jsonl(tmp_path / "train.jsonl", _pairs(40))
    write_jsonl(tmp_path / "validation.jsonl", _pairs(6))
    spec, raw = get_task("rte"), load_raw(get_task("rte"), data_dir=tmp_path)
    assert make_splits(spec, raw, few_shot=36).sizes()["train"] == 36  # all 36 non-dev rows: allowed
    with pytest.raises(UsageError) as exc:
        make_splits(spec, raw, few_shot=100)
    assert one_line(exc) == ("--few-shot 100 asks for more rows than task rte has for training: 36 (of 40 labelled "
                             "rows, after holding out the dev split); give --few-shot 36 or less")


def test_data_dir_without_the_test_split_names_the_file(tmp_path: Path) -> None:
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.errors import DataError
    from scalearn_cli.tasks import custom_task, get_task

    write_jsonl(tmp_path / "train.jsonl", _pairs(40))
    for task, split in (("rte", "validation"), ("mnli", "validation_matched")):
        spec = get_task(task)
        rows = [{"premise": f"p {i}", "hypothesis": "h", "label": i % 3, "idx": i} for i in range(40)]
        write_jsonl(tmp_path / task / "train.jsonl", _pairs(40) if task == "rte" else rows)
        with pytest.raises(DataError) as exc:
            make_splits(spec, load_raw(spec, data_dir=tmp_path / task))
        assert f"no {split}.jsonl (or .csv/.tsv)" in one_line(exc) and "--data-dir" in str(exc.value)
    # a custom task's single folder file is still split 80/10/10
    spec = custom_task(["sentence1"], "label", "classification")
    assert make_splits(spec, load_raw(spec, data_dir=tmp_path)).sizes() == {"train": 32, "dev": 4, "test": 4}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
def test_latin1_data_file_says_save_as_utf8(suffix: str, tmp_path: Path) -> None:
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.errors import DataError
    from scalearn_cli.tasks import custom_task

    rows = [("très bon café", "pos"), ("mauvais", "neg")] * 10
    if suffix == ".jsonl":
        text = "".join(f'{{"text": "{t}", "label": "{y}"}}\n' for t, y in rows)
    else:
        sep = "\t" if suffix == ".tsv" else ","
        text = f"text{sep}label\n" + "".join(f"{t}{sep}{y}\n" for t, y in rows)
    path = tmp_path / f"reviews{suffix}"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError) as exc:
        load_raw(custom_task(["text"], "label", "classification"), data_file=path)
    message = one_line(exc)
    assert message.startswith(f"data file {path} is not UTF-8 text") and message.endswith("save it as UTF-8 and retry")
    path.write_bytes(text.encode("utf-8"))
    assert load_raw(custom_task(["text"], "label", "classification"), data_file=path)["train"][0]["text"] == rows[0][0]
