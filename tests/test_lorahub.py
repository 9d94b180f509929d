"""LoraHub baseline: A and B merged separately with scalar weights found by nevergrad (no gradients), recorded in
composition.json, repeatable with a seed, folding into one exported LoRA (tiny random causal LMs)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import make_source
from tiny_decoders import GEN_FAST, qa_options

from scalearn_cli.errors import UsageError
from scalearn_cli.stages.transfer import TransferOptions, transfer
from scalearn_cli.train import TrainConfig

@pytest.fixture(scope="module")
def rank4(lms, tmp_path_factory) -> dict[str, list[str]]:
    """arch -> two LoRA sources of one rank (4) with random weights."""
    root = tmp_path_factory.mktemp("hub-sources")
    return {arch: [str(make_source(root / f"{arch}{i}", path, seed=i, pooling="last", r=4)) for i in range(2)]
            for arch, path in lms.items()}


def run(sources, data, out: Path, budget: int = 8, seed: int = 42) -> dict:
    return transfer(TransferOptions(tuple(sources), data, out, method="lorahub", options={"budget": budget},
                                    train=TrainConfig(**GEN_FAST, seed=seed)))


def test_merged_site_is_sum_w_b_times_sum_w_a_not_the_weighted_sum_of_outputs():
    from scalearn_cli.combiners.lorahub import MergedSite, MergeWeights
    from scalearn_cli.scaling import LowRankMix, stack_sources

    torch.manual_seed(0)
    a = [torch.randn(3, 5) for _ in range(2)]
    b = [torch.randn(4, 3) for _ in range(2)]
    down, up, src = stack_sources(a, b)
    mix = LowRankMix("s", down, up, src, 2, "identity")
    weights = MergeWeights(2, [0.7, -0.4])
    x = torch.randn(2, 6, 5)
    want = x @ (0.7 * a[0] - 0.4 * a[1]).T @ (0.7 * b[0] - 0.4 * b[1]).T
    assert torch.allclose(MergedSite(mix, weights)(mix, x), want, atol=1e-6)
    summed = x @ (0.7 * b[0] @ a[0] - 0.4 * b[1] @ a[1]).T
    assert not torch.allclose(want, summed, atol=1e-3)  # cross terms: not ScaLearn's Σ w_i B_i A_i


def test_search_is_repeatable_with_a_seed_and_lands_in_composition_json(rank4, qa_file, tmp_path):
    data = qa_options(qa_file, few_shot=5)
    first, second = tmp_path / "a", tmp_path / "b"
    meta = run(rank4["llama"], data, first)
    run(rank4["llama"], data, second)
    records = [json.loads((p / "composition.json").read_text()) for p in (first, second)]
    weights = records[0]["options"]["weights"]
    assert records[0]["method"] == "lorahub" and len(weights) == 2 and any(w != 0 for w in weights)
    assert all(-1.5 <= w <= 1.5 for w in weights)
    assert records[1]["options"]["weights"] == weights  # same seed, same weights
    assert records[0]["options"]["search"]["budget"] == 8 and records[0]["options"]["search"]["examples"] == 5
    assert meta["adapter"]["parameters"] == 0 and meta["training"]["steps"] == 0  # nothing trains: no head
    assert not (first / "head.safetensors").exists()
    other = run(rank4["llama"], data, tmp_path / "c", seed=7)
    assert json.loads((tmp_path / "c" / "composition.json").read_text())["options"]["weights"] != weights
    assert other["metrics"]["test"].keys() == {"exact_match", "loss"}


def test_inspect_shows_the_weights_and_eval_rebuilds_them(rank4, qa_file, tmp_path):
    from scalearn_cli.inspection import load_omega
    from scalearn_cli.stages.evaluate import evaluate_folder

    out = tmp_path / "hub"
    meta = run(rank4["gpt2"], qa_options(qa_file, few_shot=5), out)
    assert evaluate_folder(out)["metrics"] == pytest.approx(meta["metrics"]["test"], abs=1e-5)
    weights = json.loads((out / "composition.json").read_text())["options"]["weights"]
    _, record, omega = load_omega(out)
    assert set(omega) == set(record.sites) and all(torch.allclose(w, torch.tensor(weights)) for w in omega.values())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_merged_lora_exports_and_generates_the_same_tokens(arch, rank4, qa_file, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from scalearn_cli.compose import load_composition
    from scalearn_cli.export import export, verify
    from scalearn_cli.data.generation import encode_pairs, lm_features, loader
    from scalearn_cli.decoder.model import GenerativeModel

    comp = tmp_path / "hub"
    run(rank4[arch], qa_options(qa_file, few_shot=5), comp)
    out = tmp_path / "export"
    info = export(comp, out)
    assert info["rank"] == 4  # one merged LoRA of the sources' rank, not Σ r_i
    check = verify(out, comp)
    assert check["ok"], check
    composed, tok, meta = load_composition(comp)
    vanilla = GenerativeModel(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(meta["base_model"]["id"]),
                                                        str(out))).eval()
    fitted = encode_pairs(tok, ["Q: the movie was good A:", "w1 w2 w3"], ["a", "b"], 32)
    batch = next(iter(loader(lm_features(fitted.pairs, with_answer=False), tok, 2)))
    args = (batch["input_ids"], batch["attention_mask"], 5, tok.pad_token_id, None)
    assert torch.equal(composed.generate(*args), vanilla.generate(*args))


def test_a_classification_target_searches_then_trains_the_head(rank4, tmp_path):
    rng = random.Random(0)
    rows = [{"sentence": f"the movie was {w} {rng.choice(['w1', 'w2', 'w3'])}", "label": int(w == "good")}
            for w in ["good", "bad"] * 20]
    path = tmp_path / "cls.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    from scalearn_cli.stages.common import DataOptions

    data = DataOptions(task="custom", data_file=path, text_fields=("sentence",), label_field="label", few_shot=8)
    meta = run(rank4["llama"], data, tmp_path / "cls")
    assert (tmp_path / "cls" / "head.safetensors").exists() and meta["training"]["steps"] == 2
    assert len(json.loads((tmp_path / "cls" / "composition.json").read_text())["options"]["weights"]) == 2


def test_bad_inputs_are_one_clear_line(gen_sources, rank4, qa_file, tmp_path):
    with pytest.raises(UsageError, match="LoraHub merges the sources' A and B matrices, so every source needs one "
                                         "LoRA rank at every site; .* has ranks \\[4, 2\\]"):
        run(list(map(str, gen_sources["llama"])), qa_options(qa_file, few_shot=5), tmp_path / "x")
    with pytest.raises(UsageError, match="^--lorahub-budget must be a whole number >= 1, got 0$"):
        run(rank4["llama"], qa_options(qa_file, few_shot=5), tmp_path / "y", budget=0)
