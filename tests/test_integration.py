"""Integration on real data: the packaged MiniLM-L6 encoder, real GLUE rows from ../shared/data/glue.

Sources are trained once per module (fixtures) on small seeded subsets of SST-2 and CoLA, so the whole file
takes a few minutes on 2 CPU cores. Each score is checked against the best constant predictor (the
majority-class baseline) on the same test rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scalearn_cli.stages.common import DataOptions
from scalearn_cli.train import TrainConfig

pytestmark = pytest.mark.slow

#: rows kept per task: (train file, validation file); dev = 10% of the train file, test = the validation file
SUBSETS = {"sst2": (1500, 200), "cola": (240, 100)}
#: one pass over more rows beats several over fewer at equal CPU cost (SST-2: ~74-77% vs a ~51% constant)
SOURCE_CONFIG = TrainConfig(epochs=1, lr=2e-3, batch_size=16, max_length=64, seed=42, patience=None)


@pytest.fixture(scope="module")
def glue_subsets(glue_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeded subsets of the real GLUE files, in the same schema: task -> folder with train/validation.jsonl."""
    root = tmp_path_factory.mktemp("glue-subsets")
    out = {}
    for task, sizes in SUBSETS.items():
        folder = root / task
        folder.mkdir()
        for split, n in zip(("train", "validation"), sizes):
            lines = (glue_dir / task / f"{split}.jsonl").read_text().splitlines()
            (folder / f"{split}.jsonl").write_text("\n".join(random.Random(0).sample(lines, n)) + "\n")
        out[task] = folder
    return out


def train(task: str, kind: str, folder: Path, data_dir: Path, model_dir: Path, **config: Any) -> dict[str, Any]:
    from dataclasses import replace

    from scalearn_cli.stages.source import train_source

    return train_source(DataOptions(task=task, data_dir=data_dir), folder, kind, None,
                        replace(SOURCE_CONFIG, **config), str(model_dir))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration")


@pytest.fixture(scope="module")
def sst2_lora(work: Path, glue_subsets: dict[str, Path], minilm_dir: Path) -> tuple[Path, dict[str, Any]]:
    folder = work / "sst2-lora"
    return folder, train("sst2", "lora", folder, glue_subsets["sst2"], minilm_dir)


@pytest.fixture(scope="module")
def sst2_bottleneck(work: Path, glue_subsets: dict[str, Path], minilm_dir: Path) -> tuple[Path, dict[str, Any]]:
    folder = work / "sst2-bottleneck"
    return folder, train("sst2", "bottleneck", folder, glue_subsets["sst2"], minilm_dir)


@pytest.fixture(scope="module")
def cola_lora(work: Path, glue_subsets: dict[str, Path], minilm_dir: Path) -> tuple[Path, dict[str, Any]]:
    """A second (weaker, cheaper) LoRA source for the transfer."""
    folder = work / "cola-lora"
    return folder, train("cola", "lora", folder, glue_subsets["cola"], minilm_dir, epochs=1)


def baseline(options: DataOptions, seed: int = 42) -> float:
    """Accuracy of the best constant predictor on the test rows (at least the majority-class baseline)."""
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.metrics import majority_baseline

    spec = options.spec()
    splits = make_splits(spec, load_raw(spec, data_dir=options.data_dir), few_shot=options.few_shot,
                         sample_seed=seed)
    train_labels, test_labels = np.asarray(splits.train["label"]), np.asarray(splits.test["label"])
    majority = majority_baseline(splits.spec, train_labels, test_labels)["accuracy"]
    best_constant = 100.0 * np.bincount(test_labels).max() / len(test_labels)
    assert majority <= best_constant + 1e-9
    return best_constant


@pytest.mark.parametrize("fixture", ["sst2_lora", "sst2_bottleneck"])
def test_source_beats_majority_baseline(fixture: str, request: pytest.FixtureRequest, glue_subsets) -> None:
    folder, meta = request.getfixturevalue(fixture)
    floor = baseline(DataOptions(task="sst2", data_dir=glue_subsets["sst2"]))
    accuracy = meta["metrics"]["test"]["accuracy"]
    assert meta["training"]["test_examples"] == SUBSETS["sst2"][1]
    assert accuracy > floor + 10.0, f"{fixture}: test accuracy {accuracy:.1f} vs constant predictor {floor:.1f}"
    saved = json.loads((folder / "scalearn.json").read_text())
    assert saved["metrics"]["test"]["accuracy"] == accuracy


def test_vanilla_peft_reproduces_our_logits(sst2_lora, minilm_dir: Path) -> None:
    """PeftModel.from_pretrained(AutoModel, our folder) + our head.safetensors == load_source_model's logits."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from scalearn_cli.model import TaskHead
    from scalearn_cli.stages.source import load_source_model

    folder, meta = sst2_lora
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    batch = dict(tokenizer(["a gripping, beautifully acted film.", "dull and far too long", "it is a movie."],
                           padding=True, return_tensors="pt"))

    ours, _, _ = load_source_model(folder)
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_dir), str(folder)).eval()
    head = TaskHead(meta["head"]["hidden_size"], meta["head"]["num_outputs"], pooling=meta["head"]["pooling"]).eval()
    head.load_state_dict(load_file(str(folder / "head.safetensors")))
    with torch.no_grad():
        want = ours(**batch)[1]
        got = head(peft_model(**batch).last_hidden_state, batch["attention_mask"])  # the mask: for mean pooling
        # the adapter matters: the bare encoder with the same head gives other logits
        bare = head(AutoModel.from_pretrained(minilm_dir).eval()(**batch).last_hidden_state, batch["attention_mask"])
    assert want.shape == got.shape == (3, 2)
    assert torch.allclose(want, got, atol=1e-5), (want - got).abs().max()
    assert not torch.allclose(want, bare, atol=1e-3)


def test_transfer_from_real_sources_beats_majority(sst2_lora, cola_lora, glue_subsets, work: Path) -> None:
    from scalearn_cli.stages.transfer import TransferOptions, transfer

    target = DataOptions(task="sst2", data_dir=glue_subsets["sst2"], few_shot=100)
    config = TrainConfig(epochs=3, lr=6e-3, batch_size=16, max_length=64, seed=42, patience=None)
    sources = [str(sst2_lora[0]), str(cola_lora[0])]
    meta = transfer(TransferOptions(tuple(sources), target, work / "transfer", "scalearn", "scalearn++", train=config))
    assert meta["training"]["train_examples"] == 100 and meta["adapter"]["parameters"] == 2 * 2 * 384
    record = json.loads((work / "transfer" / "composition.json").read_text())
    assert [s["task"] for s in record["sources"]] == ["sst2", "cola"]
    floor = baseline(target)
    accuracy = meta["metrics"]["test"]["accuracy"]
    assert accuracy > floor + 5.0, f"ScaLearn++ test accuracy {accuracy:.1f} vs constant predictor {floor:.1f}"
