"""Invariants of ScaLearn's math on tiny encoders: one-hot ω = the single source, ω = 1/N = averaging,
parameter counts N·L·D, N·L, N·D, N, ++ sharing, dropout off in eval, and the folded GEMM equals the naive sum."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, make_source

from scalearn_cli.backbone import load_backbone
from scalearn_cli.combiners import get_combiner
from scalearn_cli.compose import inject
from scalearn_cli.resolve import Resolver
from scalearn_cli.scaling import VARIANTS, LowRankMix, Omega, shared_key, stack_sources
from scalearn_cli.stages.source import load_source_model

KINDS = ["lora", "bottleneck"]


@pytest.fixture(scope="module")
def sources(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    out = {}
    for kind in KINDS:
        # different ranks on purpose: the stacked rank-Σr form must handle them
        extra = [{"r": 4}, {"r": 2}, {"r": 3}] if kind == "lora" else [{}, {"reduction_factor": 8}, {}]
        out[kind] = [make_source(root / f"{kind}{i}", tiny_model_dir, kind, seed=i, **extra[i]) for i in range(3)]
    return out


def hidden(encoder, batch):
    return encoder(**batch).last_hidden_state


def composed(tiny_model_dir, folders, method="scalearn", variant="scalearn"):
    encoder, _, _ = load_backbone(str(tiny_model_dir))
    spec = get_combiner(method).spec(variant)
    comp = inject(encoder, [Resolver().source(str(f)) for f in folders], spec)
    encoder.eval()
    comp.eval()
    return encoder, comp


def set_omega(comp, values: list[float]):
    with torch.no_grad():
        for tensor in comp.combiner.values:
            tensor.copy_(torch.tensor(values).view(-1, *([1] * (tensor.dim() - 1))).expand_as(tensor))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_hot_omega_reproduces_single_source(kind, variant, sources, tiny_model_dir, batch):
    encoder, comp = composed(tiny_model_dir, sources[kind], variant=variant)
    set_omega(comp, [0.0, 1.0, 0.0])
    single, _, _ = load_source_model(sources[kind][1])
    expected = single.encoder(**batch).last_hidden_state
    assert torch.allclose(hidden(encoder, batch), expected, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_average_equals_omega_one_over_n(kind, sources, tiny_model_dir, batch):
    avg_encoder, _ = composed(tiny_model_dir, sources[kind], method="average")
    encoder, comp = composed(tiny_model_dir, sources[kind], variant="scalearn-uniform")
    set_omega(comp, [1 / 3] * 3)
    assert torch.allclose(hidden(encoder, batch), hidden(avg_encoder, batch), atol=1e-6)


@pytest.mark.parametrize("ranks", [(2, 3), (3, 3, 3)], ids=["ranks-differ", "equal-ranks"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_average_is_mean_of_source_outputs(ranks, with_bias):
    """At one site, ω = 1/N gives exactly the mean of the N sources' own outputs a_i(x); the stacked outputs
    fusion reads (one batched product when ranks are equal, a product per source otherwise) are each a_i(x),
    with a_i's gradients."""
    torch.manual_seed(0)
    n = len(ranks)
    downs = [torch.randn(r, 6) for r in ranks]
    ups = [torch.randn(5, r) for r in ranks]
    down, up, src = stack_sources(downs, ups)
    from scalearn_cli.scaling import FixedWeights

    up_bias = torch.randn(n, 5) if with_bias else None
    mix = LowRankMix("s", down, up, src, n, "relu", torch.zeros(sum(ranks)), up_bias)
    object.__setattr__(mix, "combiner", FixedWeights(n))
    x = torch.randn(3, 4, 6, requires_grad=True)
    each = [torch.relu(x @ d.T) @ u.T + (0 if up_bias is None else b)
            for d, u, b in zip(downs, ups, up_bias if with_bias else [None] * n)]
    assert torch.allclose(mix(x), sum(each) / n, atol=1e-6)
    stacked = mix.source_outputs(mix.hidden(x))
    assert stacked.shape == (3, 4, n, 5)
    assert torch.allclose(stacked, torch.stack(each, dim=-2), atol=1e-6)
    probe = torch.randn_like(stacked)
    (grad,) = torch.autograd.grad((stacked * probe).sum(), x)
    (expected,) = torch.autograd.grad((torch.stack(each, dim=-2) * probe).sum(), x)
    assert torch.allclose(grad, expected, atol=1e-5)


@pytest.mark.parametrize("variant,formula", [
    ("scalearn", lambda n, l, d: n * l * d),
    ("scalearn-uniform", lambda n, l, d: n * l),
    ("scalearn++", lambda n, l, d: n * d),
    ("scalearn-uniform++", lambda n, l, d: n),
])
def test_parameter_counts_match_paper(variant, formula, sources, tiny_model_dir):
    _, comp = composed(tiny_model_dir, sources["bottleneck"], variant=variant)
    n, layers, dim = 3, TINY["num_hidden_layers"], TINY["hidden_size"]
    assert sum(p.numel() for p in comp.trainable()) == formula(n, layers, dim)


def test_lora_sites_count_per_module(sources, tiny_model_dir):
    _, comp = composed(tiny_model_dir, sources["lora"], variant="scalearn")
    assert len(comp.sites) == 2 * TINY["num_hidden_layers"]  # query and value in every layer
    assert sum(p.numel() for p in comp.trainable()) == 3 * len(comp.sites) * TINY["hidden_size"]
    _, shared = composed(tiny_model_dir, sources["lora"], variant="scalearn-uniform++")
    assert shared.combiner.keys == ["encoder.layer.*.attention.self.query", "encoder.layer.*.attention.self.value"]


