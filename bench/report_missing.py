"""The planned runs a result folder has no row for: listed for its report, counted in worker hours, and handed to
``python -m bench run --from-config`` or ``python -m bench device`` to compute."""

from __future__ import annotations

from collections import defaultdict

from bench import quality  # bench/quality.py: its options, to rebuild a run's plan; stdlib-only at import
from bench.quality_plan import STAGES, csv, expected_seconds, plan, row_key


def missing_jobs(config: dict, rows: list[dict]) -> list:
    """Planned runs (from quality_plan.plan with the recorded configuration) that have no row, in plan order."""
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in config.items()
            if k in ("targets", "extra_sources", "kinds", "methods", "seeds", "multi_seed_targets", "multi_seed_kinds",
                     "few_shot_k", "few_shot_targets", "few_shot_kinds", "few_shot_seeds", "fusion_tuned_lr")]
    args = quality.parse_args(argv)
    done = {row_key(r) for r in rows}
    stages = set(csv(config.get("stages", ",".join(STAGES)))) | {r["stage"] for r in rows}
    return [job for job in plan(args) if job.stage in stages and row_key(job.key()) not in done]


def missing_rows(config: dict, rows: list[dict]) -> list[str]:
    """The missing runs counted by stage and seed, each with its targets and kinds."""
    missing: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # stage, seed -> target kind -> runs
    for job in missing_jobs(config, rows):
        what = f"{job.stage}: seed {job.seed}" + (f", k={job.k}" if job.k else "")
        missing[what][f"{job.target} {job.kind}"] += 1  # in plan order: what to pick with --job-targets/-kinds
    return [f"- {what}: {sum(by.values())} run(s) ({', '.join(f'{tk} {n}' for tk, n in by.items())})"
            for what, by in sorted(missing.items())]


def missing_hours(config: dict, rows: list[dict]) -> tuple[float, int]:
    """Worker hours the missing runs take by their like runs' longest recorded wall time (expected_seconds, as
    --fit-deadline estimates them), and how many have no like run to go by. A transfer's single-adapter row
    costs nothing of its own: it copies its source's, which is counted under the source stage."""
    seconds, unknown = 0.0, 0
    for job in missing_jobs(config, rows):
        if job.stage == "transfer" and job.method == "single":
            continue
        estimate = expected_seconds(rows, job)
        seconds, unknown = (seconds, unknown + 1) if estimate is None else (seconds + estimate, unknown)
    return seconds / 3600, unknown
