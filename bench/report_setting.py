"""The report's account of how a run was made and why it can differ from the paper: the configuration (encoder,
data caps, both stages, few-shot, machine, accelerator rows) and the discussion, each number read from the run's
config.json and rows."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.quality_plan import ran_on_cpu, row_key
from bench.report_common import label
from bench.report_quality import few_shot_steps
from bench.report_sources import omega_drifts


def near_majority(rows: list[dict], majority: dict, stage: str, margin: float = 2.0) -> tuple[int, int]:
    """How many seed-0 runs of ``stage`` on targets score within ``margin`` points of the constant predictor."""
    runs = [r for r in rows if r["stage"] == stage and r["seed"] == 0 and r["target"] in majority and not r.get("k")]
    near = [r for r in runs if abs(r["main_score"] - majority[r["target"]]["main_score"]) <= margin]
    return len(near), len(runs)


def train_sizes(rows: list[dict]) -> str:
    sizes = {r["target"]: r["train_examples"] for r in rows if r["stage"] == "source" and r["seed"] == 0}
    return ", ".join(f"{t} {n:,}" for t, n in sorted(sizes.items())) or "no source finished yet"


def cap_text(cap: int) -> str:
    return "at all its rows" if not cap else f"capped at **{cap}** examples"


def lora_default_lr() -> float:
    from scalearn_cli.sources.lora import LoraKind

    return LoraKind.default_lr


def config_section(config: dict, rows: list[dict], repeats: list[dict] = ()) -> list[str]:
    m = config["machine"]
    n_stage = defaultdict(int)
    for r in rows:
        n_stage[r["stage"]] += 1
    return [
        f"- Encoder: `{config['model']}` (frozen), max sequence length {config['max_length']}, batch "
        f"{config['batch_size']}{', length-grouped' if config.get('group_by_length') else ''}, AdamW, linear decay, "
        "no warm-up, weight decay 0, fp32; "
        + (f"early stopping on dev loss (sources: patience {config['source_patience']}"
           + (f", transfers: patience {config['patience']}" if config.get("patience") else ", transfers: none")
           + "); " if config.get("source_patience") else "no early stopping; ")
        + "the best epoch by dev loss is restored.",
        f"- Data: `{config['data_root']}`. Targets {', '.join(config['targets'].split(','))}; extra source-only "
        f"tasks {', '.join(config['extra_sources'].split(','))} (in the role of the paper's MNLI/QNLI). Train sets: "
        f"each target {cap_text(config['target_max_train'])} (its own source adapter and every transfer see exactly "
        f"these), each extra source {cap_text(config['source_max_train'])}"
        + (", except " + ", ".join(f"{t} {cap_text(int(c))}" for t, c in
                                   (i.split("=") for i in config["source_caps"].split(",")))
           if config.get("source_caps") else "")
        + "; dev = 10% of a seeded train pool of ⌈cap/0.9⌉ rows (the paper's 10% split, seed 42); test = the "
        f"official validation split, capped at **{config['test_max']}** seeded rows.",
        f"- Stage 1 (sources, seed 0, kinds: {config['kinds']}): {'up to ' if config.get('source_patience') else ''}"
        f"{config['source_epochs']} epochs, lr "
        + (f"{config['source_lr']:g}" if config.get("source_lr") else "each kind's library default (LoRA "
           f"{lora_default_lr():g}, bottleneck the paper's 3e-4)")
        + " (LoRA r=8, α=16 on query/value; Pfeiffer bottleneck, reduction factor 16); head pooling "
        + {"mean": "the mean of the tokens", "first": "the first token",
           "auto": "`auto` (the encoder's own sentence-transformers pooling: mean for MiniLM)"}.get(
               config.get("pooling", "first"), config.get("pooling", "first"))
        + " (transfers inherit it).",
        f"- Stage 2 (transfer, N = all {len(config['targets'].split(',')) + len(config['extra_sources'].split(','))} "
        f"sources, target's own included): {'up to ' if config.get('patience') else ''}{config['epochs']} epochs; lr "
        f"{config['scalearn_lr']:g} for ScaLearn "
        f"and the average, {config['fusion_lr']:g} for AdapterFusion (the paper's)"
        + (f", plus AdapterFusion at {config['fusion_tuned_lr']:g} (labelled *tuned lr*)"
           if config.get("fusion_tuned_lr") else "")
        + f". Seeds {config['seeds']} for {config['multi_seed_targets']} ({config['multi_seed_kinds']} sources), "
        "the first seed elsewhere; only seed-0 sources are composed (as in the paper); a target's single-adapter "
        "row for seed s is its own adapter retrained with seed s.",
        f"- Few-shot: k ∈ {{{config['few_shot_k']}}} target examples for {config['few_shot_targets']} "
        f"({config['few_shot_kinds']} sources), {few_shot_steps(config)}, seeds "
        f"{config['few_shot_seeds']}; the target's own adapter is a few-shot adapter trained on the same k examples; "
        "dev = max(k, 32) rows of the dev split (capped by its size).",
        f"- Machine: `{m['platform']}`, {m['cpu_count']} CPUs, torch {m['torch']}, transformers {m['transformers']}, "
        f"Python {m['python']}; {m['threads']} torch thread(s) per process in the last invocation. The machine was "
        "shared with other jobs, the plan was split over concurrent processes (`--shard` workers, or `--stages` / "
        "`--job-*` filters) and interrupted runs were resumed, so wall times and examples/s carry that load. "
        f"Invocations started {', '.join(config['started'])} (UTC); {len(rows)} finished runs in `results.jsonl` "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(n_stage.items()))}).",
        accelerator_line(m, rows, repeats),
    ]


def accelerator_line(machine: dict, rows: list[dict], repeats: list[dict] = ()) -> str:
    """Which rows ran on a GPU (each row records its ``device``; rows without one predate it and ran on the CPU).

    ``repeats``: rows a GPU computed for runs the CPU had already recorded (``device_repeats.jsonl``, not in the
    tables): each is set beside the CPU's score, what changing the machine alone does to a score."""
    gpu = [r for r in rows if not ran_on_cpu(r) and r.get("wall_seconds")]
    if not gpu:
        return (f"- Accelerator: {machine['gpu']}." if machine.get("gpu") else "- Accelerator: none (CPU only). The "
                "full-size protocol (bench/README.md, *Full scale elsewhere*) is meant for a GPU machine, which this "
                "run did not have.")
    names = sorted({f"{r['device']} (torch {r.get('torch')}, transformers {r.get('transformers')})" for r in gpu})
    runs = "; ".join(f"{t} {k} seed {s}: " + ", ".join(sorted(ms)) for (t, k, s), ms in sorted(
        _group(gpu).items()))
    line = (f"- Accelerator: {len(gpu)} of {len(rows)} runs were computed on {' and '.join(names)}, fp32, same "
            f"protocol, data and seeds; the rest on the CPU above. On the GPU: {runs}. Their wall times are left out "
            "of the throughput table and of the worker-hour estimates.")
    cpu = {row_key(r): r for r in rows if ran_on_cpu(r)}
    both = [(cpu[row_key(r)], r) for r in repeats if row_key(r) in cpu]
    if both:
        line += " The same run on both machines (the CPU row is the one in the tables): " + "; ".join(
            f"{r['target']} {r['kind']} {label(r['method'], r.get('variant'))} seed {r['seed']}: CPU "
            f"{c['main_score']:.2f}, GPU {r['main_score']:.2f} (best epoch {c['best_epoch']} and {r['best_epoch']})"
            for c, r in both) + "."
    return line


