"""A shelf as one argument (``transfer --shelf``: a registry or a folder, filters, what composition.json records) and
learned selection (``transfer --select K``, ``scalearn select``), on tiny random models."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from helpers import WORDS, invoke, make_source

TRAIN = ["--epochs", "1", "--batch-size", "16", "--max-length", "16"]
# a Hub-protocol server and an isolated HF cache for every test: never the real Hub
pytestmark = pytest.mark.usefixtures("hf_env")


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    """A target whose label is whether 'good' or 'great' occurs: a LoRA trained on it is the informative source."""
    rng = random.Random(0)
    pool = WORDS[:10] + [f"w{i}" for i in range(20)]
    rows = []
    for _ in range(240):
        words = [rng.choice(pool) for _ in range(6)]
        rows.append({"sentence": " ".join(words), "label": int("good" in words or "great" in words)})
    path = tmp_path_factory.mktemp("task") / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def data(task_file: Path) -> list[Any]:
    return ["--task", "custom", "--data-file", task_file, "--text-fields", "sentence"]


@pytest.fixture(scope="module")
def folder_shelf(tmp_path_factory, tiny_model_dir) -> Path:
    """A plain folder of four scalearn LoRA folders (tasks sst2, imdb, rte, mrpc), a PEFT LoRA and a data folder."""
    from helpers import peft_lora

    shelf = tmp_path_factory.mktemp("folder-shelf")
    for seed, task in enumerate(("sst2", "imdb", "rte", "mrpc")):
        make_source(shelf / f"{task}-lora", tiny_model_dir, "lora", seed=seed, task=task)
    peft_lora(shelf / "plain-peft", tiny_model_dir, 7)
    (shelf / "notes").mkdir()
    (shelf / "notes" / "README.txt").write_text("not an adapter")
    return shelf


@pytest.fixture
def registry_shelf(tmp_path, tiny_model_dir) -> tuple[Path, Any]:
    from scalearn_cli.registry.local import LocalRegistry

    registry = LocalRegistry(tmp_path / "registry")
    for seed, task in enumerate(("sst2", "rte", "qnli")):
        registry.push(make_source(tmp_path / "src" / task, tiny_model_dir, "lora", seed=seed, task=task),
                      f"org/{task}-lora")
    return tmp_path / "registry", registry


def record(out: Path) -> dict[str, Any]:
    return json.loads((out / "composition.json").read_text())


# ---- --shelf ---------------------------------------------------------------------------------------------
def test_a_registry_shelf_records_each_source_by_commit_and_eval_keeps_that_set(registry_shelf, tmp_path,
                                                                                tiny_model_dir, task_file):
    root, registry = registry_shelf
    out = tmp_path / "comp"
    result = invoke("transfer", *data(task_file), "--shelf", f"local:{root}", *TRAIN, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    composed = record(out)
    assert [s["id"] for s in composed["sources"]] == ["org/qnli-lora", "org/rte-lora", "org/sst2-lora"]
    for source in composed["sources"]:
        assert source["registry"] == f"local:{root}" and source["revision"] == registry.resolve(source["id"])
    assert composed["shelf"]["shelves"] == [f"local:{root}"] and len(composed["shelf"]["from_shelf"]) == 3
    before = json.loads(invoke("eval", out, "--json").stdout)
    registry.push(make_source(tmp_path / "late", tiny_model_dir, "lora", seed=9, task="mrpc"), "org/mrpc-lora")
    registry.push(make_source(tmp_path / "late2", tiny_model_dir, "lora", seed=10, task="sst2"), "org/sst2-lora")
    after = invoke("eval", out, "--json")  # a new source, and a new commit of a recorded one: the record holds
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["metrics"] == before["metrics"]
    exported = invoke("export", out, "--out", tmp_path / "export")
    assert exported.exit_code == 0, exported.output
    assert invoke("verify", tmp_path / "export", "--against", out).exit_code == 0
    # a registry folder is a shelf too, as is the registry `--registry local:DIR` configures
    again = invoke("transfer", *data(task_file), "--shelf", root, "--shelf-include", "org/rte-*", "-s",
                   tmp_path / "late", *TRAIN, "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert [s["id"] for s in record(tmp_path / "again")["sources"]] == [str(tmp_path / "late"), "org/rte-lora"]


def test_a_hub_shelf_is_filtered_on_its_listing_and_recorded_on_its_endpoint(hub_server, tmp_path, tiny_model_dir,
                                                                              task_file):
    from scalearn_cli.registry import get_registry

    hub = get_registry(hub_server.url)
    for seed, task in enumerate(("sst2", "rte")):
        hub.push(make_source(tmp_path / task, tiny_model_dir, "lora", seed=seed, task=task), f"org/{task}-lora")
    out = tmp_path / "comp"
    result = invoke("transfer", *data(task_file), "--shelf", "hub", "--endpoint", hub_server.url, "--shelf-family",
                    "nli", *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    [source] = record(out)["sources"]
    assert (source["id"], source["registry"]) == ("org/rte-lora", hub_server.url)
    assert source["revision"] == hub.resolve("org/rte-lora")
    assert invoke("eval", out, "--endpoint", hub_server.url, "--json").exit_code == 0
    untrusted = invoke("eval", out)  # HF_ENDPOINT is another endpoint: a record never chooses where a token goes
    assert untrusted.exit_code == 1 and "--endpoint" in untrusted.stderr


def test_a_folder_shelf_composes_its_adapter_folders_and_filters_them(folder_shelf, tmp_path, task_file):
    out = tmp_path / "comp"
    result = invoke("-v", "transfer", *data(task_file), "--shelf", folder_shelf, "--shelf-family", "sentiment,nli",
                    "--shelf-exclude", "imdb-*", *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    assert [s["task"] for s in record(out)["sources"]] == ["rte", "sst2"]
    assert record(out)["shelf"]["filters"]["families"] == ["sentiment", "nli"]
    skipped = {s["id"]: s["reason"] for s in record(out)["shelf"]["skipped"]}  # the data folder is named, not dropped
    assert skipped["notes"].startswith("not an adapter folder")
    assert invoke("eval", out, "--json").exit_code == 0


def test_shelf_filters_at_the_library_level(folder_shelf, tiny_model_dir):
    from scalearn_cli.resolve import Resolver
    from scalearn_cli.shelf import ShelfFilter, open_shelves

    def ids(**filters) -> list[str]:
        found = open_shelves((str(folder_shelf),), ShelfFilter(**filters), Resolver(), [])
        return [Path(s.ref.id).name for s in found.sources]

    assert ids() == ["imdb-lora", "mrpc-lora", "plain-peft", "rte-lora", "sst2-lora"]
    assert ids(families=("paraphrase",)) == ["mrpc-lora"]
    assert ids(include=("*-lora",), exclude=("s*",)) == ["imdb-lora", "mrpc-lora", "rte-lora"]
    assert ids(kinds=("lora",), families=("other",)) == ["plain-peft"]  # a PEFT folder's task is its folder name


def test_a_source_of_another_base_model_is_skipped_by_name(folder_shelf, tmp_path, tiny_model_dir, task_file):
    from helpers import peft_lora

    shelf = tmp_path / "mixed"
    shutil.copytree(folder_shelf / "rte-lora", shelf / "rte-lora")
    peft_lora(shelf / "elsewhere", tiny_model_dir, 3, base_name="other-org/other-model")
    out = tmp_path / "comp"
    result = invoke("transfer", *data(task_file), "--shelf", shelf, "--model", tiny_model_dir, *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    assert "elsewhere" in result.stderr and "other-org/other-model" in result.stderr
    assert [s["task"] for s in record(out)["sources"]] == ["rte"]
    assert record(out)["shelf"]["skipped"] == [{"id": "elsewhere", "reason": "base model other-org/other-model"}]
    nothing = invoke("transfer", *data(task_file), "--shelf", shelf, "--shelf-include", "elsewhere", "--model",
                     tiny_model_dir, "--out", tmp_path / "none")
    assert nothing.exit_code == 1 and "no source on the shelf was trained on" in nothing.stderr
    assert "--model" in nothing.stderr and not (tmp_path / "none").exists()


@pytest.mark.parametrize("args, code, message", [
    (["--shelf", "EMPTY"], 2, "holds no adapter sources"),
    (["--shelf", "SHELF", "--shelf-family", "astrology"], 2, "unknown task family 'astrology'"),
    (["--shelf", "SHELF", "--shelf-include", "nope-*"], 2, "'nope-*' matches none of the shelf's"),
    (["--shelf", "SHELF", "--shelf-exclude", "nope-*"], 2, "'nope-*' matches none of the shelf's"),
    (["--shelf", "SHELF", "--shelf-kind", "bottleneck"], 2, "keep none of its"),
    (["--shelf", "SHELF", "--shelf-kind", "prefix"], 2, "unknown adapter kind 'prefix'"),
    (["--shelf", "MISSING"], 2, "neither a folder nor a registry"),
    (["-s", "SHELF/rte-lora", "--shelf-family", "nli"], 2, "filter a --shelf"),
    (["--shelf", "SHELF", "--select", "9"], 2, "keeps all of the 5 candidate sources"),
    (["-s", "SHELF/rte-lora", "--select-steps", "5"], 2, "pass --select"),
    (["--shelf", "SHELF", "--select", "0"], 2, "must be >= 1"),
    (["--shelf", "SHELF", "--select", "2", "--select-steps", "5", "--select-epochs", "1"], 2, "pass one budget"),
])
def test_bad_shelf_inputs_are_one_line_errors_and_write_nothing(args, code, message, folder_shelf, tmp_path,
                                                                task_file):
    (tmp_path / "empty").mkdir()
    paths = {"EMPTY": str(tmp_path / "empty"), "SHELF": str(folder_shelf), "MISSING": str(tmp_path / "missing")}
    args = [paths.get(a, a.replace("SHELF", str(folder_shelf))) for a in args]
    result = invoke("transfer", *data(task_file), *args, *TRAIN, "--out", tmp_path / "out")
    assert result.exit_code == code, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


# ---- --select K ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory, tiny_model_dir, task_file) -> Path:
    """Seven random LoRA sources and, among them, one trained on the target itself: the one selection must keep."""
    shelf = tmp_path_factory.mktemp("planted")
    result = invoke("train-source", *data(task_file), "--model", tiny_model_dir, "--epochs", "6", "--lr", "5e-3",
                    "--batch-size", "16", "--max-length", "16", "--seed", "0", "--out", shelf / "d-own")
    assert result.exit_code == 0, result.output
    for i, name in enumerate("abcefgh"):
        make_source(shelf / f"{name}-random", tiny_model_dir, "lora", seed=i + 1, task="sst2")
    return shelf


def test_select_keeps_the_targets_own_adapter_and_records_the_choice(planted, tmp_path, task_file):
    out = tmp_path / "comp"
    result = invoke("transfer", *data(task_file), "--shelf", planted, "--select", "1", "--select-steps", "30",
                    *TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    composed = record(out)
    assert [Path(s["id"]).name for s in composed["sources"]] == ["d-own"]
    chosen = composed["selection"]
    assert chosen["k"] == 1 and chosen["n_candidates"] == 8 and chosen["steps"] == 30 and chosen["seconds"] > 0
    assert chosen["variant"] == "scalearn-uniform" and chosen["sparsity"] == 0.003 and "prune" in chosen["criterion"]
    scores = {Path(s["ref"]).name: s for s in chosen["scores"]}
    assert scores["d-own"]["rank"] == 1 and scores["d-own"]["chosen"]
    assert sum(s["share"] for s in chosen["scores"]) == pytest.approx(1.0)
    shown = invoke("inspect", out)
    assert shown.exit_code == 0 and "selection: 1 of 8" in shown.stdout and "d-own" in shown.stdout
    assert invoke("eval", out, "--json").exit_code == 0


def test_select_command_prints_and_saves_the_choice(planted, tmp_path, task_file):
    saved = tmp_path / "choice.json"
    result = invoke("select", *data(task_file), "--shelf", planted, "--keep", "2", "--steps", "30",
                    "--batch-size", "16", "--max-length", "16", "--out", saved, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert json.loads(saved.read_text()) == printed
    assert len(printed["chosen"]) == 2 and any(c.endswith("d-own") for c in printed["chosen"])
    assert printed["selection"]["k"] == 2 and len(printed["selection"]["scores"]) == 8
    again = invoke("select", *data(task_file), "--shelf", planted, "--keep", "2", "--out", saved)
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    table = invoke("select", *data(task_file), "--shelf", planted, "-k", "1", "--steps", "30", "--batch-size", "16",
                   "--max-length", "16")
    assert table.exit_code == 0 and "d-own" in table.stdout and "chose 1 of 8" in table.stdout


# ---- hundreds of sources ---------------------------------------------------------------------------------
def tiny_peft_shelf(folder: Path, template: Path, n: int) -> Path:
    """``n`` plain PEFT LoRA folders with random weights, written straight in PEFT's format from one template."""
    from safetensors.torch import load_file

    tensors = load_file(str(template / "adapter_model.safetensors"))
    config = (template / "adapter_config.json").read_text()
    generator = torch.Generator().manual_seed(0)
    for i in range(n):
        one = folder / f"lora-{i:03d}"
        one.mkdir(parents=True)
        (one / "adapter_config.json").write_text(config)
        save_file({k: torch.randn(v.shape, generator=generator) * 0.3 for k, v in tensors.items()},
                  str(one / "adapter_model.safetensors"))
    return folder


