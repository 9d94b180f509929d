"""Decoder LMs: LoRAs of tiny random Llama, Qwen2 and GPT-2 models compose, transfer, score and fold.

The math is the encoder's (out = W x + Σ_i ω_i ⊙ s_i B_i A_i x at every LoRA site); what is new is checked here:
PEFT's per-architecture targets, GPT-2's ``Conv1D`` sites (weight stored (D_in, D_out)), the ``last`` pooling under
left and right padding, and the refusals (another base model, a base without the sources' layers).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import FAST, WORDS, invoke, make_source, random_omega
from tiny_decoders import ARCHS, save_tiny_decoders

from scalearn_cli.backbone import load_backbone
from scalearn_cli.combiners import CombinerSpec
from scalearn_cli.compose import check_sources, inject, load_composition
from scalearn_cli.errors import CompositionError, UsageError
from scalearn_cli.export import export, load_export, verify
from scalearn_cli.model import TaskHead
from scalearn_cli.resolve import Resolver
from scalearn_cli.scaling import shared_key
from scalearn_cli.sources import get_kind

DEFAULT_TARGETS = {"llama": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj"), "gpt2": ("c_attn",)}


@pytest.fixture(scope="module")
def decoders(tmp_path_factory) -> dict[str, Path]:
    """arch -> a saved tiny bare decoder + tokenizer."""
    return save_tiny_decoders(tmp_path_factory.mktemp("decoders"), ARCHS)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    rng = random.Random(0)
    rows = [{"sentence": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))), "label": i % 2}
            for i in range(60)]
    path = tmp_path_factory.mktemp("decoder-data") / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def data_options(data_file: Path):
    from scalearn_cli.stages.common import DataOptions

    return DataOptions(task="custom", data_file=data_file, text_fields=("sentence",), label_field="label")


@pytest.fixture(scope="module")
def sources(decoders, tmp_path_factory) -> dict[str, list[str]]:
    """arch -> two LoRA sources with random non-zero weights (ranks 4 and 2), heads pooling the last token."""
    root = tmp_path_factory.mktemp("decoder-sources")
    return {arch: [str(make_source(root / f"{arch}{i}", decoders[arch], seed=i, pooling="last", r=r))
                   for i, r in enumerate((4, 2))] for arch in ARCHS}


@pytest.fixture(scope="module")
def compositions(sources, data_file, tmp_path_factory) -> dict[str, Path]:
    """arch -> a trained ScaLearn composition of its two sources, then random ω (so folds are not near 1/N)."""
    from scalearn_cli.stages.transfer import TransferOptions, transfer
    from scalearn_cli.train import TrainConfig

    root = tmp_path_factory.mktemp("decoder-comps")
    out = {}
    for seed, arch in enumerate(ARCHS):
        out[arch] = root / arch
        transfer(TransferOptions(tuple(sources[arch]), data_options(data_file), out[arch], train=TrainConfig(**FAST)))
        random_omega(out[arch], seed)
    return out


def sample(decoders, arch: str, padding_side: str = "right") -> dict[str, torch.Tensor]:
    _, tokenizer, _ = load_backbone(str(decoders[arch]))
    tokenizer.padding_side = padding_side
    texts = ["good movie", "the plot was not very fun and boring", "w3 w7 bad"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


# ---------------------------------------------------------------------------------------------- base models


@pytest.mark.parametrize("arch", ARCHS)
def test_decoders_load_bare_with_pad_token_and_peft_default_targets(arch, decoders):
    from scalearn_cli.sources.lora import default_targets

    encoder, tokenizer, ref = load_backbone(str(decoders[arch]))
    assert (ref.model_type, ref.hidden_size, ref.num_layers) == (arch, 32, 2)  # GPT-2: n_embd / n_layer
    assert not hasattr(encoder, "lm_head") and type(encoder).__name__.endswith("Model")
    assert tokenizer.pad_token == ("<eos>" if arch == "gpt2" else "<pad>")
    assert "token_type_ids" not in tokenizer("good movie")
    assert default_targets(encoder) == DEFAULT_TARGETS[arch]


def test_encoders_keep_query_value_and_first_pooling(tiny_model_dir):
    from scalearn_cli.backbone import default_pooling
    from scalearn_cli.sources.lora import default_targets

    encoder, _, ref = load_backbone(str(tiny_model_dir))
    assert default_targets(encoder) == ("query", "value")
    assert default_pooling(ref.model_type) == "first" and default_pooling("llama") == "last"


def test_a_model_type_without_default_targets_asks_for_lora_targets():
    from types import SimpleNamespace

    from scalearn_cli.sources.lora import default_targets

    module = torch.nn.Sequential(torch.nn.Linear(4, 4))
    module.config = SimpleNamespace(model_type="mystery")
    with pytest.raises(UsageError, match="no default LoRA target modules for model type 'mystery'.*--lora-targets"):
        default_targets(module)


@pytest.mark.parametrize("arch", ARCHS)
def test_cli_train_source_without_lora_targets(arch, decoders, data_file, tmp_path):
    out = tmp_path / "src"
    result = invoke(
        "train-source", "--task", "custom", "--data-file", str(data_file), "--text-fields", "sentence",
        "--model", str(decoders[arch]), "--out", str(out), "--epochs", "1", "--max-steps", "2", "--batch-size", "8",
        "--max-length", "16", "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "scalearn.json").read_text())
    assert tuple(meta["adapter"]["settings"]["target_modules"]) == DEFAULT_TARGETS[arch]
    assert meta["head"]["pooling"] == "last" and meta["base_model"]["model_type"] == arch
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is (arch == "gpt2")


# ------------------------------------------------------------------------------------------------ the math


def composed(decoders, arch: str, folders: list[str], method: str = "scalearn", omega=None):
    """The bare decoder with the sources composed in (eval mode); ``omega(n, key_tensor)`` fills every ω."""
    encoder, _, _ = load_backbone(str(decoders[arch]))
    resolved = [Resolver().source(f) for f in folders]
    comp = inject(encoder, resolved, CombinerSpec(method, "scalearn" if method == "scalearn" else None, {}))
    if omega is not None:
        with torch.no_grad():
            for value in comp.combiner.values:
                value.copy_(omega(len(folders), value))
    comp.eval()  # ω without dropout (the mixes hold the combiner without owning it)
    return encoder.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_one_hot_omega_reproduces_the_source_as_peft_runs_it(arch, decoders, sources):
    batch = sample(decoders, arch)
    for i in range(2):
        def one_hot(n, value, i=i):
            out = torch.zeros_like(value)
            out[i] = 1.0
            return out

        got = composed(decoders, arch, sources[arch], omega=one_hot)(**batch).last_hidden_state
        base, _, _ = load_backbone(str(decoders[arch]))
        want = get_kind("lora").load(base, Path(sources[arch][i]))(**batch).last_hidden_state
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        plain = load_backbone(str(decoders[arch]))[0](**batch).last_hidden_state  # PEFT changed ``base`` in place
        assert (got - plain).abs().max() > 1e-3  # the source does something


@pytest.mark.parametrize("arch", ARCHS)
def test_omega_one_over_n_equals_the_average(arch, decoders, sources):
    batch = sample(decoders, arch)
    got = composed(decoders, arch, sources[arch], omega=lambda n, v: torch.full_like(v, 1.0 / n))
    want = composed(decoders, arch, sources[arch], method="average")
    torch.testing.assert_close(got(**batch).last_hidden_state, want(**batch).last_hidden_state, atol=1e-6, rtol=1e-6)


def test_conv1d_sites_add_the_sources_delta_on_the_output(decoders, sources):
    """GPT-2's c_attn (Conv1D, weight (D_in, D_out)): y = x W + b + Σ_i ω_i ⊙ s_i B_i A_i x, checked by hand."""
    from scalearn_cli.sources.lora import ComposedLinear, is_conv1d

    omega = torch.tensor([0.7, -1.3])
    encoder = composed(decoders, "gpt2", sources["gpt2"], omega=lambda n, v: omega.view(n, *[1] * (v.dim() - 1)).expand_as(v))
    site = "h.1.attn.c_attn"
    layer = encoder.get_submodule(site)
    assert isinstance(layer, ComposedLinear) and is_conv1d(layer.base) and layer.base.weight.shape == (32, 96)
    x = torch.randn(2, 5, 32)
    want = x @ layer.base.weight + layer.base.bias
    for w, folder in zip(omega, sources["gpt2"]):
        s = get_kind("lora").read_sites(Path(folder))[site]
        want = want + w * (x @ s.down.T @ s.up.T)  # up = s_i B_i
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


