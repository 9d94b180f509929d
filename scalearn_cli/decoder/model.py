"""A frozen causal LM with its LM head as a task model: the loss is the answer tokens' alone.

Sources and compositions adapt the bare decoder inside it (``lm.model`` for Llama/Qwen2, ``lm.transformer`` for
GPT-2), the same module paths as for classification heads, so one LoRA source serves both kinds of target. The LM
head stays frozen; nothing new is trained on top of the decoder (no head).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scalearn_cli.prompts import IGNORE


class GenerativeModel(nn.Module):
    """``lm`` (``AutoModelForCausalLM``, maybe wrapped by PEFT) -> (loss, logits), like ``model.TaskModel``.

    With ``labels`` (right-aligned, -100 on prompt and padding): the mean NLL per answer token and, per row,
    ``(summed answer log-prob, answer tokens)`` of shape (batch, 2). Without: the LM's logits (batch, seq, vocab).
    """

    problem_type = "generation"
    head = None  # no task head: the frozen LM head scores the answer

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    @property
    def encoder(self) -> nn.Module:
        """The bare decoder (where composition sites live), under any PEFT wrapper."""
        lm = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return lm.base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        # positions counted over real tokens: left padding must not shift them (GPT-2's absolute positions)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (batch, seq)
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        if labels is None:
            return None, logits  # (batch, seq, vocab)
        return answer_loss(logits, labels[:, -input_ids.shape[1]:])

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 pad_token_id: int, eos_token_id: int | None) -> torch.Tensor:
        """Greedy continuation of left-padded prompts: the new tokens only, (batch, ≤ max_new_tokens)."""
        self.eval()
        out = self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                               do_sample=False, num_beams=1, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
        return out[:, input_ids.shape[1]:]


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per row (summed answer log-prob, answer tokens) (batch, 2)); position t predicts t + 1.

    The loss is the mean over rows of each row's mean NLL per answer token: every example weighs the same, so the
    mean over a split does not depend on how it was batched (``train.evaluate`` weights batches by rows).
    """
    target = labels[:, 1:]  # (batch, seq - 1)
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE,
                          reduction="none").view(target.shape)  # 0 where ignored
    scored = (target != IGNORE).float()
    loss = (nll.sum(1) / scored.sum(1).clamp_min(1.0)).mean()
    return loss, torch.stack([-nll.sum(1), scored.sum(1)], dim=-1)


def answer_nll(stats: np.ndarray) -> float:
    """The loss of ``answer_loss`` over all rows, from their (summed log-prob, tokens) pairs."""
    stats = np.asarray(stats, dtype=np.float64).reshape(-1, 2)
    return float((-stats[:, 0] / np.maximum(stats[:, 1], 1.0)).mean())
