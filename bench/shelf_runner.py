"""The shelf benchmark's worker (bench/shelf.py drives it): one job of bench/shelf_plan.py trained through the library.

The quality run's worker (bench/quality_runner.py) keeps the data copies, the locks, the own adapters and the records;
this one composes the shelves' zoo sources instead of the run's own, and records with every row the shelf it composed
(task, zoo reference, registry id and revision of each member), the selection and its scores, and ScaLearn's ω share
per source.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path

from bench.quality_plan import FUSION_TUNED, summary_row
from bench.quality_runner import Runner, capped_data, combiner_options, run_device, task_dir
from bench.shelf_plan import Member, ShelfJob, composed

logger = logging.getLogger("bench.shelf")


def runner_args(args: argparse.Namespace) -> argparse.Namespace:
    """The shelf run's options as the quality worker reads them (no sources of its own: the zoo's are composed)."""
    return argparse.Namespace(**{
        **vars(args), "extra_sources": "", "source_caps": "", "source_max_train": 0, "target_max_train": 0,
        "source_lr": None, "keep_sources": False, "sources_from": None, "published": False, "threshold": None,
        "group_by_length": True, "data_root": Path(args.data_root)})


class ShelfRunner(Runner):
    """The quality worker over the shelves' sources (``found``: shelf name -> members)."""

    def __init__(self, args: argparse.Namespace, found: dict[str, list[Member]]) -> None:
        super().__init__(runner_args(args))
        self.found = found
        self.tasks = list(dict.fromkeys([*self.targets, *(m.task for ms in found.values() for m in ms)]))

    def _run(self, job: ShelfJob) -> None:
        t0 = time.perf_counter()
        if job.method == "single":
            meta, extra = self.own_adapter(job)
        else:
            meta, extra = self.train_shelf(job)
        wall = 0.0 if extra.get("from_zoo") else time.perf_counter() - t0
        row = {**summary_row(meta, wall, **job.key()), **run_device(), **extra}
        self.results.add(row)
        logger.info("%-8s %-5s %-13s %-18s %-6s %-14s seed %d k %s: %s %.2f (%.0fs)", job.stage, job.target,
                    job.method, job.variant or "-", job.shelf or "-", job.select or "-", job.seed, job.k,
                    row["task_main_metric"], row["main_score"], row["wall_seconds"])

    def own_adapter(self, job: ShelfJob) -> tuple[dict, dict]:
        """The target's own adapter: few-shot, trained on its k rows; full size, seed 0 is the zoo's source (the
        strong run's, as the shelves compose it: no training), other seeds trained with the same recipe."""
        if job.k is None and job.seed == 0:
            member = next(m for ms in self.found.values() for m in ms if m.task == job.target)
            folder = self.resolve(member).folder
            return json.loads((folder / "scalearn.json").read_text()), {"from_zoo": member.record()}
        return self.train_source(job), {}

    def resolve(self, member: Member):
        """A shelf member, resolved and verified; a source whose recorded data folder is gone (the strong run's
        capped copies, on another machine) reads the same seeded rows from a copy made in this run's work folder,
        where AdapterSoup and the similarity ranking look for its texts (in memory: no file changes)."""
        from scalearn_cli.resolve import Resolver

        found = Resolver(registry=self.args.zoo_registry).source(member.ref)
        recorded = Path((found.meta.data or {}).get("data_dir") or "")
        if found.meta.data and recorded.name and not recorded.is_dir() and recorded.name.count("-") >= 2:
            task, cap, test_max = recorded.name.rsplit("-", 2)
            if task == member.task and cap.isdigit() and test_max.isdigit():
                copy = argparse.Namespace(**{**vars(self.args), "test_max": int(test_max)})
                data = {**found.meta.data, "data_dir": str(capped_data(copy, task, int(cap)))}
                found.meta = replace(found.meta, data=data)
        return found

    def few_shot_own(self, job: ShelfJob) -> Path:
        """The k-shot adapter of this seed (trained, or retrained on a new machine, by the quality worker)."""
        own = ShelfJob("few-shot", job.target, job.kind, "single", None, job.seed, job.k)
        self.ensure(own)
        return own.folder(self.args.work)

    def train_shelf(self, job: ShelfJob) -> tuple[dict, dict]:
        """A transfer over the job's shelf (or its selection) with the job's method; the row's shelf record."""
        from scalearn_cli.stages.transfer import TransferOptions, transfer

        members = self.found[job.shelf]
        pool = [self.resolve(m) for m in composed(job, members)]
        if job.k:
            from scalearn_cli.resolve import Resolver

            pool.insert(0, Resolver().source(str(self.few_shot_own(job))))
        method = "adapterfusion" if job.method == FUSION_TUNED else job.method
        lr = {"adapterfusion": self.args.fusion_lr, FUSION_TUNED: self.args.fusion_tuned_lr}.get(
            job.method, self.args.scalearn_lr)
        config = self.config(lr, job.seed, self.args.epochs, self.args.patience, job.k)
        data = self.data(job.target, job.k)
        out = job.folder(self.args.work)
        options = TransferOptions(tuple(pool), data, out, method, job.variant or "scalearn",
                                  combiner_options(self.args, job, method), train=config, overwrite=True)
        extra = {"shelf_sources": [m.record() for m in members], "n_candidates": len(pool)}
        started = time.perf_counter()
        if job.select:
            options, extra["selection"] = self.choose(job, options, pool)
        extra["selection_seconds"] = round(time.perf_counter() - started, 2) if job.select else None
        meta = transfer(options)
        if job.method == "scalearn":
            extra["omega_shares"] = omega_shares(out)
        return meta, extra

    def choose(self, job: ShelfJob, options, pool: list) -> tuple:
        """The K sources of ``pool`` the job's rule picks, and the record of the choice (rule, K, chosen, scores)."""
        rule, _, k = job.select.rpartition("-")
        k = int(k)
        if rule == "learned":
            from scalearn_cli.selection import SelectOptions, select_sources

            chosen, record = select_sources(options, pool, SelectOptions(k))
            record = {"rule": rule, "k": k, "chosen": [s.ref.task for s in chosen],
                      "scores": [{"task": s["task"], "share": s["share"], "rank": s["rank"]} for s in record["scores"]],
                      "steps": record["steps"], "seconds": record["seconds"]}
        elif rule == "similarity":
            sims = similarity(options, pool, self.args.data_root)
            ranked = sorted(range(len(pool)), key=lambda i: (-sims[i], i))[:k]
            chosen = [pool[i] for i in sorted(ranked)]
            record = {"rule": rule, "k": k, "chosen": [s.ref.task for s in chosen],
                      "scores": [{"task": s.ref.task, "similarity": round(v, 6)} for s, v in zip(pool, sims)]}
        else:  # random: one draw per (target, k-shot, K, seed), as LoraHub draws its LoRAs
            rng = random.Random(f"{job.target}|{job.k}|{k}|{job.seed}")
            chosen = [pool[i] for i in sorted(rng.sample(range(len(pool)), k))]
            record = {"rule": rule, "k": k, "chosen": [s.ref.task for s in chosen], "draw": job.seed}
        return replace(options, sources=tuple(chosen)), record


