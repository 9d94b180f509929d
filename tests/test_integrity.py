"""Integrity is never optional: a folder without its record is refused by every command that reads one, the model
card is covered by the record, and a base model whose weights changed is refused unless the user accepts it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TRAIN, invoke, make_source, two_source_workspace
from safetensors.torch import load_file

from scalearn_cli import artifacts
from scalearn_cli.artifacts import METADATA_FILE, MODEL_CARD_FILE, OMEGA_FILE
from scalearn_cli.errors import ArtifactError, ModelError


def refused(result: Any, *words: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def strip_record(folder: Path, *keys: str, **edits: Any) -> None:
    """Delete ``keys`` from scalearn.json (an editor switching integrity off) and apply ``edits``."""
    data = artifacts.read_json(folder / METADATA_FILE)
    for key in keys:
        data.pop(key, None)
    data.update(edits)
    artifacts.write_json(folder / METADATA_FILE, data)


@pytest.fixture(scope="module")
def work(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("integrity")
    return two_source_workspace(root, tiny_model_dir, "--max-length", "16")


@pytest.fixture
def stripped_comp(work: dict[str, Path], tmp_path: Path) -> Path:
    """The composition with its ``files`` record and digest deleted and ω changed."""
    comp = Path(shutil.copytree(work["comp"], tmp_path / "C"))
    omega = load_file(str(comp / OMEGA_FILE))
    artifacts.save_tensors(comp / OMEGA_FILE, {k: v * 3 for k, v in omega.items()})
    strip_record(comp, "files", "content_hash", "metadata_sha256")
    return comp


# ---- 1. a folder without its record -----------------------------------------------------------------------------
def test_push_refuses_a_source_whose_digest_was_deleted(work: dict[str, Path], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(work["s0"], tmp_path / "s"))
    data = artifacts.read_json(folder / METADATA_FILE)
    strip_record(folder, "metadata_sha256", metrics={"test": {"accuracy": 99.0}})
    assert data["metrics"] != artifacts.read_json(folder / METADATA_FILE)["metrics"]
    refused(invoke("push", folder, "org/s", "--registry", f"local:{tmp_path / 'reg'}"), "no integrity record",
            "scalearn record")
    assert not (tmp_path / "reg").exists() or not any((tmp_path / "reg").rglob("scalearn.json"))


@pytest.mark.parametrize("command", ["eval", "export", "inspect", "prune"])
def test_every_reader_refuses_a_composition_stripped_of_its_record(command: str, stripped_comp: Path,
                                                                   tmp_path: Path) -> None:
    extra = {"eval": [], "export": ["--out", tmp_path / "E"], "inspect": [],
             "prune": ["--keep", "1", "--epochs", "1", "--out", tmp_path / "P"]}[command]
    refused(invoke(command, stripped_comp, *extra), "no integrity record")
    assert not (tmp_path / "E").exists() and not (tmp_path / "P").exists()


def test_transfer_refuses_a_source_stripped_of_its_record(work: dict[str, Path], tmp_path: Path) -> None:
    source = Path(shutil.copytree(work["s1"], tmp_path / "s1"))
    strip_record(source, "files", "content_hash")
    result = invoke("transfer", "--task", "rte", "--data-dir", work["data"], "-s", work["s0"], "-s", source, *TRAIN,
                    "--out", tmp_path / "T")
    refused(result, "no integrity record")
    assert not (tmp_path / "T").exists()


def test_record_re_saves_an_unrecorded_folder_and_never_an_edited_one(work: dict[str, Path], tmp_path: Path) -> None:
    old = Path(shutil.copytree(work["s0"], tmp_path / "old"))
    strip_record(old, "files", "content_hash", "metadata_sha256", "card_sha256")  # as written before records
    with pytest.raises(ArtifactError, match="no integrity record"):
        artifacts.read_folder(old)
    assert invoke("record", old).exit_code == 0
    assert artifacts.read_folder(old).files == artifacts.read_folder(work["s0"]).files
    edited = Path(shutil.copytree(work["s0"], tmp_path / "edited"))
    strip_record(edited, metrics={"test": {"accuracy": 99.0}})  # the digest no longer matches
    refused(invoke("record", edited), "was edited after scalearn wrote it")


# ---- 2. the model card is covered by the record -----------------------------------------------------------------
def test_an_edited_model_card_is_refused_by_push_and_eval(work: dict[str, Path], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(work["comp"], tmp_path / "C"))
    card = folder / MODEL_CARD_FILE
    card.write_text(card.read_text().replace("accuracy", "accuracy (state of the art!)"))
    refused(invoke("push", folder, "org/c", "--registry", f"local:{tmp_path / 'reg'}"), "README.md changed")
    refused(invoke("eval", folder), "README.md changed")
    card.unlink()
    refused(invoke("eval", folder), "README.md is missing")


def test_a_card_no_record_covers_is_never_pushed(work: dict[str, Path], tmp_path: Path) -> None:
    from scalearn_cli.registry.base import collect_push_files

    folder = Path(shutil.copytree(work["s0"], tmp_path / "old"))
    strip_record(folder, "files", "content_hash", "metadata_sha256", "card_sha256")
    card = (folder / MODEL_CARD_FILE).read_text()
    (folder / MODEL_CARD_FILE).unlink()
    artifacts.folders.record_folder(folder)  # recorded without a card, as before cards were recorded
    (folder / MODEL_CARD_FILE).write_text(card + "\nedited later\n")  # a card the record does not cover
    assert MODEL_CARD_FILE not in collect_push_files(folder)
    assert MODEL_CARD_FILE in collect_push_files(work["s0"])


# ---- 3. a base model whose weights changed ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def changed_base(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A source trained on a copy of the tiny model, whose weights are then replaced."""
    from transformers import AutoModel

    root = tmp_path_factory.mktemp("base-change")
    base = Path(shutil.copytree(tiny_model_dir, root / "base"))
    source = make_source(root / "src", base, seed=3)
    model = AutoModel.from_pretrained(base)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(0.01)
    model.save_pretrained(base)  # same folder, other weights: its sha256 revision changes
    return {"base": base, "source": source}


def test_a_changed_base_model_is_refused_unless_accepted(changed_base: dict[str, Path], work: dict[str, Path]) -> None:
    from scalearn_cli.backbone import allow_base_change
    from scalearn_cli.stages.source import load_source_model

    with pytest.raises(ModelError, match="--allow-base-change"):
        load_source_model(changed_base["source"])
    refused(invoke("eval", changed_base["source"], "--data-dir", work["data"]), "weights changed since",
            "--allow-base-change")
    accepted = invoke("--allow-base-change", "eval", changed_base["source"], "--data-dir", work["data"])
    assert accepted.exit_code == 0, accepted.output
    try:
        allow_base_change(True)
        load_source_model(changed_base["source"])
    finally:
        allow_base_change(False)


def test_transfer_over_sources_of_a_changed_base_is_refused(changed_base: dict[str, Path], work: dict[str, Path],
                                                            tmp_path: Path) -> None:
    result = invoke("transfer", "--task", "rte", "--data-dir", work["data"], "-s", changed_base["source"], *TRAIN,
                    "--out", tmp_path / "T")
    refused(result, "weights changed since", "--allow-base-change")
    assert not (tmp_path / "T").exists()
