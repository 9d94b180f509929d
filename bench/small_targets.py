"""Small targets: does ScaLearn learn ω on a few hundred rows, and which model-selection rule lets it?

Each target is a seeded subsample of a task's train file (a new draw per seed; dev = the library's 10% of the pool,
at least 32 rows; test = the task's test split, at most --test-max rows). The sources are the strong benchmark's
seed-0 LoRA adapters, kept in its registry; the target's own full-data adapter is left off its shelf.

Per target and seed: the target's own LoRA adapter trained on the same rows, and one run of each composition
(ScaLearn++, ScaLearnUniform++, the average of the sources: ω fixed at 1/N, only the head trains) per *training*
(the defaults, or e.g. a lower head lr). A run trains every epoch and keeps its trainable tensors after each; every
*selection* rule (SELECTIONS) then picks its epoch from the run's dev log, as the library would, and that epoch
is scored on test. So the rules are compared on the same trajectories, at the cost of one run.

One JSON line per rule and run in ``--out/results.jsonl``; finished runs are skipped, so the script resumes.
``bench/report_small.py`` writes docs/benchmarks-small.md from it.

    OMP_NUM_THREADS=1 python -m bench small-targets --test-max 250 --deadline 04:05
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import sys
import time
from pathlib import Path

from bench.quality_plan import csv, deadline_at
from bench.report_common import read_jsonl

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "small"
SOURCES = REPO / "bench" / "results" / "strong" / "sources"
SOURCE_TASKS = ("cola", "mrpc", "qnli", "rte", "snli", "sst2", "stsb")
LR = 6e-3  # the paper's (and the library's) lr for ω and the head
logger = logging.getLogger("bench.small")

#: which epoch a rule keeps, read off one run's per-epoch dev log: (criterion, first step it may be kept at).
#: ``current``: the library's default (the lowest dev loss over every epoch); the last epoch always qualifies.
SELECTIONS: dict[str, tuple[str, int]] = {
    "current": ("loss", 0),
    "fixed-budget": ("last", 0),  # no selection: the whole budget, the last epoch
    "min-steps-40": ("loss", 40),  # the lowest dev loss after 40 steps (half of 10 epochs of 250 rows)
    "metric": ("metric", 0),  # the best dev main metric (the paper's few-shot criterion)
    "metric-min-steps-40": ("metric", 40),
}
#: how a run trains (TrainConfig fields over the library's transfer defaults); each gets every selection above
TRAININGS: dict[str, dict] = {
    "default": {},
    "head-lr-0.1": {"head_lr": LR / 10},  # the head at a tenth of ω's lr, so it cannot fit the rows before ω moves
}
METHODS = {"scalearn++": ("scalearn", "scalearn++"), "scalearn-uniform++": ("scalearn", "scalearn-uniform++"),
           "average": ("average", None)}


def rule_name(training: str, selection: str) -> str:
    return selection if training == "default" else f"{training}, {selection}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="cr-250", help="TASK-ROWS, comma-separated (GLUE or shelf tasks)")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--trainings", default="default", help=f"of {', '.join(TRAININGS)}")
    p.add_argument("--methods", default="scalearn++,average", help=f"of {', '.join(METHODS)}")
    p.add_argument("--no-own", action="store_true", help="skip the target's own adapter (e.g. a later pass)")
    p.add_argument("--epochs", type=int, default=10, help="every run's epochs (the own adapter's too)")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--sources", type=Path, default=SOURCES, help="local registry of the seed-0 LoRA sources")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--work", type=Path, default=Path("/tmp/scalearn-small"))
    p.add_argument("--test-max", type=int, default=500)
    p.add_argument("--deadline", default=None, help="UTC HH:MM: start no run that would not end by then (judged "
                   "by the longest recorded run of its method)")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs (timing)")
    return p.parse_args(argv)


def run_key(row: dict) -> tuple:
    """One training run (its rows are every selection of it)."""
    return tuple(row.get(k) for k in ("target", "training", "method", "variant", "seed"))


def data_dir(args: argparse.Namespace, task: str) -> Path:
    """The task's folder (GLUE or the shelf); a copy whose test split is a seeded --test-max rows when it has more."""
    from scalearn_cli.tasks import get_task

    # not capped_data: the full train file and a test draw of its own rng, the rows results/small/ was scored on
    src = next(d / task for d in (args.data_root / "glue", args.data_root / "shelf") if (d / task).is_dir())
    test_file = f"{get_task(task).test_split or 'validation'}.jsonl"
    test = [line for line in (src / test_file).read_text().splitlines() if line.strip()]
    if len(test) <= args.test_max:
        return src
    out = args.work / "data" / f"{task}-test{args.test_max}"
    if not (out / test_file).is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.jsonl").write_text((src / "train.jsonl").read_text())
        (out / test_file).write_text("\n".join(random.Random(0).sample(test, args.test_max)) + "\n")
    return out


