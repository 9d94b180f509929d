"""The shelf benchmark's plan (bench/shelf.py runs it): does a broad shelf buy transfer over the narrow one?

Two shelves of LoRA sources on the packaged MiniLM: *narrow*, the seven GLUE/SNLI sources of the strong run, and
*broad*, every source of the zoo catalog (``zoo/minilm-l6.json``) built so far — read from the catalog's registries
when the plan is made, so its size grows as the zoo is built. A row records the shelf it composed (ids, revisions,
count) and its key holds the shelf's size: a row composed over 12 sources is never taken for the 35-source row, and a
worker run after the zoo has grown plans (and runs) the broad rows again over the larger shelf.

Per target and seed, every method on each shelf; on the broad shelf also the selections of K sources (learned by
``--select K``, AdapterSoup's similarity ranking, a random draw) composed by one ScaLearn variant.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bench.quality_plan import FUSION_TUNED, VARIANTS, Job, csv

#: the strong run's seven sources (the zoo's prebuilt GLUE/SNLI entries)
NARROW = ("rte", "mrpc", "stsb", "cola", "qnli", "snli", "sst2")
SELECT_RULES = ("learned", "similarity", "random")
STAGES = ("transfer", "few-shot")
#: shelf tasks whose texts come from the same collections as a target's (none is excluded: they are named). From
#: the datasets' papers; the shelf's PROVENANCE.json counts rows it dropped as equal to a GLUE evaluation sentence.
SHARED_TEXT = {
    "stsb": {"sick_entailment": "SICK's sentences are Flickr-8K captions and MSR-Video descriptions, two of STS-B's "
                                "sources", "sick_relatedness": "the same rows as sick_entailment",
             "mrpc": "STS-B's MSRpar pairs are MRPC sentence pairs"},
    "mrpc": {"stsb": "STS-B's MSRpar pairs are MRPC sentence pairs"},
}


@dataclass(frozen=True)
class Member:
    """One source of a shelf: its task, zoo reference and the registry entry it resolved to."""

    task: str
    ref: str  # zoo:<recipe>, what the resolver takes
    repo_id: str
    revision: str

    def record(self) -> dict:
        return {"task": self.task, "ref": self.ref, "repo_id": self.repo_id, "revision": self.revision}


@dataclass(frozen=True)
class ShelfJob(Job):
    """A job of the shelf run: a quality-run job plus the shelf it composes (name and size) and the selection."""

    shelf: str | None = None  # narrow | broad; None: the target's own adapter (no shelf)
    shelf_n: int | None = None
    select: str | None = None  # learned-K | similarity-K | random-K; None: the whole shelf

    def key(self) -> dict:
        return {**super().key(), "shelf": self.shelf, "shelf_n": self.shelf_n, "select": self.select}

    def folder(self, work: Path) -> Path:
        base = super().folder(work)
        extra = [f"{self.shelf}{self.shelf_n}" if self.shelf else None, self.select]
        return base.with_name("-".join([base.name, *(e for e in extra if e)]))


def catalog_shelf(zoo_registry: str | None = None, model: str | None = None) -> tuple[list[Member], int]:
    """Every built LoRA source of the zoo catalog (its shipped and prebuilt registries, and ``zoo_registry``, e.g.
    ``local:DIR`` where a GPU machine built more), in catalog order; and how many LoRA recipes the shelf has in all
    (demo recipes are not the shelf's)."""
    from scalearn_cli.registry import get_registry
    from scalearn_cli.zoo.catalog import built, load_catalog

    catalog = load_catalog(model)
    recipes = {r.name: r for r in catalog.recipes if r.adapter == "lora" and r.data.get("source") != "demo"}
    members = [Member(row["task"], f"zoo:{row['name']}", row["repo_id"], row["revision"])
               for row in built(catalog, get_registry(zoo_registry) if zoo_registry else None)
               if row["name"] in recipes]
    return members, len(recipes)


def build_seconds(members: list[Member], zoo_registry: str | None = None) -> dict[str, float]:
    """Training seconds each built zoo source took (its scalearn.json's), by task; the prebuilt (strong run's) ones
    are not the zoo build's and are left out."""
    from scalearn_cli.registry import get_registry
    from scalearn_cli.zoo.catalog import load_catalog

    catalog = load_catalog()
    registries = [r for r in (catalog.shipped, get_registry(zoo_registry) if zoo_registry else None) if r is not None]
    entries = {e.repo_id: e for reg in registries if reg.exists() for e in reg.list()}
    return {m.task: float(entries[m.repo_id].metadata["training"]["train_seconds"]) for m in members
            if m.repo_id in entries and (entries[m.repo_id].metadata.get("training") or {}).get("train_seconds")}


def shelves(args: argparse.Namespace, broad: list[Member] | None = None) -> dict[str, list[Member]]:
    """The run's shelves by name: narrow (the seven, as the zoo resolves them) and broad (every built source)."""
    if broad is None:
        broad = catalog_shelf(getattr(args, "zoo_registry", None))[0]
    by_task = {m.task: m for m in broad}
    missing = [t for t in NARROW if t not in by_task]
    if missing:
        raise SystemExit(f"the zoo resolves no built source for {', '.join(missing)} (the narrow shelf's): check "
                         "zoo/minilm-l6.json's prebuilt entries and bench/results/strong/sources")
    found = {"narrow": [by_task[t] for t in NARROW], "broad": broad}
    return {name: found[name] for name in csv(args.shelves)}


def selections(args: argparse.Namespace, n: int) -> list[str]:
    """The broad shelf's selection keys (rule-K), K below the shelf's size."""
    return [f"{rule}-{k}" for k in map(int, csv(args.select_k)) if k < n for rule in csv(args.select_rules)]


def fusion_select(args: argparse.Namespace, shelf: str, n: int) -> str | None:
    """AdapterFusion on the broad shelf composes the learned K = ``--fusion-broad-select`` (0: all N)."""
    k = int(args.fusion_broad_select)
    return f"learned-{k}" if shelf == "broad" and 0 < k < n else None


def target_jobs(args: argparse.Namespace, found: dict[str, list[Member]], stage: str, target: str, seed: int,
                k: int | None, methods: list[str]) -> Iterator[ShelfJob]:
    """One target's jobs at one seed (and few-shot k): its own adapter, every method per shelf, the selections."""
    if "single" in methods:
        yield ShelfJob(stage, target, "lora", "single", None, seed, k)
    for shelf, members in found.items():
        n = len(members)
        for method in [m for m in methods if m != "single"]:
            variant = method if method in VARIANTS else method.partition("-")[2] if method.startswith("merge-") else None
            name = "scalearn" if method in VARIANTS else "merge" if method.startswith("merge-") else method
            chosen = fusion_select(args, shelf, n) if name in ("adapterfusion", FUSION_TUNED) else None
            yield ShelfJob(stage, target, "lora", name, variant, seed, k, shelf, n, chosen)
        if shelf == "broad":
            for select in selections(args, n):
                yield ShelfJob(stage, target, "lora", "scalearn", args.select_variant, seed, k, shelf, n, select)


def plan(args: argparse.Namespace, found: dict[str, list[Member]] | None = None) -> Iterator[ShelfJob]:
    """Full-size targets first, target by target (every seed: a partial run answers the targets it reached), then
    few-shot by seed, k and target (as the quality plan orders them)."""
    found = shelves(args) if found is None else found
    methods = csv(args.methods)
    for target in csv(args.targets):
        for seed in map(int, csv(args.seeds)):
            yield from target_jobs(args, found, "transfer", target, seed, None, methods)
    for seed in map(int, csv(args.few_shot_seeds)):
        for k in map(int, csv(args.few_shot_k)):
            for target in csv(args.few_shot_targets):
                yield from target_jobs(args, found, "few-shot", target, seed, k, csv(args.few_shot_methods))


def plan_method(job: Job) -> str:
    """The --methods name that planned ``job``."""
    return f"{job.method}-{job.variant}" if job.method == "merge" else job.variant or job.method


def selected(args: argparse.Namespace, job: ShelfJob) -> bool:
    """Whether this process runs a planned job (--stages and the --job-* filters; nothing a job composes changes)."""
    picks = {"job_seeds": str(job.seed), "job_targets": job.target, "job_methods": plan_method(job),
             "job_shelves": job.shelf or "", "job_k": str(job.k or 0), "job_select": job.select or "none"}
    return job.stage in csv(args.stages) and all(
        not getattr(args, name, None) or value in csv(getattr(args, name)) for name, value in picks.items())


def composed(job: ShelfJob, members: list[Member]) -> list[Member]:
    """The shelf members a job composes beside its own adapter: a full-size target's own zoo source is a member
    (put first); a few-shot target composes its k-shot adapter instead of its full-size source."""
    own = [m for m in members if m.task == job.target]
    others = [m for m in members if m.task != job.target]
    return others if job.k else own + others
