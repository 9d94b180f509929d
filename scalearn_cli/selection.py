"""Learned selection of K sources for a target, and the shelf-aware entry point of ``transfer``.

The criterion: a short ScaLearnUniform run over every candidate (one scalar ω per source and site) with the group
lasso λ·Σ_i ||ω_i||₂ that ``transfer --sparsity`` adds, which drives the ω of sources the target's loss does not
need toward 0 as a group; then the sources are ranked as ``prune`` ranks them — by their share of Σ|ω|
(``inspection.omega_table``) — and the K largest kept (``prune.select``). The run is an ordinary ``transfer`` into
a temporary folder, so it is the same code, on the same data split and seed, as the composition it prepares.

Budget: one epoch of the target's training split by default (the cost bar is two epochs of ScaLearn); on a small
split (``--few-shot`` or ``--max-train-samples`` known to give fewer than ``MIN_STEPS`` steps) ``MIN_STEPS``
steps instead, because with Adam each ω moves by about the learning rate per step and needs some tens of steps
to leave its 2/N start by more than the noise of a few batches. See docs/cli.md for λ.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scalearn_cli.artifacts import check_out_dir
from scalearn_cli.combiners import TRANSFER_LR
from scalearn_cli.errors import UsageError
from scalearn_cli.inspection import omega_table
from scalearn_cli.prune import select as keep_largest
from scalearn_cli.resolve import Resolved
from scalearn_cli.shelf import ShelfFilter, open_shelves
from scalearn_cli.stages.transfer import transfer
from scalearn_cli.train import Progress, TrainConfig

logger = logging.getLogger(__name__)

CRITERION = ("share of Σ|ω| after a short ScaLearnUniform run over every candidate with a group-lasso penalty "
             "(ranked as `prune` ranks)")
VARIANT = "scalearn-uniform"
DEFAULT_SPARSITY = 0.003
MIN_STEPS = 30


@dataclass(frozen=True)
class SelectOptions:
    """How many sources to keep, and the budget of the run that ranks them (None: the defaults above)."""

    k: int
    steps: int | None = None
    epochs: int | None = None
    sparsity: float = DEFAULT_SPARSITY
    lr: float | None = None  # None: ScaLearn's (combiners.TRANSFER_LR)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UsageError(f"K (--select, or select --keep) must be >= 1: how many sources to keep; got {self.k}")
        if self.steps is not None and self.epochs is not None:
            raise UsageError("pass one budget for the selection run: steps or epochs (--select-steps or "
                             "--select-epochs; select: --steps or --epochs)")
        for name in ("steps", "epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"the selection run's {name} (--select-{name}, select --{name}) must be >= 1, got "
                                 f"{value}")
        if not (math.isfinite(self.sparsity) and self.sparsity >= 0):
            raise UsageError(f"the selection's λ (--select-sparsity, select --sparsity) must be a finite number >= 0, "
                             f"got {self.sparsity}")


def shelf_transfer(options, shelves: tuple[str, ...] = (), filters: ShelfFilter = ShelfFilter(),
                   select: SelectOptions | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """``transfer`` over the ``-s`` sources plus the shelves' (filtered), optionally only the K selected of them.

    ``options`` is a :class:`~scalearn_cli.stages.transfer.TransferOptions`; without shelves or a selection this is
    plain ``transfer``. The composition records the sources it composed, the shelf and the selection.
    """
    if not shelves and select is None:
        if filters != ShelfFilter():
            raise UsageError("--shelf-family, --shelf-kind, --shelf-include and --shelf-exclude filter a --shelf; "
                             "pass one")
        return transfer(options, progress)
    check_out_dir(options.out, options.overwrite)  # before the selection run, not after it
    pool, provenance = gather(options, shelves, filters)
    if select is not None:
        pool, provenance["selection"] = select_sources(options, pool, select, progress)
    return transfer(replace(options, sources=tuple(pool), provenance=provenance), progress)


def choose(options, shelves: tuple[str, ...], filters: ShelfFilter, select: SelectOptions,
           progress: Progress | None = None) -> dict[str, Any]:
    """``scalearn select``: the choice alone, as JSON-ready data (``options.out`` is not used: nothing is composed).

    ``chosen`` lists each kept source's pinned reference (``org/name@commit`` or its folder), what ``-s`` takes.
    """
    pool, provenance = gather(options, shelves, filters)
    chosen, record = select_sources(options, pool, select, progress)
    return {"selection": record, "shelf": provenance.get("shelf"), "chosen": [src.ref.pinned for src in chosen]}


def gather(options, shelves: tuple[str, ...], filters: ShelfFilter) -> tuple[list[Resolved], dict[str, Any]]:
    """The ``-s`` sources, resolved, then the shelves' (see :func:`scalearn_cli.shelf.open_shelves`)."""
    if not shelves and filters != ShelfFilter():
        raise UsageError("--shelf-family, --shelf-kind, --shelf-include and --shelf-exclude filter a --shelf; pass one")
    given = [s if isinstance(s, Resolved) else options.resolver.source(s) for s in options.sources]
    if not shelves:
        return given, {}
    found = open_shelves(shelves, filters, options.resolver, given, options.model)
    logger.info("shelf: %d sources fit (%d skipped)", len(found.sources), len(found.skipped))
    return given + found.sources, {"shelf": found.record}


