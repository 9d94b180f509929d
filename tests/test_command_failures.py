"""Commands that fail or half-succeed: a failed prune leaves nothing, a run that never beat its initial weights says
so, eval on another task is explicit, messages name what to fix, and push holds a folder to its own record.
Offline, CPU, the tiny BERT of conftest.py."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from helpers import TRAIN, invoke, make_source, refingerprint
from safetensors.torch import load_file

from scalearn_cli import artifacts
from scalearn_cli.errors import ArtifactError

def _rows(n: int, fields: tuple[str, ...], seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "the a movie film good bad great awful plot".split()
    rows = [{**{f: " ".join(rng.choice(words) for _ in range(5)) for f in fields}, "label": i % 2} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def work(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two fabricated rte sources, a qnli-shaped and an sst2-shaped data dir, and a short scalearn composition."""
    root = tmp_path_factory.mktemp("failures")
    sources = [make_source(root / f"src{i}", tiny_model_dir, seed=i) for i in range(2)]
    dirs = {}
    for task, fields in (("rte", ("sentence1", "sentence2")), ("qnli", ("question", "sentence")),
                         ("sst2", ("sentence",))):
        (root / task).mkdir()
        (root / task / "train.jsonl").write_text(_rows(40, fields))
        (root / task / "validation.jsonl").write_text(_rows(10, fields, seed=1))
        dirs[task] = root / task
    comp = root / "comp"
    result = invoke("transfer", "--task", "rte", "--data-dir", dirs["rte"], "-s", sources[0], "-s", sources[1],
                    *TRAIN, "--out", comp)
    assert result.exit_code == 0, result.output
    return {"root": root, "src": sources[0], "comp": comp, **dirs}


