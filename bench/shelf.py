"""The shelf benchmark: does a broad shelf buy transfer? (bench/shelf_plan.py plans it, bench/shelf_runner.py runs it)

Targets RTE, MRPC, STS-B and CoLA at full size (3 seeds) and few-shot k = 16, 32, 100 on RTE and MRPC (5 seeds),
each composed over the narrow shelf (the strong run's seven GLUE/SNLI LoRA sources) and the broad one (every LoRA
source of the zoo built so far) by every method, and on the broad shelf over K = 4 and 8 sources chosen by the learned
criterion, AdapterSoup's similarity ranking or at random. The training protocol is the strong run's.

Resumable and sharded as ``python -m bench run``: one JSON line per finished run in ``results.jsonl``; a re-run
skips the rows it has; ``--shard i/n`` workers share the plan; ``--deadline``/``--fit-deadline`` stop in time.

    python -m bench run --from-config bench/results/shelf/config.json --threads 1 --deadline 07:10
    python -m bench run --from-config bench/results/shelf/config.json --stages few-shot --job-k 16 \\
        --job-targets rte --job-seeds 0,1,2 --job-methods single,average,scalearn++ --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from pathlib import Path

from bench.quality_plan import VARIANTS, csv, run_jobs
from bench.shelf_plan import SELECT_RULES, STAGES, plan, plan_method, selected

REPO = Path(__file__).resolve().parents[1]
METHODS = ("single", "average", "adaptersoup", *VARIANTS, "adapterfusion", "adapterfusion-tuned", "lorahub",
           "merge-linear", "merge-ties", "arrow")
#: options one worker chooses for itself: not part of the run its config.json describes
PROCESS_OPTIONS = {"out", "work", "threads", "shard", "stages", "job_seeds", "job_targets", "job_methods",
                   "job_shelves", "job_k", "job_select", "deadline", "fit_deadline", "from_config", "zoo_registry",
                   "data_root"}

logger = logging.getLogger("bench.shelf")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--harness", default="shelf", help=argparse.SUPPRESS)  # recorded: `bench run --from-config` dispatches on it
    add("--targets", default="rte,mrpc,stsb,cola", help="full-size targets")
    add("--seeds", default="0,1,2", help="seeds of the full-size targets")
    add("--few-shot-targets", default="rte,mrpc")
    add("--few-shot-k", default="16,32,100")
    add("--few-shot-seeds", default="0,1,2,3,4")
    add("--shelves", default="narrow,broad")
    add("--methods", default=",".join(METHODS), help="methods of the full-size targets, on every shelf")
    add("--few-shot-methods", default=",".join(METHODS), help="methods of the few-shot targets")
    add("--select-k", default="4,8", help="K of the broad shelf's selection rows")
    add("--select-rules", default=",".join(SELECT_RULES), help="learned (--select K), similarity (AdapterSoup's "
        "ranking), random (one draw per seed)")
    add("--select-variant", default="scalearn", choices=VARIANTS, help="the ScaLearn variant composing a selection")
    add("--fusion-broad-select", type=int, default=8, help="AdapterFusion on the broad shelf composes the learned "
        "K of it (0: all N)")
    add("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    add("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    add("--test-max", type=int, default=2000)
    add("--epochs", type=int, default=10)
    add("--patience", type=int, default=3)
    add("--scalearn-lr", type=float, default=6e-3)
    add("--fusion-lr", type=float, default=5e-5)
    add("--fusion-tuned-lr", type=float, default=1e-3)
    add("--batch-size", type=int, default=32)
    add("--max-length", type=int, default=128)
    add("--pooling", default="auto")
    add("--soup-k", type=int, default=3)
    add("--merge-density", type=float, default=0.5)
    add("--arrow-top-k", type=int, default=3)
    add("--few-shot-steps", type=int, default=1000)
    add("--few-shot-patience", type=int, default=20)
    add("--few-shot-select", default="metric", choices=("loss", "metric"))
    add("--source-epochs", type=int, default=10, help="the target's own adapter at seeds > 0 (the zoo's recipe)")
    add("--source-patience", type=int, default=2)
    add("--zoo-registry", default=None, help="another registry holding built zoo sources (local:DIR), beside the "
        "catalog's shipped ones")
    add("--threads", type=int, default=1)
    add("--shard", default="0/1", help="i/n: worker i of n processes sharing --out")
    add("--stages", default=",".join(STAGES))
    add("--job-seeds", default=None)
    add("--job-targets", default=None)
    add("--job-methods", default=None, help="e.g. single,average,scalearn++")
    add("--job-shelves", default=None, help="narrow, broad (the own adapter's rows have no shelf)")
    add("--job-k", default=None, help="few-shot k values (0: the full-size rows)")
    add("--job-select", default=None, help="selections, e.g. none,learned-8 (none: the rows over a whole shelf)")
    add("--deadline", default=None, help="UTC HH:MM after which no new run starts")
    add("--fit-deadline", action="store_true", help="with --deadline: skip runs whose like runs took longer than the "
        "time left")
    add("--out", type=Path, default=REPO / "bench" / "results" / "shelf")
    add("--work", type=Path, default=None, help="scratch folder (default .bench-work/<run>)")
    add("--from-config", type=Path, default=None, help="a run's config.json: its recorded plan is the default")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The run's options; with ``--from-config`` the recorded plan is the defaults (flags given still win)."""
    p = parser()
    args, _ = p.parse_known_args(argv)
    if args.from_config is not None:
        if not args.from_config.is_file():
            p.error(f"--from-config: {args.from_config} not found; pass bench/results/<run>/config.json")
        config = json.loads(args.from_config.read_text())
        run_options = set(vars(p.parse_args([]))) - PROCESS_OPTIONS
        p.set_defaults(**{k: v for k, v in config.items() if k in run_options}, out=args.from_config.parent)
    args = p.parse_args(argv)
    index, _, count = args.shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        p.error(f"--shard must be i/n with 0 <= i < n (e.g. 0/2), got '{args.shard}'")
    args.shard_index, args.shard_count = int(index), int(count)
    if args.fit_deadline and not args.deadline:
        p.error("--fit-deadline needs --deadline HH:MM")
    for name, allowed in (("methods", METHODS), ("few_shot_methods", METHODS), ("select_rules", SELECT_RULES),
                          ("stages", STAGES), ("job_methods", METHODS), ("shelves", ("narrow", "broad"))):
        unknown = [v for v in csv(getattr(args, name) or "") if v not in allowed]
        if unknown:
            p.error(f"--{name.replace('_', '-')}: {', '.join(unknown)} unknown; use some of {','.join(allowed)}")
    rule = re.compile(rf"none|({'|'.join(SELECT_RULES)})-[1-9][0-9]*")
    unknown = [v for v in csv(args.job_select or "") if not rule.fullmatch(v)]
    if unknown:  # a typo would leave the worker nothing to run
        p.error(f"--job-select: {', '.join(unknown)} unknown; use none or RULE-K with RULE one of "
                f"{','.join(SELECT_RULES)} (e.g. none,learned-8)")
    args.work = args.work or REPO / ".bench-work" / args.out.name
    return args


