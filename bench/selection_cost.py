"""The cost of learned selection (``transfer --select K``) against one ScaLearn epoch on the target, at N sources.

For each N, in one process and at a fixed thread count (1 by default), three runs on the same target, data and
sources: ``epoch_all`` = one epoch of ScaLearn (the default variant) over all N candidates, as ``transfer
--epochs 1`` runs it; ``selection`` = the selection run with its defaults (``selection.select_sources``: a
ScaLearnUniform run with the group lasso, then the ranking), which the bar compares against ``epoch_all``
(≤ 2x); ``epoch_k`` = one ScaLearn epoch over the K chosen, the run selection precedes. Every time is the
wall time of the whole library call (backbone loading, data preparation, dev and test scoring and the staged write
included, as a user pays them); ``train_seconds`` is the training loop alone (with its dev scoring). The ratios are
taken within one run; the process's first run (``epoch_all`` at the smallest N) also pays its cold start (imports,
the first model load), so read ``selection_train_vs_epoch_all_train`` beside ``selection_vs_epoch_all`` there.

Sources are random-weight LoRAs on the packaged MiniLM-L6 (r 8 on query/value, made as ``bench/speed.py`` makes
them); the target is a seeded sample of RTE: ``--rows`` training rows (default 160: 5 steps of 32 after the
10% dev split) and ``--test-rows`` of its validation file as the test split (64), so that the bar's four runs fit
ten minutes at one thread on a shared, busy 2-core machine. The selection runs one epoch (``--select-epochs``):
its default on a split of 30 steps or more; on a split this small the default would be its 30-step floor, a cost
set by that floor, not by N. Results go to ``bench/results/selection_cost.json`` after every run; a stopped run
is resumed (configurations already there are kept). The bar's runs (``epoch_all``, ``selection``) come first.

    python -m bench selection-cost                       # N = 35 and 256, K = 8, 1 thread
    python -m bench selection-cost --n 35 --rows 1024 --test-rows 277
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.speed import machine, make_sources  # the speed tables' random sources and machine record

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="35,256", help="numbers of candidate sources")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--rows", type=int, default=160, help="training rows of the target (seeded sample)")
    p.add_argument("--test-rows", type=int, default=64, help="test rows (a seeded sample of the validation file)")
    p.add_argument("--select-epochs", type=int, default=1, help="the selection run's budget")
    p.add_argument("--target", default="rte")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scalearn-bench" / "selection-cost")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "selection_cost.json")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from scalearn_cli.backbone import DEFAULT_MODEL

    sizes = [int(v) for v in args.n.split(",")]
    folders = make_sources(args.work / "sources", DEFAULT_MODEL, "lora", max(sizes))
    result = _load(args)
    plan = [(run, n) for n in sizes for run in ("epoch_all", "selection")] + [("epoch_k", n) for n in sizes]
    for run, n in plan:
        if any(r["n"] == n and r["run"] == run for r in result["rows"]):
            continue  # resumed: measured before
        row = measure(args, run, n, folders[:n], result["rows"])
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        _write(args, result, machine(args.threads))
    _write(args, result, machine(args.threads))
    print(f"wrote {args.out}")


def measure(args: argparse.Namespace, run: str, n: int, folders: list[Path], rows: list[dict]) -> dict:
    """One run's wall time (and its training loop's), steps and what it chose."""
    from dataclasses import replace

    from scalearn_cli.resolve import Resolver
    from scalearn_cli.selection import SelectOptions, select_sources
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.transfer import TransferOptions, transfer
    from scalearn_cli.train import TrainConfig

    data = DataOptions(task=args.target, data_dir=target_data(args))
    train = TrainConfig(epochs=1, batch_size=32, max_length=64, seed=0, patience=None)
    options = TransferOptions(sources=tuple(str(f) for f in folders), data=data, out=args.work / "out" / f"{run}-{n}",
                              train=train, overwrite=True)
    row: dict = {"n": n, "run": run, "k": args.k}
    started = time.perf_counter()
    if run == "selection":
        pool = [Resolver().source(str(f)) for f in folders]
        chosen, record = select_sources(options, pool, SelectOptions(args.k, epochs=args.select_epochs))
        row.update(steps=record["steps"], train_seconds=record["train_seconds"], sparsity=record["sparsity"],
                   chosen=[Path(c.ref.id).name for c in chosen])
    else:
        if run == "epoch_k":
            picked = next(r["chosen"] for r in rows if r["n"] == n and r["run"] == "selection")
            options = replace(options, sources=tuple(str(f) for f in folders if f.name in picked))
        meta = transfer(options)
        row.update(steps=meta["training"]["steps"], train_seconds=meta["training"]["train_seconds"])
    row["seconds"] = round(time.perf_counter() - started, 2)
    row["load_average"] = os.getloadavg()[0]
    return row


def target_data(args: argparse.Namespace) -> Path:
    """A folder with ``--rows`` training rows and ``--test-rows`` validation rows of the target (seed 0)."""
    # not capped_data: a timing input of exactly --rows train rows, where capped_data draws a ceil(cap/0.9) pool
    import random

    folder = args.work / f"{args.target}-{args.rows}-{args.test_rows}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for split, n in (("train", args.rows), ("validation", args.test_rows)):
            lines = (args.data_root / args.target / f"{split}.jsonl").read_text().splitlines()
            (folder / f"{split}.jsonl").write_text("\n".join(random.Random(0).sample(lines, n)) + "\n")
    return folder


def _load(args: argparse.Namespace) -> dict:
    if args.out.is_file():
        found = json.loads(args.out.read_text())
        setup = ("train_rows", "test_rows", "k", "select_epochs")
        if [found.get(key) for key in setup] == [args.rows, args.test_rows, args.k, args.select_epochs]:
            return found
    return {"rows": [], "train_rows": args.rows, "test_rows": args.test_rows, "k": args.k, "target": args.target,
            "select_epochs": args.select_epochs}


def _write(args: argparse.Namespace, result: dict, machine: dict) -> None:
    """The file, with ratios of the selection to one ScaLearn epoch over all N and over the K chosen, per N."""
    ratios = {}
    for n in sorted({r["n"] for r in result["rows"]}):
        by = {r["run"]: r for r in result["rows"] if r["n"] == n}
        if "selection" in by and "epoch_all" in by:
            ratios[str(n)] = {
                "selection_vs_epoch_all": round(by["selection"]["seconds"] / by["epoch_all"]["seconds"], 3),
                "selection_train_vs_epoch_all_train": round(
                    by["selection"]["train_seconds"] / by["epoch_all"]["train_seconds"], 3),
                **({"selection_vs_epoch_k": round(by["selection"]["seconds"] / by["epoch_k"]["seconds"], 3)}
                   if "epoch_k" in by else {}),
            }
    result.update(ratios=ratios, bar="selection_vs_epoch_all <= 2", machine=machine, batch=32, max_length=64,
                  model="sentence-transformers/all-MiniLM-L6-v2 (packaged)", sources="random LoRA r 8 query/value",
                  finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
