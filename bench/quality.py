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

    python -m bench run --quick            # < ~10 minutes on 2 CPU cores
    python -m bench run                    # the default configuration (about an hour on 2 CPU cores)
    python -m bench run --deadline 17:45   # stop starting new runs at 17:45 UTC (re-run later to resume)
    python -m bench run --deadline 17:45 --fit-deadline   # ... and start only runs expected to end by then
    python -m bench run --strong --kinds lora --shard 0/2 --threads 1 & \
    python -m bench run --strong --kinds lora --shard 1/2 --threads 1      # the strong benchmark (CPU-hours)
    python -m bench run --strong --publish-sources   # push the trained sources in --work not yet kept
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path

from bench.quality_plan import (ALL_METHODS, FUSION_TUNED, PEER_METHODS, STAGES, csv, plan, plan_tasks, run_jobs,
                                selected)
from bench.quality_runner import Runner
from bench.report_common import read_jsonl

REPO = Path(__file__).resolve().parents[1]
EXTRA_SOURCES = ("qnli", "snli")
QUICK = dict(
    targets="rte,mrpc", extra_sources="qnli,snli", seeds="0", source_max_train=64, target_max_train=64,
    test_max=96, source_epochs=1, epochs=1, max_length=48, few_shot_k="16", few_shot_targets="rte",
    few_shot_steps=4, few_shot_kinds="lora", fusion_tuned_lr=0.0,
)
#: the strong benchmark: sources at the sizes the data allows, trained to convergence (early stopping on dev loss),
#: targets at full size, max length 128, the encoder's own pooling, the paper's transfer protocol otherwise
STRONG = dict(
    targets="rte,mrpc,stsb,cola", extra_sources="qnli,snli,sst2", source_caps="snli=9800,qnli=4900,sst2=10000",
    source_max_train=0, target_max_train=0, test_max=2000, source_epochs=10, source_patience=2, epochs=10,
    patience=3, max_length=128, pooling="auto", source_lr=None, group_by_length=True, fusion_tuned_lr=1e-3,
    multi_seed_kinds="lora,bottleneck",  # bottleneck seeds 1-2 once seed 0 is through (3 seeds, both kinds)
    # few-shot as the paper's run_few scripts: up to 1,000 steps, an evaluation per epoch, the epoch with the best
    # dev accuracy (metric_for_best_model) kept, early stopping after 20 evaluations without a gain; its 5 seeds
    few_shot_steps=1000, few_shot_patience=20, few_shot_select="metric", few_shot_seeds="0,1,2,3,4",
    multi_seed_targets="rte,mrpc,stsb", kinds="lora,bottleneck", keep_sources=True,
)
PRESETS = {"quick": QUICK, "strong": STRONG}
#: options one worker process chooses for itself: not part of the run a config.json describes
PROCESS_OPTIONS = {"out", "work", "threads", "shard", "shard_index", "shard_count", "stages", "job_seeds",
                   "job_targets", "job_kinds", "job_methods", "deadline", "fit_deadline", "baselines_only",
                   "publish_sources", "quick", "strong", "from_config"}
#: one worker's job filters and deadline: never written into the run's config.json (a resume would not want them)
WORKER_FILTERS = {"deadline", "fit_deadline", "from_config", "shard", "shard_index", "shard_count"}

logger = logging.getLogger("bench.quality")


# ------------------------------------------------------------------------------------------------------------ options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The run's options; with ``--from-config`` a results folder's recorded options are the defaults."""
    p = build_parser()
    recorded, _ = p.parse_known_args(argv)
    if recorded.from_config:
        if recorded.quick or recorded.strong:
            p.error("--from-config takes the run's recorded options: drop --quick/--strong")
        p.set_defaults(**config_defaults(p, recorded.from_config))
    return check_args(p, p.parse_args(argv), argv)


