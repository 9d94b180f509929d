"""One training loop for both stages (source adapters and transfer), on top of ``accelerate``.

AdamW, linear decay with no warm-up, weight decay 0 (the paper's protocol); evaluation on the dev split after
every epoch; early stopping on dev loss (or, ``select_on="metric"``, on the task's main dev metric, as the paper's
few-shot runs; ``"auto"``, the default, picks one from the data: ``TrainConfig.resolved``); the best epoch's
trainable tensors restored at the end. The same code runs on CPU, one GPU (``--precision bf16|fp16``) and under
``accelerate launch`` for several GPUs or nodes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from scalearn_cli.errors import TrainingError, UsageError
from scalearn_cli.model import task_loss
from scalearn_cli.processes import Precision, is_main_process, make_accelerator

logger = logging.getLogger(__name__)

SelectOn = Literal["auto", "loss", "metric"]


MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrainConfig:
    """Training options shared by ``train-source`` and ``transfer``."""

    epochs: int = 30
    lr: float | None = None  # None: the stage's default (the adapter kind's, or the combiner's): ``with_lr``
    batch_size: int = 32
    max_length: int = 128
    seed: int = 42
    patience: int | None = 5  # None or 0: no early stopping
    max_steps: int | None = None  # overrides epochs when set (few-shot: 1,000 steps)
    eval_batch_size: int = 128  # dev/test batches: no gradients, so larger ones (length-sorted) are cheap
    group_by_length: bool = False  # training batches of similar lengths (transformers' LengthGroupedSampler)
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward: less memory, more time
    precision: Precision = "no"
    # which epoch is kept (and what early stopping watches): the lowest dev loss, or the best main dev metric
    # (the transformers Trainer's metric_for_best_model; the paper's few-shot runs select on accuracy); ``auto``:
    # the stages resolve it from the data (``resolved``)
    select_on: SelectOn = "auto"
    # epochs that end before this many steps are neither kept nor counted by early stopping (the paper's few-shot
    # runs; >= the run's steps: a fixed budget, the last epoch kept): a tiny dev set's first epochs look best
    # while ω has barely moved
    min_steps: int = 0
    head_lr: float | None = None  # the transfer head's learning rate (None: ``lr``), so the head cannot out-fit ω

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a finite number > 0, got {self.lr}")
        if self.min_steps < 0:
            raise UsageError(f"--min-steps must be >= 0, got {self.min_steps}")
        if self.head_lr is not None and not (math.isfinite(self.head_lr) and self.head_lr > 0):
            raise UsageError(f"--head-lr must be a finite number > 0, got {self.head_lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.precision not in ("no", "fp16", "bf16"):
            raise UsageError(f"--precision must be no, fp16 or bf16, got '{self.precision}'")
        if self.select_on not in ("auto", "loss", "metric"):
            raise UsageError(f"--select-on must be auto, loss or metric, got '{self.select_on}'")
        if not 0 <= self.seed <= MAX_SEED:  # numpy's seeds are 32-bit; torch's would overflow further on
            raise UsageError(f"--seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if self.patience is not None and self.patience < 0:
            raise UsageError(f"--patience must be >= 0 (0 disables early stopping), got {self.patience}")

    def for_device(self, gpu: bool | None = None) -> TrainConfig:
        """This config if its ``precision`` can run here; mixed precision without a GPU is refused (it would train
        in fp32 and record fp16). ``gpu`` None: ask torch."""
        if self.precision == "no":
            return self
        if not (torch.cuda.is_available() if gpu is None else gpu):
            raise UsageError(f"--precision {self.precision} needs a GPU and none is available; drop --precision "
                             "(a CPU trains in fp32)")
        return self

    def with_lr(self, default: float) -> TrainConfig:
        """This config with ``lr`` None made ``default`` (the stage's: the adapter kind's or the combiner's); the one
        place an unset learning rate is filled in."""
        return self if self.lr is not None else replace(self, lr=default)

    def resolved(self, few_shot: bool, generation: bool = False) -> TrainConfig:
        """This config with ``select_on="auto"`` made concrete: the best dev metric for a few-shot run (the paper's
        run_few: a few-shot model memorises its k examples within a few steps, after which the dev loss only rises),
        the lowest dev loss otherwise and for generation (whose per-epoch dev score is the answers' NLL)."""
        if self.select_on != "auto":
            return self
        return replace(self, select_on="metric" if few_shot and not generation else "loss")


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
    processes: int = 1  # under ``accelerate launch``: the global batch is batch_size x processes
    initial_dev_loss: float = math.nan  # of the weights before training
    improved_on_initial: bool = True  # False: no epoch beat the initial weights' dev loss/metric (a warning)
    initial_dev_metrics: dict[str, float] = field(default_factory=dict)
    select_on: SelectOn = "loss"  # what the kept epoch was best at (``auto`` resolved)
    best_dev_metrics: dict[str, float] = field(default_factory=dict)  # of the kept epoch


class Progress:
    """Callbacks the CLI renders; the library only calls them (no rich/typer here)."""

    def start(self, total_steps: int) -> None: ...

    def step(self, loss: float, examples_per_second: float) -> None: ...

    def epoch_end(self, log: EpochLog) -> None: ...

    def close(self) -> None: ...


def fit(model: nn.Module, params: list[nn.Parameter], train_loader, dev_loader, config: TrainConfig,
        metric_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]], progress: Progress | None = None,
        accelerator=None, penalty: Callable[[], torch.Tensor] | None = None, main_metric: str | None = None,
        head_params: list[nn.Parameter] = ()) -> TrainResult:
    """Train ``params`` of ``model``; restore the best epoch (lowest dev loss, or with ``config.select_on="metric"``
    the highest ``main_metric`` of ``metric_fn``; ties keep the earlier epoch) and return the log.

    The initial weights are scored on dev first: when no epoch beats them, ``improved_on_initial`` is False
    and a warning is logged (the stages record it; the CLI reports it). The best trained epoch is still kept.

    ``head_params`` (a subset of ``params``) train at ``config.head_lr`` when it is set. Epochs ending before
    ``config.min_steps`` are not candidates (the last epoch always is).

    ``penalty`` (e.g. a group lasso on ω) is added to the training loss only, not to the dev loss.
    ``select_on="auto"`` is the dev loss here (the loaders do not say whether a run is few-shot: the stages resolve
    it first, ``TrainConfig.resolved``).
    """
    config = config.resolved(few_shot=False)
    if config.lr is None:
        raise UsageError("no learning rate: pass --lr (the stages fill in their default before training)")
    progress = progress or Progress()
    accelerator = accelerator or make_accelerator(config.precision)
    epochs, clock = _Clock.plan(config, math.ceil(len(train_loader) / accelerator.num_processes))
    optimizer, scheduler = configure_optimizers(params, head_params, config, clock.total)
    model, optimizer, train_loader, dev_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, dev_loader, scheduler
    )
    kept = _Kept(accelerator.unwrap_model(model), params, config, main_metric)
    # the initial weights' dev loss: a run whose best epoch never beats it is reported, not passed off as success
    initial_loss, logits, labels = evaluate(model, dev_loader, accelerator)
    initial_metrics = metric_fn(logits, labels) if len(labels) else {}
    initial = kept.criterion_of(initial_loss, initial_metrics) if len(labels) else math.nan
    history: list[EpochLog] = []
    progress.start(clock.total)
    clock.start()
    try:  # a TrainingError must still close the progress display
        for epoch in range(1, epochs + 1):
            losses = _train_epoch(model, train_loader, optimizer, scheduler, accelerator, config, penalty, progress,
                                  clock, epoch)
            dev_loss, logits, labels = evaluate(model, dev_loader, accelerator)
            _check_finite(dev_loss, "dev", epoch, clock.step, config.lr)
            history.append(EpochLog(epoch, float(np.mean(losses)), dev_loss, metric_fn(logits, labels)))
            progress.epoch_end(history[-1])
            if kept.consider(history[-1], clock, last=epoch == epochs) or clock.step >= clock.total:
                break
    finally:
        progress.close()
    seconds = time.perf_counter() - clock.t0
    improved = kept.restore(initial, accelerator.is_main_process)
    return TrainResult(kept.epoch, kept.dev_loss, clock.step, seconds, clock.seen / max(1e-9, seconds), history,
                       accelerator.num_processes, initial_loss, improved, initial_metrics, config.select_on,
                       kept.dev_metrics)


