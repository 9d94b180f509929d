"""Generate docs/benchmarks.md (and docs/figures/*.png) from the benchmark's result files only.

Inputs: ``bench/results/<run>/{config.json,results.jsonl,majority.json,omega/*}``, ``bench/results/speed.json``,
``bench/results/peer.json`` and the paper's tables, parsed from the project's reference notes (SCALEARN.md) and
cached in ``bench/results/paper.json``. No number in the generated document is typed by hand.

    python bench/report.py --all            # every committed doc (DOCS below), from its results
    python bench/report.py --all --check    # fail if a committed doc is not what its results make
    python bench/report.py [--run default] [--out docs/benchmarks.md] [--compare-run other]   # one report
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import quality  # noqa: E402  (bench/quality.py: the plan and the run key; stdlib-only at import)

RESULTS = REPO / "bench" / "results"
FIGURES = REPO / "docs" / "figures"
FIGURE_LINK = "figures/"  # how the generated doc links to FIGURES
DOC_DIR = REPO / "docs"
# Every committed benchmark doc: its run under bench/results and the runs compared beside it. `--all` regenerates
# them all; `--all --check` (run by the test suite) fails when one differs from what its results make.
DOCS = {
    "benchmarks-strong.md": ("strong", ["strong-nostop", "strong-lr1e-3", "strong-af-own"]),
    "benchmarks.md": ("default", []),
    "benchmarks-medium.md": ("medium", ["medium-mean"]),
    "benchmarks-medium-mean.md": ("medium-mean", ["medium"]),
}
METHODS = [("single", None), ("average", None), ("adaptersoup", None), ("peft-all-active", None), ("adapterfusion", None), ("adapterfusion-tuned", None),
           ("scalearn", "scalearn"), ("scalearn", "scalearn-uniform"), ("scalearn", "scalearn++"),
           ("scalearn", "scalearn-uniform++")]
FEW_SHOT_METHODS = [("single", None)] + [m for m in METHODS if m[0] == "scalearn"]  # the target's own, then ScaLearn
LABEL = {"single": "Single adapter (target's own)", "average": "Average (ω = 1/N, fixed)",
         "adaptersoup": "AdapterSoup (top-k similar sources, weight-averaged)",
         "peft-all-active": "PEFT, all N LoRAs active as separate branches, trained (peer)",
         "adapterfusion": "AdapterFusion", "adapterfusion-tuned": "AdapterFusion (tuned lr)",
         "merged": "ScaLearn folded into the base weights (export --format merged)",
         "scalearn": "ScaLearn", "scalearn-uniform": "ScaLearnUniform", "scalearn++": "ScaLearn++",
         "scalearn-uniform++": "ScaLearnUniform++"}
PAPER_NAME = {"single": "Adapter", "adaptersoup": "AdapterSoup", "adapterfusion": "AdapterFusion", "scalearn": "ScaLearn",
              "scalearn-uniform": "ScaLearnUniform", "scalearn++": "ScaLearn++", "scalearn-uniform++": "ScaLearnUniform++"}
PAPER_COL = {"mnli": "MNLI", "qqp": "QQP", "qnli": "QNLI", "sst2": "SST-2", "stsb": "STS-B", "mrpc": "MRPC",
             "rte": "RTE", "cola": "CoLA"}


def label(method: str, variant: str | None) -> str:
    return LABEL[variant or method]


def fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


# ------------------------------------------------------------------------------------------------- inputs


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open() if line.strip()] if path.is_file() else []


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def paper_tables(reference: Path) -> dict:
    """The GLUE table of SCALEARN.md as {method: {column: score}}, cached in bench/results/paper.json."""
    cache = RESULTS / "paper.json"
    if not reference.is_file():
        return read_json(cache) or {}
    lines = reference.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method | MNLI"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0]] = {h: float(c) for h, c in zip(header[1:], cells[1:])}
    paper = {"source": "SCALEARN.md (authors' numbers, RoBERTa-base, GLUE, mean over seeds)", "glue": table}
    cache.write_text(json.dumps(paper, indent=2) + "\n")  # the reference's row order: docs made from the cache match
    return paper


# ------------------------------------------------------------------------------------------------ quality


def group(rows: list[dict], stage: str) -> dict:
    """{(kind, method, variant, target, k): [main scores over seeds]} and parameter counts."""
    scores, params = defaultdict(list), {}
    for r in rows:
        if r["stage"] != stage:
            continue
        key = (r["kind"], r["method"], r["variant"], r["target"], r.get("k"))
        scores[key].append(r["main_score"])
        params[(r["kind"], r["method"], r["variant"])] = r["parameters"]
    return {"scores": scores, "params": params}


def quality_table(g: dict, kind: str, targets: list[str], majority: dict) -> tuple[list[str], dict]:
    """Markdown rows (target × method, mean ± std (seeds)) and the per-method means used for the ordering."""
    head = ["Method", "Transfer params", *[f"{t} ({majority.get(t, {}).get('main_metric', '')})" for t in targets], "Avg"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means: dict = {}
    for method, variant in METHODS:
        vals = [g["scores"].get((kind, method, variant, t, None), []) for t in targets]
        if not any(vals):
            continue
        per_target = [statistics.mean(v) if v else None for v in vals]
        means[(method, variant)] = dict(zip(targets, per_target))
        avg = statistics.mean(per_target) if all(v is not None for v in per_target) else None
        n = g["params"].get((kind, method, variant))
        out.append(f"| {label(method, variant)} | {human(n) if n is not None else '–'} | "
                   + " | ".join(mean_std(v) for v in vals) + f" | {fmt(avg)} |")
    if majority:
        base = [majority.get(t, {}).get("main_score") for t in targets]
        avg = statistics.mean(base) if all(b is not None for b in base) else None
        out.append("| *Majority class / train mean* | 0 | " + " | ".join(fmt(b) for b in base) + f" | {fmt(avg)} |")
    return out, means


def ordering_table(means: dict, targets: list[str]) -> list[str]:
    """Per target: does ScaLearn ≥ AdapterFusion ≥ single adapter hold (seed means)?"""
    sl = means.get(("scalearn", "scalearn"), {})
    best = {t: max((means[m].get(t) for m in means if m[0] == "scalearn" and means[m].get(t) is not None), default=None)
            for t in targets}
    af, single = means.get(("adapterfusion", None), {}), means.get(("single", None), {})
    tuned = means.get(("adapterfusion-tuned", None), {})
    extra = " AF (tuned lr) | ScaLearn ≥ AF (tuned lr) |" if tuned else ""
    out = ["| Target | ScaLearn | best ScaLearn variant | AdapterFusion | Single | ScaLearn ≥ AF | AF ≥ Single | "
           "best variant ≥ Single |" + extra, "|---|---|---|---|---|---|---|---|" + ("---|---|" if tuned else "")]

    def ge(a, b):
        return "–" if a is None or b is None else ("yes" if a >= b else "**no**")

    for t in targets:
        cells = f" {fmt(tuned.get(t))} | {ge(sl.get(t), tuned.get(t))} |" if tuned else ""
        out.append(f"| {t} | {fmt(sl.get(t))} | {fmt(best[t])} | {fmt(af.get(t))} | {fmt(single.get(t))} | "
                   f"{ge(sl.get(t), af.get(t))} | {ge(af.get(t), single.get(t))} | {ge(best[t], single.get(t))} |"
                   + cells)
    return out


NOISE_PAIRS = [(("scalearn", "scalearn"), ("single", None)), (("scalearn", "scalearn"), ("average", None)),
               (("scalearn", "scalearn"), ("adapterfusion", None)), (("scalearn", "scalearn"), ("adapterfusion-tuned", None)),
               (("adapterfusion", None), ("single", None)), (("adapterfusion-tuned", None), ("single", None))]


def noise_verdict(gap: float, p: float, seeds: int, needed: str) -> str:
    if seeds < 3:  # two seeds give a variance estimate too unstable to test against
        return f"too few seeds to test ({needed})"
    return ("**higher**" if gap > 0 else "**lower**") + ", beyond seed noise" if p < 0.05 else "within seed noise"


def few_shot_gaps(rows: list[dict]) -> list[tuple]:
    """Per target, kind, k and ScaLearn variant with >= 2 seeds of it and of the few-shot single adapter:
    (target, kind, k, variant, mean gap, SE, p, seeds). Both draw the same k examples with a seed, so the test is
    paired by seed (the mean of the per-seed differences, ``ttest_rel``)."""
    from scipy import stats

    score = {(r["target"], r["kind"], r["k"], r["method"], r["variant"], r["seed"]): r["main_score"]
             for r in rows if r["stage"] == "few-shot"}
    out = []
    for t, kind, k in sorted({key[:3] for key in score}):
        for variant in [m[1] for m in METHODS if m[0] == "scalearn"]:
            seeds = sorted(key[5] for key in score if key[:5] == (t, kind, k, "scalearn", variant)
                           and (t, kind, k, "single", None, key[5]) in score)
            if len(seeds) < 2:
                continue
            diffs = [score[(t, kind, k, "scalearn", variant, s)] - score[(t, kind, k, "single", None, s)] for s in seeds]
            gap, se = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
            p = p_value(lambda: stats.ttest_1samp(diffs, 0.0), gap, se)
            out.append((t, kind, k, variant, gap, se, p, len(seeds)))
    return out


def few_shot_scores(rows: list[dict]) -> dict[tuple, list[float]]:
    """Few-shot main scores over seeds by (target, kind, k, method, variant)."""
    scores = defaultdict(list)
    for r in rows:
        if r["stage"] == "few-shot":
            scores[(r["target"], r["kind"], r["k"], r["method"], r["variant"])].append(r["main_score"])
    return scores


def few_shot_above_majority(rows: list[dict], majority: dict) -> list[tuple]:
    """Per target, kind, k and method (the few-shot adapter, each ScaLearn variant) with >= 2 seeds: (target, kind,
    k, method, variant, mean score − the majority class, SE, p, seeds), a one-sample t-test against the constant
    predictor's fixed score on the same test rows. A few-shot model can beat another by predicting the majority
    class where the other does not: this says whether it learned more than that."""
    from scipy import stats

    scores = few_shot_scores(rows)
    out = []
    for t, kind, k in sorted({key[:3] for key in scores}):
        base = majority.get(t, {}).get("main_score")
        if base is None:
            continue
        for method in FEW_SHOT_METHODS:
            xs = scores.get((t, kind, k, *method), [])
            if len(xs) < 2:
                continue
            gap, se = statistics.mean(xs) - base, statistics.stdev(xs) / len(xs) ** 0.5
            p = p_value(lambda: stats.ttest_1samp(xs, base), gap, se)
            out.append((t, kind, k, *method, gap, se, p, len(xs)))
    return out


def few_shot_noise(rows: list[dict], majority: dict | None = None) -> list[str]:
    """The few-shot gaps against the target's own few-shot adapter, paired by seed, and against the majority class,
    as tables."""
    gaps = few_shot_gaps(rows)
    out = []
    if gaps:
        out += ["Few-shot gaps against the target's own few-shot adapter, paired by seed (the same k examples):", "",
                "| Target | Kind | k | Comparison | mean gap (points) | SE | paired p | seeds | verdict |",
                "|---|---|---|---|---|---|---|---|---|",
                *(f"| {t} | {kind} | {k} | {label('scalearn', v)} − {label('single', None)} | {gap:+.2f} | {se:.2f} | "
                  f"{p:.3f} | {n} | {noise_verdict(gap, p, n, '3 needed')} |" for t, kind, k, v, gap, se, p, n in gaps)]
    above = few_shot_above_majority(rows, majority or {})
    if above:
        out += [*([""] if out else []),
                "Few-shot scores against the majority class (the constant predictor on the same test rows; a "
                "one-sample t-test over seeds): a model that only learned the majority class sits at 0.", "",
                "| Target | Kind | k | Method | mean − majority (points) | SE | p | seeds | verdict |",
                "|---|---|---|---|---|---|---|---|---|",
                *(f"| {t} | {kind} | {k} | {label(m, v)} | {gap:+.2f} | {se:.2f} | {p:.3f} | {n} | "
                  f"{noise_verdict(gap, p, n, '3 needed')} |" for t, kind, k, m, v, gap, se, p, n in above)]
    return out


def welch(xa: list[float], xb: list[float]) -> tuple[float, float, float]:
    """The gap of two methods' seed means, its standard error and Welch's two-sided p (>= 2 seeds each)."""
    from scipy import stats

    gap = statistics.mean(xa) - statistics.mean(xb)
    se = (statistics.variance(xa) / len(xa) + statistics.variance(xb) / len(xb)) ** 0.5
    return gap, se, p_value(lambda: stats.ttest_ind(xa, xb, equal_var=False), gap, se)


def p_value(test, gap: float, se: float) -> float:
    """A t-test's two-sided p; with no spread at all (SE 0) a gap is certain and no gap is none."""
    if se <= 0:
        return 0.0 if gap else 1.0
    with warnings.catch_warnings():  # near-identical seeds (e.g. all at the majority class) warn of precision
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(test().pvalue)


