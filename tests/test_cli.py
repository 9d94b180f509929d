"""The ``scalearn`` CLI end to end on tiny models (offline, CPU, seconds): train-source, transfer, eval, the
registry references a composition records, the zoo, and every bad input seen so far (one line, non-zero
exit, nothing written).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, make_source
from safetensors.torch import load_file
from typer.testing import CliRunner

from scalearn_cli.cli.main import app

POSITIVE, NEGATIVE = ("good", "great", "fun"), ("bad", "awful", "boring")
LORA_FILES = {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "scalearn.json", "README.md"}
BOTTLENECK_FILES = {
    "bottleneck_config.json", "bottleneck_model.safetensors", "head.safetensors", "scalearn.json", "README.md",
}
TRAIN = ["--epochs", "1", "--batch-size", "8", "--max-length", "16"]


# ---- helpers ---------------------------------------------------------------------------------------------
def invoke(*args: Any, env: dict[str, str] | None = None) -> Any:
    """Run ``scalearn ARGS`` in-process; stdout and stderr stay apart (click >= 8.2)."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(result: Any) -> Any:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def ok_json(result: Any) -> Any:
    return json.loads(ok(result).stdout)


def assert_refused(result: Any, out: Path | None, *needles: str, code: int | None = None) -> str:
    """A handled error: non-zero exit, one 'Error:' line naming ``needles``, no traceback, nothing at ``out``."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    if out is not None:
        assert not out.exists(), f"{out} was written: {sorted(p.name for p in out.iterdir())}"
        assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    return errors[0]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sentiment_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append({"sentence": f"the {rng.choice(['movie', 'film', 'plot'])} was very {word}", "label": label})
    return rows


def custom(task_file: Path) -> list[str]:
    return ["--task", "custom", "--data-file", str(task_file), "--text-fields", "sentence"]


def read_card_yaml(folder: Path) -> dict[str, Any]:
    import yaml

    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# ---- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "bad").mkdir()
    return folder


@pytest.fixture(scope="module")
def task_file(root: Path) -> Path:
    """A tiny custom sentiment task in the tiny tokenizer's vocabulary (80 rows: 64/8/8)."""
    return write_jsonl(root / "task.jsonl", sentiment_rows(80))


