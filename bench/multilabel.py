"""Multi-label target: go_emotions (28 emotions, several per text, scored by macro-F1) over the strong run's shelf.

The quality benchmark (bench/quality.py) with one target: go_emotions' train pool and test split capped (a CPU
session's budget), its own LoRA adapter trained on the same rows, and the strong run's seed-0 LoRA sources (cola,
mrpc, qnli, rte, snli, sst2, stsb) composed beside it, pulled from that run's kept registry
(``bench/results/strong/sources``, each file verified against its sha256) into a work folder the runner borrows
them from (``--sources-from``). Methods: the own adapter, the average, ScaLearn++ and AdapterFusion over 3 seeds;
few-shot k = 32 and 100 (the own adapter and ScaLearn++). Every option below is recorded in the run's config.json;
``bench/report_multilabel.py`` writes docs/benchmarks-multilabel.md from the rows.

    OMP_NUM_THREADS=1 python -m bench multilabel --deadline 07:15 --fit-deadline [--job-seeds 0] [--job-methods ...]

Options after ``multilabel`` are the quality runner's (``python -m bench run --help``); they override the plan's.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "multilabel"
WORK = REPO / ".bench-work" / "multilabel"
SHELF_WORK = REPO / ".bench-work" / "multilabel-shelf"  # the borrowed sources, laid out as a run's --work
KEPT = REPO / "bench" / "results" / "strong" / "sources"
SHELF_TASKS = ("cola", "mrpc", "qnli", "rte", "snli", "sst2", "stsb")
#: the plan: the strong run's settings for sources and transfers, at capped sizes and far fewer steps (3 epochs,
#: few-shot 50 steps: a 2-core CPU session shared with other jobs; the paper trains to convergence, few-shot 1,000)
PLAN = dict(
    targets="go_emotions", extra_sources=",".join(SHELF_TASKS), kinds="lora",
    methods="single,average,scalearn++,adapterfusion", seeds="0,1,2", multi_seed_targets="go_emotions",
    multi_seed_kinds="lora", target_max_train=1000, test_max=1000, epochs=3, patience=3, source_epochs=3,
    source_patience=2, max_length=128, pooling="auto", group_by_length=True,
    few_shot_k="32,100", few_shot_targets="go_emotions", few_shot_kinds="lora", few_shot_seeds="0,1,2",
    few_shot_steps=50, few_shot_patience=20, few_shot_select="metric", threads=1,
    # the shelf's sources are borrowed, so no source stage: the target's own source is trained by its transfer row
    stages="transfer,few-shot",
    # one threshold per label, tuned on dev: at 0.5 the own adapter after 3 epochs predicts no label (macro-F1 0)
    threshold="tune",
)
#: PLAN's keys are the runner's argument names (what config.json records); a flag spelled otherwise
FLAGS = {"threshold": "label-threshold"}
logger = logging.getLogger("bench.multilabel")


def plan_argv(user: list[str]) -> list[str]:
    """The quality runner's command line: the plan's options, the folders, then the user's (which win)."""
    from scalearn_cli.sources.lora import LoraKind

    options = [f"--{FLAGS.get(k, k.replace('_', '-'))}={v}" for k, v in PLAN.items() if not isinstance(v, bool)]
    options += [f"--{FLAGS.get(k, k.replace('_', '-'))}" for k, v in PLAN.items() if v is True]
    # the own adapter at the library's LoRA lr, as the strong run trained its sources (its --source-lr: None)
    folders = {"out": OUT, "work": WORK, "sources-from": SHELF_WORK}  # relative: config.json stays portable
    return [*options, f"--source-lr={LoraKind.default_lr}",
            *(f"--{name}={os.path.relpath(path)}" for name, path in folders.items()), *user]


def borrow_sources(kept: Path = KEPT, dest: Path = SHELF_WORK, tasks: tuple[str, ...] = SHELF_TASKS) -> list[Path]:
    """Pull each task's seed-0 LoRA source from the strong run's kept registry into ``dest`` (as that run's --work
    laid it out), unless it is there; the registry verifies every file against its sha256."""
    from scalearn_cli.registry.local import LocalRegistry

    registry = LocalRegistry(kept)
    folders = []
    for task in tasks:
        name = f"{task}-lora-single-s0"
        folder = dest / "runs" / "source" / name
        if not (folder / "scalearn.json").is_file():
            registry.pull(f"strong/{name}", local_dir=folder)
            logger.info("borrowed %s from %s", name, kept)
        folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    user = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in user):
        print(__doc__)
        return
    borrow_sources()
    from bench import quality

    quality.main(plan_argv(user))


if __name__ == "__main__":
    main()
