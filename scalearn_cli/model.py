"""The task model: a frozen encoder (with sources or a composition inside it) plus a small trainable head."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from scalearn_cli.artifacts import HEAD_FILE, load_tensors
from scalearn_cli.artifacts.meta import POOLINGS, HeadSpec
from scalearn_cli.backbone import is_decoder
from scalearn_cli.decoder.model import GenerativeModel
from scalearn_cli.errors import ArtifactError

ProblemType = Literal["classification", "regression", "multiple_choice", "multi_label_classification"]
#: how the head reads a sequence: the first token ([CLS]/<s>, the paper's), the mean over non-padding tokens
#: (what sentence-transformers encoders such as all-MiniLM-L6-v2 were trained with), or the last non-padding token
#: (decoder LMs: under causal attention only it has seen the whole input); see ``artifacts.meta.POOLINGS``
Pooling = Literal["first", "mean", "last"]


class TaskHead(nn.Module):
    """RoBERTa-style head on a pooled sequence: pool -> dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1, pooling: Pooling = "first") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got '{pooling}'")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, num_outputs)
        #: multi-label: each label's decision threshold on its probability (recorded in scalearn.json's head entry);
        #: None: the default 0.5 (and for every other problem type)
        self.thresholds: tuple[float, ...] | None = None

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, seq, hidden) -> (batch, hidden)."""
        if self.pooling == "first":
            return hidden_states[:, 0]  # the [CLS]/<s> token
        if self.pooling == "last":
            if attention_mask is None:
                return hidden_states[:, -1]
            # the last position whose mask is 1: right padding (…, x, pad, pad) and left padding (pad, pad, …, x)
            positions = torch.arange(hidden_states.shape[1], device=hidden_states.device)  # (seq,)
            last = (attention_mask.long() * (positions + 1)).argmax(1)  # (batch,)
            return hidden_states[torch.arange(hidden_states.shape[0], device=hidden_states.device), last]
        if attention_mask is None:
            return hidden_states.mean(1)
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (batch, seq, 1)
        return (hidden_states * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout(self.pool(hidden_states, attention_mask))
        x = torch.tanh(self.dense(x))
        return self.out_proj(self.dropout(x))  # (batch, num_outputs)


def head_spec(head: TaskHead) -> HeadSpec:
    """The ``head`` entry of scalearn.json: enough to rebuild the head before loading its weights."""
    return HeadSpec(head.dense.in_features, head.out_proj.out_features, head.pooling, head.thresholds)


def build_head(spec: HeadSpec, folder: Path) -> TaskHead:
    """The saved task head of a folder (``head.safetensors``), checked against its spec."""
    head = TaskHead(spec.hidden_size, spec.num_outputs, pooling=spec.pooling)
    try:
        head.load_state_dict(load_tensors(Path(folder) / HEAD_FILE))
    except RuntimeError as exc:
        raise ArtifactError(f"{folder}/{HEAD_FILE} does not fit its metadata ({exc}); re-create the folder") from exc
    head.thresholds = spec.thresholds
    return head


def head_outputs(problem_type: ProblemType, num_labels: int) -> int:
    """How many numbers the head emits per encoded sequence."""
    return 1 if problem_type in ("regression", "multiple_choice") else num_labels


class TaskModel(nn.Module):
    """``encoder`` (frozen, possibly adapted) + ``head``; returns (loss, logits)."""

    def __init__(self, encoder: nn.Module, head: TaskHead, problem_type: ProblemType) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.problem_type = problem_type
        #: decoders get position ids counted over real tokens, so left padding does not shift them (GPT-2's
        #: absolute positions would change the scores otherwise)
        self.causal = is_decoder(getattr(getattr(encoder, "config", None), "model_type", None))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        n_choices = input_ids.shape[1] if self.problem_type == "multiple_choice" else None
        if n_choices is not None:  # (batch, choices, seq) -> (batch * choices, seq)
            input_ids, attention_mask = input_ids.flatten(0, 1), attention_mask.flatten(0, 1)
            token_type_ids = token_type_ids.flatten(0, 1) if token_type_ids is not None else None
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        if self.causal:
            extra["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (batch, seq)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        logits = self.head(hidden, attention_mask)
        if n_choices is not None:
            logits = logits.view(-1, n_choices)  # (batch, choices)
        elif self.problem_type == "regression":
            logits = logits.squeeze(-1)  # (batch,)
        loss = None if labels is None else task_loss(self.problem_type, logits, labels)
        return loss, logits


def task_loss(problem_type: ProblemType, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MSE for regression, binary cross-entropy on each label's logit for multi-label (labels 0/1 rows, as
    transformers' ``multi_label_classification``), cross-entropy otherwise (all in fp32 for stability under mixed
    precision)."""
    if problem_type == "regression":
        return F.mse_loss(logits.float(), labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def task_model_for(encoder: nn.Module, head: TaskHead | None, problem_type: str) -> nn.Module:
    """A head on an encoder, or (generation: ``encoder`` is a causal LM, ``head`` None) the LM scoring answers."""
    if problem_type == "generation":
        return GenerativeModel(encoder)
    return TaskModel(encoder, head, problem_type)
