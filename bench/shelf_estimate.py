"""The shelf run's missing rows and what they cost, from its recorded files only (config.json and results.jsonl).

The plan is re-made from config.json with the shelves it recorded at its last start (``shelves_resolved``), so the
doc does not change while the zoo grows; the rows over the complete shelf (every recipe of the catalog built) are
counted beside them. A missing run is estimated by its like runs (same stage, target, method, variant, k, shelf and
selection, any seed) recorded here on a CPU, else by the strong run's (and the peers run's) like runs over the same
seven sources; a composition's time is scaled by its number of sources over theirs (an upper bound: the encoder's
share of a step does not grow with N).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from bench.quality_plan import Job, expected_seconds, ran_on_cpu, row_key
from bench.report_common import RESULTS, read_jsonl
from bench.shelf_plan import Member, ShelfJob, plan

#: runs over the same seven sources and protocol, whose wall times estimate a shelf row nobody has run yet
REFERENCE_RUNS = ("strong", "peers")


def recorded_plan(run: Path, broad_n: int | None = None):
    """(args, shelves) of the run as its config.json records them; ``broad_n``: the broad shelf at that size (its
    members are not known before they are built: placeholders, for counting and estimating only)."""
    from bench.shelf import parse_args

    args = parse_args(["--from-config", str(run / "config.json")])
    resolved = json.loads((run / "config.json").read_text()).get("shelves_resolved", {})
    found = {name: [Member(**m) for m in members] for name, members in resolved.items()}
    if broad_n is not None and "broad" in found and broad_n > len(found["broad"]):
        found["broad"] = found["broad"] + [Member(f"planned-{i}", "", "", "") for i in range(broad_n - len(found["broad"]))]
    return args, found


def missing_jobs(run: Path, rows: list[dict], broad_n: int | None = None) -> list[ShelfJob]:
    """The planned jobs (over the recorded shelves, or a broad shelf of ``broad_n``) with no row, in plan order."""
    args, found = recorded_plan(run, broad_n)
    done = {row_key(r) for r in rows}
    return [job for job in plan(args, found) if row_key(job.key()) not in done]


def _like(row: dict, job: ShelfJob) -> bool:
    rule = (job.select or "").rpartition("-")[0] if job.select and job.select.startswith("learned") else job.select
    row_rule = (row.get("select") or "").rpartition("-")[0] if (row.get("select") or "").startswith("learned") \
        else row.get("select")
    return (row["stage"], row["target"], row["method"], row["variant"], row.get("k"), row.get("shelf"), row_rule) == \
        (job.stage, job.target, job.method, job.variant, job.k, job.shelf, rule) and ran_on_cpu(row) and \
        bool(row.get("wall_seconds"))


def composed_n(job: ShelfJob) -> int:
    """How many sources the job composes (K of a selection, else the shelf's N)."""
    return int(job.select.rpartition("-")[2]) if job.select else (job.shelf_n or 1)


def estimate(job: ShelfJob, rows: list[dict], reference: list[dict]) -> float | None:
    """Seconds one worker takes for ``job`` (see the module docstring); None: nothing like it is recorded."""
    if job.method == "single":
        if job.k is None and job.seed == 0:
            return 0.0  # the zoo's source: no training
        like = [r["wall_seconds"] for r in rows if _like(r, job)]
        if like:
            return max(like)
        return expected_seconds(reference, Job("source" if job.k is None else "few-shot", job.target, "lora",
                                               "single", None, 1, job.k))
    like = [r for r in rows if _like(r, job)]
    if like:
        worst = max(like, key=lambda r: r["wall_seconds"])
        return worst["wall_seconds"] * composed_n(job) / max(1, worst.get("n_sources") or 1)
    base = expected_seconds(reference, Job(job.stage, job.target, "lora", job.method, job.variant, 0, job.k))
    if base is None:  # a method the reference runs lack (few-shot: all but ScaLearn): ScaLearn's like runs, the
        # same step budget over the same sources
        base = expected_seconds(reference, Job(job.stage, job.target, "lora", "scalearn", "scalearn", 0, job.k))
    if base is None:
        return None
    seconds = base * composed_n(job) / 7
    if job.select and job.select.startswith("learned"):  # plus one ScaLearnUniform epoch over all N
        seconds += base * (job.shelf_n or 7) / 7 / 10
    return seconds


def reference_rows() -> list[dict]:
    """The strong and peers runs' rows (same seven sources, same protocol), for estimates."""
    return [r for name in REFERENCE_RUNS for r in read_jsonl(RESULTS / name / "results.jsonl")
            if r.get("kind") == "lora"]


def missing_summary(run: Path, rows: list[dict], broad_n: int | None = None) -> tuple[list[str], float, int, int]:
    """Markdown bullets of the missing runs by stage, target and shelf; their worker-hours, how many have no like
    run to go by, and how many are missing."""
    reference = reference_rows()
    counts: dict[str, int] = defaultdict(int)
    order: dict[str, tuple] = {}
    seconds, unknown = 0.0, 0
    jobs = missing_jobs(run, rows, broad_n)
    for job in jobs:
        shelf = f"{job.shelf} ({job.shelf_n})" if job.shelf else "own adapter"
        what = f"{job.stage}{f' k={job.k}' if job.k else ''} {job.target}, {shelf}"
        counts[what] += 1
        order.setdefault(what, (job.stage != "transfer", job.k or 0, len(order)))  # plan order within a k
        cost = estimate(job, rows, reference)
        seconds, unknown = (seconds, unknown + 1) if cost is None else (seconds + cost, unknown)
    lines = [f"- {what}: {n} run(s)" for what, n in sorted(counts.items(), key=lambda item: order[item[0]])]
    return lines, seconds / 3600, unknown, len(jobs)


def zoo_hours(config: dict) -> tuple[float, int]:
    """Worker-hours to build the shelf's missing sources (the built ones' median training time each), and how many
    are missing."""
    built = sorted(config.get("zoo_build_seconds", {}).values())
    missing = config.get("shelf_recipes", 0) - len(config.get("shelves_resolved", {}).get("broad", []))
    if not built or missing <= 0:
        return 0.0, max(missing, 0)
    return missing * statistics.median(built) / 3600, missing
