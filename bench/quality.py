"""Quality benchmark: the paper's two-stage protocol (arXiv 2310.01217) at a CPU-feasible scale.

Stage 1 trains one source adapter per task (targets + extra NLI sources), seed 0. Stage 2 composes, for every
target, the same sources (the target's own adapter included) with every method: single adapter, average,
AdapterFusion and the four ScaLearn variants, for each adapter kind; then few-shot (the cheaper pass); then the
extra seeds.

Every finished run is appended as one JSON line to ``<out>/results.jsonl``; a re-run skips finished rows, so a
killed run keeps what it finished. Trained adapters live in ``--work`` (default .bench-work/<name> in the checkout,
ignored by git); the seed-0 ScaLearn ω tensors are copied next to the results (for the heatmap). With
``--keep-sources`` (the strong run) every trained seed-0 source adapter a transfer composes (few-shot ones too) is also
pushed to a local scalearn registry beside the results (``<out>/sources``, committed with them: ~0.9 MB a LoRA
source), so a later session on a new machine pulls the very adapters its rows recorded, verified by their sha256,
instead of retraining them for an hour. A source whose row is recorded but which is neither in ``--work`` nor in
that registry is retrained before a transfer uses it, and ``<out>/retrained.jsonl`` records its new test score
beside the recorded one (the report shows whether transfers run after it compose the same adapter).

    python bench/quality.py --quick            # < ~10 minutes on 2 CPU cores
    python bench/quality.py                    # the default configuration (about an hour on 2 CPU cores)
    python bench/quality.py --deadline 17:45   # stop starting new runs at 17:45 UTC (re-run later to resume)
    python bench/quality.py --deadline 17:45 --fit-deadline   # ... and start only runs expected to end by then
    python bench/quality.py --strong --kinds lora --shard 0/2 --threads 1 & \
    python bench/quality.py --strong --kinds lora --shard 1/2 --threads 1      # issue 12's benchmark (CPU-hours)
    python bench/quality.py --strong --publish-sources   # push the trained sources in --work not yet kept
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
EXTRA_SOURCES = ("qnli", "snli")
VARIANTS = ("scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++")
ALL_METHODS = ("single", "average", "adaptersoup", "adapterfusion", *VARIANTS)
STAGES = ("source", "transfer", "few-shot")  # the plan's order
#: AdapterFusion at --fusion-tuned-lr: a method of the plan (its own rows), trained as "adapterfusion"
FUSION_TUNED = "adapterfusion-tuned"
QUICK = dict(
    targets="rte,mrpc", extra_sources="qnli,snli", seeds="0", source_max_train=64, target_max_train=64,
    test_max=96, source_epochs=1, epochs=1, max_length=48, few_shot_k="16", few_shot_targets="rte",
    few_shot_steps=4, few_shot_kinds="lora", fusion_tuned_lr=0.0,
)

#: issue 12's benchmark: sources at the sizes the data allows, trained to convergence (early stopping on dev loss),
#: targets at full size, max length 128, the encoder's own pooling, the paper's transfer protocol otherwise
STRONG = dict(
    targets="rte,mrpc,stsb,cola", extra_sources="qnli,snli,sst2", source_caps="snli=9800,qnli=4900,sst2=10000",
    source_max_train=0, target_max_train=0, test_max=2000, source_epochs=10, source_patience=2, epochs=10,
    patience=3, max_length=128, pooling="auto", source_lr=None, group_by_length=True, fusion_tuned_lr=1e-3,
    multi_seed_kinds="lora",
    # few-shot as the paper's run_few scripts: up to 1,000 steps, an evaluation per epoch, the epoch with the best
    # dev accuracy (metric_for_best_model) kept, early stopping after 20 evaluations without a gain; its 5 seeds
    few_shot_steps=1000, few_shot_patience=20, few_shot_select="metric", few_shot_seeds="0,1,2,3,4",
    multi_seed_targets="rte,mrpc,stsb", kinds="lora,bottleneck", keep_sources=True,
)
PRESETS = {"quick": QUICK, "strong": STRONG}
#: a retrained source whose test score moves by more than this (points) is not the adapter its row recorded
REPRODUCED = 1e-6

logger = logging.getLogger("bench.quality")


# ------------------------------------------------------------------------------------------------ options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data",
                   help="folder with glue/<task>/ and snli/ (train.jsonl, validation.jsonl)")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="encoder id or folder")
    p.add_argument("--targets", default="rte,mrpc,stsb,cola,sst2")
    p.add_argument("--extra-sources", default=",".join(EXTRA_SOURCES), help="source-only tasks (the paper's MNLI/QNLI role)")
    p.add_argument("--kinds", default="lora,bottleneck")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--soup-k", type=int, default=3, help="AdapterSoup: sources averaged (the most similar k)")
    p.add_argument("--published", action="store_true",
                   help="compose the published sources of zoo/published/ for --model (e.g. AdapterHub's Pfeiffer "
                        "adapters on roberta-base: --model roberta-base --kinds bottleneck) instead of training "
                        "sources; needs the Hub (and, at paper scale, a GPU); the single-adapter row is skipped")
    p.add_argument("--seeds", default="0,1,2", help="seeds for the small targets (see --multi-seed-targets)")
    p.add_argument("--multi-seed-targets", default="rte,mrpc,stsb", help="targets that get every seed (others: the first)")
    p.add_argument("--multi-seed-kinds", default="lora", help="adapter kinds that get every seed")
    p.add_argument("--source-max-train", type=int, default=256, help="train cap for the extra (source-only) tasks "
                   "(0: all rows)")
    p.add_argument("--source-caps", default="", help="per-task train caps overriding the two above, e.g. "
                   "snli=9800,sst2=10000 (0: all rows)")
    p.add_argument("--target-max-train", type=int, default=128, help="train cap for targets (own adapter and "
                   "transfer; 0: all rows)")
    p.add_argument("--test-max", type=int, default=300, help="cap on test rows (the official validation split)")
    p.add_argument("--source-epochs", type=int, default=3, help="source epochs (the most, with --source-patience)")
    p.add_argument("--source-patience", type=int, default=0, help="sources: early stopping after N epochs without "
                   "a lower dev loss (0: off, keep the best of --source-epochs)")
    p.add_argument("--patience", type=int, default=0, help="transfers: early stopping on dev loss (0: off)")
    p.add_argument("--source-lr", type=float, default=1e-3, help="lr of source adapters (LoRA and bottleneck; "
                   "--strong: each kind's library default)")
    p.add_argument("--epochs", type=int, default=3, help="transfer epochs")
    p.add_argument("--scalearn-lr", type=float, default=6e-3, help="lr of ScaLearn/average (the paper's 6e-3)")
    p.add_argument("--fusion-lr", type=float, default=5e-5, help="lr of AdapterFusion (the paper's 5e-5)")
    p.add_argument("--fusion-tuned-lr", type=float, default=0.0, help="also run AdapterFusion at this lr (0: off)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pooling", default="first", choices=("first", "mean", "auto"),
                   help="head pooling of sources (transfers inherit it): first token (the paper's), token mean, or "
                        "auto (the encoder's own sentence-transformers pooling: mean for MiniLM)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--group-by-length", action="store_true", help="length-grouped training batches (less padding)")
    p.add_argument("--few-shot-k", default="16,32,100")
    p.add_argument("--few-shot-targets", default="rte,mrpc")
    p.add_argument("--few-shot-kinds", default="lora")
    p.add_argument("--few-shot-steps", type=int, default=12, help="training steps of each few-shot run (paper: 1,000)")
    p.add_argument("--few-shot-seeds", default="0")
    p.add_argument("--few-shot-patience", type=int, default=0, help="few-shot runs: early stopping after N epochs "
                   "without a dev gain (0: off; --strong: 20, the paper's)")
    p.add_argument("--few-shot-select", default="loss", choices=("loss", "metric"), help="few-shot runs: keep the "
                   "epoch with the lowest dev loss or the best dev main metric (--strong: metric, the paper's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stages", default=",".join(STAGES), help="plan stages this process runs (split a plan "
                   "over two processes sharing --out: e.g. --stages few-shot)")
    p.add_argument("--job-seeds", default=None, help="run only the planned jobs of these seeds (e.g. 1,2), with --stages")
    p.add_argument("--job-targets", default=None, help="run only the planned jobs of these tasks (targets, or "
                   "--extra-sources' sources; the composed sources stay those of --targets/--extra-sources: unlike "
                   "narrowing --targets, no row changes)")
    p.add_argument("--job-kinds", default=None, help="run only the planned jobs of these adapter kinds")
    p.add_argument("--job-methods", default=None, help="run only the planned jobs of these methods (single, average, "
                   "adaptersoup, adapterfusion, adapterfusion-tuned, or a ScaLearn variant), e.g. to take one "
                   "comparison's rows first")
    p.add_argument("--deadline", default=None, help="UTC HH:MM after which no new run starts (finished rows are kept)")
    p.add_argument("--fit-deadline", action="store_true",
                   help="with --deadline: also skip (leave for a later session) a run whose like runs, recorded on "
                        "other seeds, took longer than the time left; shorter runs later in the plan still start")
    p.add_argument("--baselines-only", action="store_true", help="only write majority.json (constant predictor scores)")
    p.add_argument("--quick", action="store_true", help="tiny caps: a smoke run in < ~10 minutes on 2 CPU cores")
    p.add_argument("--strong", action="store_true", help="issue 12's benchmark: sources at full size trained to "
                   "convergence, full-size targets, length 128 (many CPU hours: resumable, see --deadline/--shard)")
    p.add_argument("--shard", default="0/1", help="i/n: worker i of n processes sharing --out; each walks the plan "
                   "and takes the next job no other worker holds (a transfer whose sources are still training waits "
                   "for them; worker 0 writes the run's config; two 1-thread workers use 2 cores best)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/<default|quick>)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder for adapters (default .bench-work/<run>)")
    p.add_argument("--sources-from", type=Path, default=None,
                   help="compose the seed-0 sources already trained in another run's --work folder (e.g. "
                        ".bench-work/strong) instead of training them: a protocol check on the same sources, e.g. "
                        "--stages transfer --patience 0 --out bench/results/strong-nostop")
    p.add_argument("--keep-sources", action="store_true",
                   help="push every trained seed-0 source a transfer composes (few-shot ones too) to the local registry "
                        "<out>/sources (committed with the results), and pull a recorded source from it instead of "
                        "retraining it on a new machine (--strong: on)")
    p.add_argument("--publish-sources", action="store_true",
                   help="only push the trained sources in --work that <out>/sources does not hold yet, then exit")
    args = p.parse_args(argv)
    args.shard_index, args.shard_count = parse_shard(p, args.shard)
    if args.deadline and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", args.deadline):
        p.error(f"--deadline must be UTC HH:MM (e.g. 02:10), got '{args.deadline}'")
    if args.fit_deadline and not args.deadline:
        p.error("--fit-deadline needs --deadline HH:MM (the time runs must end by)")
    for item in csv(args.source_caps):
        task, _, cap = item.partition("=")
        if not (task and cap.isdigit()):
            p.error(f"--source-caps: '{item}' is not task=rows (e.g. snli=9800; 0 = all rows)")
    name = "quick" if args.quick else "strong" if args.strong else "default"
    if name in PRESETS:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:])}
        for key, value in PRESETS[name].items():
            if key not in given:
                setattr(args, key, value)
    known = {"stages": list(STAGES), "job_targets": plan_tasks(args)[1], "job_kinds": csv(args.kinds),
             "job_methods": [*ALL_METHODS, FUSION_TUNED],
             "job_seeds": list(dict.fromkeys(csv(args.seeds) + csv(args.few_shot_seeds)))}
    for key, allowed in known.items():  # a misspelt filter would select nothing and end the worker silently
        unknown = [v for v in csv(getattr(args, key) or "") if v not in allowed]
        if unknown:
            p.error(f"--{key.replace('_', '-')}: {', '.join(unknown)} not in the plan; use some of {','.join(allowed)}")
    filters = [f"--{key.replace('_', '-')} {getattr(args, key)}" for key in known if getattr(args, key)]
    if not any(selected(args, job) for job in plan(args)):  # each value is planned, but not together
        p.error(f"no planned job matches {' '.join(filters)} (e.g. a few-shot seed with --stages transfer): "
                "widen a filter, or see the plan's --seeds, --few-shot-seeds and --targets")
    args.out = args.out or REPO / "bench" / "results" / name
    # in the checkout (ignored by git), so a long run resumes in a later session with its trained sources
    args.work = args.work or REPO / ".bench-work" / args.out.name
    return args


def parse_shard(parser: argparse.ArgumentParser, value: str) -> tuple[int, int]:
    """``--shard i/n`` as (i, n), or a one-line usage error."""
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        parser.error(f"--shard must be i/n with 0 <= i < n (e.g. 0/2), got '{value}'")
    return int(index), int(count)


def deadline_at(hhmm: str, now: float) -> float:
    """The next UTC ``HH:MM`` after ``now`` (epoch seconds): a run started at 23:40 with ``--deadline 02:10`` stops
    at 02:10 the next day, not at once."""
    hours, minutes = (int(part) for part in hhmm.split(":"))
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    at = today.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if at.timestamp() <= now:
        at += datetime.timedelta(days=1)
    return at.timestamp()


def expected_seconds(rows: list[dict], job: "Job") -> float | None:
    """The longest recorded wall time of runs like ``job`` (same stage, target, kind, method, variant and k, any
    seed), or None when none is recorded. The longest, not the median: a run cut at the deadline is lost whole.
    A kind none of whose like runs is recorded yet (a new kind's first transfers) is estimated by the other kinds'
    like runs: the composition and the encoder's passes cost about the same for every kind; a target none of whose
    like runs is recorded (CoLA's first transfers) by the same method's runs on the other targets.

    A transfer's single-adapter row is its target's source of that seed: recorded, it is copied (no time); not
    recorded, the source is trained first, so the source's like runs are what it takes."""
    if job.stage == "transfer" and job.method == "single":
        source = Job("source", job.target, job.kind, "single", None, job.seed, job.k)
        if any(row_key(r) == row_key(source.key()) for r in rows):
            return 0.0
        job = source

    def like(key: tuple, loose: int) -> tuple:  # row_key without the seed; loose 1: any kind, 2: any target too
        return key[:1] + (key[1:2] if loose < 2 else ()) + (key[2:3] if loose < 1 else ()) + key[3:5] + key[6:]

    for loose in (0, 1, 2):
        walls = [r["wall_seconds"] for r in rows
                 if like(row_key(r), loose) == like(row_key(job.key()), loose) and r.get("wall_seconds")]
        if walls:
            return max(walls)
    return None


def csv(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


# --------------------------------------------------------------------------------------------------- data


def task_dir(data_root: Path, task: str) -> Path:
    return data_root / "snli" if task == "snli" else data_root / "glue" / task


def _read_jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def capped_data(args: argparse.Namespace, task: str, train_cap: int) -> Path:
    """A copy of the task's data with a seeded train *pool* of ceil(cap/0.9) rows and at most --test-max test rows.

    The library then applies the paper's split (dev = 10% of the pool, seed 42; train = the other 90% ≈ cap), so
    the dev set, evaluated every epoch, stays proportional to the cap instead of 10% of the full train file.
    """
    out = args.work / "data" / f"{task}-{train_cap}-{args.test_max}"
    if (out / "validation.jsonl").is_file():
        return out
    src = task_dir(args.data_root, task)
    rng = random.Random(0)
    train = [r for r in _read_jsonl(src / "train.jsonl") if r.get("label", 0) != -1]
    test = [r for r in _read_jsonl(src / "validation.jsonl") if r.get("label", 0) != -1]
    pool = math.ceil(train_cap / 0.9) if train_cap else len(train)
    if len(train) > pool:
        train = rng.sample(train, pool)
    if len(test) > args.test_max:
        test = rng.sample(test, args.test_max)
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / "validation.jsonl", test)
    return out


# ------------------------------------------------------------------------------------------------ results


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ("stage", "target", "kind", "method", "variant", "seed", "k"))


class Results:
    """results.jsonl: appended one finished run at a time; finished keys are skipped on re-run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done = {row_key(json.loads(line)) for line in path.open()} if path.is_file() else set()

    def has(self, **key: Any) -> bool:
        if row_key(key) not in self.done:  # another process may have finished it
            self.done = {row_key(r) for r in self.rows()}
        return row_key(key) in self.done

    def rows(self) -> list[dict]:
        """Every recorded row, read from the file (other workers append to it)."""
        return [json.loads(line) for line in self.path.open() if line.strip()] if self.path.is_file() else []

    def row(self, **key: Any) -> dict:
        """The last recorded row of ``key`` (KeyError: none)."""
        rows = [r for r in self.rows() if row_key(r) == row_key(key)]
        if not rows:
            raise KeyError(f"no recorded row for {key}")
        return rows[-1]

    def add(self, row: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        self.done.add(row_key(row))


def summary_row(meta: dict, wall: float, **key: Any) -> dict:
    """One results.jsonl line from a scalearn.json (source or composition)."""
    main = meta["task"]["main_metric"]
    training = meta["training"]
    return {
        **key,
        "task_main_metric": main,
        "main_score": meta["metrics"]["test"][main],
        "test": meta["metrics"]["test"],
        "dev": meta["metrics"]["dev"],
        "parameters": meta["adapter"]["parameters"],
        "n_sources": len(meta.get("sources", [])) or 1,
        "sources": [Path(s).name for s in meta.get("sources", [])],
        "train_seconds": training["train_seconds"],
        "wall_seconds": round(wall, 2),
        "examples_per_second": training["examples_per_second"],
        "steps": training["steps"],
        "best_epoch": training["best_epoch"],
        "lr": training["lr"],
        "epochs": training["epochs"],
        "max_steps": training["max_steps"],
        "train_examples": training["train_examples"],
        "dev_examples": training["dev_examples"],
        "test_examples": training["test_examples"],
    }


# --------------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Job:
    """One training run: a source adapter (method 'single') or a transfer."""

    stage: str  # source | transfer | few-shot
    target: str
    kind: str
    method: str  # single | average | adapterfusion | adapterfusion-tuned | scalearn
    variant: str | None
    seed: int
    k: int | None = None

    def key(self) -> dict:
        return dict(stage=self.stage, target=self.target, kind=self.kind, method=self.method,
                    variant=self.variant, seed=self.seed, k=self.k)

    def folder(self, work: Path) -> Path:
        name = "-".join(str(v) for v in (self.target, self.kind, self.method, self.variant, f"s{self.seed}", self.k) if v)
        return work / "runs" / self.stage / name


class JobLock:
    """One job at a time across worker processes: an O_EXCL lock file holding the owner's pid.

    ``acquire(wait=False)`` takes it or says at once that a live process holds it; ``acquire(wait=True)`` waits
    for it. A lock whose owner is gone (killed run) is taken over.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def acquire(self, wait: bool = False) -> bool:
        """Take the lock if it is free (or stale); while a live process holds it, wait or return False."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    owner = int(self.path.read_text() or 0)
                    os.kill(owner, 0)
                except (ValueError, ProcessLookupError, FileNotFoundError):
                    self.path.unlink(missing_ok=True)  # stale: its owner is gone
                    continue
                except PermissionError:
                    pass
                if not wait:
                    return False
                time.sleep(5)
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results = Results(args.out / "results.jsonl")
        self.targets, self.tasks = plan_tasks(args)

    def cap(self, task: str) -> int:
        """The task's train cap (0: all rows)."""
        caps = {k: int(v) for k, v in (item.split("=") for item in csv(self.args.source_caps))}
        if task in caps:
            return caps[task]
        return self.args.target_max_train if task in self.targets else self.args.source_max_train

    def data(self, task: str, few_shot: int | None = None):
        from scalearn_cli.stages.common import DataOptions

        folder = capped_data(self.args, task, self.cap(task))
        if few_shot:
            return DataOptions(task=task, data_dir=folder, few_shot=few_shot)
        return DataOptions(task=task, data_dir=folder, max_train_samples=self.cap(task) or None)

    def config(self, lr: float, seed: int, epochs: int, patience: int = 0, k: int | None = None):
        """A run's TrainConfig; few-shot (``k``): the few-shot steps, patience and selection instead."""
        from scalearn_cli.train import TrainConfig

        few = dict(max_steps=self.args.few_shot_steps, select_on=self.args.few_shot_select) if k else {}
        patience = self.args.few_shot_patience if k else patience
        return TrainConfig(epochs=epochs, lr=lr, batch_size=self.args.batch_size, max_length=self.args.max_length,
                           seed=seed, patience=patience or None, group_by_length=self.args.group_by_length, **few)

    def source_folder(self, task: str, kind: str, seed: int = 0, k: int | None = None) -> Path:
        stage = "few-shot" if k else "source"
        job = Job(stage, task, kind, "single", None, seed, k)
        return job.folder(self.home(job))

    def home(self, job: Job) -> Path:
        """The work folder holding the job's adapter: another run's for a borrowed seed-0 source (``--sources-from``)."""
        borrowed = self.args.sources_from and job.stage == "source" and job.seed == 0
        return self.args.sources_from if borrowed else self.args.work

    def run(self, job: Job, wait: bool = True) -> bool:
        """Run the job unless it is finished. While another worker holds it: wait for it, or (``wait=False``)
        return False at once so the caller can take other work."""
        if self.results.has(**job.key()):
            return True
        lock = self.lock(job)
        if not lock.acquire(wait):
            return False
        try:
            if not self.results.has(**job.key()):  # the holder may have finished it (if it failed: run it here)
                self._run(job)
        finally:
            lock.release()
        return True

    def lock(self, job: Job) -> JobLock:
        return JobLock(self.args.work / "locks" / f"{job.folder(self.args.work).name}-{job.stage}.lock")

    def _run(self, job: Job) -> None:
        if job.method == "single" and job.stage == "transfer":
            # the single-adapter baseline *is* the target's own source adapter of that seed: its recorded row
            src = Job("source", job.target, job.kind, "single", None, job.seed)
            if self.home(src) == self.args.work:
                self.run(src)  # trains it unless recorded (a recorded one is not retrained just for its row)
                self.results.add({**self.results.row(**src.key()), **job.key(), "wall_seconds": 0.0})
            else:  # borrowed from another run's --work
                self.ensure(src)
                meta = json.loads((src.folder(self.home(src)) / "scalearn.json").read_text())
                self.results.add(summary_row(meta, 0.0, **job.key()))
            return
        t0 = time.perf_counter()
        meta = self.train_source(job) if job.method == "single" else self.train_transfer(job)
        row = summary_row(meta, time.perf_counter() - t0, **job.key())
        self.results.add(row)
        if job.method == "single":
            self.keep(job)
        logger.info("%-8s %-5s %-10s %-13s %-18s seed %d k %s: %s %.2f (%.0fs)", job.stage, job.target, job.kind,
                    job.method, job.variant or "-", job.seed, job.k, row["task_main_metric"], row["main_score"],
                    row["wall_seconds"])

    def train_source(self, job: Job) -> dict:
        from scalearn_cli.stages.source import train_source

        config = self.config(self.args.source_lr, job.seed, self.args.source_epochs, self.args.source_patience, job.k)
        return train_source(self.data(job.target, job.k), job.folder(self.args.work), job.kind, None, config,
                            self.args.model, overwrite=True, pooling=self.args.pooling)

    def transfer_sources(self, job: Job) -> list[str]:
        """The target's own adapter first (few-shot: the few-shot one of this seed), then every other task's."""
        if self.args.published:  # the paper's setting: every published source of the run's tasks, no stage 1
            from scalearn_cli.zoo import load_published

            by_task: dict[str, str] = {}
            for r in load_published(self.args.model):  # one per task: the catalog's first (the paper's Pfeiffer set)
                if r["task"] in self.tasks and r["kind"] == job.kind:
                    by_task.setdefault(r["task"], r["source"])
            return [by_task[job.target], *[src for task, src in by_task.items() if task != job.target]]
        own = self.source_folder(job.target, job.kind, job.seed, job.k) if job.k else self.source_folder(job.target, job.kind)
        if job.k:
            self.ensure(Job("few-shot", job.target, job.kind, "single", None, job.seed, job.k))
        others = [self.source_folder(t, job.kind) for t in self.tasks if t != job.target]
        needed = [Job("source", task, job.kind, "single", None, 0)
                  for task in [job.target, *[t for t in self.tasks if t != job.target]] if not job.k or task != job.target]
        for src in needed:  # first the sources no other worker is (re)training, then wait for the rest
            self.ensure(src, wait=False)
        for src in needed:
            self.ensure(src)
        return [str(own), *map(str, others)]

    def ensure(self, job: Job, wait: bool = True) -> None:
        """Run a source job, or retrain it when its row is recorded but its folder is gone (a new machine).
        ``wait=False``: leave it (return at once) while another worker trains it."""
        if self.home(job) != self.args.work:  # borrowed: never trained here
            if not (job.folder(self.home(job)) / "scalearn.json").is_file():
                raise SystemExit(f"--sources-from {self.home(job)}: no trained {job.target} {job.kind} source there "
                                 f"({job.folder(self.home(job))}); run that run's source stage first")
            return
        if not self.run(job, wait) or (job.folder(self.args.work) / "scalearn.json").is_file():
            return
        lock = self.lock(job)
        if not lock.acquire(wait):
            return
        try:
            if not (job.folder(self.args.work) / "scalearn.json").is_file() and not self.restore(job):
                logger.info("retraining %s: its folder is not in %s", job, self.args.work)
                self.train_source(job)
                self.record_retrained(job)
                self.keep(job)
        finally:
            lock.release()

    # ---- the run's kept sources: a local scalearn registry committed beside the results

    def registry(self):
        return kept_registry(self.args.out)

    def repo_id(self, job: Job) -> str:
        return f"{self.args.out.name}/{job.folder(self.args.work).name}"

    def kept_commit(self, job: Job) -> str | None:
        """The commit of the job's source in the run's registry, None when it is not kept there."""
        from scalearn_cli.errors import RegistryError

        registry = self.registry()
        if not registry.exists():
            return None
        try:
            return registry.resolve(self.repo_id(job))
        except RegistryError:
            return None

    def keep(self, job: Job) -> bool:
        """Push a trained seed-0 source (full-size or few-shot) to the run's registry (``--keep-sources``); False
        when off, not seed 0, or already kept. Few-shot sources of other seeds retrain in minutes when missing
        (verified against their rows, as any retrained source), so they are not committed."""
        composed = job.seed == 0
        if not (self.args.keep_sources and composed) or self.home(job) != self.args.work:
            return False
        from scalearn_cli.artifacts import sha256_file

        folder = job.folder(self.args.work)
        registry, repo_id = self.registry(), self.repo_id(job)
        commit = self.kept_commit(job)
        if commit and registry.file_hashes(repo_id, commit) == {
                p.name: sha256_file(p) for p in folder.iterdir() if not p.name.startswith(".")}:
            return False
        pushed = registry.push(folder, repo_id, commit_message=f"{job.target} {job.kind} source, seed {job.seed}")
        logger.info("kept %s in %s as %s@%s", folder.name, registry.root, repo_id, pushed.commit[:12])
        return True

    def restore(self, job: Job) -> bool:
        """Pull a recorded source from the run's registry into ``--work`` (files verified against their sha256),
        if it is kept there and its recorded test score is the row's: the very adapter the rows composed."""
        commit = self.kept_commit(job) if self.args.keep_sources else None
        if commit is None:
            return False
        registry, repo_id = self.registry(), self.repo_id(job)
        folder = job.folder(self.args.work)
        registry.pull(repo_id, commit, local_dir=folder)
        meta = json.loads((folder / "scalearn.json").read_text())
        recorded = self.results.row(**job.key())
        kept = meta["metrics"]["test"][recorded["task_main_metric"]]
        if abs(kept - recorded["main_score"]) > REPRODUCED:
            shutil.rmtree(folder)
            raise SystemExit(f"{repo_id} in {registry.root} scores {kept:.4f} on test, its row recorded "
                             f"{recorded['main_score']:.4f}: not the recorded adapter; remove that repo folder and "
                             "re-run to retrain it")
        logger.info("restored %s from %s (%s %.2f, as recorded)", folder.name, registry.root,
                    recorded["task_main_metric"], kept)
        return True

    def publish_sources(self) -> list[str]:
        """Push every trained source in ``--work`` that has a recorded row and is not kept yet (``--publish-sources``)."""
        kept = []
        for job in plan(self.args):
            if job.method == "single" and job.stage != "transfer" and self.results.has(**job.key()) \
                    and (job.folder(self.args.work) / "scalearn.json").is_file() and self.keep(job):
                kept.append(self.repo_id(job))
        return kept

    def record_retrained(self, job: Job) -> dict:
        """Append the retrained source's test metrics beside its recorded row's to ``<out>/retrained.jsonl``."""
        recorded = self.results.row(**job.key())
        meta = json.loads((job.folder(self.args.work) / "scalearn.json").read_text())
        main = recorded["task_main_metric"]
        entry = {**job.key(), "main_metric": main, "recorded": recorded["main_score"],
                 "retrained": meta["metrics"]["test"][main], "recorded_test": recorded["test"],
                 "retrained_test": meta["metrics"]["test"], "platform": platform.platform(),
                 "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if abs(entry["retrained"] - entry["recorded"]) > REPRODUCED:
            logger.warning("retrained %s scores %.4f, recorded %.4f: later transfers compose a different adapter",
                           job, entry["retrained"], entry["recorded"])
        with (self.args.out / "retrained.jsonl").open("a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
        return entry

    def train_transfer(self, job: Job) -> dict:
        from scalearn_cli.stages.transfer import TransferOptions, transfer

        sources = self.transfer_sources(job)
        method = "adapterfusion" if job.method == FUSION_TUNED else job.method
        lr = {"adapterfusion": self.args.fusion_lr, FUSION_TUNED: self.args.fusion_tuned_lr}.get(
            job.method, self.args.scalearn_lr)
        config = self.config(lr, job.seed, self.args.epochs, self.args.patience, job.k)
        out = job.folder(self.args.work)
        options = {"k": self.args.soup_k} if method == "adaptersoup" else {}
        meta = transfer(TransferOptions(tuple(sources), self.data(job.target, job.k), out, method,
                                        job.variant or "scalearn", options, train=config, overwrite=True))
        self.keep_omega(job, out)
        return meta

    def keep_omega(self, job: Job, folder: Path) -> None:
        """Copy seed-0 ScaLearn / ScaLearnUniform ω (a few KB) beside the results, for the heatmap."""
        if job.method != "scalearn" or job.seed != 0 or job.k or job.variant not in ("scalearn", "scalearn-uniform"):
            return
        dest = self.args.out / "omega" / f"{job.target}-{job.kind}-{job.variant}.safetensors"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "omega.safetensors", dest)
        sources = json.loads((folder / "composition.json").read_text())["sources"]
        dest.with_suffix(".json").write_text(json.dumps({"sources": [s["task"] for s in sources]}, indent=2) + "\n")


def kept_registry(out: Path):
    """The local scalearn registry holding a run's kept sources (``--keep-sources``): ``<out>/sources``."""
    from scalearn_cli.registry.local import LocalRegistry

    return LocalRegistry(out / "sources")


def method_jobs(stage: str, target: str, kind: str, methods: list[str], seed: int, k: int | None = None) -> Iterator[Job]:
    for method in methods:
        if method in VARIANTS:
            yield Job(stage, target, kind, "scalearn", method, seed, k)
        else:
            yield Job(stage, target, kind, method, None, seed, k)


def plan_tasks(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The run's targets, and every task a source is trained for: the targets, then the extra sources."""
    targets = csv(args.targets)
    return targets, targets + [t for t in csv(args.extra_sources) if t not in targets]


def plan(args: argparse.Namespace) -> Iterator[Job]:
    """Sources first; then target by target, every method and every seed of it (a partial run gives whole answers
    for the targets it reached, the small ones first); few-shot last."""
    targets, tasks = plan_tasks(args)
    kinds, seeds = csv(args.kinds), [int(s) for s in csv(args.seeds)]
    methods = csv(args.methods) + ([FUSION_TUNED] if args.fusion_tuned_lr > 0 else [])
    if args.published:  # sources are published, not trained: transfers only (see --published)
        methods = [m for m in methods if m != "single"]
        for target in targets:
            for kind in kinds:
                yield from method_jobs("transfer", target, kind, methods, seeds[0])
        return
    for kind in kinds:
        for task in tasks:
            yield Job("source", task, kind, "single", None, 0)
    multi = csv(args.multi_seed_targets)
    for target in targets:  # target by target, every seed: a partial run answers some targets fully
        for kind in kinds:
            yield from method_jobs("transfer", target, kind, methods, seeds[0])
        for seed in seeds[1:] if target in multi else []:
            for kind in [k for k in kinds if k in csv(args.multi_seed_kinds)]:
                yield Job("source", target, kind, "single", None, seed)
                yield from method_jobs("transfer", target, kind, methods, seed)
    fs_methods = ["single", *[m for m in methods if m in VARIANTS]]
    for seed in [int(s) for s in csv(args.few_shot_seeds)]:
        for k in [int(v) for v in csv(args.few_shot_k)]:
            for target in csv(args.few_shot_targets):
                for kind in csv(args.few_shot_kinds):
                    yield from method_jobs("few-shot", target, kind, fs_methods, seed, k)


def selected(args: argparse.Namespace, job: Job) -> bool:
    """Whether this process runs a planned job: --stages and the --job-* filters pick jobs out of the one plan
    without changing what any job composes (so a filtered worker's rows are the full run's rows)."""
    picks = {"job_seeds": str(job.seed), "job_targets": job.target, "job_kinds": job.kind,
             "job_methods": job.variant or job.method}
    return job.stage in csv(args.stages) and all(
        not getattr(args, name) or value in csv(getattr(args, name)) for name, value in picks.items())


def write_config(args: argparse.Namespace) -> None:
    import torch
    import transformers

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["data_root"] = os.path.relpath(args.data_root, REPO) if args.data_root.is_absolute() else str(args.data_root)
    config.update(out=os.path.relpath(args.out, REPO), machine={
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    })
    path = args.out / "config.json"
    history = json.loads(path.read_text()).get("started", []) if path.is_file() else []
    config["started"] = history + [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())]
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_majority(args: argparse.Namespace, runner: Runner) -> None:
    """majority.json: each target's majority-class (regression: train-mean) score on the same capped test set."""
    from scalearn_cli.data import load_raw, make_splits
    from scalearn_cli.metrics import majority_baseline

    out = {}
    for target in runner.tasks:  # sources too: each source's score is shown beside its majority baseline
        options = runner.data(target)
        spec = options.spec()
        splits = make_splits(spec, load_raw(spec, data_dir=options.data_dir), max_train_samples=options.max_train_samples)
        scores = majority_baseline(splits.spec, splits.train[spec.label_field], splits.test[spec.label_field])
        out[target] = {"main_metric": spec.main_metric, "main_score": scores[spec.main_metric], "test": scores,
                       "test_examples": len(splits.test), "train_examples": len(splits.train)}
    (args.out / "majority.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("scalearn_cli", "datasets", "transformers", "accelerate", "peft"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.disable_progress_bars()
    args.out.mkdir(parents=True, exist_ok=True)
    runner = Runner(args)
    deadline = deadline_at(args.deadline, time.time()) if args.deadline else None
    if args.baselines_only:
        write_majority(args, runner)
        return
    if args.publish_sources:
        args.keep_sources = True
        kept = runner.publish_sources()
        logger.info("kept %d source(s) in %s%s", len(kept), args.out / "sources", "".join(f"\n  {k}" for k in kept))
        return
    if args.shard_index == 0:  # one writer for the run's records
        write_config(args)
        write_majority(args, runner)
    for job in plan(args):
        if not selected(args, job):
            continue
        if deadline is not None and time.time() >= deadline:
            logger.info("deadline %s UTC reached: stopping before %s", args.deadline, job)
            break
        if args.fit_deadline and not runner.results.has(**job.key()):
            expected = expected_seconds(runner.results.rows(), job)
            if expected is not None and time.time() + expected > deadline:
                logger.info("skipping %s: like runs took up to %.0f min, past the deadline %s UTC", job,
                            expected / 60, args.deadline)
                continue
        try:
            if not runner.run(job, wait=False):  # another worker runs it: take the next job instead of waiting
                logger.info("skipping %s: another worker runs it", job)
        except Exception:  # one failed run must not lose the rest of the plan
            logger.exception("run failed: %s", job)
    logger.info("done: %s", args.out / "results.jsonl")


if __name__ == "__main__":
    main()
