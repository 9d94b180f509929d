"""The LoRA defaults sweep: learning rate x rank x target modules on 2-3 tasks, the packaged MiniLM.

Every configuration trains one source adapter per task with the same budget (``--epochs``, batch 32, max length
128, length-grouped batches, head pooling ``auto``, seed 0); the best epoch is the one with the lowest dev loss (dev = 10% of the train
pool, the library's split). Configurations are **chosen on dev** (mean over tasks of each task's main dev metric);
the test score (the official validation split) is reported beside it, never used to choose.

Each finished run is one line of ``bench/results/lora_sweep.jsonl``; a re-run skips finished runs. ``--shard i/n``
runs every n-th run (two 1-thread processes use the 2 cores better than one 2-thread process).

    python -m bench lora-sweep --shard 0/2 & python -m bench lora-sweep --shard 1/2   # ~20 min on 2 CPU cores
    python -m bench lora-sweep --ranks 4,16 --lrs <best> --targets <best>              # then the rank, ~10 min
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from bench import quality  # --shard as the benchmark parses it
from bench import quality_runner  # the benchmark's capped data copies
from bench.report_common import read_jsonl
from bench.speed import machine

REPO = Path(__file__).resolve().parents[1]

TARGETS = {"attention": ("query", "value"), "attention+ffn": ("query", "key", "value", "output.dense", "intermediate.dense")}
logger = logging.getLogger("bench.lora_sweep")


def grid(args: argparse.Namespace):
    for task, lr, r, targets in itertools.product(args.tasks.split(","), args.lrs.split(","), args.ranks.split(","),
                                                  args.targets.split(",")):
        yield {"task": task, "lr": float(lr), "r": int(r), "alpha": 2 * int(r), "targets": targets,
               "max_train": args.max_train, "epochs_budget": args.epochs}


def key(run: dict) -> tuple:
    return tuple(run.get(k) for k in ("task", "lr", "r", "alpha", "targets", "max_train", "epochs_budget"))


def capped_data(args: argparse.Namespace, task: str) -> Path:
    """quality.py's seeded train pool of ceil(cap / 0.9) rows (the library takes 10% as dev); the full test split."""
    run = argparse.Namespace(work=args.work, data_root=args.data_root, test_max=10**9)
    return quality_runner.capped_data(run, task, args.max_train)


def run_one(args: argparse.Namespace, run: dict) -> dict:
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.source import train_source
    from scalearn_cli.train import TrainConfig

    data = DataOptions(task=run["task"], data_dir=capped_data(args, run["task"]), max_train_samples=args.max_train)
    config = TrainConfig(epochs=args.epochs, lr=run["lr"], batch_size=32, max_length=128, seed=0, patience=None,
                         group_by_length=True)
    settings = {"r": run["r"], "alpha": run["alpha"], "target_modules": TARGETS[run["targets"]]}
    with tempfile.TemporaryDirectory(prefix="scalearn-sweep-") as tmp:
        t0 = time.perf_counter()
        meta = train_source(data, Path(tmp) / "adapter", "lora", settings, config, args.model, overwrite=True)
        wall = time.perf_counter() - t0
    main = meta["task"]["main_metric"]
    training = meta["training"]
    return {**run, "main_metric": main, "dev": meta["metrics"]["dev"][main], "test": meta["metrics"]["test"][main],
            "parameters": meta["adapter"]["parameters"], "best_epoch": training["best_epoch"],
            "epochs": training["epochs"], "train_examples": training["train_examples"],
            "examples_per_second": training["examples_per_second"], "wall_seconds": round(wall, 1),
            "dev_loss": training["best_dev_loss"], "dev_examples": training["dev_examples"],
            "pooling": meta.get("head", {}).get("pooling")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--tasks", default="mrpc,sst2")
    p.add_argument("--lrs", default="5e-4,1e-3,2e-3")
    p.add_argument("--ranks", default="8", help="ranks (alpha = 2r); then e.g. --ranks 4,16 at the best lr/targets")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--max-train", type=int, default=1000, help="train rows per task (a seeded sample of the pool)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th configuration starting at i")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lora_sweep.jsonl")
    p.add_argument("--work", type=Path, default=Path("/tmp/scalearn-bench/lora_sweep"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("scalearn_cli", "datasets", "transformers", "accelerate", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import torch

    torch.set_num_threads(args.threads)
    index, count = quality.parse_shard(p, args.shard)
    done = {key(r) for r in read_jsonl(args.out)}
    for i, run in enumerate(grid(args)):
        if i % count != index or key(run) in done:
            continue
        row = {**run_one(args, run), "machine": machine(args.threads),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with args.out.open("a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        logger.info("%s lr %g r %d %s: dev %.3f test %.3f (best epoch %d, %.0f s)", run["task"], run["lr"], run["r"],
                    run["targets"], row["dev"], row["test"], row["best_epoch"], row["wall_seconds"])


if __name__ == "__main__":
    main()
