"""One training loop for both stages (source adapters and transfer), on top of ``accelerate``.

AdamW, linear decay with no warm-up, weight decay 0 (the paper's protocol); evaluation on the dev split after
every epoch; early stopping on dev loss; the best epoch's trainable tensors restored at the end. The same code
runs on CPU, one GPU (``--precision bf16|fp16``) and under ``accelerate launch`` for several GPUs or nodes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from scalearn_cli.errors import TrainingError, UsageError

logger = logging.getLogger(__name__)

Precision = Literal["no", "fp16", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """Training options shared by ``train-source`` and ``transfer``."""

    epochs: int = 30
    lr: float | None = None  # None: the stage's default (the adapter kind's, or the combiner's)
    batch_size: int = 32
    max_length: int = 128
    seed: int = 42
    patience: int | None = 5  # None or 0: no early stopping
    max_steps: int | None = None  # overrides epochs when set (few-shot: 1,000 steps)
    precision: Precision = "no"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.precision not in ("no", "fp16", "bf16"):
            raise UsageError(f"--precision must be no, fp16 or bf16, got '{self.precision}'")


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    dev_loss: float
    dev_metrics: dict[str, float]


@dataclass
class TrainResult:
    best_epoch: int
    best_dev_loss: float
    steps: int
    train_seconds: float
    examples_per_second: float
    history: list[EpochLog] = field(default_factory=list)


class Progress:
    """Callbacks the CLI renders; the library only calls them (no rich/typer here)."""

    def start(self, total_steps: int) -> None: ...

    def step(self, loss: float, examples_per_second: float) -> None: ...

    def epoch_end(self, log: EpochLog) -> None: ...

    def close(self) -> None: ...


def make_accelerator(precision: Precision = "no"):
    """An ``Accelerator`` (CPU when no GPU is present; mixed precision only where a GPU supports it)."""
    from accelerate import Accelerator

    use_gpu = torch.cuda.is_available()
    return Accelerator(mixed_precision=precision if use_gpu else "no", cpu=not use_gpu)


def fit(
    model: nn.Module,
    params: list[nn.Parameter],
    train_loader,
    dev_loader,
    config: TrainConfig,
    metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    progress: Progress | None = None,
    accelerator=None,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``params`` of ``model``; restore the best epoch (lowest dev loss) and return the log.

    ``penalty`` (e.g. a group lasso on ω) is added to the training loss only, not to the dev loss.
    """
    from transformers import get_linear_schedule_with_warmup

    if config.lr is None:
        raise UsageError("no learning rate: pass --lr (the stages fill in their default before training)")
    progress = progress or Progress()
    accelerator = accelerator or make_accelerator(config.precision)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes)
    epochs = config.epochs if config.max_steps is None else math.ceil(config.max_steps / max(1, steps_per_epoch))
    total = config.max_steps or steps_per_epoch * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    model, optimizer, train_loader, dev_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, dev_loader, scheduler
    )
    names = _trainable_names(accelerator.unwrap_model(model), params)
    best = (math.inf, 0, _snapshot(accelerator.unwrap_model(model), names))
    history: list[EpochLog] = []
    progress.start(total)
    step, seen, t0, bad_epochs = 0, 0, time.perf_counter(), 0
    try:  # a TrainingError must still close the progress display
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for batch in train_loader:
                loss, _ = model(**batch)
                value = loss.item()
                _check_finite(value, "training", epoch, step + 1, config.lr)
                accelerator.backward(loss if penalty is None else loss + penalty())
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step, seen = step + 1, seen + len(batch["labels"]) * accelerator.num_processes
                losses.append(value)
                progress.step(losses[-1], seen / max(1e-9, time.perf_counter() - t0))
                if step >= total:
                    break
            dev_loss, logits, labels = evaluate(model, dev_loader, accelerator)
            _check_finite(dev_loss, "dev", epoch, step, config.lr)
            log = EpochLog(epoch, float(np.mean(losses)), dev_loss, metric_fn(logits, labels))
            history.append(log)
            progress.epoch_end(log)
            if dev_loss < best[0]:
                best, bad_epochs = (dev_loss, epoch, _snapshot(accelerator.unwrap_model(model), names)), 0
            else:
                bad_epochs += 1
            if config.patience and bad_epochs >= config.patience:
                logger.info("early stopping after epoch %d (no dev-loss gain for %d epochs)", epoch, bad_epochs)
                break
            if step >= total:
                break
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    _restore(accelerator.unwrap_model(model), best[2])
    return TrainResult(best[1], best[0], step, seconds, seen / max(1e-9, seconds), history)


@torch.no_grad()
def evaluate(model: nn.Module, loader, accelerator=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, logits and labels over ``loader`` (gathered across processes)."""
    model.eval()
    device = next(model.parameters()).device
    total, count, all_logits, all_labels = 0.0, 0, [], []
    for batch in loader:
        if accelerator is None:  # an unprepared loader: move the batch to where the model lives
            batch = {k: v.to(device) for k, v in batch.items()}
        loss, logits = model(**batch)
        labels = batch["labels"]
        if accelerator is not None:
            logits, labels = accelerator.gather_for_metrics((logits, labels))
        total += float(loss) * len(labels)
        count += len(labels)
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu())
    if count == 0:
        return math.nan, np.zeros((0,)), np.zeros((0,))
    return total / count, torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def _check_finite(loss: float, which: str, epoch: int, step: int, lr: float) -> None:
    """Stop at the first non-finite loss: training on would save untrained (or NaN) weights as if all went well."""
    if not math.isfinite(loss):
        raise TrainingError(
            f"the {which} loss became {loss} at step {step} (epoch {epoch}), so training stopped and nothing was "
            f"saved: lower --lr (now {lr:g}), use --precision no, or check the data for extreme values"
        )


def _trainable_names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    ids = {id(p) for p in params}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def _snapshot(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    state = dict(model.named_parameters())
    return {name: state[name].detach().clone() for name in names}


def _restore(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            state[name].copy_(value)


def on_main_process(write: Callable[[], None]) -> None:
    """Run ``write`` on the main process only (under ``accelerate launch``), then let every process continue."""
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        write()
    state.wait_for_everyone()


def count_parameters(params: list[nn.Parameter]) -> int:
    """Number of scalars in ``params``."""
    return sum(p.numel() for p in params)