def _group(rows: list[dict]) -> dict:
    out = defaultdict(set)
    for r in rows:
        out[(r["target"], r["kind"], r["seed"])].add("own adapter" if r["method"] == "single" else
                                                     label(r["method"], r.get("variant")))
    return out


def extra_source_scores(rows: list[dict], extra: list[str]) -> str:
    """The extra (source-only) tasks' seed-0 scores, e.g. ``qnli 78.6, snli 74.4``; each kind's, named, when the run
    trained more than one (``qnli 78.1 (bottleneck) / 78.6 (lora)``)."""
    scores = defaultdict(dict)  # task -> kind -> score
    for r in rows:
        if r["stage"] == "source" and r["seed"] == 0 and r["target"] in extra:
            scores[r["target"]][r["kind"]] = r["main_score"]
    return ", ".join(f"{t} " + (f"{next(iter(by.values())):.1f}" if len(by) == 1 else
                                " / ".join(f"{v:.1f} ({k})" for k, v in sorted(by.items())))
                     for t, by in sorted(scores.items()))


def discussion(config: dict, rows: list[dict], majority: dict, run_dir: Path) -> list[str]:
    """Why our ordering can differ from the paper's; the numbers quoted come from config.json and the rows."""
    drift = [d for d, _ in omega_drifts(run_dir).values()]
    src_near, src_all = near_majority(rows, majority, "source")
    sizes = {r["target"]: r["test_examples"] for r in rows if r["stage"] != "source" and r.get("test_examples")}
    smallest = min(sizes.items(), key=lambda kv: kv[1]) if sizes else ("-", 1)
    tr_near, tr_all = near_majority(rows, majority, "transfer")
    nli_text = extra_source_scores(rows, config["extra_sources"].split(","))
    return [
        f"**Signal check.** {src_near} of {src_all} target source adapters and {tr_near} of {tr_all} seed-0 "
        "transfer runs score within 2 points of the majority-class (STS-B: train-mean) predictor on the same test "
        "rows. Where a row sits at that baseline, the ordering between methods there is noise, not evidence.",
        "",
        "Why this run can differ from the paper (read the tables with these in mind):",
        "",
        f"- **Scale.** Training examples per task: {train_sizes(rows)}; transfers run "
        f"{'up to ' if config.get('patience') else ''}{config['epochs']} epochs, sources "
        f"{'up to ' if config.get('source_patience') else ''}{config['source_epochs']} (the paper: full train sets "
        "— MNLI 393k, QQP 364k — up to 30 epochs with early stopping). Weak sources give ω little to scale; the "
        "source table above says how far above their majority baseline ours are.",
        "- **Encoder.** MiniLM-L6, a small sentence-embedding encoder, instead of RoBERTa-base, a larger "
        "MLM-pretrained one; the paper's absolute scores are out of reach here by design.",
        f"- **Test sets.** At most {config['test_max']} test rows; on {smallest[0]} ({smallest[1]} rows) one example "
        f"is {100 / smallest[1]:.2f} points, so differences of a few points between methods are within seed noise; the "
        "± columns show it.",
        f"- **Steps.** A transfer run here is {'up to ' if config.get('patience') else ''}{config['epochs']} epochs "
        f"of ⌈train/{config['batch_size']}⌉ steps; "
        + (f"ω moves {100 * min(drift):.0f}–{100 * max(drift):.0f}% (mean relative distance) from its "
           "initialisation 2/N (see the ω section), "
           + ("so ScaLearn stays close to a fixed 2/N scaling of every source (twice the average row's 1/N, so part "
              "of its gap to that row may be this scale rather than learned weighting), and "
              if max(drift) < 0.15 else
              "so ω is learned, not left at its initial scale (the ω section shows which sources it favours); "
              "")
           if drift else "")
        + f"AdapterFusion gets the same few steps at the paper's lr {config['fusion_lr']:g}, which was tuned for 30 "
        "epochs of full data"
        + (f" (the *tuned lr* rows run it at {config['fusion_tuned_lr']:g} as well)." if config.get("fusion_tuned_lr")
           else " (not tuned here).") + " The paper's differences come from converged combiners.",
        "- **Sources.** SNLI's official dev set and QNLI's recovered dev set (see `../shared/data/README.md`), "
        "capped as above, stand in for the paper's large MNLI/QNLI/QQP sources (MNLI: 393k training examples); "
        "the paper's largest gains (RTE from MNLI) need a strong NLI source. Ours, accuracy on their capped test "
        f"splits: {nli_text or 'not trained'} (chance: 50 for the two-class QNLI, 33.3 for three-class SNLI).",
    ]
