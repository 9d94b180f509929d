"""A LoRA mix's site run as one GEMM with W + ΔW(ω), keeping W + ΔW for backward only where it is small.

Through plain autograd, ``F.linear(x, W + ΔW, b)`` saves the summed weight W + ΔW (D_out × D_in) to form the input's
gradient: a fresh matrix per site, kept until backward. Against a small batch that is not small (a 512 × 512 site at
1,024 tokens keeps half its input's bytes in it). Here the forward saves the input ``x`` (which the base layer's own
GEMM saves anyway: the same storage), ω's weights ``w`` (N × D_out at most), and W + ΔW only where
``scaling.keeps_summed_weight`` says it is small against that input; elsewhere W by reference, and backward forms
ΔW = (U · diag w) D again (Σr · D_in · D_out multiply-adds, once per step, not per token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from scalearn_cli.scaling import LowRankMix, keeps_summed_weight


def _delta(mix: "LowRankMix", w: torch.Tensor | None) -> torch.Tensor:
    """ΔW (D_out, D_in) for weights ``w`` (None: the mix's fixed weights, from its cache)."""
    return mix.delta_weight() if w is None else mix.scaled_up(w) @ mix.down


class _DenseSite(torch.autograd.Function):
    """y = x (W + ΔW(w))ᵀ + b with gradients to x, W, b and w; ``w`` None means weights that cannot change."""

    @staticmethod
    def forward(ctx, x, weight, bias, w, mix, keep):  # noqa: D102 (autograd's signature)
        summed = weight + _delta(mix, w).to(weight.dtype)
        ctx.mix, ctx.keep = mix, keep
        # kept: W + ΔW, and of w only its shape (ω's gradient does not depend on w); else W and w, to form ΔW again
        stand_in = None if w is None or not keep else torch.zeros((), dtype=w.dtype, device=w.device).expand(w.shape)
        ctx.save_for_backward(x, summed if keep else weight, w if stand_in is None else stand_in)
        return F.linear(x, summed, bias)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight, w = ctx.saved_tensors  # with ctx.keep, ``weight`` is W + ΔW
        mix = ctx.mix
        need_x, need_weight, need_bias, need_w = ctx.needs_input_grad[:4]
        grad_x = grad_weight = grad_bias = grad_w = None
        with torch.enable_grad():  # U · diag w again (elementwise), with w's gradient when it has one
            # U · diag w is linear in w, so its gradient needs no w: where W + ΔW was kept, w was not (zeros stand in)
            w_leaf = None if w is None else w.detach().requires_grad_(need_w)
            scaled_up = None if w is None else mix.scaled_up(w_leaf)  # (D_out, R)
        # the GEMMs in the gradient's dtype: under autocast (bf16) the forward's GEMM ran in it too, and backward
        # runs outside autocast, so mixed dtypes are cast here; in full precision every cast is a no-op
        dtype = grad.dtype
        if need_x:
            if ctx.keep:
                summed = weight
            else:  # ΔW formed again: W + ΔW was not kept between forward and backward
                delta = mix.delta_weight() if w is None else scaled_up.detach() @ mix.down
                summed = weight + delta.to(weight.dtype)
            grad_x = (grad @ summed.to(dtype)).to(x.dtype)
        if need_weight or need_w:
            # the gradient of the summed weight: Σ over tokens of gᵀ x, (D_out, D_in)
            g_sum = grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1]).to(dtype)
            grad_weight = g_sum.to(weight.dtype) if need_weight else None
            if need_w:  # ΔW = (U · diag w) D: the gradient of U · diag w is g_sum Dᵀ, then through the scaling
                grad_scaled = g_sum.to(mix.down.dtype) @ mix.down.T
                (grad_w,) = torch.autograd.grad(scaled_up, w_leaf, grad_scaled.to(scaled_up.dtype))
        if need_bias:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
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
