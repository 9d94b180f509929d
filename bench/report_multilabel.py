"""docs/benchmarks-multilabel.md from bench/results/multilabel/ (bench/multilabel.py's rows, config and baseline).

One multi-label target (go_emotions) over a shelf of single-label sources: each method's macro-F1 (the main metric)
and micro-F1 over seeds beside the label-frequency baseline, Welch's t-test of ScaLearn against every other method,
few-shot k with the paired test against the few-shot adapter, and the planned rows still missing.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from bench.quality_plan import STAGES, csv, plan, row_key
from bench.report_common import RESULTS, fmt, human, label, read_json, read_run
from bench.report_quality import few_shot_gaps, noise_verdict, welch

RUN = RESULTS / "multilabel"
KIND = {"lora": "LoRA", "bottleneck": "bottleneck"}
ROWS_COMMAND = "python -m bench multilabel --deadline HH:MM --fit-deadline"
#: the config keys that make a run's plan (bench/quality_plan.plan), as report.py's Missing section reads them
PLAN_KEYS = ("targets", "extra_sources", "kinds", "methods", "seeds", "multi_seed_targets", "multi_seed_kinds",
             "few_shot_k", "few_shot_targets", "few_shot_kinds", "few_shot_seeds", "fusion_tuned_lr")


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return "–"
    return f"{statistics.mean(xs):.2f}" + (f" ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else "")


def by_method(rows: list[dict], stage: str, k: int | None = None) -> dict[tuple, list[dict]]:
    """Rows of one stage (and few-shot k) by (method, variant), seeds in order."""
    out = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["seed"]):
        if r["stage"] == stage and r.get("k") == k:
            out[(r["method"], r["variant"])].append(r)
    return out


def metric(rows: list[dict], name: str) -> list[float]:
    return [r["test"][name] for r in rows if name in r.get("test", {})]


def baseline_lines(majority: dict, target: str) -> list[str]:
    """The label-frequency baseline: each label more than half the train rows hold (usually none)."""
    base = majority.get(target)
    if not base:
        return ["- No baseline recorded (majority.json): rerun the rows command, which writes it first."]
    test = base["test"]
    none = all(v == 0 for v in test.values())
    return [f"- Label-frequency baseline (predict each label that more than half of the {base['train_examples']} "
            f"train rows hold{'; it scores 0 everywhere: it predicts no label' if none else ''}): "
            + ", ".join(f"{name} {test[name]:.2f}" for name in ("macro_f1", "micro_f1") if name in test)
            + f" on {base['test_examples']} test rows."]


def score_table(groups: dict[tuple, list[dict]], base: float | None, own: list[dict]) -> list[str]:
    """Per method: seeds, macro-F1 and micro-F1 (mean ± sd), the gap to the baseline, size, kept epoch, time (the
    own adapter's row copies its source's, whose time is in ``own``: the source rows)."""
    lines = ["| Method | seeds | macro-F1 | micro-F1 | macro-F1 − baseline | trained parameters (the head aside) | "
             "kept epoch (mean) | wall time per run |", "|---|---|---|---|---|---|---|---|"]
    for (method, variant), rs in groups.items():
        macro = [r["main_score"] for r in rs]
        walls = [r["wall_seconds"] for r in (own if method == "single" else rs) if r.get("wall_seconds")]
        gap = f"{statistics.mean(macro) - base:+.2f}" if base is not None else "–"
        lines.append(f"| {label(method, variant)} | {len(rs)} | {mean_sd(macro)} | {mean_sd(metric(rs, 'micro_f1'))} "
                     f"| {gap} | {human(rs[0]['parameters'])} | {fmt(statistics.mean(r['best_epoch'] for r in rs), 1)}"
                     f" | {f'{statistics.mean(walls) / 60:.1f} min' if walls else '–'} |")
    return lines


def comparisons(groups: dict[tuple, list[dict]]) -> list[tuple]:
    """(ScaLearn label, other label, gap, SE, p, seeds): each ScaLearn variant against every other method."""
    out = []
    for (method, variant), rs in groups.items():
        if method != "scalearn":
            continue
        xa = [r["main_score"] for r in rs]
        for (other, other_variant), os_ in groups.items():
            xb = [r["main_score"] for r in os_]
            if other != "scalearn" and len(xa) >= 2 and len(xb) >= 2:
                out.append((label(method, variant), label(other, other_variant), *welch(xa, xb),
                            min(len(xa), len(xb))))
    return out


def noise_lines(comps: list[tuple]) -> list[str]:
    return ["| ScaLearn | against | gap (macro-F1 points) | SE | Welch p | seeds | verdict |",
            "|---|---|---|---|---|---|---|",
            *(f"| {a} | {b} | {gap:+.2f} | {se:.2f} | {p:.3f} | {n} | {noise_verdict(gap, p, n, '3 needed')} |"
              for a, b, gap, se, p, n in comps)]


def few_shot_section(rows: list[dict]) -> list[str]:
    """Few-shot k: each method's scores over seeds, then ScaLearn against the few-shot adapter, paired by seed."""
    ks = sorted({r["k"] for r in rows if r["stage"] == "few-shot"})
    if not ks:
        return []
    lines = ["## Few-shot", "", "k train rows drawn per seed (dev: max(k, 32) rows); the own adapter trained on them "
             "alone, then composed with the shelf by ScaLearn.", "",
             "| k | Method | seeds | macro-F1 | micro-F1 | steps (mean) |", "|---|---|---|---|---|---|"]
    for k in ks:
        for (method, variant), rs in by_method(rows, "few-shot", k).items():
            lines.append(f"| {k} | {label(method, variant)} | {len(rs)} | {mean_sd([r['main_score'] for r in rs])} | "
                         f"{mean_sd(metric(rs, 'micro_f1'))} | {statistics.mean(r['steps'] for r in rs):.0f} |")
    gaps = few_shot_gaps(rows)
    if gaps:
        lines += ["", "ScaLearn against the few-shot adapter of the same seed (the same k rows), paired t-test:", "",
                  "| k | ScaLearn | gap (macro-F1 points) | SE | p | seeds | verdict |",
                  "|---|---|---|---|---|---|---|",
                  *(f"| {k} | {label('scalearn', v)} | {gap:+.2f} | {se:.2f} | {p:.3f} | {n} | "
                    f"{noise_verdict(gap, p, n, '3 needed')} |" for _, _, k, v, gap, se, p, n in gaps)]
    return lines + [""]