def test_last_pooling_reads_the_last_real_token_on_either_side():
    head = TaskHead(4, 2, pooling="last")
    hidden = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)  # (batch, seq, hidden)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    torch.testing.assert_close(head.pool(hidden, right), hidden[[0, 1], [1, 3]])
    torch.testing.assert_close(head.pool(hidden, left), hidden[[0, 1], [3, 3]])


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_side_does_not_change_the_scores(arch, decoders, compositions):
    model, _, _ = load_composition(compositions[arch])
    _, right = model(**sample(decoders, arch, "right"))
    _, left = model(**sample(decoders, arch, "left"))
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)
    assert right.abs().max() > 1e-3


def test_shared_omega_keys_drop_decoder_layer_indices():
    assert shared_key("layers.1.self_attn.q_proj") == "layers.*.self_attn.q_proj"
    assert shared_key("h.0.attn.c_attn") == "h.*.attn.c_attn"
    assert shared_key("encoder.layer.11.attention.self.query") == "encoder.layer.*.attention.self.query"


# --------------------------------------------------------------------------------------------- the folds


@pytest.mark.parametrize("arch", ARCHS)
def test_both_folds_are_exact(arch, compositions, tmp_path):
    for fmt in ("peft-lora", "merged"):
        out = tmp_path / fmt
        assert export(compositions[arch], out, fmt)["exact"]
        result = verify(out, compositions[arch], n=16)
        print(f"{arch} {fmt}: max |Δlogit| {result['max_abs_diff']:.2e} of {result['max_abs_logit']:.2e}")
        assert result["ok"] and result["max_abs_diff"] <= 1e-5, (fmt, result)
        assert result["max_abs_logit"] > 1e-3 and "test examples" in result["data"]


