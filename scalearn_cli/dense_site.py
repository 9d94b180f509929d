"""A LoRA mix's site run as one GEMM with W + ΔW(ω), keeping W + ΔW for backward only where it is small.

Through plain autograd, ``F.linear(x, W + ΔW, b)`` saves the summed weight W + ΔW (D_out × D_in) to form the input's
gradient: a fresh matrix per site, kept until backward. Against a small batch that is not small (a 512 × 512 site at
1,024 tokens keeps half its input's bytes in it). Here the forward saves the input ``x`` (which the base layer's own
GEMM saves anyway: the same storage), ω's weights ``w`` (N × D_out at most), and W + ΔW only where
``scaling.keeps_summed_weight`` says it is small against that input; elsewhere W by reference, and backward forms
ΔW = (U · diag w) D again (Σr · D_in · D_out multiply-adds, once per step, not per token).

Backward, with G the output's gradient and X the input (tokens × D each):

* x's gradient: G · (W + ΔW);
* ω's: through the gradient of U · diag w, Gᵀ · X · Dᵀ (D_out × R), multiplied in the cheaper order for the
  shapes (``scaling.up_grad_via_input_first``), then contracted with U per source (``LowRankMix.scaled_up_grad``:
  U · diag w is linear in w, so w itself is not needed);
* W's (a trainable base only): Gᵀ · X, which the second order shares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scalearn_cli.scaling import LowRankMix, keeps_summed_weight, up_grad_via_input_first


def _summed(weight: torch.Tensor, mix: "LowRankMix", w: torch.Tensor | None) -> torch.Tensor:
    """W + ΔW(w), (D_out, D_in), in W's dtype (``w`` None: the mix's fixed weights, ΔW from its cache)."""
    if w is None:
        return weight + mix.delta_weight().to(weight.dtype)
    up = mix.scaled_up(w)  # (D_out, R)
    if not torch.is_autocast_enabled(weight.device.type) and up.dtype == weight.dtype == mix.down.dtype:
        return torch.addmm(weight, up, mix.down)  # one GEMM accumulating into a copy of W: no ΔW apart, no sum pass
    # under autocast (bf16) ΔW's GEMM runs in its dtype, as a plain product would; the sum stays in W's dtype
    return weight + (up @ mix.down).to(weight.dtype)


def _up_grad(grad: torch.Tensor, x: torch.Tensor, down: torch.Tensor, g_sum: torch.Tensor | None) -> torch.Tensor:
    """Gᵀ · X · Dᵀ, (D_out, R), for ``grad`` G and ``x`` X as (tokens, D): via ``g_sum`` = Gᵀ · X when it was
    formed anyway (a trainable base) or that order is the cheaper, else as Gᵀ · (X · Dᵀ)."""
    rank, d_in = down.shape
    if g_sum is None and up_grad_via_input_first(grad.shape[0], rank, d_in, grad.shape[1]):
        return grad.T.to(down.dtype) @ (x.to(down.dtype) @ down.T)
    g_sum = grad.T @ x if g_sum is None else g_sum
    return g_sum.to(down.dtype) @ down.T


class _DenseSite(torch.autograd.Function):
    """y = x (W + ΔW(w))ᵀ + b with gradients to x, W, b and w; ``w`` None means weights that cannot change."""

    @staticmethod
    def forward(ctx, x, weight, bias, w, mix, keep):  # noqa: D102 (autograd's signature)
        summed = _summed(weight, mix, w)
        ctx.mix, ctx.keep = mix, keep
        ctx.w_meta = None if w is None else (w.shape[1], w.dtype)
        # kept: W + ΔW and nothing of w (ω's gradient does not depend on w); else W by reference and w, to form
        # ΔW again
        ctx.save_for_backward(x, summed if keep else weight, None if keep else w)
        return F.linear(x, summed, bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight, w = ctx.saved_tensors  # with ctx.keep, ``weight`` is W + ΔW
        mix = ctx.mix
        need_x, need_weight, need_bias, need_w = ctx.needs_input_grad[:4]
        grad_x = grad_weight = grad_bias = grad_w = None
        # the GEMMs in the gradient's dtype: under autocast (bf16) the forward's GEMM ran in it too, and backward
        # runs outside autocast, so mixed dtypes are cast here; in full precision every cast is a no-op
        dtype = grad.dtype
        grad = grad.reshape(-1, grad.shape[-1])  # (tokens, D_out); one copy for all three uses where it is strided
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)  # (tokens, D_in)
        if need_x:  # where W + ΔW was not kept, ΔW is formed again
            summed = weight if ctx.keep else _summed(weight, mix, w)
            grad_x = (grad @ summed.to(dtype)).to(x.dtype).view(x.shape)
        g_sum = grad.T @ x2 if need_weight else None  # the gradient of W: Σ over tokens of gᵀ x, (D_out, D_in)
        if need_weight:
            grad_weight = g_sum.to(weight.dtype)
        if need_w:
            columns, w_dtype = ctx.w_meta
            grad_w = mix.scaled_up_grad(_up_grad(grad, x2, mix.down, g_sum), columns).to(w_dtype)
        if need_bias:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias, grad_w, None, None


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, mix: "LowRankMix") -> torch.Tensor:
    """``x (W + ΔW)ᵀ + b`` for a LoRA ``mix`` whose weights may carry gradients (ω, a dropout mask drawn here).

    ``weight`` is (D_out, D_in) (a transposed view for GPT-2's Conv1D). Same outputs and gradients as
    ``F.linear(x, weight + ΔW(w), bias)`` through plain autograd; the summed weight is kept for backward only where
    it is small against the input kept anyway (``scaling.keeps_summed_weight``), else formed again there.
    """
    combiner = mix.combiner
    fixed = not any(p.requires_grad for p in combiner.parameters())
    if fixed and not (combiner.training and getattr(combiner, "p_drop", 0.0) > 0):
        w = None  # fixed weights: ΔW comes from the mix's cache, forward and backward alike
    else:
        w = combiner.weights(mix.site)  # (N, D_out) or (N, 1), one dropout mask for this call
    keep = keeps_summed_weight(x.numel() // x.shape[-1], weight.shape[0])
    return _DenseSite.apply(x, weight, bias, w, mix, keep)
