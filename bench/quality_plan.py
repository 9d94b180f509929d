"""The quality benchmark's plan and records (bench/quality.py runs them): which jobs a run has and in what order,
the filters that pick a worker's share, ``results.jsonl``, the lock that keeps two workers off one job, and how long a
job is expected to take."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from bench.report_common import read_jsonl

VARIANTS = ("scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++")
ALL_METHODS = ("single", "average", "adaptersoup", "adapterfusion", *VARIANTS)
#: PEFT's own peer methods (run by PEFT, head trained), planned on request (--methods): merge-<PEFT combination
#: type> is method "merge" with that type as its variant; arrow is PEFT's Arrow routing
PEER_METHODS = ("merge-linear", "merge-ties", "merge-dare_ties", "merge-svd", "merge-cat", "arrow")
STAGES = ("source", "transfer", "few-shot")  # the plan's order
#: AdapterFusion at --fusion-tuned-lr: a method of the plan (its own rows), trained as "adapterfusion"
FUSION_TUNED = "adapterfusion-tuned"
#: a retrained source whose test score moves by more than this (points) is not the adapter its row recorded
REPRODUCED = 1e-6


def csv(value: str) -> list[str]:
    return [v.strip() for v in str(value).split(",") if v.strip()]


# --------------------------------------------------------------------------------------------------------------- plan


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
        parts = (self.target, self.kind, self.method, self.variant, f"s{self.seed}", self.k)
        name = "-".join(str(v) for v in parts if v)
        return work / "runs" / self.stage / name


def method_jobs(stage: str, target: str, kind: str, methods: list[str], seed: int,
                k: int | None = None) -> Iterator[Job]:
    for method in methods:
        if method in VARIANTS:
            yield Job(stage, target, kind, "scalearn", method, seed, k)
        elif method.startswith("merge-"):
            yield Job(stage, target, kind, "merge", method.partition("-")[2], seed, k)
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


def plan_method(job: Job) -> str:
    """The --methods name that planned ``job`` (a ScaLearn variant, merge-<type>, or the method)."""
    return f"{job.method}-{job.variant}" if job.method == "merge" else job.variant or job.method


def selected(args: argparse.Namespace, job: Job) -> bool:
    """Whether this process runs a planned job: --stages and the --job-* filters pick jobs out of the one plan
    without changing what any job composes (so a filtered worker's rows are the full run's rows)."""
    picks = {"job_seeds": str(job.seed), "job_targets": job.target, "job_kinds": job.kind,
             "job_methods": plan_method(job)}
    return job.stage in csv(args.stages) and all(
        not getattr(args, name) or value in csv(getattr(args, name)) for name, value in picks.items())


# ------------------------------------------------------------------------------------------------------------ results


#: what makes a row one run; the last three are the shelf run's (bench/shelf_plan.py) and None in every other run
KEY_FIELDS = ("stage", "target", "kind", "method", "variant", "seed", "k", "shelf", "shelf_n", "select")


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in KEY_FIELDS)


def ran_on_cpu(row: dict) -> bool:
    """Whether a row was computed on a CPU (rows record their ``device``; those from before it all were)."""
    return row.get("device", "cpu") == "cpu"


class Results:
    """results.jsonl: appended one finished run at a time; finished keys are skipped on re-run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done = {row_key(r) for r in read_jsonl(path)}

    def has(self, **key: Any) -> bool:
        if row_key(key) not in self.done:  # another process may have finished it
            self.done = {row_key(r) for r in self.rows()}
        return row_key(key) in self.done

    def rows(self) -> list[dict]:
        """Every recorded row, read from the file (other workers append to it)."""
        return read_jsonl(self.path)

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


# --------------------------------------------------------------------------------------------------------- scheduling


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


def deadline_at(hhmm: str, now: float) -> float:
    """The occurrence of UTC ``HH:MM`` nearest to ``now`` (epoch seconds), so within 12 hours either way: a run
    started at 23:40 with ``--deadline 02:10`` stops at 02:10 the next day, not at once; one started at 10:46 with
    ``--deadline 10:45`` (a chained invocation that began after its session's deadline) finds it reached and starts
    nothing, rather than running until 10:45 the next day."""
    hours, minutes = (int(part) for part in hhmm.split(":"))
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    at = today.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    nearest = min((at + datetime.timedelta(days=days) for days in (-1, 0, 1)), key=lambda t: abs(t.timestamp() - now))
    return nearest.timestamp()


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
        walls = [r["wall_seconds"] for r in rows if ran_on_cpu(r)  # a GPU row's time says nothing of a CPU's
                 and like(row_key(r), loose) == like(row_key(job.key()), loose) and r.get("wall_seconds")]
        if walls:
            return max(walls)
    return None


def run_jobs(jobs: Iterable[Job], runner: Any, args: Any, describe: Callable[[Job], str] = str) -> None:
    """Run ``jobs`` in order until ``args.deadline`` (UTC HH:MM): with ``args.fit_deadline``, skip a job whose like
    runs took longer than the time left; a job another worker holds is skipped; one failed run never loses the rest."""
    log = logging.getLogger("bench.quality")
    deadline = deadline_at(args.deadline, time.time()) if args.deadline else None
    for job in jobs:
        if deadline is not None and time.time() >= deadline:
            log.info("deadline %s UTC reached: stopping before %s", args.deadline, describe(job))
            break
        fit = args.fit_deadline and not runner.results.has(**job.key())
        expected = expected_seconds(runner.results.rows(), job) if fit else None
        if expected is not None and deadline is not None and time.time() + expected > deadline:
            log.info("skipping %s: like runs took up to %.0f min, past the deadline %s UTC", describe(job),
                     expected / 60, args.deadline)
            continue
        try:
            if not runner.run(job, wait=False):  # another worker runs it: take the next job instead of waiting
                log.info("skipping %s: another worker runs it", describe(job))
        except Exception:  # one failed run must not lose the rest of the plan
            log.exception("run failed: %s", describe(job))
    log.info("done: %s", args.out / "results.jsonl")