def verdict_lines(comps: list[tuple], rows: list[dict], base: float | None) -> list[str]:
    """The answers in bullets, each only as far as the rows go (a verdict from 3 seeds up)."""
    out = [] if comps else ["- No comparison has two seeds of both methods yet; the tables show single seeds."]
    for a, b, gap, _, p, n in comps:
        verdict = noise_verdict(gap, p, n, "3 needed").replace("**", "")
        out.append(f"- {a} against {b}: {gap:+.2f} macro-F1 points over {n} seeds, {verdict}.")
    full = by_method(rows, "transfer")
    if base is not None and full:
        above = [label(*key) for key, rs in full.items() if min(r["main_score"] for r in rs) > base]
        out.append(f"- Above the label-frequency baseline on every seed: {', '.join(above) or 'none'}.")
    for _, _, k, v, gap, _, p, n in few_shot_gaps(rows):
        verdict = noise_verdict(gap, p, n, "3 needed").replace("**", "")
        out.append(f"- Few-shot k = {k}: {label('scalearn', v)} against the few-shot adapter {gap:+.2f} over {n} "
                   f"seeds, {verdict}.")
    return out


def missing_lines(config: dict, rows: list[dict]) -> list[str]:
    """Planned runs without a row, by stage, seed and k, with the command that computes them."""
    from bench import quality

    argv = [f"--{k.replace('_', '-')}={config[k]}" for k in PLAN_KEYS if k in config]
    done = {row_key(r) for r in rows}
    stages = set(csv(config.get("stages") or ",".join(STAGES))) | {r["stage"] for r in rows}
    missing: dict[str, list[str]] = defaultdict(list)
    args = quality.parse_args(argv)
    borrowed = set(csv(args.extra_sources))  # the shelf's sources: another run's rows, never this one's
    for job in plan(args):
        if job.stage in stages and row_key(job.key()) not in done and job.target not in borrowed:
            what = f"{job.stage}, seed {job.seed}" + (f", k = {job.k}" if job.k else "")
            missing[what].append(job.variant or job.method)
    if not missing:
        return ["- Every planned row is here."]
    return [*(f"- {what}: {', '.join(methods)}" for what, methods in missing.items()),
            f"- To compute them (resumes; finished rows are skipped): `{ROWS_COMMAND}`."]