def build_parser() -> argparse.ArgumentParser:
    """Every option of a run (``config.json`` records them all)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data",
                   help="folder with glue/<task>/ and snli/ (train.jsonl, validation.jsonl), and shelf/<task>/ "
                        "(train.jsonl, test.jsonl) for the shelf's tasks")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="encoder id or folder")
    p.add_argument("--targets", default="rte,mrpc,stsb,cola,sst2")
    p.add_argument("--extra-sources", default=",".join(EXTRA_SOURCES),
                   help="source-only tasks (the paper's MNLI/QNLI role)")
    p.add_argument("--kinds", default="lora,bottleneck")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--soup-k", type=int, default=3, help="AdapterSoup: sources averaged (the most similar k)")
    p.add_argument("--merge-density", type=float, default=0.5, help="PEFT merges (--methods merge-ties, "
                   "merge-dare_ties): the fraction of entries kept (PEFT's density)")
    p.add_argument("--arrow-top-k", type=int, default=3, help="--methods arrow: experts mixed per token (PEFT "
                   "ArrowConfig's top_k)")
    p.add_argument("--published", action="store_true",
                   help="compose the published sources of zoo/published/ for --model (e.g. AdapterHub's Pfeiffer "
                        "adapters on roberta-base: --model roberta-base --kinds bottleneck) instead of training "
                        "sources; needs the Hub (and, at paper scale, a GPU); the single-adapter row is skipped")
    p.add_argument("--seeds", default="0,1,2", help="seeds for the small targets (see --multi-seed-targets)")
    p.add_argument("--multi-seed-targets", default="rte,mrpc,stsb",
                   help="targets that get every seed (others: the first)")
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
    p.add_argument("--label-threshold", dest="threshold", default=None,  # dest: the key recorded configs hold
                   help="multi-label targets (go_emotions): predict a label above this "
                   "probability (default 0.5), or 'tune' (one threshold per label, on dev)")
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
    p.add_argument("--job-seeds", default=None,
                   help="run only the planned jobs of these seeds (e.g. 1,2), with --stages")
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
    p.add_argument("--strong", action="store_true", help="the strong benchmark: sources at full size trained to "
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
                   help="push every trained seed-0 source a transfer composes (few-shot ones too) to the local "
                        "registry <out>/sources (committed with the results), and pull a recorded source from it "
                        "instead of retraining it on a new machine (--strong: on)")
    p.add_argument("--publish-sources", action="store_true",
                   help="only push the trained sources in --work that <out>/sources does not hold yet, then exit")
    p.add_argument("--from-config", type=Path, default=None,
                   help="a run's config.json (bench/results/<run>/config.json): its recorded plan and options are the "
                        "defaults (flags given here still win), --out is its folder: resumes exactly that run")
    return p


def config_defaults(parser: argparse.ArgumentParser, path: Path) -> dict:
    """The plan and options ``path`` (a run's config.json) records, as parser defaults. What one process of the run
    chose for itself (threads, shard, job filters, deadline, folders) is not the run's: those keep their defaults.
    Stages: the recorded invocation's and every stage the run has rows of (as the report's Missing section)."""
    if not path.is_file():
        parser.error(f"--from-config: {path} not found; pass a run's bench/results/<run>/config.json")
    config = json.loads(path.read_text())
    options = set(vars(parser.parse_args([]))) - PROCESS_OPTIONS
    defaults = {k: v for k, v in config.items() if k in options}
    for key in ("data_root", "sources_from"):  # recorded relative to the checkout
        if defaults.get(key) and not Path(defaults[key]).is_absolute():
            defaults[key] = str(REPO / defaults[key])
    rows = path.with_name("results.jsonl")
    done = {r["stage"] for r in read_jsonl(rows)}
    stages = set(csv(config.get("stages") or ",".join(STAGES))) | done
    return {**defaults, "stages": ",".join(s for s in STAGES if s in stages), "out": path.parent}


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> argparse.Namespace:
    """Validate the parsed options, apply a preset's values to the options not given, and set the folders."""
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
             "job_methods": [*ALL_METHODS, FUSION_TUNED, *PEER_METHODS],
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


# ---------------------------------------------------------------------------------------------------------------- run


def write_config(args: argparse.Namespace) -> None:
    import torch
    import transformers

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in WORKER_FILTERS and not k.startswith("job_")}
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
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits
    from scalearn_cli.metrics import majority_baseline

    out = {}
    for target in runner.tasks:  # sources too: each source's score is shown beside its majority baseline
        options = runner.data(target)
        spec = options.spec()
        raw = load_raw(spec, data_dir=options.data_dir)
        splits = make_splits(spec, raw, max_train_samples=options.max_train_samples)
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
    run_jobs((job for job in plan(args) if selected(args, job)), runner, args)


if __name__ == "__main__":
    main()
