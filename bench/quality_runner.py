"""The quality benchmark's worker (bench/quality.py drives it): capped copies of each task's data, one job trained
through the library (a source, a transfer, a few-shot run), and the run's kept sources, pushed to and restored from
a local scalearn registry beside the results."""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import shutil
import time
from pathlib import Path

from bench.quality_plan import FUSION_TUNED, REPRODUCED, Job, JobLock, Results, csv, plan, plan_tasks, summary_row

logger = logging.getLogger("bench.quality")


# --------------------------------------------------------------------------------------------------------------- data


def task_dir(data_root: Path, task: str) -> Path:
    """The task's folder under the data root: snli/, shelf/<task> for a shelf task (scored on its test file), else
    glue/<task>."""
    if task == "snli":
        return data_root / "snli"
    return data_root / ("shelf" if scored_split(task) == "test" else "glue") / task


def scored_split(task: str) -> str:
    """The raw split a task is scored on: ``test`` for the shelf's tasks (e.g. go_emotions), else ``validation``."""
    from scalearn_cli.tasks import TASKS

    spec = TASKS.get(task)
    return "test" if spec is not None and spec.test_split == "test" else "validation"


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
    if (out / f"{scored_split(task)}.jsonl").is_file():
        return out
    src = task_dir(args.data_root, task)
    rng = random.Random(0)
    train = [r for r in _read_jsonl(src / "train.jsonl") if r.get("label", 0) != -1]
    test = [r for r in _read_jsonl(src / f"{scored_split(task)}.jsonl") if r.get("label", 0) != -1]
    pool = math.ceil(train_cap / 0.9) if train_cap else len(train)
    if len(train) > pool:
        train = rng.sample(train, pool)
    if len(test) > args.test_max:
        test = rng.sample(test, args.test_max)
    _write_jsonl(out / "train.jsonl", train)
    _write_jsonl(out / f"{scored_split(task)}.jsonl", test)
    return out


# --------------------------------------------------------------------------------------------------------------- runs


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

        from scalearn_cli.tasks import MULTI_LABEL, get_task

        folder = capped_data(self.args, task, self.cap(task))
        multi = get_task(task).problem_type == MULTI_LABEL  # --label-threshold: the multi-label decisions only
        threshold = {"threshold": getattr(self.args, "threshold", None)} if multi else {}
        if few_shot:
            return DataOptions(task=task, data_dir=folder, few_shot=few_shot, **threshold)
        return DataOptions(task=task, data_dir=folder, max_train_samples=self.cap(task) or None, **threshold)

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
        """The work folder holding the job's adapter: another run's for a borrowed seed-0 source
        (``--sources-from``). A target that run has no source of (a new target over its shelf, e.g. go_emotions
        over the strong run's sources) trains its own here; a missing extra source stays an error (``ensure``)."""
        borrowed = self.args.sources_from and job.stage == "source" and job.seed == 0
        if borrowed and job.target in self.targets:
            borrowed = (job.folder(self.args.sources_from) / "scalearn.json").is_file()
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
        row = {**summary_row(meta, time.perf_counter() - t0, **job.key()), **run_device()}
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
            from scalearn_cli.zoo.catalog import load_published

            by_task: dict[str, str] = {}
            for r in load_published(self.args.model):  # one per task: the catalog's first (the paper's Pfeiffer set)
                if r["task"] in self.tasks and r["kind"] == job.kind:
                    by_task.setdefault(r["task"], r["source"])
            return [by_task[job.target], *[src for task, src in by_task.items() if task != job.target]]
        own = self.source_folder(job.target, job.kind, job.seed, job.k) if job.k else \
            self.source_folder(job.target, job.kind)
        if job.k:
            self.ensure(Job("few-shot", job.target, job.kind, "single", None, job.seed, job.k))
        others = [self.source_folder(t, job.kind) for t in self.tasks if t != job.target]
        tasks = [job.target, *[t for t in self.tasks if t != job.target]]
        needed = [Job("source", task, job.kind, "single", None, 0) for task in tasks if not job.k or task != job.target]
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
        """Push every trained source in ``--work`` that has a recorded row and is not kept yet
        (``--publish-sources``)."""
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
        options = combiner_options(self.args, job, method)
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


def combiner_options(args, job: Job, method: str) -> dict:
    """The combiner options a job's method takes from the run's flags (AdapterSoup's k, PEFT's merge and Arrow)."""
    from scalearn_cli.combiners.merge import NEEDS_DENSITY

    if method == "merge":
        density = {"density": args.merge_density} if job.variant in NEEDS_DENSITY else {}
        return {"merge_type": job.variant, **density}
    return {"adaptersoup": {"k": args.soup_k}, "arrow": {"top_k": args.arrow_top_k}}.get(method, {})


def run_device() -> dict:
    """Where a row was computed: ``device`` ("cpu", or the GPU's name) and the torch/transformers versions (rows of
    one run can come from several machines; config.json only keeps the last invocation's)."""
    import torch
    import transformers

    return {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__}


def kept_registry(out: Path):
    """The local scalearn registry holding a run's kept sources (``--keep-sources``): ``<out>/sources``."""
    from scalearn_cli.registry.local import LocalRegistry

    return LocalRegistry(out / "sources")
