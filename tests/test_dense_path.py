"""The dense path of a LoRA mix (W + ΔW(ω) as one GEMM) against the low-rank path (two thin GEMMs): the same
outputs, input gradients and ω gradients for every variant, with ω's dropout on; the invariants of the method
(one-hot ω = the single source, ω = 1/N = the average) on the dense path; nothing of rank Σr kept for backward;
and the cost model that picks the path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import make_source

from scalearn_cli.backbone import load_backbone
from scalearn_cli.combiners import get_combiner
from scalearn_cli.compose import inject
from scalearn_cli.resolve import Resolver
from scalearn_cli.scaling import (VARIANTS, LowRankMix, Omega, dense_is_cheaper, set_mix_path, stack_sources)
from scalearn_cli.sources.lora import ComposedLinear
from scalearn_cli.stages.source import load_source_model

RANKS = (4, 2, 3)  # Σr = 9: no other dimension of the tiny model is 9, so a saved rank-Σr tensor is recognisable


@pytest.fixture(scope="module")
def lora_sources(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("dense-sources")
    return [make_source(root / f"lora{i}", tiny_model_dir, "lora", seed=i, r=r) for i, r in enumerate(RANKS)]


def composed(tiny_model_dir, folders, path: str, method: str = "scalearn", variant: str | None = "scalearn"):
    encoder, _, _ = load_backbone(str(tiny_model_dir))
    comp = inject(encoder, [Resolver().source(str(f)) for f in folders], get_combiner(method).spec(variant))
    set_mix_path(encoder, path)
    return encoder, comp


def randomize_omega(comp, seed: int) -> None:
    """ω away from its init, so every source and every output dimension weighs differently."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in comp.combiner.values:
            tensor.copy_(torch.randn(tensor.shape, generator=g))