@dataclass
class _Clock:
    """Optimizer steps and examples so far (of ``total`` steps), and when training started."""

    total: int
    step: int = 0
    seen: int = 0
    t0: float = 0.0

    @staticmethod
    def plan(config: TrainConfig, steps_per_epoch: int) -> tuple[int, _Clock]:
        """(epochs, a clock of the run's total steps): ``config.epochs``, or as many as ``config.max_steps`` needs."""
        epochs = config.epochs if config.max_steps is None else math.ceil(config.max_steps / max(1, steps_per_epoch))
        return epochs, _Clock(total=config.max_steps or steps_per_epoch * epochs)

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def rate(self) -> float:
        """Examples per second since the start."""
        return self.seen / max(1e-9, time.perf_counter() - self.t0)


def _train_epoch(model: nn.Module, loader, optimizer, scheduler, accelerator, config: TrainConfig,
                 penalty: Callable[[], torch.Tensor] | None, progress: Progress, clock: _Clock, epoch: int
                 ) -> list[float]:
    """One epoch of optimizer steps (fewer when ``clock.total`` is reached); each step's loss."""
    model.train()
    losses = []
    for batch in loader:
        loss, _ = model(**batch)
        value = _global_mean(loss, accelerator)
        _check_finite(value, "training", epoch, clock.step + 1, config.lr)
        accelerator.backward(loss if penalty is None else loss + penalty())
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        clock.step, clock.seen = clock.step + 1, clock.seen + len(batch["labels"]) * accelerator.num_processes  # ~
        losses.append(value)
        progress.step(losses[-1], clock.rate())
        if clock.step >= clock.total:
            break
    return losses