def test_256_tiny_sources_compose_and_select_in_seconds(tmp_path, tiny_model_dir, task_file):
    from helpers import peft_lora

    template = peft_lora(tmp_path / "template", tiny_model_dir, 0)
    shelf = tiny_peft_shelf(tmp_path / "shelf", template, 256)
    out = tmp_path / "comp"
    result = invoke("transfer", *data(task_file), "--shelf", shelf, "--select", "4", "--select-steps", "3",
                    "--max-steps", "3", "--batch-size", "16", "--max-length", "16", "--out", out)
    assert result.exit_code == 0, result.output
    composed = record(out)
    assert composed["n_sources"] == 4 and composed["selection"]["n_candidates"] == 256
    assert len(composed["shelf"]["from_shelf"]) == 256
    all_of_them = invoke("transfer", *data(task_file), "--shelf", shelf, "--shelf-exclude", "lora-00*",
                         "--max-steps", "2", "--batch-size", "16", "--max-length", "16", "--out", tmp_path / "all")
    assert all_of_them.exit_code == 0, all_of_them.output
    assert record(tmp_path / "all")["n_sources"] == 246


def test_a_wide_shelf_over_a_few_rows_suggests_a_selection(tmp_path, tiny_model_dir, task_file):
    from helpers import peft_lora

    from scalearn_cli.inspection import SELECT_HINT_ROWS, SELECT_HINT_SOURCES

    shelf = tiny_peft_shelf(tmp_path / "shelf", peft_lora(tmp_path / "template", tiny_model_dir, 0),
                            SELECT_HINT_SOURCES)
    few = ["--max-train-samples", "40", "--max-steps", "2", "--batch-size", "16", "--max-length", "16", "--json"]
    wide = invoke("transfer", *data(task_file), "--shelf", shelf, *few, "--out", tmp_path / "all")
    assert wide.exit_code == 0, wide.output
    hint = json.loads(wide.stdout)["hint"]
    assert f"{SELECT_HINT_SOURCES} sources learned from 40 training rows" in hint and "--select" in hint
    table = invoke("transfer", *data(task_file), "--shelf", shelf, *few[:-1], "--out", tmp_path / "table")
    assert "Hint:" in table.stdout and "--select" in " ".join(table.stdout.split())
    silent = {  # a selection made, a fixed combiner (no ω learned), fewer sources, more rows than a few-shot target
        "selected": ["--shelf", shelf, "--select", "4", "--select-steps", "2", *few],
        "average": ["--shelf", shelf, "--method", "average", *few],
        "narrow": ["--shelf", shelf, "--shelf-exclude", "lora-000", *few],
        "rows": ["--shelf", shelf, *few[2:], "--max-train-samples", str(SELECT_HINT_ROWS + 20)],
    }
    for name, args in silent.items():
        result = invoke("transfer", *data(task_file), *args, "--out", tmp_path / name)
        assert result.exit_code == 0, (name, result.output)
        assert "hint" not in json.loads(result.stdout), name