def setup_lines(config: dict, rows: list[dict]) -> list[str]:
    """How the rows were made, from the run's config.json and the rows themselves."""
    target = csv(config.get("targets", ""))[0] if config.get("targets") else "?"
    sizes = sorted({(r["train_examples"], r["dev_examples"], r["test_examples"]) for r in rows
                    if r["stage"] == "transfer"})
    size_text = "; ".join(f"{a} train / {b} dev / {c} test rows" for a, b, c in sizes) or "no rows yet"
    lrs = {label(r["method"], r["variant"]): r["lr"] for r in rows if r["stage"] in ("source", "transfer")}
    machine = config.get("machine", {})
    walls = [r["wall_seconds"] for r in rows if r.get("wall_seconds")]
    threshold = config.get("threshold") or "0.5"
    full_steps = sorted({r["steps"] for r in rows if r["stage"] in ("source", "transfer")})
    steps = "–" if not full_steps else "–".join(str(v) for v in dict.fromkeys((full_steps[0], full_steps[-1])))
    return [
        f"- Target: {target}, its train file capped to a seeded pool of ⌈{config.get('target_max_train')}/0.9⌉ "
        "rows "
        f"(dev: the library's 10% of the pool) and its test split to {config.get('test_max')} seeded rows: "
        f"{size_text}. A label is predicted when its probability exceeds "
        + ("its own threshold, tuned on dev (`--label-threshold tune`; recorded with each head)." if threshold == "tune"
           else f"{threshold}."),
        f"- Sources, composed in this order: the target's own {KIND.get(config.get('kinds'), config.get('kinds'))} "
        "adapter (trained here on the same "
        f"rows; the seed-0 one is composed, a seed's own row is that seed's adapter), then the strong run's seed-0 "
        f"LoRA sources ({', '.join(csv(config.get('extra_sources', '')))}), each trained on its full task, single-"
        "label or regression.",
        f"- Transfers: up to {config.get('epochs')} epochs, early stopping after {config.get('patience')} without a "
        f"lower dev loss; the own adapter: up to {config.get('source_epochs')} epochs, patience "
        f"{config.get('source_patience')}; batch {config.get('batch_size')}, max length {config.get('max_length')}, "
        f"pooling {config.get('pooling')}; learning rates: "
        + ", ".join(f"{name} {lr:g}" for name, lr in lrs.items()) + ".",
        f"- Budget: {steps} training steps per full-data run, the same epochs for every method: the rows compare "
        "methods at a small, equal budget, not at convergence (the paper trains up to 30 epochs).",
        f"- Few-shot: k = {config.get('few_shot_k')}, up to {config.get('few_shot_steps')} steps, an evaluation per "
        f"epoch, the epoch with the best dev {config.get('few_shot_select')} kept, patience "
        f"{config.get('few_shot_patience')} evaluations.",
        f"- Seeds planned: {config.get('seeds')} (few-shot: {config.get('few_shot_seeds')}); {len(walls)} runs, "
        f"{sum(walls) / 60:.0f} minutes in all on {machine.get('cpu_count', '?')} shared CPU cores at "
        f"{machine.get('threads', '?')} thread, torch {machine.get('torch', '?')}.",
    ]


def render(out: Path, run: Path = RUN) -> tuple[str, int, Path]:
    """Write the multi-label report to ``out``; returns (text, rows, run folder), as ``report.render``."""
    rows, config = read_run(run)
    majority = read_json(run / "majority.json") or {}
    target = csv(config.get("targets", ""))[0] if config.get("targets") else ""
    base = majority.get(target, {}).get("main_score")
    full = by_method(rows, "transfer")
    comps = comparisons(full)
    lines = ["# Multi-label target: go_emotions over a shelf of single-label sources", "",
             f"Generated by `python -m bench report --all` from `bench/results/{run.name}/` (written by "
             "`python -m bench multilabel`); no number here is typed by hand.", "",
             "go_emotions gives each Reddit comment a list of its 28 emotions (most one, some several). Scored as the "
             "paper scores its multi-label benchmark (HumSet): macro-F1 over the labels, the main metric, with "
             "micro-F1 beside it. The question: does ScaLearn, composing the target's own adapter with sources "
             "trained on other (single-label) tasks, beat the own adapter, the plain average and AdapterFusion?",
             "", "## Setup", "", *setup_lines(config, rows), *baseline_lines(majority, target), "",
             f"## {target}", "", *score_table(full, base, by_method(rows, "source").get(("single", None), [])), ""]
    if comps:
        lines += ["Welch's t-test over seeds, as in the other benchmark docs (a verdict from 3 seeds up).", "",
                  *noise_lines(comps), ""]
    lines += [*few_shot_section(rows), "## Verdicts", "", *verdict_lines(comps, rows, base), "",
              "## Missing", "", *missing_lines(config, rows), ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text, len(rows), run
