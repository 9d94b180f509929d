"""Options checked against the model and each other, and inputs checked for what they must be, before any
training: lengths beyond the model, impossible ranks, mixed precision without a GPU, non-finite values named at
their source, PEFT/AdapterHub configs that disagree with their weights. Offline, CPU, the tiny BERT."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import invoke, one_error_line, peft_lora, refingerprint, two_source_workspace
from safetensors.torch import load_file, save_file

from scalearn_cli import artifacts
from scalearn_cli.errors import ArtifactError, UsageError
from scalearn_cli.formats import adapterhub, peft_lora as peft_format
from scalearn_cli.train import TrainConfig

FAST = ["--epochs", "1", "--batch-size", "8"]
ADAPTERHUB = Path(__file__).resolve().parent / "fixtures" / "adapterhub" / "bert" / "adapter"


@pytest.fixture(scope="module")
def work(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("options")
    return two_source_workspace(root, tiny_model_dir, "--max-length", "16")


def train(work: dict[str, Path], model: Path, out: Path, *options: Any) -> Any:
    return invoke("train-source", "--task", "rte", "--data-dir", work["data"], "--model", model, *FAST, *options,
                  "--out", out)


def transfer(work: dict[str, Path], out: Path, *options: Any, sources: tuple[Path, ...] = ()) -> Any:
    args = [a for s in (sources or (work["s0"], work["s1"])) for a in ("-s", s)]
    return invoke("transfer", "--task", "rte", "--data-dir", work["data"], *args, *FAST, *options, "--out", out)


# ---- options against the model ------------------------------------------------------------------------------
def test_max_length_above_the_models_positions_names_the_limit(work: dict[str, Path], tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    one_error_line(train(work, tiny_model_dir, tmp_path / "S", "--max-length", "100000"), 2, "512 positions",
                   "--max-length 512", alone=False)
    one_error_line(transfer(work, tmp_path / "T", "--max-length", "100000"), 2, "512 positions", alone=False)
    assert not (tmp_path / "S").exists() and not (tmp_path / "T").exists()


def test_max_length_too_small_for_any_text_is_refused(work: dict[str, Path], tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    one_error_line(train(work, tiny_model_dir, tmp_path / "S", "--max-length", "1"), 2, "leaves no room",
                   "special tokens", alone=False)
    one_error_line(transfer(work, tmp_path / "T", "--max-length", "2"), 2, "leaves no room", alone=False)


def test_export_rank_above_the_possible_rank_names_it(work: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("export", work["comp"], "--format", "svd", "--rank", "100000", "--out", tmp_path / "E")
    line = one_error_line(result, 2, "--rank 100000", "1..16", alone=False)
    assert "pass --rank 16" in line and not (tmp_path / "E").exists()
    assert invoke("export", work["comp"], "--format", "svd", "--rank", "16", "--out", tmp_path / "E").exit_code == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_mixed_precision_without_a_gpu_is_refused_not_recorded(work: dict[str, Path], tiny_model_dir: Path,
                                                              tmp_path: Path) -> None:
    for precision in ("fp16", "bf16"):
        one_error_line(train(work, tiny_model_dir, tmp_path / "S", "--max-length", "16", "--precision", precision), 2,
                       f"--precision {precision} needs a GPU", alone=False)
        one_error_line(transfer(work, tmp_path / "T", "--max-length", "16", "--precision", precision), 2,
                       "needs a GPU", alone=False)
    assert not (tmp_path / "S").exists() and not (tmp_path / "T").exists()


def test_train_config_checks_seed_patience_and_device() -> None:
    for seed in (-1, 2**32, 10**20):
        with pytest.raises(UsageError, match="--seed must be between 0 and 4294967295"):
            TrainConfig(seed=seed)
    with pytest.raises(UsageError, match="--patience"):
        TrainConfig(patience=-1)
    with pytest.raises(UsageError, match="needs a GPU"):
        TrainConfig(precision="fp16").for_device(gpu=False)
    assert TrainConfig(precision="bf16").for_device(gpu=True).precision == "bf16"
    assert TrainConfig(seed=2**32 - 1).seed == 2**32 - 1


# ---- non-finite values, named at their source ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_sparsity_is_a_usage_error(value: str, work: dict[str, Path], tmp_path: Path) -> None:
    one_error_line(transfer(work, tmp_path / "T", "--max-length", "16", "--sparsity", value), 2, "--sparsity",
                   alone=False)


def test_a_nan_lora_alpha_in_a_peft_config_is_named(work: dict[str, Path], tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query"])
    config = json.loads((folder / "adapter_config.json").read_text())
    config["lora_alpha"] = math.nan
    (folder / "adapter_config.json").write_text(json.dumps(config))  # json writes NaN, PEFT reads it back
    one_error_line(transfer(work, tmp_path / "T", "--max-length", "16", sources=(folder,)), 1, "lora_alpha",
                   "finite number", alone=False)


def test_a_source_with_nan_weights_is_named_before_training(work: dict[str, Path], tmp_path: Path) -> None:
    source = Path(shutil.copytree(work["s1"], tmp_path / "nan-source"))
    weights = load_file(str(source / "adapter_model.safetensors"))
    first = sorted(weights)[0]
    weights[first][0, 0] = math.nan
    artifacts.save_tensors(source / "adapter_model.safetensors", weights)
    refingerprint(source)  # a consistent record: the NaN was saved, not tampered in
    line = one_error_line(transfer(work, tmp_path / "T", "--max-length", "16", sources=(work["s0"], source)), 1,
                          "NaN or infinite", "nan-source", alone=False)
    assert "lower --lr" not in line and not (tmp_path / "T").exists()


def test_nan_weights_in_a_peft_folder_are_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query"])
    weights = load_file(str(folder / "adapter_model.safetensors"))
    key = sorted(weights)[0]
    weights[key] = torch.full_like(weights[key], math.inf)
    save_file(weights, str(folder / "adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match=f"{key}.*NaN or infinite"):
        peft_format.read_lora(folder)


# ---- PEFT and AdapterHub configs against their weights ----------------------------------------------------------
def test_layers_to_transform_must_cover_the_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query"], layers_to_transform=[0])
    assert set(peft_format.read_lora(folder).sites) == {"encoder.layer.0.attention.self.query"}
    config = json.loads((folder / "adapter_config.json").read_text())
    config["layers_to_transform"] = [1]  # the weights are on layer 0: PEFT would not load them
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"outside layers_to_transform \[1\]; PEFT would not load"):
        peft_format.read_lora(folder)


def test_a_bin_beside_a_different_safetensors_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query"])
    weights = load_file(str(folder / "adapter_model.safetensors"))
    torch.save(weights, folder / "adapter_model.bin")
    assert peft_format.read_lora(folder).sites  # the same tensors twice: read
    torch.save({k: v + 1 for k, v in weights.items()}, folder / "adapter_model.bin")
    with pytest.raises(ArtifactError, match="both adapter_model.safetensors and adapter_model.bin with different"):
        peft_format.read_lora(folder)
    hub = Path(shutil.copytree(ADAPTERHUB, tmp_path / "hub"))
    tensors = torch.load(hub / "pytorch_adapter.bin", weights_only=True)
    save_file({k: v * 2 for k, v in tensors.items()}, str(hub / "adapter.safetensors"))
    with pytest.raises(ArtifactError, match="both adapter.safetensors and pytorch_adapter.bin"):
        adapterhub.read_adapterhub(hub)


@pytest.mark.parametrize("change, message", [
    ({"r": None}, "has no 'r' \\(the LoRA rank\\)"),
    ({"r": 0}, "r must be a positive integer"),
    ({"r": "4"}, "r must be a positive integer"),
    ({"rank_pattern": {"query": math.nan}}, "rank_pattern\\['query'\\] must be a positive integer"),
    ({"alpha_pattern": {"(": 2}}, "alpha_pattern key '\\(' is not a valid regular expression"),
    ({"layers_to_transform": ["0"]}, "layers_to_transform must be a layer index"),
])
def test_peft_config_values_are_named(change: dict, message: str, work: dict[str, Path], tiny_model_dir: Path,
                                      tmp_path: Path) -> None:
    folder = peft_lora(tmp_path / "peft", tiny_model_dir, seed=0, target_modules=["query"])
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(change)
    (folder / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(ArtifactError, match=message):
        peft_format.read_lora(folder)
    if "r" in change and change["r"] is None:  # through the CLI: named, not "matches no adapter format"
        one_error_line(transfer(work, tmp_path / "T", "--max-length", "16", sources=(folder,)), 1, "'r'", alone=False)


def test_adapterhub_leave_out_naming_a_layer_the_model_lacks(tmp_path: Path) -> None:
    hub = Path(shutil.copytree(ADAPTERHUB, tmp_path / "hub"))
    meta = json.loads((hub / "adapter_config.json").read_text())
    layers = adapterhub.read_adapterhub(hub).layers
    meta["config"]["leave_out"] = [99]
    (hub / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="leave_out names layer 99, beyond the adapter's layers"):
        adapterhub.read_adapterhub(hub)
    with pytest.raises(ArtifactError, match=f"leave_out names layer 99, but the model has {len(layers)} layers"):
        adapterhub.read_adapterhub(hub, num_layers=len(layers))
    meta["config"]["leave_out"] = [-1]
    (hub / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="leave_out must be a list of layer indices"):
        adapterhub.read_adapterhub(hub)