def select_sources(options, pool: list[Resolved], select: SelectOptions,
                   progress: Progress | None = None) -> tuple[list[Resolved], dict[str, Any]]:
    """The K sources of ``pool`` the learned criterion ranks first (in pool order), and the record of the choice."""
    n = len(pool)
    if select.k >= n:
        raise UsageError(f"K = {select.k} keeps all of the {n} candidate sources; pass K < {n} (--select, or select "
                         f"--keep), or compose them all")
    config = _budget(options, select)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scalearn-select-") as tmp:
        run = replace(options, sources=tuple(pool), out=Path(tmp) / "selection", method="scalearn", variant=VARIANT,
                      options={}, train=config, sparsity=select.sparsity, overwrite=False, init_omega=None,
                      provenance={})
        meta = transfer(run, progress)
        table = omega_table(run.out)
    seconds = time.perf_counter() - started
    shares = [s["share"] for s in table["sources"]]
    kept = keep_largest(shares, keep=select.k)  # prune's own ranking: largest share first, ties to the earlier
    order = sorted(range(n), key=lambda i: (-shares[i], i))
    scores = [{"ref": src.name, "pinned": src.ref.pinned, "task": src.ref.task, "share": shares[i],
               "rank": order.index(i) + 1, "chosen": i in kept} for i, src in enumerate(pool)]
    record = {
        "criterion": CRITERION, "variant": VARIANT, "k": select.k, "n_candidates": n, "sparsity": select.sparsity,
        "lr": config.lr, "budget": {"steps": config.max_steps, "epochs": None if config.max_steps else config.epochs},
        "steps": meta["training"]["steps"], "seconds": round(seconds, 3),
        "train_seconds": round(float(meta["training"]["train_seconds"]), 3),  # the rest: loading, dev/test scoring
        "chosen": [pool[i].name for i in kept], "scores": scores,
    }
    logger.info("selection: kept %s of %d sources (%d steps, %.1f s)", ", ".join(record["chosen"]), n,
                record["steps"], seconds)
    return [pool[i] for i in kept], record


def _budget(options, select: SelectOptions):  # -> TrainConfig
    """The selection run's training options: the transfer's (batch, length, seed...) with the selection's budget."""
    base = options.train or TrainConfig()
    # ScaLearn's learning rate unless the selection names one, whatever --method the composition uses
    config = replace(base, lr=select.lr or None, patience=None, max_steps=None, epochs=1).with_lr(TRANSFER_LR)
    if select.steps is not None:
        return replace(config, max_steps=select.steps)
    if select.epochs is not None:
        return replace(config, epochs=select.epochs)
    rows = options.data.few_shot or options.data.max_train_samples
    if rows is not None and math.ceil(rows / base.batch_size) < MIN_STEPS:
        return replace(config, max_steps=MIN_STEPS)  # a small split: one epoch is too few steps to rank
    return config
