"""Multi-label tasks (several labels per row): the BCE loss, macro/micro-F1 against scikit-learn, per-label
thresholds, the label-set reader and its bad inputs, the few-shot sample, and the CLI end to end on a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import invoke, ok_json, write_jsonl
from sklearn.metrics import f1_score, precision_recall_fscore_support

from scalearn_cli.tasks import MULTI_LABEL, custom_task, get_task

LABELS = ("anger", "fear", "joy")
CUE = {"joy": "good", "anger": "bad", "fear": "awful"}
TRAIN = ["--epochs", "2", "--batch-size", "8", "--max-length", "16", "--lr", "1e-2"]


def rows(n: int = 120, seed: int = 0) -> list[dict[str, Any]]:
    """Texts whose cue words say their emotions (0 to 3 of them per row)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        labels = sorted(label for label in LABELS if rng.random() < 0.4)
        words = [CUE[label] for label in labels] + [f"w{rng.randrange(60)}" for _ in range(4)]
        rng.shuffle(words)
        out.append({"text": " ".join(words), "labels": labels})
    return out


def refused(result: Any, out: Path, *needles: str) -> None:
    """One 'Error:' line naming ``needles``, non-zero exit, no traceback, nothing written at ``out``."""
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
    assert all(needle in errors[0] for needle in needles), errors[0]
    assert not out.exists()


def custom(data: Path, model: Path, *extra: Any, where: str = "--data-file") -> list[Any]:
    return ["--task", "custom", where, data, "--text-fields", "text", "--label-field", "labels",
            "--problem-type", MULTI_LABEL, "--model", model, *extra]


# ---- loss and metrics ----------------------------------------------------------------------------------------------
def test_loss_is_torch_binary_cross_entropy_on_a_hand_case() -> None:
    from scalearn_cli.model import task_loss

    logits = torch.tensor([[2.0, -1.0, 0.0], [-3.0, 0.5, 1.5]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    p = torch.sigmoid(logits)
    by_hand = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    loss = task_loss(MULTI_LABEL, logits, labels)
    assert torch.allclose(loss, torch.nn.BCEWithLogitsLoss()(logits, labels), atol=1e-7)
    assert torch.allclose(loss, by_hand, atol=1e-6)


def test_metrics_match_sklearn_on_indicator_rows() -> None:
    from scalearn_cli.metrics import compute_metrics, per_label_scores, predictions

    spec = custom_task(["text"], "labels", MULTI_LABEL, list(LABELS))
    rng = np.random.default_rng(0)
    logits, gold = rng.normal(size=(50, 3)), (rng.random((50, 3)) < 0.4).astype(np.int64)
    preds = (1 / (1 + np.exp(-logits)) > 0.5).astype(np.int64)
    assert (predictions(spec, logits) == preds).all()
    metrics = compute_metrics(spec, logits, gold.astype(np.float32))
    assert metrics["macro_f1"] == pytest.approx(100 * f1_score(gold, preds, average="macro", zero_division=0))
    assert metrics["micro_f1"] == pytest.approx(100 * f1_score(gold, preds, average="micro", zero_division=0))
    _, _, f1, support = precision_recall_fscore_support(gold, preds, average=None, zero_division=0)
    per_label = per_label_scores(spec, preds, gold)
    assert list(per_label) == list(LABELS)
    assert [v["f1"] for v in per_label.values()] == pytest.approx(list(100 * f1))
    assert [v["support"] for v in per_label.values()] == list(support)
    assert spec.main_metric == "macro_f1" and get_task("go_emotions").main_metric == "macro_f1"


def test_baseline_predicts_the_labels_most_train_rows_hold() -> None:
    from scalearn_cli.metrics import majority_baseline

    spec = custom_task(["text"], "labels", MULTI_LABEL, list(LABELS))
    train = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=np.float32)  # only anger > 0.5
    test = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    expected = np.array([[1, 0, 0], [1, 0, 0]])
    scores = majority_baseline(spec, train, test)
    assert scores["macro_f1"] == pytest.approx(100 * f1_score(test, expected, average="macro", zero_division=0))
    assert scores["micro_f1"] == pytest.approx(100 * f1_score(test, expected, average="micro", zero_division=0))


# ---- thresholds ----------------------------------------------------------------------------------------------------
def test_tuned_thresholds_beat_the_default_on_a_planted_case() -> None:
    from scalearn_cli.metrics import compute_metrics
    from scalearn_cli.multilabel import tune_thresholds

    spec = custom_task(["text"], "labels", MULTI_LABEL, ["a", "b"])
    # label a: positives at probability 0.32, negatives at 0.12 (0.5 predicts nothing); label b: already separated
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    gold = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    logits = np.array([[logit(0.32), logit(0.9)], [logit(0.32), logit(0.2)], [logit(0.12), logit(0.8)],
                       [logit(0.12), logit(0.1)]])
    thresholds = tune_thresholds(logits, gold)
    assert thresholds == [0.3, 0.5]  # a: the perfect threshold closest to 0.5; b's tie keeps the default
    default, tuned = compute_metrics(spec, logits, gold), compute_metrics(spec, logits, gold, thresholds)
    assert default["macro_f1"] == pytest.approx(50.0) and tuned["macro_f1"] == pytest.approx(100.0)


def test_thresholds_are_recorded_with_the_head_and_verified() -> None:
    from scalearn_cli.artifacts import HeadSpec
    from scalearn_cli.errors import ArtifactError

    spec = HeadSpec(32, 3, "first", (0.35, 0.15, 0.5))
    assert HeadSpec.from_dict(spec.to_dict()) == spec
    assert "thresholds" not in HeadSpec(32, 3).to_dict()  # other heads' entries are unchanged
    with pytest.raises(ArtifactError, match="one probability per output"):
        HeadSpec.from_dict({**spec.to_dict(), "thresholds": [0.5, 1.5, 0.5]})


# ---- data ----------------------------------------------------------------------------------------------------------
def test_label_sets_read_as_lists_names_ids_or_separated_strings(tmp_path: Path) -> None:
    import datasets

    from scalearn_cli.data.splits import make_splits

    items = [{"text": f"w{i}", "labels": labels} for i, labels in
             enumerate([["joy"], ["anger", "joy"], [], ["fear"]] * 10)]
    splits = make_splits(custom_task(["text"], "labels", MULTI_LABEL), datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(items)}))
    assert splits.spec.label_names == LABELS  # collected from train, recorded with the task
    all_rows = [*splits.train["labels"], *splits.dev["labels"], *splits.test["labels"]]
    assert sorted(map(tuple, all_rows)) == sorted([(0, 0, 1), (1, 0, 1), (0, 0, 0), (0, 1, 0)] * 10)
    joined = [{"text": r["text"], "labels": "|".join(r["labels"])} for r in items]
    spec = custom_task(["text"], "labels", MULTI_LABEL, label_separator="|")
    again = make_splits(spec, datasets.DatasetDict({"train": datasets.Dataset.from_list(joined)}))
    assert again.train["labels"] == splits.train["labels"] and again.spec.label_separator == "|"
    ids = make_splits(get_task("go_emotions"), datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"text": "x", "labels": [0, 27]}] * 10),
        "test": datasets.Dataset.from_list([{"text": "y", "labels": []}])}))
    assert ids.test["labels"] == [[0.0] * 28] and ids.train["labels"][0][27] == 1.0