def step(encoder, comp, batch, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Hidden states and ω's gradients of a fixed probe loss, in training mode (ω dropout drawn from ``seed``)."""
    encoder.train()
    comp.train()
    torch.manual_seed(seed)
    out = encoder(**batch).last_hidden_state
    probe = torch.linspace(-1, 1, out.numel()).view_as(out)
    (out * probe).sum().backward()
    return out.detach(), [p.grad.clone() for p in comp.trainable()]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_dense_and_low_rank_paths_give_the_same_outputs_and_omega_gradients(variant, lora_sources, tiny_model_dir,
                                                                             batch):
    results = {}
    for path in ("dense", "low-rank"):
        encoder, comp = composed(tiny_model_dir, lora_sources, path, variant=variant)
        randomize_omega(comp, 0)
        results[path] = step(encoder, comp, batch, seed=3)
    (dense, dense_grads), (low, low_grads) = results["dense"], results["low-rank"]
    torch.testing.assert_close(dense, low, atol=1e-5, rtol=1e-5)
    assert len(dense_grads) == len(low_grads) > 0
    for got, want in zip(dense_grads, low_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert want.abs().max() > 1e-3  # ω gets a real gradient on both paths
    if VARIANTS[variant].dropout:  # the same dropout mask was drawn: some ω entries got no gradient on both
        assert any((g == 0).any() for g in low_grads)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("conv1d", [False, True], ids=["linear", "conv1d"])
def test_one_site_dense_equals_low_rank_with_input_gradients(variant, conv1d):
    """At one site (nn.Linear, or GPT-2's Conv1D storing W as (D_in, D_out)), both paths give the same output and
    the same gradients to the input and to ω."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    d_in, d_out = 6, 5
    down, up, src = stack_sources([torch.randn(r, d_in) for r in RANKS], [torch.randn(d_out, r) for r in RANKS])
    base = Conv1D(d_out, d_in) if conv1d else torch.nn.Linear(d_in, d_out)
    with torch.no_grad():
        base.bias.normal_()
    base.requires_grad_(False)
    results = []
    for path in ("dense", "low-rank"):
        mix = LowRankMix("encoder.layer.0.attention.self.query", down, up, src, len(RANKS), "identity")
        omega = Omega({mix.site: d_out}, len(RANKS), VARIANTS[variant])
        torch.manual_seed(1)
        with torch.no_grad():
            omega.values[0].normal_()
        object.__setattr__(mix, "combiner", omega)
        layer = ComposedLinear(base, mix).train()
        omega.train()
        mix.path = path
        x = torch.randn(2, 4, d_in, generator=torch.Generator().manual_seed(2), requires_grad=True)
        results.append(output_and_grads(layer, x, omega))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_hot_omega_reproduces_single_source_on_the_dense_path(variant, lora_sources, tiny_model_dir, batch):
    encoder, comp = composed(tiny_model_dir, lora_sources, "dense", variant=variant)
    with torch.no_grad():
        for tensor in comp.combiner.values:
            tensor.zero_()[1] = 1.0
    encoder.eval()
    comp.eval()
    single, _, _ = load_source_model(lora_sources[1])
    # gradients on (eval mode): the dense path, not the inference fold
    torch.testing.assert_close(encoder(**batch).last_hidden_state, single.encoder(**batch).last_hidden_state,
                               atol=1e-5, rtol=1e-5)


def test_omega_one_over_n_equals_the_average_on_the_dense_path(lora_sources, tiny_model_dir, batch):
    average, _ = composed(tiny_model_dir, lora_sources, "dense", method="average", variant=None)
    encoder, comp = composed(tiny_model_dir, lora_sources, "dense", variant="scalearn-uniform")
    with torch.no_grad():
        for tensor in comp.combiner.values:
            tensor.fill_(1 / len(RANKS))
    for model in (average, encoder, comp):
        model.eval()
    low, _ = composed(tiny_model_dir, lora_sources, "low-rank", method="average", variant=None)
    low.eval()
    want = low(**batch).last_hidden_state
    torch.testing.assert_close(average(**batch).last_hidden_state, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(encoder(**batch).last_hidden_state, want, atol=1e-6, rtol=1e-6)


def saved_shapes(encoder, batch) -> list[tuple[int, ...]]:
    """Shapes of every tensor autograd keeps for backward during one forward."""
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        encoder(**batch).last_hidden_state.sum().backward()
    return shapes


def test_the_dense_path_keeps_no_rank_sum_activation_for_backward(lora_sources, tiny_model_dir, batch):
    rank, tokens = sum(RANKS), batch["input_ids"].numel()

    def rank_activations(path: str) -> list[tuple[int, ...]]:
        encoder, _ = composed(tiny_model_dir, lora_sources, path)
        return [s for s in saved_shapes(encoder.train(), batch) if s[-1:] == (rank,) and math.prod(s[:-1]) == tokens]

    assert rank_activations("low-rank")  # (tokens, Σr) hidden activations, one per site
    assert not rank_activations("dense")


def test_cost_model_picks_low_rank_for_few_sources_and_dense_for_many(lora_sources, tiny_model_dir, batch):
    tokens, d = 32 * 64, 384  # MiniLM's query/value sites at bench/speed.py's batch
    assert not dense_is_cheaper(tokens, 8, d, d) and not dense_is_cheaper(tokens, 64, d, d)  # N = 1, 8 LoRAs r = 8
    assert dense_is_cheaper(tokens, 128, d, d) and dense_is_cheaper(tokens, 2048, d, d)  # N = 16, 256
    assert not dense_is_cheaper(1, 2048, d, d)  # one token (decoding): never form ΔW for it
    encoder, _ = composed(tiny_model_dir, lora_sources, "auto")
    mixes = [m for m in encoder.modules() if isinstance(m, LowRankMix)]
    x = torch.zeros(batch["input_ids"].shape + (mixes[0].down.shape[1],))  # tiny sites: 32 × 32, Σr = 9, 21 tokens
    assert all(m.dense_for(x) == dense_is_cheaper(21, 9, 32, 32) for m in mixes)
    set_mix_path(encoder, "dense")
    assert all(m.dense_for(x) for m in mixes)
    with pytest.raises(ValueError, match="mix path must be one of"):
        set_mix_path(encoder, "fast")


def test_fusion_and_bottleneck_mixes_never_take_the_dense_path(lora_sources, tiny_model_dir, tmp_path):
    """AdapterFusion's attention and a bottleneck's ReLU are not linear in the sources: nothing folds, even forced."""
    folders = [make_source(tmp_path / f"bn{i}", tiny_model_dir, "bottleneck", seed=i) for i in range(2)]
    bottleneck, _ = composed(tiny_model_dir, folders, "dense")
    fusion, _ = composed(tiny_model_dir, lora_sources, "dense", method="adapterfusion", variant=None)
    x = torch.zeros(2, 3, 32)
    for model in (bottleneck, fusion):
        mixes = [m for m in model.modules() if isinstance(m, LowRankMix)]
        assert mixes and not any(m.dense_for(x) for m in mixes)


@pytest.mark.parametrize("ranks", [(3, 3, 3), (4, 2, 3)], ids=["equal-ranks", "ranks-differ"])
@pytest.mark.parametrize("variant", ["scalearn", "scalearn-uniform"])
def test_both_paths_equal_the_per_source_sum_with_its_omega_gradient(ranks, variant):
    """ω scales U through a view when ranks are equal (no gather) and by a gather otherwise; either way both
    paths compute y = W x + b + Σ_i ω_i ⊙ U_i D_i x, and ω's gradient is that formula's."""
    torch.manual_seed(0)
    d_in, d_out, n = 6, 5, len(ranks)
    downs, ups = [torch.randn(r, d_in) for r in ranks], [torch.randn(d_out, r) for r in ranks]
    base = torch.nn.Linear(d_in, d_out).requires_grad_(False)
    x = torch.randn(2, 4, d_in)
    omega = Omega({"s": d_out}, n, VARIANTS[variant]).eval()
    with torch.no_grad():
        omega.values[0].normal_()
    w = omega.tensor("s") if omega.tensor("s").dim() == 2 else omega.tensor("s").unsqueeze(-1)
    want = base(x) + sum(w[i] * (x @ downs[i].T @ ups[i].T) for i in range(n))
    (want_grad,) = torch.autograd.grad(want.sum(), omega.values[0])
    mix = LowRankMix("s", *stack_sources(downs, ups), n, "identity")
    object.__setattr__(mix, "combiner", omega)
    assert mix.block_rank == (3 if len(set(ranks)) == 1 else 0)
    layer = ComposedLinear(base, mix)
    for path in ("dense", "low-rank"):
        mix.path = path
        got = layer(x)
        (grad,) = torch.autograd.grad(got.sum(), omega.values[0])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad, want_grad, atol=1e-5, rtol=1e-5)


def _one_site(conv1d: bool, combiner, path: str):
    """A ComposedLinear over three sources of ranks RANKS (6 → 5), its base trainable, on ``path``."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    down, up, src = stack_sources([torch.randn(r, 6) for r in RANKS], [torch.randn(5, r) for r in RANKS])
    base = Conv1D(5, 6) if conv1d else torch.nn.Linear(6, 5)
    with torch.no_grad():
        base.bias.normal_()
    mix = LowRankMix("encoder.layer.0.attention.self.value", down, up, src, len(RANKS), "identity")
    object.__setattr__(mix, "combiner", combiner)
    mix.path = path
    return ComposedLinear(base, mix).train()


@pytest.mark.parametrize("conv1d", [False, True], ids=["linear", "conv1d"])
def test_fixed_weights_on_the_dense_path_pass_gradients_to_input_base_weight_and_bias(conv1d):
    """The average's fixed 1/N (ΔW from the cache) with a trainable base layer: the same gradients on both paths."""
    from scalearn_cli.scaling import FixedWeights

    results = []
    for path in ("dense", "low-rank"):
        layer = _one_site(conv1d, FixedWeights(len(RANKS)), path)
        x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
        out = layer(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), x.grad, layer.base.weight.grad, layer.base.bias.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _saved_storages(fn, owned: list[torch.Tensor]) -> dict[int, tuple[int, ...]]:
    """Shapes of the storages autograd keeps for backward while ``fn()`` runs, those of ``owned`` (parameters,
    buffers: kept by reference, no extra bytes) left out (storage -> shape)."""
    skip = {t.untyped_storage().data_ptr() for t in owned}
    seen: dict[int, tuple[int, ...]] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            seen[t.untyped_storage().data_ptr()] = tuple(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().sum().backward()
    return seen


def test_the_dense_path_keeps_no_summed_weight_for_backward():
    """Plain autograd on F.linear(x, W + ΔW) keeps the (D_out, D_in) sum until backward; the dense site keeps x and
    ω's (N, D_out) weights only, and forms ΔW again in backward."""
    omega = Omega({"encoder.layer.0.attention.self.value": 5}, len(RANKS), VARIANTS["scalearn"])
    layer = _one_site(False, omega, "dense").requires_grad_(False)
    omega.requires_grad_(True)
    x = torch.randn(2, 4, 6, requires_grad=True)
    mix = layer.mix
    owned = [*layer.parameters(), *layer.buffers(), *omega.parameters(), *mix.buffers()]
    plain = _saved_storages(lambda: F.linear(x, layer.base.weight + mix.scaled_up() @ mix.down, layer.base.bias), owned)
    assert any(sorted(s) == [5, 6] for s in plain.values())  # what plain autograd keeps (W + ΔW, or its transpose)
    dense = _saved_storages(lambda: layer(x), owned)
    assert not any(sorted(s) == [5, 6] for s in dense.values())
    assert (2, 4, 6) in dense.values()  # the input, which the base layer's GEMM keeps anyway
    assert all(math.prod(s) <= len(RANKS) * 5 for s in dense.values() if s != (2, 4, 6))  # ω's weights, its mask


def test_the_dense_path_trains_under_bf16_autocast_like_the_low_rank_path():
    """Mixed precision (``--precision bf16``: fp32 weights, bf16 GEMMs under autocast; backward outside it): the
    dense site casts as autocast would, and its output and gradients agree with the low-rank path's to bf16's
    precision."""
    results = []
    for path in ("dense", "low-rank"):
        omega = Omega({"encoder.layer.0.attention.self.value": 5}, len(RANKS), VARIANTS["scalearn"]).eval()
        layer = _one_site(False, omega, path).requires_grad_(False)
        omega.requires_grad_(True)
        x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        assert out.dtype == torch.bfloat16
        out.float().sum().backward()
        assert x.grad.dtype == torch.float32 and omega.values[0].grad.dtype == torch.float32
        results.append((out.float().detach(), x.grad, omega.values[0].grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=0.1, rtol=0.05)


def test_a_large_batch_keeps_the_summed_weight_and_gives_the_same_gradients():
    """Where W + ΔW is small against the input (4 · D_out ≤ tokens) the dense site keeps it for backward instead of
    forming ΔW again; outputs and gradients are the low-rank path's either way."""
    from scalearn_cli.scaling import keeps_summed_weight

    assert keeps_summed_weight(2048, 384) and not keeps_summed_weight(1024, 512) and not keeps_summed_weight(8, 5)
    results, kept = [], None
    for path in ("dense", "low-rank"):
        omega = Omega({"encoder.layer.0.attention.self.value": 5}, len(RANKS), VARIANTS["scalearn"])
        layer = _one_site(False, omega, path).requires_grad_(False)
        with torch.no_grad():
            omega.values[0].copy_(torch.randn(omega.values[0].shape, generator=torch.Generator().manual_seed(1)))
        omega.requires_grad_(True)
        x = torch.randn(2, 40, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)  # 80 tokens
        torch.manual_seed(5)
        if path == "dense":
            kept = _saved_storages(lambda: layer(x), [*layer.parameters(), *layer.buffers(), *omega.parameters()])
            x.grad, omega.values[0].grad = None, None
        results.append(output_and_grads(layer, x, omega))
    assert any(sorted(s) == [5, 6] for s in kept.values())
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens", [2, 40], ids=["input-first", "weight-gradient-first"])
@pytest.mark.parametrize("variant", ["scalearn", "scalearn-uniform"])
def test_both_orders_of_omegas_gradient_chain_give_the_low_rank_paths_gradients(tokens, variant):
    """ω's gradient goes through Gᵀ·X·Dᵀ, multiplied as Gᵀ·(X·Dᵀ) for few tokens and as (Gᵀ·X)·Dᵀ for many (the
    cheaper by the site's shapes): both orders give the low-rank path's output, input and ω gradients."""
    from scalearn_cli.scaling import up_grad_via_input_first

    assert up_grad_via_input_first(tokens, sum(RANKS), 6, 5) == (tokens == 2)
    results = []
    for path in ("dense", "low-rank"):
        omega = Omega({"encoder.layer.0.attention.self.value": 5}, len(RANKS), VARIANTS[variant])
        layer = _one_site(False, omega, path).requires_grad_(False)
        with torch.no_grad():
            omega.values[0].copy_(torch.randn(omega.values[0].shape, generator=torch.Generator().manual_seed(1)))
        omega.requires_grad_(True)
        x = torch.randn(tokens, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
        results.append(output_and_grads(layer, x, omega))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def output_and_grads(layer: torch.nn.Module, x: torch.Tensor, omega) -> tuple:
    """One seeded forward and backward of ``layer`` on ``x``: the output, x's gradient and ω's first gradient."""
    torch.manual_seed(5)
    out = layer(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, omega.values[0].grad