class _Kept:
    """The epoch training keeps (lowest criterion; ties keep the earlier) and early stopping's count."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], config: TrainConfig, main_metric: str | None
                 ) -> None:
        self.model, self.names, self.config = model, _trainable_names(model, params), config
        self.main_metric = main_metric
        #: what the criterion watches, for the log
        self.watched = "loss" if config.select_on == "loss" else main_metric
        self.criterion, self.epoch, self.dev_loss, self.dev_metrics = math.inf, 0, math.inf, {}
        self.snapshot, self.bad_epochs = _snapshot(model, self.names), 0

    def criterion_of(self, loss: float, metrics: dict[str, float]) -> float:
        return _criterion(self.config, self.main_metric, loss, metrics)

    def consider(self, log: EpochLog, clock: _Clock, last: bool) -> bool:
        """Keep the epoch when it is the best so far; True when early stopping ends training."""
        criterion = self.criterion_of(log.dev_loss, log.dev_metrics)
        if clock.step < self.config.min_steps and clock.step < clock.total and not last:
            return False  # too early to keep (nor to count towards early stopping); the last epoch always counts
        if criterion < self.criterion:
            self.criterion, self.epoch, self.dev_loss, self.dev_metrics = criterion, log.epoch, log.dev_loss, \
                log.dev_metrics
            self.snapshot, self.bad_epochs = _snapshot(self.model, self.names), 0
        else:
            self.bad_epochs += 1
        if self.config.patience and self.bad_epochs >= self.config.patience:
            logger.info("early stopping after epoch %d (no dev %s gain for %d epochs)", log.epoch, self.watched,
                        self.bad_epochs)
            return True
        return False

    def restore(self, initial: float, main_process: bool) -> bool:
        """Put the kept epoch's tensors back; whether it improved on the ``initial`` criterion (warned if not)."""
        _restore(self.model, self.snapshot)
        improved = not (math.isfinite(initial) and self.criterion >= initial)
        if not improved and main_process:
            sign = 1 if self.config.select_on == "loss" else -1  # the criterion negates a metric (maximized)
            logger.warning(
                "the dev %s never improved on the initial weights (best %.4f at epoch %d, initial %.4f); "
                "try another --lr or more --epochs", self.watched, sign * self.criterion, self.epoch, sign * initial,
                extra={"summarized": True},  # recorded as improved_on_initial; the CLI's summary says it once, at the end
            )
        return improved


def configure_optimizers(params: list[nn.Parameter], head_params, config: TrainConfig, total_steps: int):
    """(AdamW, its schedule) with the paper's protocol: weight decay 0, linear decay over ``total_steps``, no warm-up;
    ``head_params`` (a subset of ``params``) at ``config.head_lr`` when it is set, everything else at ``config.lr``."""
    optimizer = torch.optim.AdamW(_param_groups(params, head_params, config), lr=config.lr, weight_decay=0.0)
    return optimizer, get_linear_schedule_with_warmup(optimizer, 0, total_steps)


def _param_groups(params: list[nn.Parameter], head_params, config: TrainConfig) -> list[dict]:
    """AdamW's groups: the head at ``config.head_lr`` (when set), everything else at ``config.lr``."""
    head = {id(p) for p in head_params}
    if config.head_lr is None or not head:
        return [{"params": list(params)}]
    groups = ({"params": [p for p in params if id(p) not in head]},
              {"params": [p for p in params if id(p) in head], "lr": config.head_lr})
    return [g for g in groups if g["params"]]


def _criterion(config: TrainConfig, main_metric: str | None, loss: float, metrics: dict[str, float]) -> float:
    """What the kept epoch minimizes: the dev loss, or the negated main dev metric (``select_on="metric"``)."""
    if config.select_on == "loss":
        return loss
    if main_metric is None or main_metric not in metrics:
        raise UsageError(f"--select-on metric: the dev metrics here are {sorted(metrics) or 'none'}, not the task's "
                         f"main metric '{main_metric}' (generation tasks score only the answers' NLL per epoch): "
                         "use --select-on loss")
    value = metrics[main_metric]
    return -value if math.isfinite(value) else math.inf


def _global_mean(loss: torch.Tensor, accelerator) -> float:
    """The batch loss averaged over processes, so every process sees the same value (and stops at the same step)."""
    if accelerator.num_processes == 1:
        return loss.item()
    return float(accelerator.reduce(loss.detach().float().clone(), reduction="mean"))


@torch.inference_mode()
def evaluate(model: nn.Module, loader, accelerator=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean loss, logits and labels over ``loader`` (gathered across processes).

    Under several processes the loss is recomputed from the gathered logits (every example once, in the loader's
    order), so each process gets the same dev loss and takes the same early-stopping decision.
    """
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
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    problem_type = getattr(accelerator.unwrap_model(model), "problem_type", None) if accelerator else None
    if accelerator is not None and accelerator.num_processes > 1 and problem_type is not None:
        total, count = float(task_loss(problem_type, logits, labels)), 1
    return total / count, logits.numpy(), labels.numpy()


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


def count_parameters(params: list[nn.Parameter]) -> int:
    """Number of scalars in ``params``."""
    return sum(p.numel() for p in params)