def write_config(args: argparse.Namespace, found: dict) -> None:
    """config.json: the plan's options, the machine, and the shelves as resolved at this start."""
    from bench.quality import write_config as quality_config
    from bench.shelf_plan import build_seconds, catalog_shelf

    quality_config(args)  # the quality run's record (options, machine, start history)
    path = args.out / "config.json"
    config = json.loads(path.read_text())
    config["shelves_resolved"] = {name: [m.record() for m in members] for name, members in found.items()}
    config["shelf_recipes"] = catalog_shelf(args.zoo_registry)[1]  # the complete shelf's size
    config["zoo_build_seconds"] = build_seconds(found.get("broad", []), args.zoo_registry)
    provenance = Path(args.data_root) / "shelf" / "PROVENANCE.json"  # rows each shelf task dropped as GLUE eval text
    config["glue_eval_overlap_dropped"] = {p["task"]: sum((p.get("rows_dropped_glue_eval_overlap") or {}).values())
                                           for p in json.loads(provenance.read_text())} if provenance.is_file() else {}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("scalearn_cli", "datasets", "transformers", "peft"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    from bench.shelf_plan import shelves
    from bench.shelf_runner import ShelfRunner

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    found = shelves(args)
    logger.info("shelves: %s", ", ".join(f"{name} {len(members)}" for name, members in found.items()))
    if args.shard_index == 0:
        write_config(args, found)
    runner = ShelfRunner(args, found)
    run_jobs((job for job in plan(args, found) if selected(args, job) and not runner.results.has(**job.key())),
             runner, args, describe=lambda job: f"{job.target} {plan_method(job)}")


if __name__ == "__main__":
    main()