@pytest.fixture(scope="module")
def trained(root: Path, tiny_model_dir: Path, task_file: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """One LoRA and one bottleneck source trained through the CLI: kind -> (folder, --json summary)."""
    out = {}
    for kind in ("lora", "bottleneck"):
        folder = root / "trained" / kind
        summary = ok_json(invoke("train-source", "--model", tiny_model_dir, *custom(task_file), "--adapter", kind,
                                 *TRAIN, "--seed", "3", "--out", folder, "--json"))
        out[kind] = (folder, summary)
    return out


@pytest.fixture(scope="module")
def fab(root: Path, tiny_model_dir: Path) -> dict[str, list[Path]]:
    """Fabricated (untrained, random) sources: 8 LoRA and 3 bottleneck, saved exactly as train-source saves."""
    return {
        "lora": [make_source(root / "fab" / f"lora{i}", tiny_model_dir, "lora", seed=i) for i in range(8)],
        "bottleneck": [
            make_source(root / "fab" / f"bn{i}", tiny_model_dir, "bottleneck", seed=10 + i) for i in range(3)
        ],
    }


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A second tiny BERT with another hidden size (same tokenizer)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert-48")
    BertTokenizerFast.from_pretrained(tiny_model_dir).save_pretrained(folder)
    torch.manual_seed(1)
    BertModel(BertConfig(**{**TINY, "hidden_size": 48})).save_pretrained(folder)
    return folder


# ---- basics ----------------------------------------------------------------------------------------------
def test_help_version_and_tasks() -> None:
    from scalearn_cli import __version__
    from scalearn_cli.tasks import TASKS

    helped = ok(invoke("--help")).stdout
    for command in ("train-source", "transfer", "eval", "tasks", "push", "pull", "list", "zoo"):
        assert command in helped
    assert ok(invoke("--version")).stdout.strip() == f"scalearn {__version__}"
    rows = ok_json(invoke("tasks", "--json"))
    names = [r["name"] for r in rows]
    assert names == list(TASKS) and {"rte", "sst2", "cola", "stsb", "demo-sentiment"} <= set(names)
    assert next(r for r in rows if r["name"] == "stsb")["problem_type"] == "regression"


def test_option_help_keeps_its_default_text() -> None:
    """Rich markup must not swallow the defaults written into option help (it ate "[default: ...]")."""
    helped = " ".join(ok(invoke("transfer", "--help", env={"COLUMNS": "300"})).stdout.split())
    assert "(default: the paper's for the method)" in helped
    assert "(default: the one the sources' heads were trained with)" in helped


def test_command_reference_names_every_command_and_option() -> None:
    """docs/cli.md keeps step with the CLI: every command, and every long option of each, appears in it."""
    import re

    import typer

    reference = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()

    def leaves(command, path: tuple[str, ...]):
        if hasattr(command, "commands"):  # a group: its visible subcommands
            for name, sub in command.commands.items():
                if not sub.hidden:
                    yield from leaves(sub, (*path, name))
        else:
            yield " ".join(path), command

    found = list(leaves(typer.main.get_command(app), ()))
    assert {"train-source", "transfer", "eval", "export", "zoo list", "zoo build"} <= {name for name, _ in found}
    missing = [f"scalearn {name}" for name, _ in found if f"`scalearn {name}" not in reference]
    missing += [f"scalearn {name} {opt}" for name, command in found for param in command.params for opt in param.opts
                if opt.startswith("--") and opt != "--help" and not re.search(re.escape(opt) + r"(?![\w-])", reference)]
    assert not missing, f"docs/cli.md does not mention: {missing}"


# ---- train-source ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, files", [("lora", LORA_FILES), ("bottleneck", BOTTLENECK_FILES)])
def test_train_source_writes_exact_files_and_summary(kind: str, files: set[str], trained, tiny_model_dir) -> None:
    folder, summary = trained[kind]
    assert {p.name for p in folder.iterdir()} == files
    assert summary["kind"] == "source" and summary["task"] == "custom" and summary["out"] == str(folder)
    assert summary["adapter"]["kind"] == kind and summary["adapter"]["parameters"] > 0
    assert set(summary["metrics"]) == {"dev", "test"} and "accuracy" in summary["metrics"]["test"]
    meta = json.loads((folder / "scalearn.json").read_text())
    assert meta["format_version"] == 1 and meta["kind"] == "source"
    assert meta["task"]["label_names"] == ["0", "1"] and meta["base_model"]["num_layers"] == TINY["num_hidden_layers"]
    assert set(meta["files"]) == files - {"scalearn.json", "README.md"}
    if kind == "lora":  # r=8 on query and value: (32·8 + 8·32) per module, 2 modules, 2 layers
        assert summary["adapter"]["parameters"] == 2 * 2 * (32 * 8 + 8 * 32)
        assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    else:  # reduction 16: bottleneck 2, down (32·2 + 2) + up (2·32 + 32) per layer
        assert summary["adapter"]["parameters"] == 2 * (32 * 2 + 2 + 2 * 32 + 32)
    card = read_card_yaml(folder)
    assert card["library_name"] == ("peft" if kind == "lora" else "scalearn")
    assert card["base_model"] == str(tiny_model_dir)
    assert {"scalearn", "source", kind, "custom"} <= set(card["tags"])
    results = card["model-index"][0]["results"]
    assert {m["type"] for m in results[0]["metrics"]} >= {"accuracy"}


def test_same_seed_same_adapter(trained, root: Path, tiny_model_dir: Path, task_file: Path) -> None:
    first, _ = trained["lora"]
    again = root / "again-lora"
    ok(invoke("train-source", "--model", tiny_model_dir, *custom(task_file), *TRAIN, "--seed", "3", "--out", again))
    a, b = tensors(first / "adapter_model.safetensors"), tensors(again / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = tensors(first / "head.safetensors"), tensors(again / "head.safetensors")
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # trained: B moved off its zero init


@pytest.mark.parametrize("kind", ["lora", "bottleneck"])
def test_eval_source(kind: str, trained) -> None:
    folder, summary = trained[kind]
    result = ok_json(invoke("eval", folder, "--json"))
    assert result["kind"] == "source" and result["task"] == "custom" and result["split"] == "test"
    assert result["examples"] == 8
    assert result["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])


def test_eval_of_a_source_whose_recorded_data_is_gone(root: Path, tiny_model_dir: Path, task_file: Path) -> None:
    """A custom task's rows exist nowhere else: one line, what to do (and --data-file then works); a built-in
    (demo) task's are read from the task itself, wherever they were once written."""
    import shutil

    from scalearn_cli.data.demo import write_demo_tasks

    moved = root / "moved-task.jsonl"
    shutil.copy(task_file, moved)
    source = root / "gone-custom"
    summary = ok_json(invoke("train-source", "--model", tiny_model_dir, *custom(moved), *TRAIN, "--out", source,
                             "--json"))
    moved.unlink()
    assert_refused(invoke("eval", source), None, "moved-task.jsonl, which is missing",
                   "pass --data-dir/--data-file")
    again = ok_json(invoke("eval", source, "--data-file", task_file, "--json"))
    assert again["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])

    demo = write_demo_tasks(root / "gone-demo" / "demo")["demo-sentiment"]
    source = root / "gone-demo-source"
    summary = ok_json(invoke("train-source", "--model", tiny_model_dir, "--task", "demo-sentiment", "--data-dir", demo,
                             "--max-train-samples", "48", *TRAIN, "--out", source, "--json"))
    shutil.rmtree(root / "gone-demo")
    result = ok_json(invoke("eval", source, "--json"))  # the same rows, generated by name
    assert result["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])


# ---- transfer --------------------------------------------------------------------------------------------
#: ω parameters for N LoRA sources on the tiny model: 2 layers x (query, value) sites of width D=32
OMEGA_COUNT = {"scalearn": lambda n: n * 4 * 32, "scalearn-uniform": lambda n: n * 4,
               "scalearn++": lambda n: n * 2 * 32, "scalearn-uniform++": lambda n: n * 2}


def transfer_args(task_file: Path, sources: list[Path], out: Path, *extra: Any) -> list[Any]:
    srcs = [a for s in sources for a in ("--source", s)]
    return ["transfer", *custom(task_file), *srcs, *TRAIN, "--out", out, *extra]


def check_composition(out: Path, sources: list[Path], method: str, variant: str | None, n_params: int) -> dict:
    learned = {"scalearn": {"omega.safetensors"}, "adapterfusion": {"fusion.safetensors"}, "average": set()}[method]
    assert {p.name for p in out.iterdir()} == learned | {"head.safetensors", "composition.json", "scalearn.json",
                                                         "README.md"}
    record = json.loads((out / "composition.json").read_text())
    assert record["method"] == method and record["variant"] == variant and record["n_sources"] == len(sources)
    assert [s["ref"] for s in record["sources"]] == [str(s) for s in sources]  # in order, referenced
    for src, rec in zip(sources, record["sources"]):
        meta = json.loads((src / "scalearn.json").read_text())
        assert rec["content_hash"] == meta["content_hash"] and rec["files"] == meta["files"]
        assert rec["id"] == str(src.resolve()) and rec["revision"] is None
    assert record["transfer_parameters"] == n_params
    meta = json.loads((out / "scalearn.json").read_text())
    assert meta["kind"] == "composition" and meta["adapter"]["parameters"] == n_params
    assert meta["sources"] == [str(s) for s in sources]
    if method == "scalearn":
        omega = tensors(out / "omega.safetensors")
        assert sum(v.numel() for v in omega.values()) == n_params
    card = read_card_yaml(out)
    assert card["library_name"] == "scalearn" and "composition" in card["tags"]
    return record


@pytest.mark.parametrize("variant", list(OMEGA_COUNT))
def test_transfer_scalearn_variants(variant: str, fab, root: Path, task_file: Path) -> None:
    sources = fab["lora"][:3]
    out = root / "transfer" / variant
    summary = ok_json(invoke(*transfer_args(task_file, sources, out, "--variant", variant, "--json")))
    assert summary["kind"] == "composition" and summary["adapter"]["variant"] == variant
    check_composition(out, sources, "scalearn", variant, OMEGA_COUNT[variant](3))


def test_transfer_bottleneck_counts(fab, root: Path, task_file: Path) -> None:
    """Bottleneck sources: one site per layer, so ScaLearn has N·L·D parameters and ScaLearnUniform++ N."""
    sources = fab["bottleneck"]
    out = root / "transfer" / "bn-scalearn"
    ok(invoke(*transfer_args(task_file, sources, out)))
    check_composition(out, sources, "scalearn", "scalearn", 3 * 2 * 32)
    out = root / "transfer" / "bn-uniform++"
    ok(invoke(*transfer_args(task_file, sources, out, "--variant", "scalearn-uniform++")))
    check_composition(out, sources, "scalearn", "scalearn-uniform++", 3)


@pytest.mark.parametrize("method", ["average", "adapterfusion"])
def test_transfer_baselines(method: str, fab, root: Path, task_file: Path) -> None:
    sources = fab["lora"][:2]
    out = root / "transfer" / method
    ok(invoke(*transfer_args(task_file, sources, out, "--method", method)))
    n_params = json.loads((out / "scalearn.json").read_text())["adapter"]["parameters"]
    record = check_composition(out, sources, method, None, n_params)
    if method == "average":
        assert record["transfer_parameters"] == 0
    else:
        fusion = tensors(out / "fusion.safetensors")
        assert record["transfer_parameters"] == sum(v.numel() for v in fusion.values()) > 0


def test_uniform_plus_plus_omega_of_eight_sources_is_tiny(fab, root: Path, task_file: Path) -> None:
    out = root / "transfer" / "u++8"
    ok(invoke(*transfer_args(task_file, fab["lora"], out, "--variant", "scalearn-uniform++")))
    check_composition(out, fab["lora"], "scalearn", "scalearn-uniform++", 8 * 2)
    assert (out / "omega.safetensors").stat().st_size < 1024
    assert (out / "omega.safetensors").stat().st_size < (fab["lora"][0] / "adapter_model.safetensors").stat().st_size


def test_eval_composition(fab, root: Path, task_file: Path) -> None:
    out = root / "transfer" / "eval-me"
    summary = ok_json(invoke(*transfer_args(task_file, fab["lora"][:2], out, "--json")))
    result = ok_json(invoke("eval", out, "--json"))
    assert result["kind"] == "composition" and result["task"] == "custom" and result["examples"] == 8
    assert result["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])
    assert result["metrics"]["loss"] == pytest.approx(summary["metrics"]["test"]["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "kind, method, variant",
    [("lora", "scalearn", "scalearn"), ("bottleneck", "scalearn", "scalearn++"), ("lora", "adapterfusion", None)],
)
def test_composition_round_trip_reproduces_logits(kind, method, variant, fab, root, task_file, batch, monkeypatch):
    """The model transfer() trained, in memory, and the one load_composition rebuilds from DIR: same logits."""
    from scalearn_cli.stages import transfer as transfer_module
    from scalearn_cli.compose import load_composition
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.train import TrainConfig

    captured = {}
    real_score = transfer_module.score

    def capture(model, prepared, *args, **kwargs):
        captured["model"] = model
        return real_score(model, prepared, *args, **kwargs)

    monkeypatch.setattr(transfer_module, "score", capture)
    out = root / "roundtrip" / f"{kind}-{method}"
    sources = [str(s) for s in fab[kind][:3]]
    data = DataOptions(task="custom", data_file=task_file, text_fields=("sentence",))
    transfer_module.transfer(transfer_module.TransferOptions(
        tuple(sources), data, out, method, variant or "scalearn",
        train=TrainConfig(epochs=1, batch_size=8, max_length=16, lr=1e-2, patience=None)))
    trained = captured["model"].eval()
    loaded, _, meta = load_composition(out)
    assert not loaded.training and meta["kind"] == "composition"
    with torch.no_grad():
        want, got = trained(**batch)[1], loaded(**batch)[1]
    assert want.shape == (3, 2)
    assert torch.equal(want, got), (want - got).abs().max()


# ---- bad input: train-source -----------------------------------------------------------------------------
def test_unknown_task_lists_known_tasks(root: Path, tiny_model_dir: Path) -> None:
    out = root / "bad" / "unknown-task"
    line = assert_refused(invoke("train-source", "--model", tiny_model_dir, "--task", "nope", "--out", out), out,
                          "unknown task 'nope'")
    assert "rte" in line and "sst2" in line and "custom" in line


def test_missing_data_dir_file_and_split(root: Path, tiny_model_dir: Path) -> None:
    out = root / "bad" / "missing-data"
    base = ["train-source", "--model", tiny_model_dir, *TRAIN, "--out", out]
    missing = root / "nowhere"
    assert_refused(invoke(*base, "--task", "sst2", "--data-dir", missing), out, str(missing))
    assert_refused(invoke(*base, "--task", "custom", "--text-fields", "sentence", "--data-file", missing / "f.jsonl"),
                   out, str(missing / "f.jsonl"))
    empty_dir = root / "no-train-split"
    empty_dir.mkdir()
    write_jsonl(empty_dir / "validation.jsonl", sentiment_rows(8))
    assert_refused(invoke(*base, "--task", "sst2", "--data-dir", empty_dir), out, str(empty_dir / "train.jsonl"))


def test_label_outside_label_set_names_row(root: Path, tiny_model_dir: Path) -> None:
    data = root / "bad-labels"
    data.mkdir()
    rows = sentiment_rows(20)
    rows[7]["label"] = 5
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "validation.jsonl", sentiment_rows(8, seed=1))
    out = root / "bad" / "labels"
    assert_refused(invoke("train-source", "--model", tiny_model_dir, "--task", "sst2", "--data-dir", data, *TRAIN,
                          "--out", out), out, "row 7", "5", "negative, positive")


def test_empty_data_file(root: Path, tiny_model_dir: Path) -> None:
    empty = root / "empty.jsonl"
    empty.write_text("")
    out = root / "bad" / "empty"
    assert_refused(invoke("train-source", "--model", tiny_model_dir, "--task", "custom", "--text-fields", "sentence",
                          "--data-file", empty, *TRAIN, "--out", out), out, str(empty), "is empty")


def test_model_not_found_offline(root: Path, task_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = root / "bad" / "no-model"
    for model in ("does/not/exist", "nobody/missing-model"):  # a path-like name and a well-formed hub id
        assert_refused(invoke("train-source", "--model", model, *custom(task_file), *TRAIN, "--out", out),
                       out, f"'{model}'", "HF_HUB_OFFLINE=1", "--model DIR", "local folder")


def test_bottleneck_on_unsupported_architecture(root: Path, tiny_model_dir: Path, task_file: Path) -> None:
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel

    folder = root / "tiny-distilbert"
    BertTokenizerFast.from_pretrained(tiny_model_dir).save_pretrained(folder)
    DistilBertModel(DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=2, hidden_dim=37)).save_pretrained(
        folder
    )
    out = root / "bad" / "distilbert"
    assert_refused(invoke("train-source", "--model", folder, "--adapter", "bottleneck", *custom(task_file), *TRAIN,
                          "--out", out), out, "distilbert", "--adapter lora")


def test_refuses_to_overwrite_an_adapter(trained, root: Path, tiny_model_dir: Path, task_file: Path) -> None:
    folder = root / "overwrite-me"
    args = ["train-source", "--model", tiny_model_dir, *custom(task_file), *TRAIN, "--out", folder]
    ok(invoke(*args, "--seed", "1"))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert_refused(invoke(*args, "--seed", "2"), None, str(folder), "--overwrite")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    ok(invoke(*args, "--seed", "2", "--overwrite"))
    assert (folder / "adapter_model.safetensors").read_bytes() != before["adapter_model.safetensors"]
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ---- head pooling ----------------------------------------------------------------------------------------
def test_mean_pooling_head_ignores_padding() -> None:
    from scalearn_cli.model import TaskHead

    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    head = TaskHead(32, 2, pooling="mean").eval()
    assert torch.allclose(head.pool(hidden, mask)[0], hidden[0, :3].mean(0))
    assert torch.allclose(head.pool(hidden, mask)[1], hidden[1].mean(0))
    padded = hidden.clone()
    padded[0, 3:] = 100.0  # what sits under the padding must not change the output
    assert torch.allclose(head(hidden, mask), head(padded, mask))
    assert torch.equal(TaskHead(32, 2).pool(padded, mask), padded[:, 0])  # default: the first token
    with pytest.raises(ValueError, match="first, mean"):
        TaskHead(32, 2, pooling="max")


def test_mean_pooling_source_and_transfer(fab, root: Path, tiny_model_dir: Path, task_file: Path) -> None:
    """--pooling is recorded, eval rebuilds the same head, transfer inherits the sources' pooling."""
    src = root / "pool" / "mean-src"
    summary = ok_json(invoke("train-source", "--model", tiny_model_dir, *custom(task_file), *TRAIN, "--pooling", "mean",
                             "--out", src, "--json"))
    assert json.loads((src / "scalearn.json").read_text())["head"]["pooling"] == "mean"
    result = ok_json(invoke("eval", src, "--json"))
    assert result["metrics"]["loss"] == pytest.approx(summary["metrics"]["test"]["loss"], rel=1e-5)

    other = make_source(root / "pool" / "mean-fab", tiny_model_dir, "lora", seed=30, pooling="mean")
    out = root / "pool" / "t-mean"
    summary = ok_json(invoke(*transfer_args(task_file, [src, other], out, "--json")))
    assert json.loads((out / "scalearn.json").read_text())["head"]["pooling"] == "mean"
    result = ok_json(invoke("eval", out, "--json"))
    assert result["metrics"]["loss"] == pytest.approx(summary["metrics"]["test"]["loss"], rel=1e-5)

    mixed = root / "pool" / "t-mixed"  # a mean-pooled source beside one written before the option (first token)
    assert_refused(invoke(*transfer_args(task_file, [src, fab["lora"][0]], mixed)), mixed,
                   "different pooling", "--pooling first|mean")
    ok(invoke(*transfer_args(task_file, [src, fab["lora"][0]], mixed, "--pooling", "first")))
    assert json.loads((mixed / "scalearn.json").read_text())["head"]["pooling"] == "first"


def test_zoo_recipe_pooling_enters_the_hash_only_when_set() -> None:
    from scalearn_cli.zoo.catalog import Recipe

    base = dict(name="r", task="rte", adapter="lora", data={"source": "demo"}, train={"epochs": 1})
    first, mean = Recipe(**base), Recipe(**base, pooling="mean")
    assert first.hash("m") == Recipe(**base, pooling="first").hash("m")  # old recipes keep their hash
    assert mean.hash("m") != first.hash("m")


def test_unknown_pooling_refused(fab, root: Path, tiny_model_dir: Path, task_file: Path) -> None:
    out = root / "bad" / "pool-max"
    assert_refused(invoke("train-source", "--model", tiny_model_dir, *custom(task_file), *TRAIN, "--pooling", "max",
                          "--out", out), out, "--pooling", "first, mean", "'max'")
    assert_refused(invoke(*transfer_args(task_file, fab["lora"][:2], out, "--pooling", "cls")), out, "'cls'")


# ---- bad input: transfer and eval ------------------------------------------------------------------------
def test_transfer_without_sources(root: Path, task_file: Path) -> None:
    out = root / "bad" / "t-none"
    assert_refused(invoke("transfer", *custom(task_file), "--out", out), out, "no sources", "--source")


def test_transfer_duplicate_source(fab, root: Path, task_file: Path) -> None:
    out = root / "bad" / "t-dup"
    src = fab["lora"][0]
    assert_refused(invoke(*transfer_args(task_file, [src, src], out)), out, str(src), "twice")
    import shutil

    copy = root / "bad" / "lora0-copy"  # the same weights under another path
    shutil.copytree(src, copy)
    assert_refused(invoke(*transfer_args(task_file, [src, copy], out)), out, str(copy), "duplicates", str(src))


def test_transfer_sources_of_different_base_models(fab, root: Path, task_file: Path, other_model_dir: Path) -> None:
    other = make_source(root / "fab" / "other-base", other_model_dir, "lora", seed=5)
    out = root / "bad" / "t-bases"
    assert_refused(invoke(*transfer_args(task_file, [fab["lora"][0], other], out)), out,
                   str(fab["lora"][0]), str(other), "different base models")


def test_transfer_sources_of_different_kinds(fab, root: Path, task_file: Path) -> None:
    out = root / "bad" / "t-kinds"
    lora_src, bn_src = fab["lora"][0], fab["bottleneck"][0]
    assert_refused(invoke(*transfer_args(task_file, [lora_src, bn_src], out)), out,
                   str(lora_src), str(bn_src), "lora", "bottleneck", "different adapter kinds")


def test_transfer_corrupted_or_missing_source_file(fab, root: Path, task_file: Path, tiny_model_dir: Path) -> None:
    broken = make_source(root / "fab" / "broken", tiny_model_dir, "lora", seed=6)
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    out = root / "bad" / "t-corrupt"
    assert_refused(invoke(*transfer_args(task_file, [fab["lora"][0], broken], out)), out, str(broken),
                   "adapter_model.safetensors")
    weights.unlink()
    assert_refused(invoke(*transfer_args(task_file, [fab["lora"][0], broken], out)), out, "missing",
                   "adapter_model.safetensors")
    nowhere = root / "fab" / "never-made"
    assert_refused(invoke(*transfer_args(task_file, [fab["lora"][0], nowhere], out)), out, str(nowhere))


def test_transfer_unknown_variant_and_method(fab, root: Path, task_file: Path) -> None:
    out = root / "bad" / "t-variant"
    assert_refused(invoke(*transfer_args(task_file, fab["lora"][:2], out, "--variant", "scalearn+++")), out,
                   "scalearn+++", "scalearn-uniform++")
    assert_refused(invoke(*transfer_args(task_file, fab["lora"][:2], out, "--method", "magic")), out, "magic")


def test_eval_composition_whose_source_changed(root: Path, task_file: Path, tiny_model_dir: Path) -> None:
    sources = [make_source(root / "fab" / f"mutable{i}", tiny_model_dir, "lora", seed=20 + i) for i in range(2)]
    out = root / "transfer" / "mutable"
    ok(invoke(*transfer_args(task_file, sources, out)))
    weights = sources[1] / "adapter_model.safetensors"
    state = tensors(weights)
    from safetensors.torch import save_file

    save_file({k: v + 1 for k, v in state.items()}, str(weights))
    line = assert_refused(invoke("eval", out, "--json"), None, "adapter_model.safetensors", "changed")
    assert str(sources[1]) in line
    import shutil

    shutil.rmtree(sources[1])
    assert_refused(invoke("eval", out, "--json"), None, str(sources[1]), "missing")


# ---- Ctrl-C ----------------------------------------------------------------------------------------------
def test_ctrl_c_mid_training_leaves_nothing(tmp_path: Path, tiny_model_dir: Path, task_file: Path) -> None:
    parent = tmp_path / "outs"
    parent.mkdir()
    out = parent / "interrupted"
    log = tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "scalearn_cli", "train-source", "--model", str(tiny_model_dir), *custom(task_file),
           "--epochs", "100000", "--patience", "0", "--batch-size", "8", "--max-length", "16", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        try:
            deadline = time.monotonic() + 120
            while "epoch 2:" not in log.read_text():  # training is under way
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "training never started"
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 130, log.read_text()
    assert "Interrupted" in log.read_text() and "Traceback" not in log.read_text()
    assert not out.exists()
    assert list(parent.iterdir()) == []


# ---- registry references -------------------------------------------------------------------------------------
def test_transfer_from_registry_records_commits_and_eval_uses_them(fab, root: Path, task_file: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from scalearn_cli.registry import get_registry

    monkeypatch.delenv("SCALEARN_REGISTRY_KIND", raising=False)
    reg_spec = f"local:{root / 'registry'}"
    pushed_a = ok(invoke("push", fab["lora"][0], "org/a", "--registry", reg_spec)).stdout.strip()
    pushed_b = ok(invoke("push", fab["lora"][1], "org/b", "--tag", "v1", "--registry", reg_spec)).stdout.strip()
    commit_a, commit_b = pushed_a.split("@")[1], pushed_b.split("@")[1]
    out = root / "transfer" / "from-registry"
    summary = ok_json(invoke("transfer", *custom(task_file), "--source", "org/a@main", "--source", "org/b@v1",
                             "--registry", reg_spec, *TRAIN, "--out", out, "--json"))
    record = json.loads((out / "composition.json").read_text())
    assert [(s["ref"], s["id"], s["revision"], s["registry"]) for s in record["sources"]] == [
        ("org/a@main", "org/a", commit_a, reg_spec), ("org/b@v1", "org/b", commit_b, reg_spec)]
    for src, rec in zip(fab["lora"][:2], record["sources"]):
        assert len(rec["revision"]) == 40 and int(rec["revision"], 16) >= 0
        meta = json.loads((src / "scalearn.json").read_text())
        assert rec["files"] == meta["files"] and rec["content_hash"] == meta["content_hash"]
    assert not (out / "adapter_model.safetensors").exists()

    before = ok_json(invoke("eval", out, "--json"))
    assert before["metrics"]["loss"] == pytest.approx(summary["metrics"]["test"]["loss"], rel=1e-5)
    # main moves on to other weights: the composition still loads the commit it recorded
    ok(invoke("push", fab["lora"][2], "org/a", "--registry", reg_spec))
    assert get_registry(reg_spec).resolve("org/a", "main") != commit_a
    after = ok_json(invoke("eval", out, "--json"))
    assert after["metrics"] == before["metrics"]
    from scalearn_cli.artifacts import SourceRef
    from scalearn_cli.resolve import Resolver

    again = Resolver().recorded(SourceRef.from_dict(record["sources"][0]))
    assert again.meta.content_hash == record["sources"][0]["content_hash"]
    assert again.folder.name == commit_a


# ---- zoo -------------------------------------------------------------------------------------------------
def write_catalog(folder: Path, base_model: Path, lr: float = 5e-4) -> Path:
    train = {"epochs": 1, "batch_size": 16, "max_length": 32, "seed": 1, "patience": None}
    catalog = {
        "format_version": 1, "base_model": str(base_model), "namespace": "tiny-zoo", "prefix": "tiny",
        "description": "test catalog", "published": {},
        "recipes": [
            {"name": "sentiment-lora", "task": "demo-sentiment", "adapter": "lora", "settings": {"r": 4},
             "data": {"source": "demo", "max_train_samples": 48}, "train": {**train, "lr": lr}},
            {"name": "paraphrase-bottleneck", "task": "demo-paraphrase", "adapter": "bottleneck",
             "settings": {"reduction_factor": 8}, "data": {"source": "demo", "max_train_samples": 48},
             "train": {**train, "lr": 3e-4}},
        ],
    }
    folder.mkdir(exist_ok=True)
    path = folder / "tiny.json"
    path.write_text(json.dumps(catalog, indent=2))
    return path


def test_zoo_build_skip_stale_and_list(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEARN_ZOO", str(tmp_path / "zoo"))
    monkeypatch.delenv("SCALEARN_REGISTRY_KIND", raising=False)
    write_catalog(tmp_path / "zoo", tiny_model_dir)
    reg = f"local:{tmp_path / 'registry'}"
    common = ["--model", tiny_model_dir, "--registry", reg]
    build = ["zoo", "build", *common, "--data-root", tmp_path / "data", "--json"]

    listed = ok_json(invoke("zoo", "list", *common, "--json"))
    assert listed["base_model"] == str(tiny_model_dir)
    assert [(r["name"], r["state"]) for r in listed["recipes"]] == [("sentiment-lora", "missing"),
                                                                      ("paraphrase-bottleneck", "missing")]
    first = ok_json(invoke(*build))
    assert [(r["repo_id"], r["action"]) for r in first] == [("tiny-zoo/tiny-sentiment-lora", "built"),
                                                            ("tiny-zoo/tiny-paraphrase-bottleneck", "built")]
    assert all(len(r["revision"]) == 40 and "accuracy" in r["metrics"] for r in first)

    second = invoke(*build)
    assert [r["action"] for r in ok_json(second)] == ["skipped", "skipped"]
    assert second.stderr.count("already built") == 2

    write_catalog(tmp_path / "zoo", tiny_model_dir, lr=1e-3)  # one recipe's hyperparameter changes
    states = ok_json(invoke("zoo", "list", *common, "--json"))["recipes"]
    assert [(r["name"], r["state"]) for r in states] == [("sentiment-lora", "stale"),
                                                         ("paraphrase-bottleneck", "built")]
    third = ok_json(invoke(*build))
    assert [r["action"] for r in third] == ["built", "skipped"]
    assert third[0]["revision"] != first[0]["revision"] and third[1]["revision"] == first[1]["revision"]
    assert {r["state"] for r in ok_json(invoke("zoo", "list", *common, "--json"))["recipes"]} == {"built"}

    entries = ok_json(invoke("list", "--registry", reg, "--json"))
    shown = {e["repo_id"]: (e["metadata"]["task"]["name"], e["metadata"]["base_model"]["id"],
                            e["metadata"]["adapter"]["kind"], e["metadata"]["recipe"]["name"]) for e in entries}
    assert shown == {
        "tiny-zoo/tiny-sentiment-lora": ("demo-sentiment", str(tiny_model_dir), "lora", "sentiment-lora"),
        "tiny-zoo/tiny-paraphrase-bottleneck": ("demo-paraphrase", str(tiny_model_dir), "bottleneck",
                                                "paraphrase-bottleneck"),
    }
    table = ok(invoke("list", "--registry", reg, env={"COLUMNS": "250"})).stdout
    assert "demo-sentiment" in table and "bottleneck" in table