# ---- a prune that fails after training leaves no --out ---------------------------------------------------
def test_prune_failing_after_training_leaves_nothing(work: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from scalearn_cli import prune as prune_module
    from scalearn_cli.stages import transfer as transfer_stage

    trained = []

    def failing_score(*args: Any, **kwargs: Any) -> Any:
        trained.append(True)  # score runs once training has finished
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(transfer_stage, "score", failing_score)
    out = work["root"] / "pruned"
    with pytest.raises(RuntimeError, match="scoring failed"):
        prune_module.prune(work["comp"], out, keep=1, epochs=1)
    assert trained and not out.exists()
    assert not [p for p in work["root"].iterdir() if p.name.startswith(".pruned")]  # no staging left behind

    monkeypatch.undo()
    monkeypatch.setattr(prune_module, "_summed_rank", lambda sources: 1 / 0)  # the report's last step fails
    with pytest.raises(ZeroDivisionError):
        prune_module.prune(work["comp"], out, keep=1, epochs=1)
    assert not out.exists()


# ---- a run that never improved on its initial weights is recorded and reported ---------------------------
def test_a_run_that_never_beats_its_initial_weights_says_so(
    work: dict[str, Path], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scalearn_cli import train

    real, calls = train.evaluate, []

    def initial_wins(model, loader, accelerator=None):  # the initial weights score a dev loss no epoch beats
        loss, logits, labels = real(model, loader, accelerator)
        calls.append(loss)
        return (loss - 10.0 if len(calls) == 1 else loss), logits, labels

    monkeypatch.setattr(train, "evaluate", initial_wins)
    out = work["root"] / "untrained"
    result = invoke("train-source", "--model", tiny_model_dir, "--task", "rte", "--data-dir", work["rte"], *TRAIN,
                    "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_epoch"] == 1 and "never improved on the initial weights" in summary["warning"]
    training = artifacts.read_json(out / artifacts.METADATA_FILE)["training"]
    assert training["improved_on_initial"] is False and training["initial_dev_loss"] == pytest.approx(calls[0] - 10)
    calls.clear()
    table = invoke("train-source", "--model", tiny_model_dir, "--task", "rte", "--data-dir", work["rte"], *TRAIN,
                   "--out", work["root"] / "untrained-table")
    assert "Warning:" in table.stdout and "never improved" in " ".join(table.stdout.split())
    assert " ".join(table.output.split()).count("never improved") == 1, table.output  # said once, in the summary
    monkeypatch.undo()
    fine = json.loads(invoke("train-source", "--model", tiny_model_dir, "--task", "rte", "--data-dir", work["rte"],
                             "--epochs", "2", "--batch-size", "8", "--max-length", "16", "--lr", "0.01",
                             "--out", work["root"] / "trained", "--json").stdout)
    if "warning" not in fine:  # no warning when an epoch beat the initial weights
        assert artifacts.read_json(work["root"] / "trained" / "scalearn.json")["training"]["improved_on_initial"]


# ---- eval on another task --------------------------------------------------------------------------------
def test_eval_on_another_task_is_explicit_and_needs_the_same_labels(work: dict[str, Path]) -> None:
    own = json.loads(invoke("eval", work["src"], "--data-dir", work["rte"], "--json").stdout)
    assert own["task"] == own["trained_on"] == "rte"
    other = invoke("eval", work["src"], "--task", "qnli", "--data-dir", work["qnli"], "--json")
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["task"] == "qnli" and json.loads(other.stdout)["trained_on"] == "rte"
    table = invoke("eval", work["src"], "--task", "qnli", "--data-dir", work["qnli"])
    assert "adapter trained on rte" in " ".join(table.stdout.split())  # the title may wrap
    refused = invoke("eval", work["src"], "--task", "sst2", "--data-dir", work["sst2"])
    assert refused.exit_code == 2 and refused.stderr.count("Error:") == 1
    assert "trained on 'rte'" in refused.stderr and "negative, positive" in refused.stderr
    flipped = invoke("eval", work["src"], "--task", "wnli", "--data-dir", work["rte"])  # same names, other order
    assert flipped.exit_code == 2 and "cannot score task 'wnli'" in flipped.stderr


# ---- messages --------------------------------------------------------------------------------------------
def test_float_labels_are_shown_as_written(tmp_path: Path) -> None:
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.errors import DataError
    from scalearn_cli.tasks import custom_task

    rows = [{"s": "good", "label": 1.0}, {"s": "bad", "label": 0}, {"s": "plot", "label": None}] * 10
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = custom_task(["s"], "label", "classification", None)
    with pytest.raises(DataError) as exc:
        make_splits(spec, load_raw(spec, data_file=tmp_path / "f.jsonl"))
    assert "(0, 1)" in str(exc.value) and "0.0" not in str(exc.value)


def test_missing_lora_target_names_the_option_and_the_linear_layers(work: dict[str, Path], tiny_model_dir: Path):
    result = invoke("train-source", "--model", tiny_model_dir, "--task", "rte", "--data-dir", work["rte"], *TRAIN,
                    "--lora-targets", "foo", "--out", work["root"] / "foo")
    assert result.exit_code == 2 and result.stderr.count("Error:") == 1, result.output  # UsageError: exit 2
    assert "--lora-targets" in result.stderr and "query,key,value,dense" in result.stderr


def test_failed_verify_prints_failed_once_without_a_second_error(work: dict[str, Path], tmp_path: Path) -> None:
    from scalearn_cli.export import export

    out = Path(export(work["comp"], tmp_path / "lora", "peft-lora")["out"])
    weights = load_file(str(out / "adapter_model.safetensors"))
    artifacts.save_tensors(out / "adapter_model.safetensors", {k: v * 1.5 for k, v in weights.items()})
    refingerprint(out)  # a wrong export with a consistent record: the logit parity fails
    result = invoke("verify", out, "--against", work["comp"])
    assert result.exit_code == 1 and "FAILED" in result.stdout
    assert "Exit" not in result.stderr and "Error" not in result.stderr


# ---- push refuses a folder that fails its own record -----------------------------------------------------
def test_push_refuses_an_edited_weight_file_or_scalearn_json(work: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from scalearn_cli.registry.base import collect_push_files

    assert "scalearn.json" in collect_push_files(work["src"])
    weights = shutil.copytree(work["src"], tmp_path / "weights")
    tensors = load_file(str(weights / "adapter_model.safetensors"))
    artifacts.save_tensors(weights / "adapter_model.safetensors", {k: v + 1 for k, v in tensors.items()})
    with pytest.raises(ArtifactError, match="adapter_model.safetensors changed since it was saved"):
        collect_push_files(weights)
    record = shutil.copytree(work["src"], tmp_path / "record")
    meta = artifacts.read_json(record / artifacts.METADATA_FILE)
    meta["metrics"]["test"]["accuracy"] = 99.0  # a better score than it earned
    artifacts.write_json(record / artifacts.METADATA_FILE, meta)
    with pytest.raises(ArtifactError, match="was edited after scalearn wrote it"):
        collect_push_files(record)
    pushed = invoke("push", record, "org/edited", "--registry", f"local:{tmp_path / 'registry'}")
    assert pushed.exit_code != 0 and "edited after scalearn wrote it" in pushed.stderr
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").rglob("scalearn.json"))

