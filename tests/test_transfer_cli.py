"""``scalearn transfer`` and ``eval`` of a composition, end to end on the tiny model: each ScaLearn variant and
baseline writes the parameters it should and reloads to the same logits, the registry references a composition
records, and every bad input (one line, non-zero exit, nothing written).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import (
    TRAIN, assert_refused, custom, invoke, make_source, ok, ok_json, read_card_yaml, tensors, transfer_args,
)


# ---- transfer --------------------------------------------------------------------------------------------
#: ω parameters for N LoRA sources on the tiny model: 2 layers x (query, value) sites of width D=32
OMEGA_COUNT = {"scalearn": lambda n: n * 4 * 32, "scalearn-uniform": lambda n: n * 4,
               "scalearn++": lambda n: n * 2 * 32, "scalearn-uniform++": lambda n: n * 2}


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
