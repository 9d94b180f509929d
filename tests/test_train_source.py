"""``scalearn train-source`` and ``eval`` of a source, end to end on the tiny model: the exact files and summary,
seed reproducibility, every bad input (one line, non-zero exit, nothing written), --overwrite, and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import (
    TINY, TRAIN, assert_refused, custom, invoke, ok, ok_json, read_card_yaml, sentiment_rows, tensors, write_jsonl,
)


LORA_FILES = {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "scalearn.json", "README.md"}
BOTTLENECK_FILES = {
    "bottleneck_config.json", "bottleneck_model.safetensors", "head.safetensors", "scalearn.json", "README.md",
}


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
        # a shell's background job (`make test &`, nohup) inherits SIGINT ignored; a user's Ctrl-C never is
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 120
            while "epoch 2:" not in log.read_text():  # training is under way
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "training never started"
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # say where it was: the log shows the last phase it reported
                pytest.fail(f"still running 60 s after Ctrl-C; its stderr:\n{log.read_text()[-3000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 130, log.read_text()
    assert "Interrupted" in log.read_text() and "Traceback" not in log.read_text()
    assert not out.exists()
    assert list(parent.iterdir()) == []
