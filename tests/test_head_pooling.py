"""The task head's pooling (first token or mean over the unpadded tokens): recorded by train-source, taken over by
transfer, part of a zoo recipe's hash only when set, and an unknown name refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import TRAIN, assert_refused, custom, invoke, make_source, ok, ok_json, transfer_args


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