def beyond(p: float) -> str:
    """The summary's short verdict of a two-sided test at the 5% level."""
    return "beyond seed noise" if p < 0.05 else "within seed noise"


def question_answer(g: dict, rows: list[dict], kinds: list[str], targets: list[str],
                    majority: dict | None = None) -> list[str]:
    """Issue 12's question in one bullet: ScaLearn against the single adapter and against AdapterFusion, per target
    with three or more seeds of both, each gap with its Welch verdict."""
    parts = []
    for kind in kinds:
        for other in (("single", None), ("adapterfusion", None)):
            cells = []
            for t in targets:
                xa, xb = (g["scores"].get((kind, *m, t, None), []) for m in (("scalearn", "scalearn"), other))
                if min(len(xa), len(xb)) >= 3:
                    gap, _, p = welch(xa, xb)
                    cells.append(f"{t} {gap:+.2f} ({beyond(p)}, p {p:.2f})")
            if cells:
                parts.append(f"ScaLearn − {label(*other).split(' (')[0]} ({kind}): {'; '.join(cells)}")
    few = [f"{t} k={k} {gap:+.2f} ({beyond(p)}, p {p:.2f}, {n} seeds)"
           for t, kind, k, v, gap, se, p, n in few_shot_gaps(rows) if v == "scalearn" and n >= 3]
    if few:
        parts.append("few-shot, ScaLearn − the target's own few-shot adapter (paired by seed): " + "; ".join(few))
    above = [f"{t} k={k} {gap:+.2f} ({beyond(p)}, p {p:.2f})"
             for t, kind, k, m, v, gap, se, p, n in few_shot_above_majority(rows, majority or {})
             if v == "scalearn" and n >= 3]
    if above:
        parts.append("few-shot, ScaLearn − the majority class: " + "; ".join(above))
    if not parts:
        return []
    return ["- **Does ScaLearn beat the single adapter beyond seed noise, and where does it stand against "
            "AdapterFusion?** Targets with 3 seeds of both, mean gaps in points: " + ". ".join(parts) + "."]


def noise_table(g: dict, kind: str, targets: list[str]) -> list[str]:
    """Per target and method pair with >= 2 seeds each: the gap of the means against its seed noise (Welch's t-test)."""
    out = ["| Target | Comparison | gap (points) | SE of the gap | Welch p | seeds | verdict |",
           "|---|---|---|---|---|---|---|"]
    for t in targets:
        for a, b in NOISE_PAIRS:
            xa, xb = (g["scores"].get((kind, *m, t, None), []) for m in (a, b))
            if len(xa) < 2 or len(xb) < 2:
                continue
            gap, se, p = welch(xa, xb)
            verdict = noise_verdict(gap, p, min(len(xa), len(xb)), "3 each needed")
            out.append(f"| {t} | {label(*a)} − {label(*b)} | {gap:+.2f} | {se:.2f} | {p:.3f} | {len(xa)} / {len(xb)} | "
                       f"{verdict} |")
    if len(out) == 2:
        return ["*No target has two or more seeds of both methods of a pair yet.*"]
    return out


def few_shot_table(rows: list[dict], majority: dict | None = None) -> list[str]:
    """Target × k rows, mean ± std over seeds, beside the majority class (train mean) on the same test split."""
    fs = [r for r in rows if r["stage"] == "few-shot"]
    if not fs:
        return ["*No few-shot rows finished.*"]
    cols = FEW_SHOT_METHODS
    scores = few_shot_scores(fs)
    keys = sorted({(r["target"], r["kind"], r["k"]) for r in fs})
    out = ["| Target | Kind | k | " + " | ".join(label(*c) for c in cols) + " | Majority / mean |",
           "|" + "---|" * (4 + len(cols))]
    for t, kind, k in keys:
        base = (majority or {}).get(t, {}).get("main_score")
        out.append(f"| {t} | {kind} | {k} | " + " | ".join(mean_std(scores.get((t, kind, k, *c), [])) for c in cols)
                   + f" | {fmt(base)} |")
    return out


def few_shot_steps(config: dict) -> str:
    """How long a few-shot run trains and which of its epochs it keeps (runs before these options: loss, no stop)."""
    patience, select = config.get("few_shot_patience") or 0, config.get("few_shot_select", "loss")
    kept = "the best dev main metric's epoch kept" if select == "metric" else "the lowest dev loss's epoch kept"
    stop = f", early stopping after {patience} epochs without a gain" if patience else ""
    paper = " (the paper's run_few protocol)" if (config["few_shot_steps"], patience, select) == (1000, 20, "metric") \
        else " (the paper: up to 1,000 steps, best dev metric, patience 20)"
    return f"{'up to ' if patience else ''}{config['few_shot_steps']} steps per run (an epoch is ⌈k/32⌉ steps), {kept}{stop}{paper}"


def few_shot_runs(rows: list[dict]) -> list[str]:
    """Per target and k: the steps the few-shot runs took and the epoch each kept (is the protocol's length used?)."""
    fs = [r for r in rows if r["stage"] == "few-shot"]
    spans = defaultdict(list)
    for r in fs:
        spans[(r["target"], r["kind"], r["k"])].append((r["steps"], r["best_epoch"]))
    span = lambda v: f"{min(v)}" if min(v) == max(v) else f"{min(v)}–{max(v)}"  # noqa: E731
    return ["Steps run (kept epoch) per target and k: " + "; ".join(
        f"{t} {kind} k={k}: {span([s for s, _ in v])} ({span([e for _, e in v])})"
        for (t, kind, k), v in sorted(spans.items())) + "."] if fs else []


def missing_rows(config: dict, rows: list[dict]) -> list[str]:
    """Planned runs (from quality.plan with the recorded configuration) that have no row."""
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in config.items()
            if k in ("targets", "extra_sources", "kinds", "methods", "seeds", "multi_seed_targets", "multi_seed_kinds",
                     "few_shot_k", "few_shot_targets", "few_shot_kinds", "few_shot_seeds", "fusion_tuned_lr")]
    args = quality.parse_args(argv)
    runner = quality.Runner.__new__(quality.Runner)
    runner.args, runner.targets = args, quality.csv(args.targets)
    runner.tasks = runner.targets + [t for t in quality.csv(args.extra_sources) if t not in runner.targets]
    done = {quality.row_key(r) for r in rows}
    stages = set(quality.csv(config.get("stages", "source,transfer,few-shot"))) | {r["stage"] for r in rows}
    missing = defaultdict(int)
    for job in quality.plan(args, runner):
        if job.stage in stages and quality.row_key(job.key()) not in done:
            what = f"{job.stage}: seed {job.seed}" + (f", k={job.k}" if job.k else "")
            missing[what] += 1
    return [f"- {what}: {n} run(s)" for what, n in sorted(missing.items())]


# ------------------------------------------------------------------------------------------------ figures


def common_targets(means: dict, targets: list[str]) -> list[str]:
    """Targets that every method of ``means`` has a score for (so averages compare like with like)."""
    return [t for t in targets if means and all(m.get(t) is not None for m in means.values())]