def jobs(args: argparse.Namespace):
    """(target, training, method, variant, seed): seed-major, so every arm has seeds early."""
    for seed in (int(s) for s in csv(args.seeds)):
        for target in csv(args.targets):
            for training in csv(args.trainings):
                for name in csv(args.methods):
                    yield target, training, *METHODS[name], seed
            if not args.no_own:
                yield target, "own", "single", None, seed


class Recorder:
    """Wraps the library's ``fit`` and ``score`` inside ``transfer``: keeps the trainable tensors after every epoch,
    then scores the test split at each epoch a selection keeps (the run itself keeps the last)."""

    def __init__(self) -> None:
        self.snapshots: list[list] = []
        self.head_ids: set[int] = set()
        self.params: list = []
        self.history: list = []
        self.picked: dict[str, dict] = {}

    def fit(self, real):
        def fit(model, params, *args, **kwargs):
            from scalearn_cli.train import Progress

            recorder = self

            class Keep(Progress):
                def epoch_end(self, log) -> None:
                    recorder.snapshots.append([p.detach().clone() for p in params])

            self.params, self.head_ids = params, {id(p) for p in kwargs.get("head_params", ())}
            args = list(args)
            if len(args) > 4:
                args[4] = Keep()
            else:
                kwargs["progress"] = Keep()
            result = real(model, params, *args, **kwargs)
            self.history = result.history
            return result
        return fit

    def score(self, real):
        def score(model, prepared, splits=("dev", "test")):
            from scalearn_cli.inspection import omega_movement

            main, last = prepared.spec.main_metric, len(self.snapshots)
            final = real(model, prepared, splits)  # the last epoch, as the run kept it
            tested = {last: final["test"][main]}  # each kept epoch is scored once
            for name, (criterion, min_steps) in SELECTIONS.items():
                epoch = pick(self.history, criterion, min_steps, len(prepared.train), main)
                if epoch not in tested:
                    self.restore(epoch)
                    tested[epoch] = real(model, prepared, ("test",))["test"][main]
                omega = [v for p, v in zip(self.params, self.snapshots[epoch - 1]) if id(p) not in self.head_ids]
                moved = omega_movement(dict(enumerate(omega)), 2.0 / omega[0].shape[0]) if omega else {}
                self.picked[name] = {"kept_epoch": epoch, "main_score": tested[epoch],
                                     "dev_loss": self.history[epoch - 1].dev_loss, **moved}
            self.restore(last)
            return final
        return score

    def restore(self, epoch: int) -> None:
        import torch

        with torch.no_grad():
            for p, v in zip(self.params, self.snapshots[epoch - 1]):
                p.copy_(v)


def pick(history: list, criterion: str, min_steps: int, steps_per_epoch: int, main: str) -> int:
    """The epoch the library keeps under (criterion, min_steps): strict improvement, so ties keep the earlier."""
    last = len(history)
    if criterion == "last":
        return last
    best, kept = float("inf"), last
    for log in history:
        if log.epoch * steps_per_epoch < min_steps and log.epoch < last:
            continue
        value = log.dev_loss if criterion == "loss" else -log.dev_metrics[main]
        if value < best:
            best, kept = value, log.epoch
    return kept


