"""ScaLearn's scaling of frozen source adapters, and the baselines, as pure torch modules.

Every source adapter at a composition *site* is a low-rank map: ``a_i(x) = U_i φ(D_i x + d_i) + u_i``
(bottleneck: φ = ReLU, with biases; LoRA: φ = identity, no biases, ``U_i = s_i B_i``, ``D_i = A_i``).
Stacking the N sources' ranks gives one ``(R, D_in)`` down matrix and one ``(D_out, R)`` up matrix, R = Σ r_i.

ScaLearn (paper, eq. for the Pfeiffer adapter):  out = Σ_i ω_i ⊙ a_i(x)
Because ω_i ⊙ (U_i h) = (diag(ω_i) U_i) h, the weights fold into the up matrix each step, so all N sources
are two GEMMs (down, up) and the (batch, seq, N, hidden) stack of source outputs is never materialised.
AdapterFusion needs that stack (attention over sources), so it is computed only on the fusion path.

When R is large (hundreds of LoRA sources) even the two GEMMs cost O(R) per token and save a rank-R activation
for backward. A linear mix (LoRA sources) then runs *dense*: ΔW(ω) = (U · diag ω) D is formed once per forward
and the site is one GEMM with W + ΔW; ω's gradient flows through ΔW (``dense_site``, which forms ΔW again in
backward where keeping W + ΔW would cost much memory). :func:`dense_is_cheaper` picks the path per site and call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from scalearn_cli.errors import CompositionError

#: the non-linearities between a source's down and up matrices (bottleneck: relu; LoRA: identity)
ACTIVATIONS = ("relu", "identity")


@dataclass(frozen=True)
class VariantSpec:
    """One ScaLearn variant: vector or scalar ω, shared across layers or not, dropout on ω."""

    name: str
    vector: bool
    shared: bool
    dropout: float


VARIANTS: dict[str, VariantSpec] = {
    "scalearn": VariantSpec("scalearn", vector=True, shared=False, dropout=0.3),
    "scalearn-uniform": VariantSpec("scalearn-uniform", vector=False, shared=False, dropout=0.3),
    "scalearn++": VariantSpec("scalearn++", vector=True, shared=True, dropout=0.3),
    "scalearn-uniform++": VariantSpec("scalearn-uniform++", vector=False, shared=True, dropout=0.0),
}

#: a layer index in a site path: BERT ``encoder.layer.3.``, Llama/Qwen2/Mistral ``layers.3.``, GPT-2 ``h.3.``
_LAYER_INDEX = re.compile(r"(^|\.)(layer|layers|h)\.\d+\.")


def shared_key(site: str) -> str:
    """The ++ variants share ω across layers per module name: drop the layer index from a site path."""
    return _LAYER_INDEX.sub(r"\1\2.*.", site)


class Weighting(nn.Module):
    """Per-source weights at every site, ``weights(site)`` -> (N, D_out) or (N, 1): the mix folds them into its up
    matrix (ScaLearn's ω, the fixed 1/N or 1/k). Any other combiner module is called as ``(mix, x, query)``."""

    def weights(self, site: str) -> torch.Tensor:
        raise NotImplementedError


class Omega(Weighting):
    """The learned scaling parameters of one composition, one tensor per key (a site, or a shared group).

    Shapes: vector variants ``(N, D)``, scalar variants ``(N,)``; ``weights(site)`` returns ``(N, D)`` or
    ``(N, 1)`` after dropout on ω itself (one mask per call, i.e. per forward pass and site: in the ++
    variants each layer draws its own mask on the shared tensor).
    """

    def __init__(
        self,
        site_dims: dict[str, int],
        n_sources: int,
        variant: VariantSpec,
        init_std: float = 0.001,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.n_sources = n_sources
        self.p_drop = variant.dropout if dropout is None else dropout
        self.key_of = {site: (shared_key(site) if variant.shared else site) for site in site_dims}
        dims: dict[str, int] = {}
        for site, dim in site_dims.items():
            dims[self.key_of[site]] = dim
        self.keys = sorted(dims)
        self.values = nn.ParameterList()
        for key in self.keys:
            shape = (n_sources, dims[key]) if variant.vector else (n_sources,)
            # paper: ω ~ Normal(2/N, 0.001), no bias, no softmax, no sum-to-one
            self.values.append(nn.Parameter(torch.normal(2.0 / n_sources, init_std, size=shape)))
        self._index = {key: i for i, key in enumerate(self.keys)}

    def tensor(self, key: str) -> nn.Parameter:
        return self.values[self._index[key]]

    def weights(self, site: str) -> torch.Tensor:
        omega = self.tensor(self.key_of[site])
        omega = F.dropout(omega, self.p_drop, self.training)
        return omega if omega.dim() == 2 else omega.unsqueeze(-1)  # (N, D) or (N, 1)

    def state(self) -> dict[str, torch.Tensor]:
        """ω by key, for ``omega.safetensors``."""
        return {key: self.tensor(key).detach() for key in self.keys}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = set(self.keys) - set(tensors)
        if missing:
            raise KeyError(f"omega file lacks {sorted(missing)[0]}")
        with torch.no_grad():
            for key in self.keys:
                self.tensor(key).copy_(tensors[key])


class FixedWeights(Weighting):
    """Fixed weights at every site: 1/N (the ``average`` baseline) or given ones (AdapterSoup's 1/k on k chosen)."""

    def __init__(self, n_sources: int, values: list[float] | None = None) -> None:
        super().__init__()
        w = torch.full((n_sources,), 1.0 / n_sources) if values is None else torch.tensor(values, dtype=torch.float32)
        self.register_buffer("w", w.view(n_sources, 1), persistent=False)

    def weights(self, site: str) -> torch.Tensor:
        return self.w  # (N, 1)


class FusionAttention(nn.Module):
    """AdapterFusion at one site: attention over source outputs with query, key and value projections.

    Value is initialised near identity (as in Pfeiffer et al. 2021), so fusion starts as a plain average-like
    mix; the softmax weights are input dependent, so the full ``(batch, seq, N, D)`` stack is needed.

    The math is the paper's, ``Σ_i softmax_i(q · K(s_i)) · V(s_i)``, computed without projecting the N-source stack
    through K and V: ``q · (W_k s_i + b_k) = (W_kᵀ q) · s_i + q · b_k``, whose last term is the same for every
    source and cancels in the softmax (kept anyway: one dot product); and ``V`` is linear without bias, so
    ``Σ_i p_i V(s_i) = V(Σ_i p_i s_i)``. That is two D×D products per token instead of 2N (same outputs and
    gradients up to float rounding; tested against the direct formula, :meth:`direct`).
    """

    def __init__(self, d_query: int, d_out: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_query, d_out)
        self.key = nn.Linear(d_out, d_out)
        self.value = nn.Linear(d_out, d_out, bias=False)
        for lin in (self.query, self.key):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.value.weight.fill_(1e-6).fill_diagonal_(1.0)

    def forward(self, query: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
        q = self.query(query)  # (batch, seq, D)
        # q · b_k shifts every source's score alike (the softmax drops it); kept so every parameter is in the
        # graph, as distributed data parallel requires, and the scores equal the direct formula's
        scores = (stack @ (q @ self.key.weight).unsqueeze(-1)).squeeze(-1) + (q * self.key.bias).sum(-1, keepdim=True)
        probs = torch.softmax(scores, dim=-1)  # (batch, seq, N)
        return self.value((probs.unsqueeze(-2) @ stack).squeeze(-2))  # V(Σ_i p_i s_i): (batch, seq, D)

    def direct(self, query: torch.Tensor, stack: torch.Tensor) -> torch.Tensor:
        """The formula as written: K and V applied to each source output (the reference ``forward`` must match)."""
        q = self.query(query).unsqueeze(-2)  # (batch, seq, 1, D)
        probs = torch.softmax((q * self.key(stack)).sum(-1), dim=-1)  # (batch, seq, N)
        return (probs.unsqueeze(-1) * self.value(stack)).sum(-2)  # (batch, seq, D)


#: how a linear mix runs when gradients are on: ``auto`` picks by :func:`dense_is_cheaper` per call; ``dense``
#: (W + ΔW(ω), one GEMM) and ``low-rank`` (two thin GEMMs) force a path, for tests and benchmarks
MixPath = Literal["auto", "dense", "low-rank"]
MIX_PATHS: tuple[str, ...] = ("auto", "dense", "low-rank")


def dense_is_cheaper(tokens: int, rank: int, d_in: int, d_out: int) -> bool:
    """Whether a site runs cheaper as W + ΔW(ω) than as two low-rank GEMMs, counting the multiply-adds of one
    forward + backward that the paths do not share (the site's own GEMM, with W or with W + ΔW, and its input
    gradient cost the same on both):

    * low-rank: ``tokens · R · (2·D_in + 3·D_out)`` — forward x·Dᵀ and h·(U·ω)ᵀ; backward h's gradient, (U·ω)'s
      (from the rank-R activation h, which is kept for it) and the low-rank term of x's gradient;
    * dense: ``(tokens + 2·R) · D_in · D_out`` — forward ΔW = (U·ω)·D; backward the weight's gradient gᵀ·x and
      (U·ω)'s, (gᵀ·x)·Dᵀ; plus ``R · D_in · D_out`` where W + ΔW is not kept for backward but formed again there
      (:func:`keeps_summed_weight`); nothing of rank R is kept for backward.

    MiniLM's 384 × 384 sites at 2,048 tokens a batch cross over at R ≈ 83 (N ≈ 10 LoRAs of rank 8). ω's gradient
    is counted in the (gᵀ·x)·Dᵀ order; where the other order is cheaper (:func:`up_grad_via_input_first`, small R)
    the dense path takes it, so the count is an upper bound there, and the crossover stays where it was measured.
    """
    passes = 2 if keeps_summed_weight(tokens, d_out) else 3
    return (tokens + passes * rank) * d_in * d_out < tokens * rank * (2 * d_in + 3 * d_out)


def up_grad_via_input_first(tokens: int, rank: int, d_in: int, d_out: int) -> bool:
    """Which order a dense site computes Gᵀ·X·Dᵀ in, the gradient of U·diag ω (D_out × R) that ω's needs:
    Gᵀ·(X·Dᵀ) costs ``tokens · R · (D_in + D_out)`` multiply-adds, (Gᵀ·X)·Dᵀ ``(tokens + R) · D_in · D_out``
    (G: the output's gradient, X: the input, both tokens × D). The first wins for few sources on a large batch
    (MiniLM's 384-wide sites at 2,048 tokens: R < 212), the second for many (a 512-wide decoder site at 1,024
    tokens: R > 341). Either is exact; the dense path takes the cheaper."""
    return tokens * rank * (d_in + d_out) < (tokens + rank) * d_in * d_out


def keeps_summed_weight(tokens: int, d_out: int) -> bool:
    """Whether a dense site keeps W + ΔW (D_out × D_in) for its input's gradient rather than form ΔW again in
    backward: when it is at most a quarter of the bytes of the site's input (tokens × D_in), which backward keeps
    anyway. Then it costs memory the activations dwarf (MiniLM's 384-wide sites at 2,048 tokens: 19% of the input);
    otherwise (a 512-wide decoder site at 1,024 tokens: 50%; a 4,096-wide one below 16,384 tokens a batch) the
    Σr·D_in·D_out multiply-adds of forming it again are the cheaper price."""
    return 4 * d_out <= tokens


def set_mix_path(module: nn.Module, path: MixPath) -> None:
    """Force (or, with ``auto``, stop forcing) how every mix inside ``module`` runs under gradients."""
    if path not in MIX_PATHS:
        raise ValueError(f"mix path must be one of {', '.join(MIX_PATHS)}, got '{path}'")
    for mix in module.modules():
        if isinstance(mix, LowRankMix):
            mix.path = path


class LowRankMix(nn.Module):
    """N frozen low-rank sources at one site, combined by one ``combiner``: a :class:`Weighting` (ω, fixed 1/N),
    folded into the up matrix here, or any module called as ``combiner(mix, x, query)`` (fusion, merges, routing).

    Buffers (frozen): ``down (R, D_in)``, ``down_bias (R,)`` or None, ``up (D_out, R)``, ``up_bias (N, D_out)``
    or None, ``src (R,)`` = which source each rank column belongs to.
    """

    def __init__(
        self,
        site: str,
        down: torch.Tensor,
        up: torch.Tensor,
        src: torch.Tensor,
        n_sources: int,
        activation: Literal["relu", "identity"],
        down_bias: torch.Tensor | None = None,
        up_bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:  # never a silent identity for a kind's unknown non-linearity
            raise CompositionError(f"the sources' adapter kind declares activation '{activation}'; a kind's "
                                   f"activation must be one of {', '.join(ACTIVATIONS)}")
        self.site = site
        self.n_sources = n_sources
        self.activation = activation
        self.register_buffer("down", down.contiguous())
        self.register_buffer("up", up.contiguous())
        self.register_buffer("src", src.long())
        self.register_buffer("down_bias", None if down_bias is None else down_bias.contiguous())
        self.register_buffer("up_bias", None if up_bias is None else up_bias.contiguous())
        #: the combiner at this site (set by compose; owned by the Composition, so not a child of the mix)
        self.combiner: Weighting | Callable[..., torch.Tensor] | None = None
        self.path: MixPath = "auto"
        # equal ranks in column blocks (as stack_sources builds them): ω scales U through a view, without a gather
        total = src.numel()
        rank = total // n_sources if n_sources else 0
        blocks = rank > 0 and total == rank * n_sources and torch.equal(
            src.long(), torch.arange(n_sources).repeat_interleave(rank))
        self.block_rank = rank if blocks else 0

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(x, self.down, self.down_bias)  # (batch, seq, R)
        return F.relu(h) if self.activation == "relu" else h

    def forward(self, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        """Σ_i w_i ⊙ a_i(x), shape (batch, seq, D_out). ``query`` feeds AdapterFusion (defaults to x)."""
        if not isinstance(self.combiner, Weighting):
            return self.combiner(self, x, query)
        hid = self.hidden(x)
        w = self.combiner.weights(self.site)  # (N, D_out) or (N, 1)
        up = self.scaled_up(w)  # fold ω into U: (D_out, R)
        bias = None if self.up_bias is None else (w * self.up_bias).sum(0)  # (D_out,)
        return F.linear(hid, up, bias)

    def foldable(self) -> bool:
        """Linear in x with input-independent weights (LoRA sources under ω or fixed weights): ΔW exists."""
        return self.activation == "identity" and isinstance(self.combiner, Weighting)

    def scaled_up(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """U with each rank column scaled by its source's ω, ``w`` (drawn here, dropout and all, when None):
        (D_out, R)."""
        w = self.combiner.weights(self.site) if w is None else w  # (N, D_out) or (N, 1)
        if self.block_rank:  # (D_out, N, r) * (D_out or 1, N, 1): no (R, D_out) gather, nor its scatter in backward
            return (self.up.view(-1, self.n_sources, self.block_rank) * w.transpose(0, 1).unsqueeze(-1)).flatten(1)
        return self.up * w[self.src].transpose(0, 1)

    def scaled_up_grad(self, grad_up: torch.Tensor, columns: int) -> torch.Tensor:
        """The gradient of the weights ``w`` in :meth:`scaled_up` from that of its result, ``grad_up`` (D_out, R):
        U · diag w is linear in w, so U alone is needed, not w. ``columns``: w's second dimension (D_out for
        vector ω, 1 for scalar). Returns (N, columns)."""
        n, rank = self.n_sources, self.block_rank
        if columns == 1:  # scalar weights: each source's sum over its rank columns of U ⊙ grad_up
            per_column = (grad_up * self.up).sum(0)  # (R,)
            if rank:
                return per_column.view(n, rank).sum(-1, keepdim=True)
            return per_column.new_zeros(n).index_add_(0, self.src, per_column).unsqueeze(-1)
        if rank:  # one r-long dot product per (output, source): a batched GEMM, no (D_out, R) product kept
            return torch.bmm(grad_up.reshape(-1, 1, rank), self.up.view(-1, rank, 1)).view(-1, n).T
        return grad_up.new_zeros(grad_up.shape[0], n).index_add_(1, self.src, grad_up * self.up).T

    def dense_for(self, x: torch.Tensor) -> bool:
        """Whether this call (input ``x``, gradients on) runs as W + ΔW(ω): forced by ``path``, else by
        :func:`dense_is_cheaper` for this site's shape and the batch's token count. Only linear mixes can."""
        if self.path == "low-rank" or not self.foldable():
            return False
        rank, d_in = self.down.shape
        return self.path == "dense" or dense_is_cheaper(x.numel() // d_in, rank, d_in, self.up.shape[0])

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """ΔW = (diag(ω) U) D, shape (D_out, D_in), in eval mode; cached until ω, U or D change in place.

        Inference then costs one GEMM with W + ΔW, the bare model's, instead of two extra low-rank ones: the
        fold that ``scalearn export --format merged`` writes, done lazily in memory (see ComposedLinear).
        """
        tensors = [self.up, self.down, *self.combiner.parameters(), *self.combiner.buffers()]
        key = (id(self.combiner), *(t._version for t in tensors), *(t.data_ptr() for t in tensors))
        if getattr(self, "_delta_key", None) != key:
            self._delta = self.scaled_up() @ self.down  # (D_out, D_in); no dropout in eval mode
            self._delta_key = key
        return self._delta

    def source_outputs(self, hid: torch.Tensor) -> torch.Tensor:
        """Each source's own output a_i, stacked: (batch, seq, N, D_out). Used by fusion only."""
        n, rank = self.n_sources, self.block_rank
        if rank:  # equal ranks in column blocks: one batched product, no per-source copies
            out = torch.einsum("...nr,onr->...no", hid.unflatten(-1, (n, rank)), self.up.unflatten(1, (n, rank)))
            return out if self.up_bias is None else out + self.up_bias
        outs = []
        for i in range(self.n_sources):
            cols = (self.src == i).nonzero().squeeze(-1)
            bias = None if self.up_bias is None else self.up_bias[i]
            outs.append(F.linear(hid.index_select(-1, cols), self.up.index_select(1, cols), bias))
        return torch.stack(outs, dim=-2)


def stack_sources(
    downs: list[torch.Tensor], ups: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate per-source ``D_i (r_i, D_in)`` and ``U_i (D_out, r_i)`` into one rank-Σr_i pair + source index."""
    down = torch.cat(downs, dim=0)  # (R, D_in)
    up = torch.cat(ups, dim=1)  # (D_out, R)
    src = torch.cat([torch.full((d.shape[0],), i, dtype=torch.long) for i, d in enumerate(downs)])
    return down, up, src