@pytest.mark.parametrize("variant", ["scalearn++", "scalearn-uniform++"])
def test_plus_plus_variants_share_one_tensor(variant, sources, tiny_model_dir):
    _, comp = composed(tiny_model_dir, sources["bottleneck"], variant=variant)
    assert len(list(comp.combiner.values)) == 1
    keys = {comp.combiner.key_of[site] for site in comp.sites}
    assert keys == {"encoder.layer.*.output"}
    assert shared_key("encoder.layer.11.attention.self.query") == "encoder.layer.*.attention.self.query"


def test_dropout_on_omega_only_in_training():
    omega = Omega({"s": 8}, n_sources=4, variant=VARIANTS["scalearn"])
    omega.eval()
    assert torch.equal(omega.weights("s"), omega.tensor("s"))
    omega.train()
    torch.manual_seed(0)
    dropped = omega.weights("s")
    assert (dropped == 0).any() and not torch.equal(dropped, omega.tensor("s"))
    uniform = Omega({"s": 8}, n_sources=4, variant=VARIANTS["scalearn-uniform++"])
    uniform.train()
    assert torch.equal(uniform.weights("s").squeeze(-1), uniform.tensor("s"))  # p = 0 for uniform++


def test_uniform_dropout_drops_whole_sources():
    omega = Omega({"s": 8}, n_sources=50, variant=VARIANTS["scalearn-uniform"])
    omega.train()
    torch.manual_seed(0)
    w = omega.weights("s")
    assert w.shape == (50, 1) and 0 < (w == 0).sum() < 50


def test_init_is_normal_two_over_n():
    torch.manual_seed(0)
    omega = Omega({"a": 300, "b": 300}, n_sources=8, variant=VARIANTS["scalearn"])
    values = torch.cat([v.flatten() for v in omega.values])
    assert abs(values.mean().item() - 2 / 8) < 1e-3 and abs(values.std().item() - 0.001) < 2e-4


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_folded_gemm_equals_naive_weighted_sum(variant):
    """Folding ω into the up matrix is exact: Σ_i ω_i ⊙ a_i computed source by source gives the same."""
    torch.manual_seed(0)
    n, d = 3, 6
    downs = [torch.randn(r, d) for r in (2, 1, 3)]
    ups = [torch.randn(d, r) for r in (2, 1, 3)]
    down, up, src = stack_sources(downs, ups)
    mix = LowRankMix("encoder.layer.0.output", down, up, src, n, "relu", torch.randn(6), torch.randn(n, d))
    omega = Omega({"encoder.layer.0.output": d}, n, VARIANTS[variant])
    omega.eval()
    object.__setattr__(mix, "combiner", omega)
    x = torch.randn(2, 4, d)
    w = omega.weights("encoder.layer.0.output")
    a = mix.source_outputs(mix.hidden(x))  # (batch, seq, N, D)
    assert torch.allclose(mix(x), (w * a).sum(-2), atol=1e-5)


def test_fusion_starts_near_average_of_values(sources, tiny_model_dir, batch):
    encoder, comp = composed(tiny_model_dir, sources["bottleneck"], method="adapterfusion")
    n_params = sum(p.numel() for p in comp.trainable())
    d = TINY["hidden_size"]
    assert n_params == TINY["num_hidden_layers"] * (2 * (d * d + d) + d * d)
    assert torch.isfinite(hidden(encoder, batch)).all()


def test_fusion_forward_equals_the_direct_formula_with_its_gradients():
    """The cheap form (K folded into the query, V after the weighted sum) computes the paper's formula exactly."""
    from scalearn_cli.scaling import FusionAttention

    torch.manual_seed(0)
    fusion = FusionAttention(24, 16)
    with torch.no_grad():  # away from the near-identity init, so every term matters
        for p in fusion.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    query, stack = torch.randn(3, 5, 24, requires_grad=True), torch.randn(3, 5, 4, 16, requires_grad=True)
    results = []
    for fn in (fusion, fusion.direct):
        fusion.zero_grad()
        query.grad = stack.grad = None
        out = fn(query, stack)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out.detach(), query.grad, stack.grad, *(p.grad.clone() for p in fusion.parameters())])
    for cheap, direct in zip(*results):
        assert torch.allclose(cheap, direct, atol=1e-5), (cheap - direct).abs().max()
    assert results[0][0].abs().max() > 0.1  # not a trivially small output


def test_inference_folds_lora_mixes_lazily_and_refolds_when_omega_changes(sources, tiny_model_dir, batch):
    """Eval + no_grad runs W + ΔW (one GEMM, the bare model's cost); it equals the unfolded sum, and a changed ω
    (an optimizer step, in place) is picked up: the cache is keyed on the tensors' versions."""
    encoder, comp = composed(tiny_model_dir, sources["lora"], variant="scalearn")
    with torch.no_grad():
        folded = hidden(encoder, batch)
    unfolded = hidden(encoder, batch).detach()  # grad enabled: the low-rank path
    assert torch.allclose(folded, unfolded, atol=1e-5)
    set_omega(comp, [0.0, 1.0, 0.0])
    with torch.no_grad():
        refolded = hidden(encoder, batch)
    assert not torch.allclose(refolded, folded, atol=1e-4)
    assert torch.allclose(refolded, hidden(encoder, batch).detach(), atol=1e-5)