def test_few_shot_sample_covers_every_label_it_can() -> None:
    from scalearn_cli.multilabel import subsample

    gold = np.zeros((200, 6))
    gold[:, 0] = 1  # a frequent label, and five rare ones held by one row each
    for label in range(1, 6):
        gold[10 * label, label] = 1
    picked = subsample(gold, 8, seed=0)
    assert len(picked) == 8 == len(set(picked.tolist())) and gold[picked].any(0).all()
    assert (subsample(gold, 8, seed=0) == picked).all() and len(subsample(gold, 3, seed=1)) == 3


BAD = {
    "mixed": ([["joy"], "anger"], ("row 1", "single label", "other rows hold lists")),
    "scalar": (["joy", "anger"], ("not lists", "--label-separator")),
    "nested": ([["joy", ["anger"]], ["fear"]], ("row 0", "flat list")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_label_sets_are_refused_in_one_line(case: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    values, needles = BAD[case]
    items = [{"text": f"good w{i}", "labels": values[i % len(values)]} for i in range(20)]
    data = write_jsonl(tmp_path / "bad.jsonl", items)
    out = tmp_path / "out"
    refused(invoke("train-source", *custom(data, tiny_model_dir), "--out", out, *TRAIN), out, *needles)


def test_labels_outside_the_label_set_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shelf = tmp_path / "go_emotions"
    shelf.mkdir()
    write_jsonl(shelf / "train.jsonl", [{"text": "good", "labels": [3, 28]}] * 10)  # go_emotions has ids 0..27
    write_jsonl(shelf / "test.jsonl", [{"text": "bad", "labels": [1]}])
    refused(invoke("train-source", "--task", "go_emotions", "--data-dir", shelf, "--model", tiny_model_dir,
                   "--out", out, *TRAIN), out, "row 0 of train", "label 28", "0..27")
    custom_dir = tmp_path / "custom"
    custom_dir.mkdir()
    write_jsonl(custom_dir / "train.jsonl", rows(20))
    write_jsonl(custom_dir / "validation.jsonl", [{"text": "good", "labels": ["joy", "sadness"]}])
    refused(invoke("train-source", *custom(custom_dir, tiny_model_dir, where="--data-dir"), "--out", out, *TRAIN),
            out, "'sadness'", "label set")


def test_threshold_options_are_checked_before_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "ml.jsonl", rows(40))
    out = tmp_path / "out"
    refused(invoke("train-source", *custom(data, tiny_model_dir), "--out", out, "--label-threshold", "1.5", *TRAIN),
            out, "--label-threshold", "tune")
    single = write_jsonl(tmp_path / "single.jsonl", [{"text": "good", "label": i % 2} for i in range(40)])
    refused(invoke("train-source", "--task", "custom", "--data-file", single, "--text-fields", "text", "--model",
                   tiny_model_dir, "--out", out, "--label-threshold", "tune", *TRAIN), out, "--label-threshold",
            "multi-label")
    refused(invoke("train-source", "--task", "custom", "--data-file", single, "--text-fields", "text", "--model",
                   tiny_model_dir, "--out", out, "--label-separator", ",", *TRAIN), out, "--label-separator")
    refused(invoke("train-source", "--task", "go_emotions", "--data-file", single, "--model", tiny_model_dir,
                   "--out", out, "--label-separator", ",", *TRAIN), out, "--label-separator", "--task custom")


# ---- end to end ----------------------------------------------------------------------------------------------------
def test_cli_train_transfer_eval_export_verify(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "ml.jsonl", rows())
    sources = []
    for seed in (0, 1):
        out = tmp_path / f"src{seed}"
        meta = ok_json(invoke("train-source", *custom(data, tiny_model_dir), "--out", out, "--seed", seed,
                              "--label-threshold", "tune", *TRAIN, "--json"))
        assert set(meta["metrics"]["test"]) == {"macro_f1", "micro_f1", "loss"}
        sources += ["-s", out]
    saved = json.loads((tmp_path / "src0" / "scalearn.json").read_text())
    assert len(saved["head"]["thresholds"]) == 3 and saved["data"]["threshold"] == "tune"
    assert saved["task"]["label_names"] == list(LABELS)
    assert "type: multi-label" in (tmp_path / "src0" / "README.md").read_text()
    target = tmp_path / "scalearn"
    meta = ok_json(invoke("transfer", *custom(data, tiny_model_dir)[:-2], "--out", target, *sources, *TRAIN,
                          "--select-on", "metric", "--label-threshold", "tune", "--json"))
    assert meta["select_on"] == "metric"
    report = ok_json(invoke("eval", target, "--json"))
    assert report["main_metric"] == "macro_f1"
    assert report["metrics"]["macro_f1"] == pytest.approx(meta["metrics"]["test"]["macro_f1"], abs=1e-6)
    tuned = json.loads((target / "scalearn.json").read_text())["head"]["thresholds"]
    assert list(report["per_label"]) == list(LABELS) and report["thresholds"] == tuned
    assert sum(v["support"] for v in report["per_label"].values()) > 0 and "macro_f1" in report["baseline"]
    exported = tmp_path / "merged"
    assert invoke("export", target, "--format", "merged", "--out", exported).exit_code == 0
    parity = ok_json(invoke("verify", exported, "--against", target, "--json"))
    assert parity["ok"] is True and parity["max_abs_diff"] <= 1e-5
    merged = ok_json(invoke("eval", exported, "--json"))
    assert merged["metrics"]["macro_f1"] == pytest.approx(report["metrics"]["macro_f1"], abs=1e-6)
    assert merged["thresholds"] == tuned  # the export carries the head's thresholds


def test_cli_push_pull_inspect_prune_and_few_shot(tiny_model_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALEARN_REGISTRY_KIND", raising=False)
    data = write_jsonl(tmp_path / "ml.jsonl", rows())
    source = tmp_path / "src"
    ok_json(invoke("train-source", *custom(data, tiny_model_dir), "--out", source, "--label-threshold", "tune", *TRAIN,
                   "--json"))
    registry = f"local:{tmp_path / 'registry'}"
    pushed = invoke("push", source, "org/ml", "--registry", registry)
    assert pushed.exit_code == 0, pushed.output
    pulled = invoke("pull", pushed.stdout.strip(), "--registry", registry)
    assert pulled.exit_code == 0, pulled.output
    ours, theirs = (ok_json(invoke("eval", folder, "--json")) for folder in (source, Path(pulled.stdout.strip())))
    assert theirs["thresholds"] == ours["thresholds"] and theirs["metrics"] == ours["metrics"]
    other = tmp_path / "other"
    ok_json(invoke("train-source", *custom(data, tiny_model_dir), "--out", other, "--seed", 1, *TRAIN, "--json"))
    assert json.loads((other / "scalearn.json").read_text())["head"]["thresholds"] == [0.5] * 3  # the default
    target = tmp_path / "t"
    few = ok_json(invoke("transfer", *custom(data, tiny_model_dir)[:-2], "--out", target, "-s", other,
                         "-s", "org/ml", "--registry", registry, "--few-shot", 12, *TRAIN, "--json"))
    assert few["select_on"] == "metric"  # few-shot: the best dev macro-F1
    assert json.loads((target / "scalearn.json").read_text())["training"]["train_examples"] == 12
    shares = ok_json(invoke("inspect", target, "--json"))["sources"]
    assert len(shares) == 2
    pruned = invoke("prune", target, "--keep", 1, "--out", tmp_path / "pruned", "--epochs", 1)
    assert pruned.exit_code == 0, pruned.output
    assert ok_json(invoke("eval", tmp_path / "pruned", "--json"))["main_metric"] == "macro_f1"


@pytest.mark.parametrize("method", ["average", "adaptersoup", "adapterfusion", "lorahub"])
def test_every_baseline_transfers_to_a_multi_label_target(method: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    from helpers import make_source

    data = write_jsonl(tmp_path / "ml.jsonl", rows(60))
    sources = [a for i in range(2) for a in ("-s", make_source(tmp_path / f"s{i}", tiny_model_dir, seed=i))]
    meta = ok_json(invoke("transfer", *custom(data, tiny_model_dir)[:-2], "--out", tmp_path / "t", *sources,
                          "--method", method, "--few-shot", 16, "--max-steps", 2, "--batch-size", 8,
                          "--max-length", 16, "--json"))
    assert meta["metrics"]["test"].keys() >= {"macro_f1", "micro_f1"} and meta["select_on"] == "metric"


def test_go_emotions_loads_from_the_shelf() -> None:
    from helpers import shared_data_dir

    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits

    folder = shared_data_dir() / "shelf" / "go_emotions"
    if not folder.is_dir():
        pytest.skip(f"shelf data not found at {folder}")
    spec = get_task("go_emotions")
    splits = make_splits(spec, load_raw(spec, data_dir=folder), max_train_samples=200)
    assert spec.num_labels == 28 and spec.label_names[-1] == "neutral"
    assert len(splits.test) == sum(1 for _ in (folder / "test.jsonl").open())  # scored on the files' test split
    assert np.asarray(splits.train["labels"]).shape == (200, 28)


def test_bench_runner_takes_go_emotions_as_a_target(tmp_path: Path) -> None:
    import sys
    from argparse import Namespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import quality_runner

    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.metrics import majority_baseline

    shelf = tmp_path / "root" / "shelf" / "go_emotions"
    shelf.mkdir(parents=True)
    write_jsonl(shelf / "train.jsonl", [{"text": f"w{i}", "labels": [i % 28, 27]} for i in range(40)])
    write_jsonl(shelf / "validation.jsonl", [{"text": "other", "labels": [0]}] * 3)
    write_jsonl(shelf / "test.jsonl", [{"text": f"t{i}", "labels": [i % 3] if i else []} for i in range(12)])
    args = Namespace(work=tmp_path / "work", data_root=tmp_path / "root", test_max=8)
    folder = quality_runner.capped_data(args, "go_emotions", 18)
    assert quality_runner.task_dir(args.data_root, "go_emotions") == shelf
    assert quality_runner.task_dir(args.data_root, "rte") == args.data_root / "glue" / "rte"
    spec = get_task("go_emotions")
    splits = make_splits(spec, load_raw(spec, data_dir=folder), max_train_samples=18)
    assert len(splits.test) == 8 and all(t.startswith("t") for t in splits.test["text"])  # the shelf's test rows
    baseline = majority_baseline(spec, splits.train["labels"], splits.test["labels"])
    assert baseline["macro_f1"] == 0.0  # every train row holds neutral: the baseline predicts it, never right here