def test_gpt2_lora_export_merges_in_vanilla_peft_like_our_merged_export(compositions, tmp_path):
    """fan_in_fan_out is in the exported config, so PEFT's own merge transposes ΔW for Conv1D as ours does."""
    export(compositions["gpt2"], tmp_path / "lora", "peft-lora")
    export(compositions["gpt2"], tmp_path / "merged", "merged")
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    peft_merged = load_export(tmp_path / "lora")[0].encoder.merge_and_unload().state_dict()
    ours = load_export(tmp_path / "merged")[0].encoder.state_dict()
    for key in ("h.0.attn.c_attn.weight", "h.1.attn.c_attn.weight"):
        torch.testing.assert_close(peft_merged[key], ours[key], atol=1e-6, rtol=1e-6)


def test_eval_scores_the_composition_and_its_exports_alike(compositions, tmp_path):
    from scalearn_cli.stages.evaluate import evaluate_folder

    want = evaluate_folder(compositions["llama"])["metrics"]
    for fmt in ("peft-lora", "merged"):
        export(compositions["llama"], tmp_path / fmt, fmt)
        got = evaluate_folder(tmp_path / fmt)["metrics"]
        assert got == pytest.approx(want, abs=1e-4), fmt


# ------------------------------------------------------------------------------------------------ refusals


def test_loras_of_different_base_models_are_refused(sources):
    resolved = [Resolver().source(sources["llama"][0]), Resolver().source(sources["qwen2"][0])]
    with pytest.raises(CompositionError, match="different base models"):
        check_sources(resolved)