def similarity(options, pool: list, data_root: Path) -> list[float]:
    """AdapterSoup's ranking (combiners/soup.py: cosine of the centroids of mean-pooled base-encoder embeddings) of
    each source's training texts against the target's. A source's texts are read from its task's folder under the
    run's data root (soup reads the folder its scalearn.json recorded, which another machine may lack)."""
    import torch.nn.functional as F

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.data.batches import example_texts
    from scalearn_cli.combiners import TargetContext
    from scalearn_cli.combiners.soup import SAMPLE, centroid
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.stages.common import prepare
    from scalearn_cli.tasks import get_task

    config = options.train_config()
    encoder, tokenizer, _ = load_backbone(pool[0].meta.base_model["id"])
    prepared = prepare(options.data, tokenizer, config)
    context = TargetContext(example_texts(prepared.splits.train, prepared.spec), pool, encoder, tokenizer,
                            config.max_length, config.seed)
    anchor = centroid(context.texts, context)
    sims = []
    for src in pool:
        spec = get_task(src.ref.task)
        train = load_raw(spec, data_dir=source_dir(data_root, src.ref.task))["train"]
        sample = train.shuffle(seed=0).select(range(min(SAMPLE, len(train))))
        sims.append(float(F.cosine_similarity(anchor, centroid(example_texts(sample, spec), context), dim=0)))
    return sims


def source_dir(data_root: Path, task: str) -> Path:
    """A source task's data folder: its zoo recipe's (shelf/mnli, snli, glue/rte...), else the quality run's rule."""
    from scalearn_cli.zoo.catalog import load_catalog

    paths = {r.task: r.data["path"] for r in load_catalog().recipes if r.data.get("source") == "dir"}
    return data_root / paths[task] if task in paths else task_dir(data_root, task)


def omega_shares(folder: Path) -> list[dict]:
    """Each composed source's share of Σ|ω| (inspection.omega_table's), by task."""
    from scalearn_cli.inspection import omega_table

    return [{"task": s["task"], "share": round(s["share"], 6)} for s in omega_table(folder)["sources"]]
