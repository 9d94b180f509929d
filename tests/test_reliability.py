"""Bad inputs that used to fail late, silently or with a traceback (issue 14): each ends in one clear line.

Offline and CPU-only; the models are the tiny BERT of conftest.py.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from scalearn_cli.backbone import load_backbone
from scalearn_cli.errors import ModelError


def one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    return message


# ---- pickle weights --------------------------------------------------------------------------------------
def _pickled_copy(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model with its weights as ``pytorch_model.bin`` (torch.save) instead of model.safetensors."""
    from safetensors.torch import load_file

    shutil.copytree(tiny_model_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_local_folder_with_only_pickle_weights_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _pickled_copy(tiny_model_dir, tmp_path / "pickled")
    with pytest.raises(ModelError) as exc:
        load_backbone(str(folder))
    assert one_line(exc).startswith(f"refusing to unpickle {folder / 'pytorch_model.bin'}: use safetensors")


def test_hub_model_whose_pickle_fails_the_weights_only_load_is_refused(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached hub repo (not a local folder) reaches transformers; its weights-only refusal becomes one line."""
    from huggingface_hub import constants

    commit = "c" * 40
    repo = tmp_path / "cache" / "models--org--pickled"
    snapshot = _pickled_copy(tiny_model_dir, repo / "snapshots" / commit)
    torch.save({"x": Path("not/a/tensor")}, snapshot / "pytorch_model.bin")  # a global weights_only refuses
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "org/pickled" is no folder here
    with pytest.raises(ModelError) as exc:
        load_backbone("org/pickled")
    assert one_line(exc).startswith("refusing to unpickle the weights of org/pickled: use safetensors")


# ---- model paths -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["./no-such-model", "~/no-such-scalearn-model", "models/a/b", "{tmp}/gone"])
def test_missing_model_folder_says_so(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = model.format(tmp=tmp_path)
    with pytest.raises(ModelError) as exc:
        load_backbone(model)
    assert one_line(exc).startswith(f"model folder {model} does not exist")


def test_hub_ids_are_not_taken_for_folders() -> None:
    from scalearn_cli.backbone import _looks_like_path

    assert not _looks_like_path("org/name") and not _looks_like_path("bert-base-uncased")
    assert _looks_like_path("./name") and _looks_like_path("a/b/c") and _looks_like_path("/abs/model")