def plot_score_vs_params(means_by_kind: dict, params: dict, targets: list[str], majority: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers, colors = {"lora": "o", "bottleneck": "s"}, {"lora": "tab:blue", "bottleneck": "tab:orange"}
    used = {}
    for kind, means in means_by_kind.items():
        common = common_targets(means, targets)
        used[kind] = common
        if common and all(t in majority for t in common):
            base = statistics.mean(majority[t]["main_score"] for t in common)
            ax.axhline(base, color=colors.get(kind), ls="--", lw=1, label=f"majority-class predictor ({kind} targets)")
        for (method, variant), per_target in means.items():
            n = params.get((kind, method, variant))
            if not common or not n:
                continue
            y = statistics.mean(per_target[t] for t in common)
            ax.scatter(n, y, marker=markers.get(kind, "o"), color=colors.get(kind), s=50)
            ax.annotate(label(method, variant).split(" (")[0], (n, y), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    if not any(used.values()):
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_xlabel("trained transfer parameters (log scale; head excluded; average: 0, not shown)")
    ax.set_ylabel("mean main score (seed means)")
    ax.set_title("Score vs transfer parameters — " + "; ".join(
        f"{k} ({'o' if k == 'lora' else '■'}): {', '.join(v)}" for k, v in used.items() if v), fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / "score_vs_params.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name


def source_bar(target: str, majority: dict) -> float | None:
    """Issue 12's bar for a source: STS-B Pearson 80; classification majority + 10 points (None: no majority)."""
    base = majority.get(target, {}).get("main_score")
    return 80.0 if target == "stsb" else None if base is None else base + 10


def source_table(rows: list[dict], majority: dict, batch_size: int = 32) -> list[str]:
    """Stage 1: how good the seed-0 source adapters are (the material ω has to work with)."""
    src = sorted((r for r in rows if r["stage"] == "source" and r["seed"] == 0), key=lambda r: (r["kind"], r["target"]))
    if not src:
        return ["*No source rows finished.*"]
    out = ["| Task | Kind | train / dev / test rows | steps | best epoch | main metric | score | majority | "
           "above majority | issue 12's bar |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in src:
        base = majority.get(r["target"], {}).get("main_score")
        threshold = source_bar(r["target"], majority)
        bar = None if threshold is None else r["main_score"] >= threshold
        out.append(f"| {r['target']} | {r['kind']} | {r['train_examples']} / {r['dev_examples']} / {r['test_examples']} | "
                   f"{r['steps']} | {r['best_epoch']} of {r.get('epochs', '–')} | {r['task_main_metric']} | "
                   f"{r['main_score']:.2f} | {fmt(base)} | {fmt(r['main_score'] - base if base is not None else None)} | "
                   f"{'–' if bar is None else 'met' if bar else '**not met**'} |")
    return out + unmet_sources(rows, majority, src, batch_size)


def retrained_sources(run_dir: Path) -> list[str]:
    """Sources retrained on a later machine (``retrained.jsonl``): do they reproduce their recorded test score?"""
    entries = read_jsonl(run_dir / "retrained.jsonl")
    if not entries:
        return []
    retrains: dict[tuple, list[dict]] = {}
    for e in entries:
        retrains.setdefault((e["target"], e["kind"], e["seed"], e.get("k")), []).append(e)
    cells = []
    for (target, kind, seed, k), runs in retrains.items():
        scores = ", ".join(f"{e['retrained']:.2f}" for e in runs)
        cells.append(f"{target} ({kind}, seed {seed}{f', k={k}' if k else ''}) {runs[0]['recorded']:.2f} → {scores}")
    gaps = [abs(e["retrained"] - e["recorded"]) for e in entries]
    differ = list(dict.fromkeys(f"{e['target']} ({e['kind']}, seed {e['seed']})" for e, gap in zip(entries, gaps)
                                if gap > quality.REPRODUCED))
    verdict = (f"**{', '.join(differ)} differ{'s' if len(differ) == 1 else ''}**: transfers run after that retrain "
               "compose a different adapter than the recorded row describes" if differ else
               f"every one reproduces its recorded test score (largest |Δ| {max(gaps):.4f} points), so transfers run "
               "before and after a retrain compose the same adapters")
    return ["", f"Sources retrained on a later machine (their folders were gone; `retrained.jsonl`; one value a "
                f"retrain): {'; '.join(cells)} — {verdict}."]


def kept_sources(run_dir: Path) -> list[str]:
    """The run's kept sources (``--keep-sources``): a local scalearn registry committed beside the results."""
    registry = quality.kept_registry(run_dir)
    if not registry.exists():
        return []
    entries = registry.list()
    size = sum(f.stat().st_size for f in registry.root.rglob("blobs/*"))
    where = f"bench/results/{run_dir.name}/sources"
    return ["", f"The {len(entries)} source adapters transfers compose are kept in `{where}` ({size / 2**20:.1f} MiB), "
                f"a local scalearn registry: `scalearn list --registry local:{where}` lists them, `scalearn transfer "
                f"--registry local:{where} --source {entries[0].repo_id} ...` composes them, and a new machine pulls "
                "them (sha256-verified, test score checked against the row) instead of retraining them."]


def unmet_sources(rows: list[dict], majority: dict, src: list[dict], batch_size: int) -> list[str]:
    """For each seed-0 source below issue 12's bar, what the run says about why: when its dev loss stopped
    improving, what its other seeds score, and the best transfer on the same test rows."""
    out = []
    for r in src:
        bar = source_bar(r["target"], majority)
        if bar is None or r["main_score"] >= bar:
            continue
        seeds = sorted((x["seed"], x["main_score"]) for x in rows
                       if x["stage"] == "source" and x["target"] == r["target"] and x["kind"] == r["kind"] and not x.get("k"))
        others = [f"seed {s} {v:.2f}" for s, v in seeds if s != 0]
        transfers = [x for x in rows if x["stage"] == "transfer" and x["target"] == r["target"] and x["kind"] == r["kind"]
                     and x["method"] != "single"]
        best = max(transfers, key=lambda x: x["main_score"], default=None)
        threshold = "Pearson 80" if r["target"] == "stsb" else f"majority + 10 = {bar:.2f}"
        text = (f"- **{r['target']} ({r['kind']}) is below the bar** ({threshold}): its dev loss was lowest after epoch "
                f"{r['best_epoch']} (epochs run: {epochs_done(r, batch_size) or '–'} of {r.get('epochs', '–')}), with "
                f"{r['train_examples']:,} training examples")
        text += f"; retrained with other seeds: {', '.join(others)}" if others else ""
        kinds = sorted((x["kind"], x["main_score"]) for x in src if x["target"] == r["target"] and x["kind"] != r["kind"])
        text += "; the " + ", the ".join(f"{k} source on the same rows scores {v:.2f}" for k, v in kinds) if kinds else ""
        if best is not None:
            text += (f". The best transfer onto {r['target']} in this run, {label(best['method'], best.get('variant'))} "
                     f"(seed {best['seed']}), scores {best['main_score']:.2f} on the same test rows: "
                     + ("the task is learnable from these sources beyond what its own adapter reached"
                        if best["main_score"] >= bar else "no method here clears the bar either")
                     )
        out.append(text + ".")
    return ([""] + out) if out else []


def omega_matrix(path: Path) -> tuple[list[list[float]], list[str], list[int]]:
    """ω per (layer, source) of one omega.safetensors: scalar ω as is; vector ω as mean |ω| over hidden units.

    LoRA compositions have two sites per layer (query, value): their values are averaged. ``layer -1`` holds the
    layer-shared ω of the ++ variants.
    """
    from safetensors.torch import load_file
    import torch

    tensors = load_file(str(path))
    sources = json.loads(path.with_suffix(".json").read_text())["sources"]
    per_layer = defaultdict(list)
    for key, value in tensors.items():
        m = re.search(r"layer\.(\d+)\.", key)
        per_layer[int(m.group(1)) if m else -1].append(value if value.dim() == 1 else value.abs().mean(1))  # (N,)
    layers = sorted(per_layer)
    return [torch.stack(per_layer[l]).mean(0).tolist() for l in layers], sources, layers


def omega_drifts(run_dir: Path) -> dict[str, tuple[float, float]]:
    """Per saved composition: (mean |ω − 2/N| ÷ 2/N, max ω − min ω), how far ω moved from its initialisation."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted((run_dir / "omega").glob("*.safetensors")):
        tensors = list(load_file(str(path)).values())
        init = 2.0 / tensors[0].shape[0]
        drift = statistics.mean(float((t - init).abs().mean()) for t in tensors) / init
        out[path.stem] = (drift, max(float(t.max()) for t in tensors) - min(float(t.min()) for t in tensors))
    return out


NLI_TASKS = ("mnli", "qnli", "rte", "snli", "wnli")


def omega_shares(run_dir: Path) -> list[str]:
    """Each saved composition's per-source share of Σ|ω| over layers (uniform: 1/N), and the NLI sources' share."""
    drifts = omega_drifts(run_dir)
    out = ["| Target | Kind | Variant | ω moved (mean relative) | shares of Σ\\|ω\\|, largest first | other NLI sources "
           "(uniform share) |", "|---|---|---|---|---|---|"]
    for path in sorted((run_dir / "omega").glob("*.safetensors")):
        target, kind, variant = path.stem.split("-", 2)
        matrix, sources, _ = omega_matrix(path)
        totals = [sum(abs(row[i]) for row in matrix) for i in range(len(sources))]
        shares = {src: t / sum(totals) for src, t in zip(sources, totals)}
        nli = [src for src in sources if src in NLI_TASKS and src != target]
        order = ", ".join(f"{src} {share:.3f}" for src, share in sorted(shares.items(), key=lambda kv: -kv[1]))
        out.append(f"| {target} | {kind} | {label('scalearn', variant)} | {100 * drifts[path.stem][0]:.1f}% | {order} | "
                   f"{sum(shares[s] for s in nli):.3f} ({len(nli) / len(sources):.3f}) |")
    return out


def omega_drift(run_dir: Path) -> list[str]:
    return [f"{stem}: {100 * d:.1f}% (range of ω {r:.3f})" for stem, (d, r) in omega_drifts(run_dir).items()]


def plot_omega(run_dir: Path) -> list[tuple[str, str]]:
    """One figure per (kind, variant): a layers × sources heatmap per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = defaultdict(list)
    for path in sorted((run_dir / "omega").glob("*.safetensors")):
        target, kind, variant = path.stem.split("-", 2)
        groups[(kind, variant)].append((target, path))
    made = []
    for (kind, variant), items in sorted(groups.items()):
        fig, axes = plt.subplots(1, len(items), figsize=(max(5.0, 3.6 * len(items)), 3.8), squeeze=False)
        for ax, (target, path) in zip(axes[0], items):
            matrix, sources, layers = omega_matrix(path)
            im = ax.imshow(matrix, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(sources)), sources, rotation=45, fontsize=7)
            ax.set_yticks(range(len(layers)), [f"L{l}" for l in layers], fontsize=7)
            for i, row in enumerate(matrix):
                for j, v in enumerate(row):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5.5, color="w")
            ax.set_title(f"target {target}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
        what = "ω (scalar per layer and source)" if "uniform" in variant else "mean |ω| over hidden units"
        fig.suptitle(f"{LABEL[variant]} over {kind} sources\n{what}", fontsize=9)
        fig.tight_layout()
        FIGURES.mkdir(parents=True, exist_ok=True)
        name = f"omega_{kind}_{variant}.png"
        fig.savefig(FIGURES / name, dpi=110)
        plt.close(fig)
        made.append((f"{LABEL[variant]}, {kind} sources", name))
    return made


# -------------------------------------------------------------------------------------------------- speed


def speed_section(speed: dict | None) -> list[str]:
    if not speed:
        return ["*bench/results/speed.json not found: run `python bench/speed.py`.*"]
    m = speed["machine"]
    out = [f"Measured {speed['started']}–{speed['finished']} on `{m['platform']}`, {m['cpu']}, {m['cpu_count']} CPUs, "
           f"**{m['threads']} torch thread(s)**, torch {m['torch']}, transformers {m['transformers']}; model "
           f"`{speed['model']}`, batch {speed['batch']} × {speed['seq_len']} tokens, {speed['dtype']}, median of "
           f"{speed['repeats']} timed steps after {speed['warmup']} warm-up steps, one subprocess per configuration. "
           f"Load average at the end: {', '.join(f'{x:.1f}' for x in speed['load_average_at_end'])} (the machine "
           "was shared; ratios within one run are what to read).", "",
           "What each column measures: *step time* — wall time of forward + backward + AdamW step on the trainable "
           "parameters; *peak RSS growth* — `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the timed steps minus "
           "the resident set size just before the first step, with the kernel's peak counter reset (via "
           "`/proc/self/clear_refs`) right before that step so model loading does not count — activations, "
           "gradients, optimizer state *and* allocator slack; *saved for backward* — bytes of the distinct "
           "storages autograd keeps for backward during one step (`torch.autograd.graph.saved_tensors_hooks`), "
           "parameters and buffers excluded — the activation memory proper, independent of the allocator. The "
           "single-adapter baseline trains one adapter + head, so its backward runs through the whole encoder, "
           "as ScaLearn's does. Sources are random-weight adapters saved as `train-source` saves them.", "",
           "Caveat: these configurations ran one after another, so their *time* ratios carry load drift: quote "
           "step-time ratios from the round-robin table above (the summary does). This table is kept for peak RSS, "
           "which needs one process per configuration.", ""]
    rows = [r for r in speed["rows"] if "error" not in r]
    errors = [r for r in speed["rows"] if "error" in r]
    for kind in sorted({r["kind"] for r in rows}):
        single = next((r for r in rows if r["kind"] == kind and r["method"] == "single"), None)
        if single is None:
            continue
        out += [f"#### {kind} sources", "",
                f"Single-adapter baseline: step {single['step_s']:.3f} s ({single['train_examples_per_s']:.1f} "
                f"examples/s), peak RSS growth {human(single['peak_rss_delta'])}B, saved-for-backward "
                f"{human(single['saved_bytes'])}B, {human(single['transfer_parameters'])} trainable adapter "
                "parameters. (Forward latencies were measured here too and are kept in speed.json; quote the "
                "round-robin latency table instead.)", ""]
        ns = sorted({r["n"] for r in rows if r["kind"] == kind and r["n"] >= 1 and r["method"] not in ("single", "bare")})
        for title, field in (("training step time ÷ single adapter", "step_ratio"),
                             ("peak RSS growth ÷ single adapter", "memory_ratio"),
                             ("bytes saved for backward ÷ single adapter", "saved_ratio")):
            out += [f"*{title}*", "", "| Method | " + " | ".join(f"N={n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
            for method, variant in METHODS:
                cells = []
                for n in ns:
                    r = next((x for x in rows if x["kind"] == kind and x["n"] == n and x["method"] == method
                              and x.get("variant") == variant), None)
                    cells.append(fmt(r.get(field)) if r else "–")
                if any(c != "–" for c in cells):
                    out.append(f"| {label(method, variant)} | " + " | ".join(cells) + " |")
            out.append("")
    for r in errors:
        out.append(f"- failed: {r['kind']} {r['method']} {r.get('variant')} N={r['n']}: {r['error']}")
    return out


def spread_cell(r: dict | None, field: str, spread_field: str) -> str:
    """``median [min–max]`` of a per-round ratio, with ⚠ when its IQR is too wide to read."""
    if not r:
        return "–"
    sp = r.get(spread_field)
    if not sp:
        return fmt(r.get(field))
    flag = " ⚠" if r.get("wide_spread") else ""
    return f"{sp['median']:.2f} [{sp['min']:.2f}–{sp['max']:.2f}]{flag}"


def round_robin_section(rr: dict | None) -> list[str]:
    """Training-step ratios and bytes saved for backward, all configurations in one process (steps_round_robin.json)."""
    if not rr:
        return ["*bench/results/steps_round_robin.json not found: run `python bench/speed.py --steps-round-robin`.*"]
    if rr.get("method") != "round-robin" or "step_ratio_spread" not in rr["rows"][0]:
        return ["*bench/results/steps_round_robin.json predates per-round spreads: re-run `python bench/speed.py "
                "--steps-round-robin` (this report does not mix measuring methods).*"]
    rows = rr["rows"]
    ns = sorted({r["n"] for r in rows if not r["method"].startswith("single")})
    m = rr["machine"]
    out = [f"Every configuration built in one process and stepped round-robin (one training step each per round; "
           f"{rr['repeats']} rounds after {rr['warmup']} warm-up round(s), every round kept; **{m['threads']} torch "
           f"thread(s)**, {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}; load average at the end "
           f"{', '.join(f'{x:.1f}' for x in rr.get('load_average_at_end', []))}; finished {rr['finished']}). A ratio "
           "is taken per round (the configuration ÷ its kind's single adapter *in the same round*) and shown as "
           "median [min–max] over the rounds; ⚠ marks a ratio whose interquartile range exceeds "
           f"{100 * rr['wide_spread']:.0f}% of its median (too noisy to read). Baseline: {rr['baseline']}. Memory "
           "is the bytes autograd saves for backward during one step (activation memory proper, deterministic); "
           "peak RSS, which mixes in allocator behaviour, is in the per-subprocess table below.", ""]
    for kind in sorted({r["kind"] for r in rows}):
        single = next(r for r in rows if r["kind"] == kind and r["method"] == "single")
        out += [f"*{kind} sources: training step ÷ single adapter ({single['step_s']:.2f} s median, "
                f"{single['train_examples_per_s']:.1f} examples/s)*", "",
                "| Method | " + " | ".join(f"N={n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
        dropout = next((r for r in rows if r["kind"] == kind and r["method"] == "single-dropout"), None)
        if dropout:
            out.append(f"| single LoRA with dropout 0.1 (train-source's default) | "
                       f"{spread_cell(dropout, 'step_ratio', 'step_ratio_spread')} |" + " |" * (len(ns) - 1))
        for method, variant in METHODS:
            if method == "single":
                continue
            cells = [spread_cell(next((r for r in rows if r["kind"] == kind and r["n"] == n and r["method"] == method
                                       and r.get("variant") == variant), None), "step_ratio", "step_ratio_spread")
                     for n in ns]
            if any(c != "–" for c in cells):
                out.append(f"| {label(method, variant)} | " + " | ".join(cells) + " |")
        out += ["", f"*{kind} sources: bytes saved for backward ÷ single adapter ({human(single['saved_bytes'])}B)*", "",
                "| Method | " + " | ".join(f"N={n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
        if dropout:
            out.append(f"| single LoRA with dropout 0.1 | {dropout['saved_ratio']:.2f} |" + " |" * (len(ns) - 1))
        for method, variant in METHODS:
            if method == "single":
                continue
            cells = [next((f"{r['saved_ratio']:.2f}" for r in rows if r["kind"] == kind and r["n"] == n
                           and r["method"] == method and r.get("variant") == variant), "–") for n in ns]
            if any(c != "–" for c in cells):
                out.append(f"| {label(method, variant)} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def decoder_section(data: dict | None) -> list[str]:
    """The round-robin table over decoder LoRA sources (bench/decoder_speed.py)."""
    if not data:
        return ["*bench/results/decoder_steps.json not found: run `python bench/decoder_speed.py`.*"]
    d = data["decoder"]
    return [f"A random {d['arch']} with {d['layers']} layers × {d['hidden']} hidden (vocabulary {d['vocab']:,}), "
            f"{d['lora']} sources, batch {d['batch']} × {d['seq_len']} tokens — the shape of a decoder a CPU can "
            "step; no pretrained decoder installs here, so this measures cost, not quality.", "",
            *round_robin_section(data),
            *([f"One LoraHub search iteration (set N merge weights, one no-grad forward over a batch of "
               f"{d['batch']} few-shot rows) ÷ one ScaLearn training step at the same N: " + ", ".join(
                  f"N={r['n']}: {r['vs_scalearn_step']:.2f}× ({r['iteration_s'] * 1000:.0f} ms)" for r in data["lorahub"])
               + f"; LoraHub's default budget is {40} iterations."] if data.get("lorahub") else [])]


def loop_section(data: dict | None) -> list[str]:
    """``train.fit`` vs a plain PEFT loop, and a capped run before/after the faster loop (bench/loop.py)."""
    if not data:
        return ["*bench/results/loop.json not found: run `python bench/loop.py`.*"]
    t, c = data["throughput"], data["capped"]
    r = t["ratio"]
    before, now = statistics.median(c["seconds"]["before"]), statistics.median(c["seconds"]["now"])
    return [f"**{data['machine']['threads']} torch thread(s)**, {data['machine']['cpu']}; finished {data['finished']}.", "",
            f"- `train.fit` (the loop of `train-source` and `transfer`) vs a plain PEFT + PyTorch loop on the same "
            f"{t['steps']} batches of 32 (same model, AdamW, linear schedule), alternating, {t['rounds']} rounds: "
            f"examples/s of ours ÷ plain = **{r['median']:.2f}** [{r['min']:.2f}–{r['max']:.2f}] "
            f"({t['ours_examples_per_s']:.1f} vs {t['plain_examples_per_s']:.1f} examples/s), whole calls "
            "(fit's fixed per-call costs included: accelerate's prepare, the initial and final one-row dev "
            "evaluations, the weight snapshots).",
            *([f"- Per step, {t['long_steps']} steps per round, step-level round robin (one plain step inside each "
               "of fit's progress callbacks; fit's step time is the interval between callbacks, so its per-step "
               "bookkeeping counts), the median per round, then the spread over rounds: "
               f"**{t['steady_ratio']['median']:.2f}** [{t['steady_ratio']['min']:.2f}–{t['steady_ratio']['max']:.2f}]."] if "steady_ratio" in t else []),
            f"- `{c['command']}` end to end (load, train, dev after each epoch, test), alternating "
            f"{len(c['seconds']['now'])} runs each: **{c['speedup']:.1f}× faster** than commit `{c['before']}` "
            f"({before:.0f} s → {now:.0f} s median; test accuracy {c['test_accuracy'].get('before', float('nan')):.1f} "
            f"→ {c['test_accuracy'].get('now', float('nan')):.1f}; the dev split is now 10% of the capped pool and "
            "evaluation runs length-sorted in inference mode)."]


def choose_config(configs: dict[tuple, dict[str, dict]], tasks: list[str], incumbent: tuple) -> tuple[tuple, float]:
    """The defaults change only on evidence: keep ``incumbent`` (the library's current defaults) unless another
    configuration's dev mean beats it by more than one standard error; then the best of those.

    SE of the mean over tasks of binomial dev accuracies at the incumbent (sqrt(p(100-p)/n) per task, n = dev
    rows). Returns the chosen key (lr, r, alpha, targets) and the SE.
    """
    def dev_mean(c: tuple) -> float:
        return statistics.mean(configs[c][t]["dev"] for t in tasks)

    base = incumbent if incumbent in configs else max(configs, key=dev_mean)
    per_task = []
    for t in tasks:
        r = configs[base][t]
        n = r.get("dev_examples") or round(r["max_train"] / 0.9) - r["max_train"]
        per_task.append(r["dev"] * (100 - r["dev"]) / n)
    se = math.sqrt(sum(per_task)) / len(tasks)
    better = [c for c in configs if dev_mean(c) > dev_mean(base) + se]
    return (max(better, key=dev_mean) if better else base), se


def sweep_section(rows: list[dict]) -> list[str]:
    """The LoRA-defaults sweep (bench/lora_sweep.py): configurations chosen on dev, test beside it."""
    if not rows:
        return ["*bench/results/lora_sweep.jsonl not found: run `python bench/lora_sweep.py`.*"]
    from scalearn_cli.sources.lora import LoraSettings, LoraKind

    budgets = sorted({(r["max_train"], r["epochs_budget"]) for r in rows}, reverse=True)
    budget = max(budgets, key=lambda b: sum(1 for r in rows if (r["max_train"], r["epochs_budget"]) == b))
    rows = [r for r in rows if (r["max_train"], r["epochs_budget"]) == budget]
    tasks = sorted({r["task"] for r in rows})
    configs: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        configs.setdefault((r["lr"], r["r"], r["alpha"], r["targets"]), {})[r["task"]] = r
    complete = {c: by for c, by in configs.items() if set(by) == set(tasks)}
    default = LoraSettings()
    library = (LoraKind.default_lr, default.r, default.alpha,
               "attention" if not default.target_modules else ",".join(default.target_modules))
    best, se = choose_config(complete, tasks, library) if complete else (None, 0.0)
    m = rows[0]["machine"]
    out = [f"MiniLM-L6 (packaged), {budget[0]} training rows per task (seeded sample; dev = 10% of the pool), "
           f"{budget[1]} epochs, batch 32, max length 128, head pooling `auto` (mean), seed 0, alpha = 2r; the "
           "best epoch by dev loss. Configurations are ranked by the **dev** mean over tasks (test: the official "
           f"validation split, shown, never used to choose). {m['threads']} torch thread(s) per process, "
           f"{m['cpu']}. `attention` = query, value (PEFT's default for BERT); `attention+ffn` = query, key, "
           "value, attention output, intermediate and output dense layers.", "",
           "| lr | r | targets | params | " + " | ".join(f"{t} dev" for t in tasks) + " | dev mean | "
           + " | ".join(f"{t} test" for t in tasks) + " | test mean | best epochs |",
           "|" + "---|" * (2 * len(tasks) + 7)]
    for c in sorted(configs, key=lambda c: (c[3], c[1], c[0])):
        by = configs[c]
        dev = [by[t]["dev"] if t in by else None for t in tasks]
        test = [by[t]["test"] if t in by else None for t in tasks]
        done = all(v is not None for v in dev)
        mark = "**" if c == best else ""
        out.append(f"| {mark}{c[0]:g}{mark} | {c[1]} | {c[3]} | {next(iter(by.values()))['parameters']:,} | "
                   + " | ".join(fmt(v, 1) for v in dev) + f" | {fmt(statistics.mean(dev), 1) if done else '–'} | "
                   + " | ".join(fmt(v, 1) for v in test) + f" | {fmt(statistics.mean(test), 1) if done else '–'} | "
                   + "/".join(str(by[t]["best_epoch"]) if t in by else "–" for t in tasks) + " |")
    if best:
        top = max(complete, key=lambda c: statistics.mean(complete[c][t]["dev"] for t in tasks))
        out += ["", f"Rule: the library's defaults change only on evidence — another configuration must beat their dev "
                f"mean by more than one standard error ({se:.1f} points: the dev sets are small). Best on dev: lr "
                f"{top[0]:g}, r {top[1]}, {top[3]}. Chosen (**bold**): **lr {best[0]:g}, r {best[1]}, alpha "
                f"{best[2]}, {best[3]}**" + (" (the defaults: no configuration beats them by more than one SE)."
                                             if best == library else ".")
                + f" The library's defaults (`LoraKind.default_lr` and `LoraSettings`, the one place they are set; "
                f"`attention` = PEFT's per-architecture default): lr {library[0]:g}, r {library[1]}, alpha "
                f"{library[2]}, {library[3]}"
                + (" — the same." if library == best else " — **they differ from the chosen configuration**.")]
    return out


def latency_section(lat: dict | None) -> list[str]:
    """Inference latency of all models timed round-robin in one process (bench/results/latency.json)."""
    if not lat:
        return ["*bench/results/latency.json not found: run `python bench/speed.py --latency-only`.*"]
    rows = lat["rows"]
    bare = next(r for r in rows if r["method"] == "bare")
    ns = sorted({r["n"] for r in rows if r["method"] not in ("bare", "single")})
    out = [f"All models built in one process and timed round-robin (forward, eval mode, no grad; "
           f"{lat['repeats']} rounds after {lat['warmup']} warm-up rounds, every round kept, ratio per round shown "
           f"as median [min–max]; **{lat['machine']['threads']} torch thread(s)**, batch {lat['batch']} × "
           f"{lat['seq_len']}; finished {lat['finished']}), so load drift hits every model alike. Bare encoder + "
           f"head: {bare['infer_s'] * 1000:.0f} ms. LoRA compositions in eval mode run W + ΔW (ω folded lazily, "
           "cached until it changes), so their unfolded inference costs what the bare model's does.", "",
           "| Kind | Method | single ÷ bare | " + " | ".join(f"N={n} ÷ bare (÷ single)" for n in ns) + " |",
           "|" + "---|" * (len(ns) + 3)]
    for kind in sorted({r["kind"] for r in rows if r["method"] != "bare"}):
        single = next(r for r in rows if r["kind"] == kind and r["method"] == "single")
        for method, variant in (("scalearn", "scalearn"), ("adapterfusion", None), ("merged", None)):
            if not any(x["kind"] == kind and x["method"] == method for x in rows):
                continue
            cells = []
            for n in ns:
                r = next((x for x in rows if x["kind"] == kind and x["method"] == method and x["n"] == n), None)
                cells.append(f"{spread_cell(r, 'infer_vs_bare', 'infer_vs_bare_spread')} ({r['infer_vs_single']:.2f})"
                             if r else "–")
            out.append(f"| {kind} | {label(method, variant)} | {single['infer_vs_bare']:.2f} | " + " | ".join(cells) + " |")
    return out


def throughput_section(rows: list[dict]) -> list[str]:
    """End-to-end examples/s of the quality runs (training loop incl. per-epoch dev evaluation, shared machine)."""
    by = defaultdict(list)
    for r in rows:
        if r["stage"] in ("source", "transfer") and r["wall_seconds"] > 0:
            name = "source training" if r["stage"] == "source" else f"transfer: {label(r['method'], r['variant'])}"
            by[(name, r["kind"])].append(r["examples_per_second"])
    out = ["| Run | Kind | median examples/s | runs |", "|---|---|---|---|"]
    for (name, kind), v in sorted(by.items()):
        out.append(f"| {name} | {kind} | {statistics.median(v):.1f} | {len(v)} |")
    return out


def peer_section(peer: dict | None, speed: dict | None, rr: dict | None) -> list[str]:
    if not peer:
        return ["*bench/results/peer.json not found: the peer comparison was not run (see bench/README.md).*"]
    if "error" in peer:
        return [f"The `adapters` library could not be measured here: {peer['error']}"]
    if peer.get("method") != "round-robin" or (rr or {}).get("method") != "round-robin":
        return ["*peer.json and steps_round_robin.json were not measured the same way (both must be round-robin in "
                "one process, every round kept): re-run them; this report does not put ratios of different "
                "methods side by side.*"]
    out = [f"`adapters` {peer['versions'].get('adapters')} with transformers {peer['versions'].get('transformers')}, "
           f"torch {peer['versions'].get('torch')}; {peer['setup']} **{peer['machine']['threads']} torch thread(s)**; "
           f"finished {peer.get('finished')}.", "",
           "| Configuration | N | step (s) | step ÷ its own single [min–max] | saved for backward ÷ its own single |",
           "|---|---|---|---|---|"]
    for r in peer["rows"]:
        out.append(f"| {r['name']} | {r['n']} | {r['step_s']:.3f} | {spread_cell(r, 'step_ratio', 'step_ratio_spread')} "
                   f"| {r['saved_ratio']:.2f} |")
    ours = {(r["method"], r.get("variant"), r["n"]): r for r in rr["rows"] if r["kind"] == "bottleneck"}
    out += ["", "Side by side with ours (bottleneck sources; both measured round-robin in one process, each ÷ its own "
            "single adapter):", "",
            "| N | `adapters` fusion step | our fusion step | our ScaLearn step | `adapters` fusion memory | "
            "our fusion memory | our ScaLearn memory |", "|---|---|---|---|---|---|---|"]
    for r in peer["rows"]:
        if r.get("method") != "fusion":
            continue
        af, sl = ours.get(("adapterfusion", None, r["n"])), ours.get(("scalearn", "scalearn", r["n"]))
        out.append(f"| {r['n']} | {spread_cell(r, 'step_ratio', 'step_ratio_spread')} | "
                   f"{spread_cell(af, 'step_ratio', 'step_ratio_spread')} | "
                   f"{spread_cell(sl, 'step_ratio', 'step_ratio_spread')} | {r['saved_ratio']:.2f} | "
                   f"{fmt((af or {}).get('saved_ratio'))} | {fmt((sl or {}).get('saved_ratio'))} |")
    return out


def peer_summary(data: dict | None) -> list[str]:
    """One headline line: the `adapters` library's fusion vs ours on the same sources (peer_score.json)."""
    rows = [r for r in (data or {}).get("rows", []) if r["ours"].get("adapterfusion")]
    if not rows:
        return []
    peer = statistics.mean(r["main_score"] for r in rows)
    ours = statistics.mean(r["ours"]["adapterfusion"]["main_score"] for r in rows)
    scalearn = [r["ours"]["scalearn"]["main_score"] for r in rows if "scalearn" in r["ours"]]
    tail = f", our ScaLearn {statistics.mean(scalearn):.1f}" if len(scalearn) == len(rows) else ""
    return [f"- **Peer on the same bottleneck sources and data** ({len(rows)} targets, seed 0, mean main score): the "
            f"`adapters` library's AdapterFusion {peer:.1f}, our AdapterFusion {ours:.1f}{tail} (details under *Peer*)."]


def peer_score_section(data: dict | None, run: str) -> list[str]:
    """``adapters``' AdapterFusion over our converted bottleneck sources (bench/results/<run>/peer_score.json)."""
    if not data or not data.get("rows"):
        return [f"*bench/results/{run}/peer_score.json not found: run `python bench/peer_score.py --run {run}`.*"]
    rows = sorted(data["rows"], key=lambda r: r["target"])
    v = data["versions"]
    first = rows[0]
    out = [f"`adapters` {v.get('adapters')} (transformers {v.get('transformers')}) trains its own AdapterFusion over "
           f"this run's seed-0 bottleneck sources (all {len(first['sources'])}: {', '.join(sorted(first['sources']))}; "
           "the target's own first, as in our runs), converted "
           "into its `seq_bn` modules, on the same capped data and batches, with the run's fusion lr "
           f"{first['lr']:g}, {first['epochs']} epochs and our head and model selection (best dev-loss epoch). "
           "*Parity*: max |difference| between its encoder output and ours with the first source alone (the "
           "conversion is exact up to float rounding when it is ~1e-6). Our rows are the same run's seed-0 "
           f"bottleneck transfers. One seed; {data['machine'].get('threads')} torch thread(s).", "",
           "| Target | `adapters` AdapterFusion | our AdapterFusion | our ScaLearn | our ScaLearnUniform | our ScaLearn++ "
           "| our ScaLearnUniform++ | single adapter | `adapters` fusion params | our fusion params | parity |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = r["ours"]
        cells = [fmt(ours.get(m, {}).get("main_score"), 1) for m in
                 ("adapterfusion", "scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++", "single")]
        out.append(f"| {r['target']} | {fmt(r['main_score'], 1)} | {' | '.join(cells)} | {r['transfer_parameters']:,} | "
                   f"{(ours.get('adapterfusion', {}).get('parameters') or 0):,} | {r['parity_max_abs_diff']:.1e} |")
    both = [r for r in rows if r["ours"].get("adapterfusion")]
    if both:
        diff = [r["main_score"] - r["ours"]["adapterfusion"]["main_score"] for r in both]
        out += ["", f"The library's fusion minus ours: mean {statistics.mean(diff):+.1f} points over {len(diff)} "
                f"targets (range {min(diff):+.1f} … {max(diff):+.1f}); its median step here was "
                f"{statistics.median(r['step_s_median'] for r in rows):.2f} s for "
                f"{len(first['sources'])} sources.",
                "", "Both implementations train the same number of fusion parameters. Where this run's rows sit near "
                "the majority-class predictor (see the signal check above), the differences between the two fusions are "
                "noise, not evidence of which implementation is better."]
    return out


# ------------------------------------------------------------------------------------------------ document


def train_sizes(rows: list[dict]) -> str:
    sizes = {r["target"]: r["train_examples"] for r in rows if r["stage"] == "source" and r["seed"] == 0}
    return ", ".join(f"{t} {n:,}" for t, n in sorted(sizes.items())) or "no source finished yet"


def cap_text(cap: int) -> str:
    return "at all its rows" if not cap else f"capped at **{cap}** examples"


def lora_default_lr() -> float:
    from scalearn_cli.sources.lora import LoraKind

    return LoraKind.default_lr


def config_section(config: dict, rows: list[dict]) -> list[str]:
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
        + (f", except {', '.join(f'{t} {cap_text(int(c))}' for t, c in (i.split('=') for i in config['source_caps'].split(',')))}"
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
        f"sources, target's own included): {'up to ' if config.get('patience') else ''}{config['epochs']} epochs; lr {config['scalearn_lr']:g} for ScaLearn "
        f"and the average, {config['fusion_lr']:g} for AdapterFusion (the paper's)"
        + (f", plus AdapterFusion at {config['fusion_tuned_lr']:g} (labelled *tuned lr*)" if config.get("fusion_tuned_lr") else "")
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
        "`--job-*` filters) and interrupted runs were resumed, so wall times and examples/s carry that load. Invocations started "
        f"{', '.join(config['started'])} (UTC); {len(rows)} finished runs in `results.jsonl` "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(n_stage.items()))}).",
        f"- Accelerator: {m['gpu']}." if m.get("gpu") else "- Accelerator: none (CPU only). The full-size protocol "
        "(bench/README.md, *Full scale elsewhere*) is meant for a GPU machine, which this run did not have.",
    ]


def paper_section(paper: dict, targets: list[str]) -> list[str]:
    glue = paper.get("glue", {})
    if not glue:
        return ["*The paper's table was not found (SCALEARN.md).*"]
    cols = [PAPER_COL[t] for t in targets if t in PAPER_COL]
    out = [f"From {paper['source']}; only the columns of our targets, and their average:", "",
           "| Method | " + " | ".join(cols) + " | Avg (these) |", "|" + "---|" * (len(cols) + 2)]
    for name, scores in glue.items():
        vals = [scores[c] for c in cols]
        out.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {statistics.mean(vals):.2f} |")
    return out


def paper_ordering(paper: dict, targets: list[str]) -> list[str]:
    """Where ScaLearn ≥ AdapterFusion ≥ Adapter holds in the paper's own table (our targets' columns)."""
    glue = paper.get("glue", {})
    if not all(k in glue for k in ("ScaLearn", "AdapterFusion", "Adapter")):
        return []
    parts = []
    for t in targets:
        col = PAPER_COL.get(t)
        if col is None:
            continue
        sl, af, ad = glue["ScaLearn"][col], glue["AdapterFusion"][col], glue["Adapter"][col]
        best = max(v[col] for k, v in glue.items() if k.startswith("ScaLearn"))
        parts.append(f"{col}: ScaLearn − Adapter {sl - ad:+.2f}, AdapterFusion − Adapter {af - ad:+.2f}, best ScaLearn "
                     f"variant − AdapterFusion {best - af:+.2f} ({'holds' if sl >= af >= ad else 'does not hold'} for "
                     "plain ScaLearn)")
    return ["The paper's ordering ScaLearn ≥ AdapterFusion ≥ single adapter, column by column: " + "; ".join(parts)
            + ". The gains over a single adapter are largest on the small targets."]


def count_ge(a: dict, b: dict, targets: list[str]) -> tuple[list[str], list[str]]:
    """(targets where a ≥ b, targets where both have a score), from two {target: seed mean} maps."""
    cells = [t for t in targets if a.get(t) is not None and b.get(t) is not None]
    return [t for t in cells if a[t] >= b[t]], cells


def agreement_summary(means_by_kind: dict, targets: list[str], small: list[str]) -> list[str]:
    """Counts of (kind, target) cells where the paper's ordering holds, generated from the seed means."""
    out = []
    for kind, means in means_by_kind.items():
        sl, af, single = (means.get(k, {}) for k in (("scalearn", "scalearn"), ("adapterfusion", None), ("single", None)))
        checks = {"ScaLearn ≥ AdapterFusion": (sl, af), "AdapterFusion ≥ single adapter": (af, single),
                  "ScaLearn ≥ single adapter": (sl, single)}
        tuned = means.get(("adapterfusion-tuned", None), {})
        if tuned:
            checks["ScaLearn ≥ AdapterFusion at the tuned lr"] = (sl, tuned)
        parts = []
        for name, (a, b) in checks.items():
            held, cells = count_ge(a, b, targets)
            small_cells = [t for t in cells if t in small]
            parts.append(f"{name} on {len(held)}/{len(cells)} targets "
                         f"({len([t for t in held if t in small])}/{len(small_cells)} small ones)")
        out.append(f"- **{kind}**: " + "; ".join(parts) + ".")
        common = [t for t in targets if all(m.get(t) is not None for m in (sl, af, single, *([tuned] if tuned else [])))]
        if common and len(common) > 1:
            avg = {name: statistics.mean(m[t] for t in common) for name, m in
                   (("ScaLearn", sl), ("AdapterFusion", af), ("single adapter", single),
                    *((("AdapterFusion at the tuned lr", tuned),) if tuned else ()))}
            ranked = sorted(avg.items(), key=lambda kv: -kv[1])
            out.append(f"  Mean over {', '.join(common)}: " + " > ".join(f"{n} {v:.2f}" for n, v in ranked)
                       + " (the paper's GLUE average: ScaLearn > AdapterFusion > adapter).")
    return out


def summary(rows: list[dict], speed: dict | None, rr: dict | None, lat: dict | None, majority: dict,
            means_by_kind: dict, targets: list[str]) -> list[str]:
    """Headline numbers, each read from the result files."""
    out = []

    def pick(table: dict | None, kind: str, method: str, n: int, field: str, variant: str | None = None):
        for r in (table or {}).get("rows", []):
            if r["kind"] == kind and r["method"] == method and r["n"] == n and r.get(field) is not None and \
                    (variant is None or r.get("variant") == variant):
                return r[field]
        return None

    for kind in ("bottleneck", "lora"):
        n = max((r["n"] for r in (rr or {}).get("rows", []) if r["kind"] == kind), default=None)
        if n is None:
            continue
        out.append(
            f"- **{kind}, N = {n} sources vs one adapter:** ScaLearn training step "
            f"{fmt(pick(rr, kind, 'scalearn', n, 'step_ratio', 'scalearn'))}×, AdapterFusion "
            f"{fmt(pick(rr, kind, 'adapterfusion', n, 'step_ratio'))}× (medians of per-round ratios, "
            f"{(rr or {}).get('machine', {}).get('threads')} thread(s)); bytes saved for backward ScaLearn "
            f"{fmt(pick(rr, kind, 'scalearn', n, 'saved_ratio', 'scalearn'))}×, AdapterFusion "
            f"{fmt(pick(rr, kind, 'adapterfusion', n, 'saved_ratio'))}× (peak RSS growth: "
            f"{fmt(pick(speed, kind, 'scalearn', n, 'memory_ratio', 'scalearn'))}×, "
            f"{fmt(pick(speed, kind, 'adapterfusion', n, 'memory_ratio'))}×); inference vs bare encoder ScaLearn "
            f"{fmt(pick(lat, kind, 'scalearn', n, 'infer_vs_bare'))}×, AdapterFusion "
            f"{fmt(pick(lat, kind, 'adapterfusion', n, 'infer_vs_bare'))}×.")
    near, total = near_majority(rows, majority, "transfer")
    held, cells = 0, 0
    for means in means_by_kind.values():
        sl, af, single = (means.get(k, {}) for k in (("scalearn", "scalearn"), ("adapterfusion", None), ("single", None)))
        for t in targets:
            if None not in (sl.get(t), af.get(t), single.get(t)):
                cells += 1
                held += sl[t] >= af[t] >= single[t]
    tuned_held, tuned_cells = 0, 0
    for means in means_by_kind.values():
        held_t, cells_t = count_ge(means.get(("scalearn", "scalearn"), {}), means.get(("adapterfusion-tuned", None), {}),
                                   targets)
        tuned_held, tuned_cells = tuned_held + len(held_t), tuned_cells + len(cells_t)
    noisy = total and near / total >= 0.3
    out.append(f"- **Quality:** the paper's full ordering ScaLearn ≥ AdapterFusion ≥ single adapter holds on {held} of "
               f"{cells} (target, kind) pairs with all three; {near} of {total} seed-0 transfer runs score within 2 "
               "points of the majority-class predictor. "
               + ("At this CPU scale the quality numbers are mostly noise around that baseline (reasons below), so "
                  "they neither confirm nor refute the paper." if noisy else
                  "Compare the gaps with the ± seed standard deviations in the quality table before reading an "
                  "ordering into them; why this scale can differ from the paper is discussed below.")
               + (f" Against AdapterFusion at the tuned lr instead of the paper's, ScaLearn ≥ AdapterFusion holds on "
                  f"{tuned_held} of {tuned_cells}." if tuned_cells else ""))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", default=None, help="results folder under bench/results (default: default, else quick)")
    p.add_argument("--reference", type=Path, default=REPO.parent / "shared" / "reference" / "SCALEARN.md")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--speed", type=Path, default=RESULTS / "speed.json")
    p.add_argument("--compare-run", action="append", default=[],
                   help="another run under bench/results (e.g. the same plan with --pooling mean, or a protocol check "
                        "made with --sources-from): rows side by side; repeat for several")
    p.add_argument("--all", action="store_true", help="regenerate every committed doc of DOCS (docs/benchmarks*.md)")
    p.add_argument("--check", action="store_true", help="with --all: regenerate into a temporary folder and fail if a "
                   "committed doc differs (edited by hand, or behind its results)")
    args = p.parse_args(argv)
    if args.check and not args.all:
        p.error("--check goes with --all (it checks every committed doc)")
    if not args.all:
        _, n_rows, run_dir = render(args.run, args.out, args.speed, args.reference, args.compare_run)
        print(f"wrote {args.out} ({n_rows} result rows from {run_dir})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for name, (run, compare) in DOCS.items():
            out = (Path(tmp) if args.check else DOC_DIR) / name
            text, n_rows, run_dir = render(run, out, args.speed, args.reference, compare)
            committed = DOC_DIR / name
            if args.check and (not committed.is_file() or committed.read_text() != text):
                stale.append(name)
            print(f"{'checked' if args.check else 'wrote'} docs/{name} ({n_rows} result rows from {run_dir.name})")
    if stale:
        sys.exit(f"docs/{', docs/'.join(stale)} differ from what bench/report.py makes of bench/results/: "
                 "run `python bench/report.py --all` and commit the docs with their results")


def render(run: str | None, out: Path, speed: Path, reference: Path, compare_runs: list[str]) -> tuple[str, int, Path]:
    """Write the report of one run to ``out`` (figures beside it, under figures/); returns (text, rows, run folder)."""
    global FIGURES, FIGURE_LINK
    # docs/benchmarks.md keeps docs/figures/; another doc (e.g. a second run) gets docs/figures/<its name>/
    sub = "" if out.stem == "benchmarks" else f"{out.stem}/"
    FIGURES = out.resolve().parent / "figures" / sub
    FIGURE_LINK = f"figures/{sub}"
    speed = speed.resolve()
    run = run or ("default" if (RESULTS / "default" / "results.jsonl").is_file() else "quick")
    run_dir = Path(run) if Path(run).is_dir() else RESULTS / run
    config = read_json(run_dir / "config.json")
    if config is None:
        sys.exit(f"{run_dir}/config.json not found: run bench/quality.py first")
    rows = list({quality.row_key(r): r
                 for r in reversed(read_jsonl(run_dir / "results.jsonl"))}.values())[::-1]  # one row per run key
    majority = read_json(run_dir / "majority.json") or {}
    paper = paper_tables(reference)
    targets = config["targets"].split(",")
    small = config["multi_seed_targets"].split(",")
    g = group(rows, "transfer")
    means_by_kind = {kind: quality_table(g, kind, targets, majority)[1] for kind in config["kinds"].split(",")}
    doc = ["# Benchmarks", "",
           f"*Generated by `bench/report.py` from `bench/results/{run_dir.name}/` and `bench/results/{speed.name}`, "
           "`peer.json`, `paper.json`; do not edit by "
           "hand — re-run `python bench/report.py --all` (after new results) or `bench/run_all.sh`.*", "",
           "Two questions, following the paper's protocol (Frohmann et al., arXiv 2310.01217) at a scale a 2-core "
           "CPU can run: does ScaLearn order against its baselines as in the paper, and what does it cost in step "
           "time and memory?", "", "## Summary", "",
           *summary(rows, read_json(speed), read_json(speed.with_name("steps_round_robin.json")),
                    read_json(speed.with_name("latency.json")), majority, means_by_kind, targets),
           *question_answer(g, rows, config["kinds"].split(","), targets, majority),
           *peer_summary(read_json(run_dir / "peer_score.json")), "",
           "## Configuration that produced these numbers", "", *config_section(config, rows), "",
           "## Reference: the paper's numbers", "", *paper_section(paper, targets), "",
           *paper_ordering(paper, targets), "",
           "## Stage 1: the source adapters", "",
           "Seed-0 sources on their own task's (capped) test split (majority: the constant predictor on the same "
           "rows; STS-B: the train mean). These are what every composition below combines. Issue 12's bar: every "
           "classification source at least 10 points above its majority baseline, STS-B Pearson at least 0.80.", "",
           *source_table(rows, majority, config["batch_size"]), *retrained_sources(run_dir), *kept_sources(run_dir), "",
           "## Quality: target × method", "",
           "Main metric ×100 on the (capped) test split: CoLA Matthews correlation, STS-B Pearson, accuracy "
           "otherwise. Cells are mean ± standard deviation (number of seeds) when there is more than one seed. "
           "*Transfer params* counts what stage 2 trains besides the head (the single adapter row: the adapter "
           "itself). *Avg* is the GLUE-style unweighted mean over targets (shown only when every target has a "
           "score).", ""]
    for kind in config["kinds"].split(","):
        table, means = quality_table(g, kind, targets, majority)
        doc += [f"### {kind} sources", "", *table, "", "Does the paper's ordering hold (seed means)?", "",
                *ordering_table(means, targets), "",
                "Is each gap larger than seed noise? Mean over seeds of one method minus another's, the standard "
                "error of that difference, and Welch's t-test (two-sided; \"beyond seed noise\" at p < 0.05). With "
                "three seeds a test only detects gaps of a few standard deviations: \"within seed noise\" means not "
                "shown, not shown equal; with fewer than three seeds of either method no verdict is given. The "
                "single adapter's seeds retrain the adapter; a transfer's seeds retrain ω (or the fusion layers) and "
                "the head on the same seed-0 sources.", "",
                *noise_table(g, kind, targets), ""]
    figure = plot_score_vs_params(means_by_kind, g["params"], targets, majority)
    if figure:
        doc += ["### Score vs transfer parameters", "", f"![score vs transfer parameters]({FIGURE_LINK}{figure})", ""]
    doc += ["## Few-shot", "", "Main metric on the capped test split; the target's own adapter is trained on the "
            "same k examples.", "", *few_shot_table(rows, majority), "", *few_shot_runs(rows), "", *few_shot_noise(rows, majority), ""]
    heatmaps = plot_omega(run_dir)
    if heatmaps:
        doc += ["## ω: which sources each layer uses", "",
                "ω per layer (rows) and source (columns) of the seed-0 compositions: ScaLearnUniform's scalars as "
                "learned, ScaLearn's vectors as mean |ω| over hidden units; for LoRA sources the layer's query and "
                "value sites are averaged; the target's own adapter is the first column; ω starts at 2/N. "
                "Read from the saved `omega.safetensors` (copied to `bench/results/<run>/omega/`).", ""]
        doc += [f"![ω {stem}]({FIGURE_LINK}{name})" for stem, name in heatmaps] + [""]
        doc += ["Mean relative distance of the learned ω from its initialisation 2/N: "
                + "; ".join(omega_drift(run_dir)) + ".", "",
                "Per-source shares of Σ|ω| (all layers; a source's vector ω as its mean |ω|): does a target lean on "
                "some sources — e.g. RTE on the NLI ones, as the paper's analysis shows? The last column sets the "
                "other NLI sources' summed share beside what a uniform ω would give them.", "",
                *omega_shares(run_dir), ""]
    doc += ["## Comparison with the paper", "", *agreement_summary(means_by_kind, targets, small), "",
            *discussion(config, rows, majority, run_dir), ""]
    compared = {other: compare_section(run_dir.name, config, rows, other) for other in compare_runs}
    checks = [summary for _, summary in compared.values() if summary]
    if checks:
        doc += ["**Other runs on this run's rows** (the sections below; a run made with `--sources-from` composes the "
                "same trained sources with one option changed): " + "; ".join(checks) + ".", ""]
    for other, (lines, _) in compared.items():
        doc += [f"## Compared with the `{other}` run", "", *lines, ""]
    missing = missing_rows(config, rows)
    doc += ["## Missing from this run", ""] + (missing or ["Nothing: every planned run finished."]) + [""]
    if missing:
        doc += ["These planned runs were not started before the session's deadline (CPU time on the shared machine). "
                "Re-running `bench/quality.py` with the same flags resumes exactly them: finished rows are skipped.", ""]
    doc += ["## Speed and memory", "", "### Training step time, measured round-robin", "",
            *round_robin_section(read_json(speed.with_name("steps_round_robin.json"))), "",
            "### Decoder LoRAs (random Llama), measured round-robin", "",
            *decoder_section(read_json(speed.with_name("decoder_steps.json"))), "",
            "### The training loop against a plain PEFT + PyTorch loop", "",
            *loop_section(read_json(speed.with_name("loop.json"))), "",
            "### Per-configuration subprocesses (memory; time as measured in sequence)", "",
            *speed_section(read_json(speed)), "",
            "#### Inference latency, measured round-robin", "", *latency_section(read_json(speed.with_name("latency.json"))), "",
            "#### End-to-end throughput of the quality runs", "",
            "Examples per second over each training loop of the run above (includes the per-epoch dev evaluation "
            "and the machine's other load; the ratios above are the controlled measurement).", "",
            *throughput_section(rows), "", "## Peer: the `adapters` library's AdapterFusion", "",
            *peer_section(read_json(speed.with_name("peer.json")), read_json(speed),
                          read_json(speed.with_name("steps_round_robin.json"))), "",
            "### Score on the same sources and data", "",
            *(peer_score_section(read_json(run_dir / "peer_score.json"), run_dir.name)
              if "bottleneck" in config["kinds"].split(",") else
              ["This run has no bottleneck sources, which is what the `adapters` library's fusion composes; its score "
               "on the same sources is in the default run's report ([benchmarks.md](benchmarks.md))."]), ""]
    doc += ["## LoRA defaults: the sweep", "", *sweep_section(read_jsonl(RESULTS / "lora_sweep.jsonl")), ""]
    doc += ["## Sparsity (`transfer --sparsity λ`) and pruning", "",
            *sparsity_section(read_json(speed.with_name("sparsity.json"))), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(doc)
    out.write_text(text)
    return text, len(rows), run_dir


def compare_section(name: str, config: dict, rows: list[dict], other_name: str) -> tuple[list[str], str | None]:
    """Two runs' scores side by side for the run keys both finished (every seed), then the mean difference per
    method: a protocol check (e.g. the same sources and seeds with early stopping off) reads off the last table.
    Also returns a one-line summary of the transfer differences (None when the runs share no transfer row)."""
    other_dir = RESULTS / other_name
    other_config = read_json(other_dir / "config.json")
    if other_config is None:
        return [f"*bench/results/{other_name}/config.json not found.*"], None
    other = {quality.row_key(r): r for r in read_jsonl(other_dir / "results.jsonl")}
    # scheduling and storage options change no score; few-shot options only matter where the other run has few-shot
    few_shot = any(r["stage"] == "few-shot" for r in other.values())
    differs = {k: (config.get(k), other_config.get(k)) for k in sorted(set(config) | set(other_config))
               if k not in ("started", "machine", "out", "work", "deadline", "fit_deadline", "stages", "job_seeds",
                            "job_targets", "job_kinds", "job_methods", "threads", "shard", "shard_index", "shard_count", "sources_from", "keep_sources",
                            "publish_sources", "targets", "extra_sources", "methods", "seeds", "multi_seed_targets",
                            "fusion_tuned_lr")
               and (few_shot or not k.startswith("few_shot_")) and config.get(k) != other_config.get(k)}
    # a check run's --targets/--extra-sources only re-list the same tasks, unless it composes fewer sources
    counts = [sorted({r["n_sources"] for r in rs if r["stage"] != "source" and r["method"] != "single"})
              for rs in (rows, other.values())]
    if counts[1] and counts[0] != counts[1]:
        differs["sources composed"] = tuple(", ".join(map(str, c)) or "–" for c in counts)
    setting = "; ".join(f"`{k}` {a} here, {b} there" for k, (a, b) in differs.items()) or "no option differs"
    borrowed = (f" The `{other_name}` run composed this run's own trained sources (`--sources-from`), so only the "
                "options above differ." if other_config.get("sources_from") else "")
    out = [f"Options that differ: {setting}.{borrowed} Main scores of the rows both runs finished; *best epoch* is "
           "the epoch whose dev loss was kept (of the epochs run).", "",
           f"| Stage | Target | Kind | Method | Seed | {name} | best epoch | {other_name} | best epoch | difference |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    diffs: dict[str, list[float]] = {}
    for r in rows:
        if r.get("k") or quality.row_key(r) not in other:
            continue
        o = other[quality.row_key(r)]
        method = label(r["method"], r.get("variant"))
        diffs.setdefault(f"{r['stage']} · {r['target']} · {method}", []).append(o["main_score"] - r["main_score"])
        out.append(f"| {r['stage']} | {r['target']} | {r['kind']} | {method} | {r['seed']} | {r['main_score']:.2f} | "
                   f"{epochs_run(r, config['batch_size'])} | {o['main_score']:.2f} | "
                   f"{epochs_run(o, other_config['batch_size'])} | {o['main_score'] - r['main_score']:+.2f} |")
    if diffs:
        out += ["", f"Mean difference ({other_name} − {name}) over the seeds both runs have:", "",
                "| Stage · target · method | seeds | mean difference | min | max |", "|---|---|---|---|---|"]
        out += [f"| {key} | {len(d)} | {statistics.fmean(d):+.2f} | {min(d):+.2f} | {max(d):+.2f} |"
                for key, d in diffs.items()]
    moved = [f"{key.removeprefix('transfer · ')} {statistics.fmean(d):+.2f} ({len(d)} seed{'s' if len(d) > 1 else ''}, "
             f"{min(d):+.2f} to {max(d):+.2f})" for key, d in diffs.items() if key.startswith("transfer · ")]
    off = lambda k, v: "off" if "patience" in k and not v else v  # noqa: E731  (patience 0: no early stopping)
    change = ", ".join(f"`{k}` {off(k, a)} → {off(k, b)}" for k, (a, b) in differs.items()) or "no option changed"
    summary = f"`{other_name}` ({change}): " + ", ".join(moved) if moved else None
    return out, summary


def epochs_done(row: dict, batch_size: int) -> int | None:
    """Epochs a run trained before it stopped (steps per epoch from the train size and batch size)."""
    per_epoch = math.ceil(row["train_examples"] / batch_size) if row.get("train_examples") else 0
    return round(row["steps"] / per_epoch) if per_epoch and row.get("steps") else None


def epochs_run(row: dict, batch_size: int) -> str:
    """'best of run' epochs, e.g. '3 of 6'."""
    run = epochs_done(row, batch_size)
    return f"{row['best_epoch']} of {run}" if run else str(row.get("best_epoch", "–"))


def sparsity_section(data: dict | None) -> list[str]:
    """The group-lasso penalty's effect on ω's concentration and on pruning (bench/results/sparsity.json)."""
    if not data:
        return ["*bench/results/sparsity.json not found: run `python bench/sparsity.py`.*"]
    rows = data["rows"]
    first = rows[0]
    out = [f"ScaLearnUniform over the `{data['run']}` run's seed-0 {first['kind']} sources for target "
           f"`{first['target']}` ({', '.join(first['sources'])}; the target's own first), trained with a group-lasso "
           f"penalty λ·Σ_i ||ω_i||₂ on each source's ω, then `prune --keep {first['keep']}` and a brief refit. "
           f"*Top share*: the largest source's share of Σ|ω| (1/N = {1 / len(first['sources']):.2f} is uniform). "
           f"Finished {data['finished']}.", "",
           f"| λ | {first['metric']} before | after pruning | top share | shares | kept |", "|---|---|---|---|---|---|"]
    for r in rows:
        shares = " / ".join(f"{v:.2f}" for v in r["shares"])
        out.append(f"| {r['lambda']:g} | {fmt(r['score'])} | {fmt(r['pruned_score'])} | {max(r['shares']):.2f} | "
                   f"{shares} | {', '.join(r['kept'])} |")
    return out


def near_majority(rows: list[dict], majority: dict, stage: str, margin: float = 2.0) -> tuple[int, int]:
    """How many seed-0 runs of ``stage`` on targets score within ``margin`` points of the constant predictor."""
    runs = [r for r in rows if r["stage"] == stage and r["seed"] == 0 and r["target"] in majority and not r.get("k")]
    near = [r for r in runs if abs(r["main_score"] - majority[r["target"]]["main_score"]) <= margin]
    return len(near), len(runs)


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
        f"- **Test sets.** At most {config['test_max']} test rows; on {smallest[0]} ({smallest[1]} rows) one example is "
        f"{100 / smallest[1]:.2f} points, so differences of a few points between methods are within seed noise; the "
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


if __name__ == "__main__":
    main()
