"""Folding compositions of LoRA sources (export), logit parity (verify), ω tables (inspect) and pruning, on a
tiny BERT: every variant folds exactly, vanilla PEFT loads the fold, SVD error falls with rank, and what cannot
fold (ReLU bottlenecks, AdapterFusion) is refused with one clear line."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from helpers import FAST, WORDS, invoke, make_source, random_omega, refingerprint, write_omega
from safetensors.torch import load_file

from scalearn_cli import artifacts
from scalearn_cli.artifacts import METADATA_FILE, OMEGA_FILE
from scalearn_cli.compose import load_composition
from scalearn_cli.errors import CompositionError, UsageError
from scalearn_cli.export import export, verify
from scalearn_cli.scaling import VARIANTS

LORA_EXPORT_FILES = {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "scalearn.json",
                     "README.md"}


@pytest.fixture(scope="module")
def work(tiny_model_dir, tmp_path_factory):
    """Three LoRA sources (ranks 4, 2, 3; the last on query only, so sites differ in Σr) and task data."""
    from scalearn_cli.stages.common import DataOptions

    root = tmp_path_factory.mktemp("export")
    settings = [{"r": 4}, {"r": 2}, {"r": 3, "target_modules": ("query",)}]
    sources = [make_source(root / f"lora{i}", tiny_model_dir, "lora", seed=i, **s) for i, s in enumerate(settings)]
    rng = random.Random(0)
    rows = [{"sentence": " ".join(rng.choice(WORDS) for _ in range(6)), "label": i % 2} for i in range(60)]
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = DataOptions(task="custom", data_file=root / "data.jsonl", text_fields=("sentence",), label_field="label")
    return {"root": root, "sources": [str(s) for s in sources], "data": data}


def compose(work, name: str, method: str = "scalearn", variant: str = "scalearn", sources=None) -> Path:
    from scalearn_cli.train import TrainConfig
    from scalearn_cli.stages.transfer import TransferOptions, transfer

    out = work["root"] / name
    if not out.is_dir():
        transfer(TransferOptions(tuple(sources or work["sources"]), work["data"], out, method, variant,
                                 train=TrainConfig(**FAST)))
    return out


@pytest.fixture(scope="module")
def compositions(work):
    folders = {v: compose(work, v, variant=v) for v in VARIANTS}
    for seed, variant in enumerate(VARIANTS):
        random_omega(folders[variant], seed)
    folders["average"] = compose(work, "average", method="average")
    return folders


@pytest.mark.parametrize("variant", [*VARIANTS, "average"])
def test_peft_lora_and_merged_folds_are_exact(variant, compositions, tmp_path):
    for fmt in ("peft-lora", "merged"):
        out = tmp_path / fmt
        summary = export(compositions[variant], out, fmt)
        assert summary["exact"] and summary["source_rank"] == 9
        result = verify(out, compositions[variant], n=16)
        assert result["ok"] and result["max_abs_diff"] <= 1e-5, (fmt, result)
        assert result["same_composition"] and "test examples" in result["data"]
        assert result["max_abs_logit"] > 1e-3  # the comparison is not between two zeros


def test_vanilla_peft_loads_the_export(compositions, tiny_model_dir, tmp_path, batch):
    from peft import PeftModel
    from transformers import AutoModel

    folder = compositions["scalearn"]
    out = export(folder, tmp_path / "lora", "peft-lora")["out"]
    assert {p.name for p in Path(out).iterdir()} == LORA_EXPORT_FILES
    config = json.loads((Path(out) / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 9  # scaling 1
    value_sites = {f"encoder.layer.{i}.attention.self.value": 6 for i in range(2)}  # 4 + 2: source 2 is query only
    assert config["rank_pattern"] == config["alpha_pattern"] == value_sites
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), out).eval()
    composed, _, _ = load_composition(folder)
    want = composed.encoder(**batch).last_hidden_state
    got = peft_model(**batch).last_hidden_state
    plain = AutoModel.from_pretrained(tiny_model_dir).eval()(**batch).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(plain, want, atol=1e-3)  # the sources do change the encoder


def test_export_is_a_usable_source_and_merged_scores_like_the_composition(compositions, tmp_path):
    from scalearn_cli.resolve import Resolver
    from scalearn_cli.stages.evaluate import evaluate_folder

    folder = compositions["scalearn-uniform"]
    lora_out = Path(export(folder, tmp_path / "lora", "peft-lora")["out"])
    merged_out = Path(export(folder, tmp_path / "merged", "merged")["out"])
    assert (merged_out / "model.safetensors").is_file() and (merged_out / "config.json").is_file()
    assert Resolver().source(str(lora_out)).meta.adapter.kind == "lora"
    scores = {p: evaluate_folder(p)["metrics"] for p in (folder, lora_out, merged_out)}
    for p in (lora_out, merged_out):
        assert scores[p]["loss"] == pytest.approx(scores[folder]["loss"], abs=1e-5)


def test_svd_error_falls_with_rank_and_vanishes_at_full_rank(compositions, tmp_path):
    folder = compositions["scalearn++"]
    errors = [export(folder, tmp_path / f"svd{r}", "svd", rank=r)["svd_error"]["overall"] for r in (1, 3, 6, 9)]
    assert errors[0] > errors[1] > errors[2] > errors[3] and errors[0] > 0.1
    assert errors[3] < 1e-5
    assert verify(tmp_path / "svd9", folder, n=8)["max_abs_diff"] < 1e-4
    config = json.loads((tmp_path / "svd3" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 3 and config["rank_pattern"] == {}


def test_half_precision_export_is_cast_after_folding(compositions, tmp_path):
    folder = compositions["scalearn"]
    out = tmp_path / "fp16"
    export(folder, out, "peft-lora", dtype="float16")
    assert {t.dtype for t in load_file(str(out / "adapter_model.safetensors")).values()} == {torch.float16}
    result = verify(out, folder, n=8)
    assert result["ok"] is None and result["tolerance"] is None and result["max_abs_diff"] < 1e-2
    from scalearn_cli.stages.evaluate import evaluate_folder

    merged = tmp_path / "bf16"
    export(folder, merged, "merged", dtype="bfloat16")
    assert evaluate_folder(merged)["kind"] == "merged"  # half weights, scored in fp32


def test_verify_falls_back_to_random_tokens_without_data(compositions):
    from scalearn_cli.export import sample_batch

    model, tokenizer, meta = load_composition(compositions["scalearn"])
    batch, note = sample_batch(meta, tokenizer, 4)
    assert batch["input_ids"].shape[0] == 4 and note.startswith("4 test examples")
    no_data = {**meta, "data": {"data_dir": None, "data_file": None}}
    vocab = model.encoder.config.vocab_size
    one, note = sample_batch(no_data, tokenizer, 4, vocab_size=vocab)
    two, _ = sample_batch(no_data, tokenizer, 4, vocab_size=vocab)
    assert "random tokens" in note and torch.equal(one["input_ids"], two["input_ids"])
    inner = one["input_ids"][:, 1:-1]
    assert set(inner.flatten().tolist()).isdisjoint(tokenizer.all_special_ids) and int(inner.max()) < vocab
    assert torch.isfinite(model(**one)[1]).all()


def test_non_linear_compositions_are_refused(work, tiny_model_dir, tmp_path):
    root = work["root"]
    bottlenecks = [str(make_source(root / f"bn{i}", tiny_model_dir, "bottleneck", seed=i)) for i in range(2)]
    bn = compose(work, "bn", sources=bottlenecks)
    with pytest.raises(CompositionError, match="ReLU"):
        export(bn, tmp_path / "x", "peft-lora")
    fusion = compose(work, "fusion", method="adapterfusion", sources=work["sources"][:2])
    with pytest.raises(CompositionError, match="AdapterFusion"):
        export(fusion, tmp_path / "x", "merged")
    assert not (tmp_path / "x").exists()
    with pytest.raises(UsageError, match="--rank"):
        export(fusion, tmp_path / "x", "svd")


@pytest.mark.parametrize("variant", ["scalearn", "scalearn-uniform++"])
def test_inspect_reports_the_stored_omega(variant, compositions):
    from scalearn_cli.inspection import omega_table

    stored = load_file(str(compositions[variant] / OMEGA_FILE))
    table = omega_table(compositions[variant])
    assert [row["key"] for row in table["rows"]] == sorted(stored)
    for row in table["rows"]:
        for i, cell in enumerate(row["omega"]):
            value = stored[row["key"]][i]
            if VARIANTS[variant].vector:
                assert cell["mean"] == pytest.approx(float(value.mean()), abs=1e-6)
                assert cell["norm"] == pytest.approx(float(value.norm()), abs=1e-5)
            else:
                assert cell["value"] == pytest.approx(float(value), abs=1e-6)
    mass = [sum(float(v[i].abs().sum()) for v in stored.values()) for i in range(3)]
    assert [s["share"] for s in table["sources"]] == pytest.approx([m / sum(mass) for m in mass], abs=1e-6)


def test_inspect_cli_json_and_plot(compositions, tmp_path):
    png = tmp_path / "omega.png"
    result = invoke("inspect", compositions["scalearn++"], "--json", "--plot", png)
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert table["rows"][0]["layer"] == "*" and png.stat().st_size > 1000
    average = invoke("inspect", compositions["average"], "--json")
    assert [s["share"] for s in json.loads(average.stdout)["sources"]] == pytest.approx([1 / 3] * 3)


def test_cli_export_then_verify(compositions, tmp_path):
    out = tmp_path / "cli"
    exported = invoke("export", compositions["scalearn"], "--format", "merged", "--out", out)
    assert exported.exit_code == 0, exported.output
    checked = invoke("verify", out, "--against", compositions["scalearn"], "--json")
    assert checked.exit_code == 0 and json.loads(checked.stdout)["ok"] is True
    again = invoke("export", compositions["scalearn"], "--format", "merged", "--out", out)
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    lora_out = Path(export(compositions["scalearn"], tmp_path / "tampered", "peft-lora")["out"])
    weights = load_file(str(lora_out / "adapter_model.safetensors"))
    artifacts.save_tensors(lora_out / "adapter_model.safetensors", {k: v * 1.5 for k, v in weights.items()})
    edited = invoke("verify", lora_out, "--against", compositions["scalearn"])
    assert edited.exit_code == 1 and "changed since it was saved" in edited.stderr  # its own record refuses it
    refingerprint(lora_out)  # a wrong export with a consistent record: only the logit parity can catch it
    broken = invoke("verify", lora_out, "--against", compositions["scalearn"])
    assert broken.exit_code == 1 and "FAILED" in broken.stdout


def test_prune_keeps_the_sources_with_most_omega(work, compositions, tmp_path):
    from scalearn_cli.prune import prune, select

    folder = tmp_path / "to-prune"  # a copy: the sources are referenced by path, so it loads as the original
    shutil.copytree(compositions["scalearn-uniform"], folder)
    stored = load_file(str(folder / OMEGA_FILE))
    scale = torch.tensor([0.05, 0.9, 0.4])  # source 1 first, then 2, then 0
    write_omega(folder, {k: scale.clone() for k in stored})
    report = prune(folder, tmp_path / "pruned", keep=2, epochs=1)
    assert [s["index"] for s in report["kept"]] == [1, 2] and [s["index"] for s in report["dropped"]] == [0]
    assert report["n_sources"] == {"before": 3, "after": 2}
    assert report["lora_rank"] == {"before": 9, "after": 5}  # query sites: 4+2+3 -> 2+3
    record = artifacts.read_json(tmp_path / "pruned" / "composition.json")
    assert [s["ref"] for s in record["sources"]] == [work["sources"][1], work["sources"][2]]
    assert report["score"]["before"] is not None and report["score"]["after"] is not None
    pruned = load_file(str(tmp_path / "pruned" / OMEGA_FILE))
    for value in pruned.values():  # started from the kept ω (0.9, 0.4), not from a fresh Normal(2/N, 0.001)
        assert value.shape == (2,) and torch.allclose(value, torch.tensor([0.9, 0.4]), atol=0.1)
    assert select([0.05, 0.9, 0.4], threshold=0.3) == [1, 2]
    with pytest.raises(UsageError, match="exactly one"):
        select([0.5, 0.5], keep=1, threshold=0.1)


def test_mean_pooled_head_survives_export_and_prune(work, tiny_model_dir, tmp_path):
    """A composition with a mean-pooling head (sources trained with --pooling mean): the merged export and a pruned
    refit keep that head's pooling, and the export still scores exactly like the composition."""
    from scalearn_cli.prune import prune

    sources = [str(make_source(tmp_path / f"mean{i}", tiny_model_dir, "lora", seed=40 + i, pooling="mean"))
               for i in range(2)]
    folder = compose(work, "mean-pooled", variant="scalearn-uniform", sources=sources)
    assert artifacts.read_json(folder / METADATA_FILE)["head"]["pooling"] == "mean"
    out = tmp_path / "merged"
    export(folder, out, "merged")
    assert artifacts.read_json(out / METADATA_FILE)["head"]["pooling"] == "mean"
    result = verify(out, folder, n=16)
    assert result["ok"] and result["max_abs_diff"] <= 1e-5 and result["max_abs_logit"] > 1e-3
    prune(folder, tmp_path / "pruned", keep=1, epochs=1)
    assert artifacts.read_json(tmp_path / "pruned" / METADATA_FILE)["head"]["pooling"] == "mean"