def test_a_base_model_without_the_sources_layers_is_one_clear_error(decoders, sources, data_file, tmp_path):
    from scalearn_cli.stages.transfer import TransferOptions, transfer
    from scalearn_cli.train import TrainConfig

    options = TransferOptions(tuple(sources["llama"]), data_options(data_file), tmp_path / "x",
                              train=TrainConfig(**FAST), model=str(decoders["gpt2"]))
    # refused before anything is installed: the architecture the sources recorded is not the one loaded
    with pytest.raises(CompositionError, match=r"\(model_type llama\) but the base model .*gpt2 has model_type gpt2"):
        transfer(options)


def test_a_causal_lm_lora_from_anyone_reads_onto_the_bare_decoder(decoders, tmp_path):
    """PEFT on LlamaForCausalLM saves keys under ``model.``; they map onto the bare LlamaModel's sites."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from scalearn_cli.formats.peft_lora import read_lora

    lm = AutoModelForCausalLM.from_pretrained(str(decoders["llama"]))
    get_peft_model(lm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(str(tmp_path / "lm"))
    read = read_lora(tmp_path / "lm")
    assert sorted(read.sites)[0] == "layers.0.self_attn.q_proj" and len(read.sites) == 4


def test_a_source_scores_alone_and_plus_plus_shares_omega_across_decoder_layers(sources, data_file, tmp_path):
    from safetensors.torch import load_file

    from scalearn_cli.stages.evaluate import evaluate_folder, load_model
    from scalearn_cli.stages.transfer import TransferOptions, transfer
    from scalearn_cli.train import TrainConfig

    model, _, _ = load_model(Path(sources["gpt2"][0]))
    assert model.causal and model.head.pooling == "last"  # PEFT-wrapped, still seen as a decoder
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    pairs = "".join(json.dumps({"sentence1": r["sentence"], "sentence2": r["sentence"][::-1], "label": r["label"]})
                    + "\n" for r in rows)  # the sources' task (rte): two segments
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text(pairs)
    from scalearn_cli.stages.common import DataOptions

    scored = evaluate_folder(Path(sources["gpt2"][0]), DataOptions(task="rte", data_dir=tmp_path))
    assert scored["task"] == "rte" and "accuracy" in scored["metrics"]
    out = tmp_path / "pp"
    transfer(TransferOptions(tuple(sources["gpt2"]), data_options(data_file), out, variant="scalearn++", train=TrainConfig(**FAST)))
    assert sorted(load_file(str(out / "omega.safetensors"))) == ["h.*.attn.c_attn"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gradient_checkpointing_gives_the_same_omega_gradients(arch, decoders, sources):
    """--gradient-checkpointing recomputes activations in backward: same loss and ω gradients, with ω's dropout
    and the base model's own (GPT-2's) dropout on: the recomputation replays the same masks.

    The recomputed forward is not bitwise the first one on every CPU (kernel choice): these tiny ω gradients
    (~1e-5) then differ by float32 rounding, ~5e-4 of their largest entry. A recomputation with other dropout
    masks differs by more than that entry itself; the control run (no RNG replay) shows the test sees that."""
    from scalearn_cli.backbone import enable_gradient_checkpointing

    def grads(checkpointing: str | None):
        encoder, _, _ = load_backbone(str(decoders[arch]))
        torch.manual_seed(0)  # the same ω init (Normal(2/N, 0.001)) in both runs
        comp = inject(encoder, [Resolver().source(f) for f in sources[arch]], CombinerSpec("scalearn", "scalearn", {}))
        if checkpointing == "ours":
            enable_gradient_checkpointing(encoder)
        elif checkpointing == "no-replay":  # the control: dropout masks drawn afresh in the recomputation
            encoder.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False, "preserve_rng_state": False})
        encoder.train()
        comp.train()  # ω dropout on: the recomputation must replay the same masks
        torch.manual_seed(3)
        loss = encoder(**sample(decoders, arch)).last_hidden_state.pow(2).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in comp.trainable()]

    def worst(a_grads, b_grads) -> float:
        return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(a_grads, b_grads))

    (loss_a, grads_a), (loss_b, grads_b) = grads(None), grads("ours")
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert worst(grads_a, grads_b) <= 1e-2
    assert worst(grads_a, grads("no-replay")[1]) > 0.1  # other masks: the check above would fail