def run_one(args: argparse.Namespace, target: str, training: str, method: str, variant: str | None,
            seed: int) -> list[dict]:
    """Train one run through the library; its rows (one per selection; the own adapter: one)."""
    from dataclasses import replace

    from scalearn_cli.inspection import omega_summary
    from scalearn_cli.resolve import Resolver
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.train import TrainConfig

    task, rows = target.rsplit("-", 1)
    data = DataOptions(task=task, data_dir=data_dir(args, task), max_train_samples=int(rows))
    out = args.work / "runs" / f"{target}-{training}-{method}-{variant or ''}-s{seed}"
    t0 = time.perf_counter()
    if method == "single":  # the target's own LoRA adapter on the same rows, the source stage's defaults
        from scalearn_cli.stages.source import train_source

        meta = train_source(data, out, "lora", None, TrainConfig(epochs=args.epochs, seed=seed), None, overwrite=True)
        picked = {"own": {"kept_epoch": meta["training"]["best_epoch"],
                          "main_score": meta["metrics"]["test"][meta["task"]["main_metric"]]}}
    else:
        import scalearn_cli.stages.transfer as stage

        sources = tuple(f"strong/{t}-lora-single-s0" for t in SOURCE_TASKS if t != task)
        config = replace(TrainConfig(epochs=args.epochs, seed=seed, patience=None, lr=LR, min_steps=10 ** 9),
                         **TRAININGS[training])  # every epoch runs and the last is kept: the rules pick after
        recorder, real = Recorder(), (stage.fit, stage.score)
        stage.fit, stage.score = recorder.fit(real[0]), recorder.score(real[1])
        try:
            meta = stage.transfer(stage.TransferOptions(sources, data, out, method, variant or "scalearn",
                                                        train=config, resolver=Resolver(f"local:{args.sources}"),
                                                        overwrite=True))
        finally:
            stage.fit, stage.score = real
        saved = omega_summary(out) if method == "scalearn" else None  # ω as written: the last epoch's
        last = recorder.picked["fixed-budget"]
        if saved and abs(saved["mean_relative_change"] - last["mean_relative_change"]) > 1e-6:
            sys.exit(f"{out}: the recorded last epoch is not the ω the run saved; not recording")
        picked = {rule_name(training, name): value for name, value in recorder.picked.items()}
    training_log = meta["training"]
    common = {"target": target, "training": training, "method": method, "variant": variant, "seed": seed,
              "task_main_metric": meta["task"]["main_metric"], "train_examples": training_log["train_examples"],
              "dev_examples": training_log["dev_examples"], "test_examples": training_log["test_examples"],
              "epochs_run": len(training_log["history"]), "steps": training_log["steps"],
              "n_sources": len(meta.get("sources") or []) or 1, "wall_seconds": round(time.perf_counter() - t0, 1),
              "threads": _threads()}
    return [{**common, "rule": rule, **value} for rule, value in picked.items()]


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def write_config(args: argparse.Namespace) -> None:
    """config.json: what the rows were made with; lists grow over resumed runs (a later pass may add a method)."""
    import os

    import torch

    path = args.out / "config.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old and (old.get("epochs"), old.get("test_max")) != (args.epochs, args.test_max):
        sys.exit(f"{path} was made with --epochs {old.get('epochs')} --test-max {old.get('test_max')}; "
                 "pass those, or another --out")

    def merged(name: str, new: list) -> list:
        return list(dict.fromkeys([*old.get(name, []), *new]))

    config = {"targets": merged("targets", csv(args.targets)), "trainings": merged("trainings", csv(args.trainings)),
              "methods": merged("methods", csv(args.methods)),
              "seeds": merged("seeds", [int(s) for s in csv(args.seeds)]),
              "selections": {k: list(v) for k, v in SELECTIONS.items()}, "epochs": args.epochs,
              "test_max": args.test_max, "lr": LR, "source_tasks": list(SOURCE_TASKS),
              "machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version()}}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    import torch

    torch.set_num_threads(1)
    unknown = [t for t in csv(args.trainings) if t not in TRAININGS]
    unknown += [m for m in csv(args.methods) if m not in METHODS]
    if unknown:
        sys.exit(f"unknown training(s) or method(s) {', '.join(unknown)}; trainings: {', '.join(TRAININGS)}; "
                 f"methods: {', '.join(METHODS)}")
    path = args.out / "results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_config(args)
    rows = read_jsonl(path)
    done = {run_key(r) for r in rows}
    stop = deadline_at(args.deadline, time.time()) if args.deadline else math.inf
    ran = 0
    for job in jobs(args):
        if job in done:
            continue
        if args.max_runs is not None and ran >= args.max_runs:
            break
        expected = max((r["wall_seconds"] for r in rows if (r["method"], r["variant"]) == job[2:4]), default=0.0)
        if time.time() + expected >= stop:  # a shorter run (another method) may still fit
            logger.info("skipping %s: it would not end by --deadline %s; rerun to resume", job, args.deadline)
            continue
        new = run_one(args, *job)
        with path.open("a") as fh:
            fh.writelines(json.dumps(row, sort_keys=True) + "\n" for row in new)
        rows += new
        done.add(job)
        ran += 1
        logger.info("%s %s %s %s s%d (%.0fs): %s", *job, new[0]["wall_seconds"], "; ".join(
            f"{r['rule']} {r['main_score']:.2f} (epoch {r['kept_epoch']}"
            + (f", ω {100 * r['mean_relative_change']:.1f}%)" if "mean_relative_change" in r else ")") for r in new))


if __name__ == "__main__":
    main()
