"""The quality sections of bench/report.py: target × method tables, the paper's ordering, gaps against seed noise
(Welch's and paired t-tests), few-shot tables, and the score-vs-parameters figure."""

from __future__ import annotations

import statistics
import warnings
from collections import defaultdict
from pathlib import Path

from bench.report_common import FEW_SHOT_METHODS, METHODS, PAPER_COL, fmt, human, label, mean_std


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
    metric = {t: majority.get(t, {}).get("main_metric", "") for t in targets}
    head = ["Method", "Transfer params", *[f"{t} ({metric[t]})" for t in targets], "Avg"]
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


# --------------------------------------------------------------------------------------------------------- seed noise


SCALEARN = ("scalearn", "scalearn")
NOISE_PAIRS = [(SCALEARN, ("single", None)), (SCALEARN, ("average", None)), (SCALEARN, ("adapterfusion", None)),
               (SCALEARN, ("adapterfusion-tuned", None)), (("adapterfusion", None), ("single", None)),
               (("adapterfusion-tuned", None), ("single", None))]


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
            diffs = [score[(t, kind, k, "scalearn", variant, s)] - score[(t, kind, k, "single", None, s)]
                     for s in seeds]
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
                *(f"| {t} | {kind} | {k} | {label('scalearn', v)} − {label('single', None)} | {gap:+.2f} | "
                  f"{se:.2f} | {p:.3f} | {n} | {noise_verdict(gap, p, n, '3 needed')} |"
                  for t, kind, k, v, gap, se, p, n in gaps)]
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
    """The question in one bullet: ScaLearn against the single adapter and against AdapterFusion, per target
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
            out.append(f"| {t} | {label(*a)} − {label(*b)} | {gap:+.2f} | {se:.2f} | {p:.3f} | "
                       f"{len(xa)} / {len(xb)} | {verdict} |")
    if len(out) == 2:
        return ["*No target has two or more seeds of both methods of a pair yet.*"]
    return out


# ----------------------------------------------------------------------------------------------------------- few-shot


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
    return (f"{'up to ' if patience else ''}{config['few_shot_steps']} steps per run (an epoch is ⌈k/32⌉ steps), "
            f"{kept}{stop}{paper}")


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


# ---------------------------------------------------------------------------------------------------------- the paper


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
        holds = "holds" if sl >= af >= ad else "does not hold"
        parts.append(f"{col}: ScaLearn − Adapter {sl - ad:+.2f}, AdapterFusion − Adapter {af - ad:+.2f}, best "
                     f"ScaLearn variant − AdapterFusion {best - af:+.2f} ({holds} for plain ScaLearn)")
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
        sl, af, single = (means.get(k, {}) for k in (SCALEARN, ("adapterfusion", None), ("single", None)))
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
        compared = (sl, af, single, *([tuned] if tuned else []))
        common = [t for t in targets if all(m.get(t) is not None for m in compared)]
        if common and len(common) > 1:
            avg = {name: statistics.mean(m[t] for t in common) for name, m in
                   (("ScaLearn", sl), ("AdapterFusion", af), ("single adapter", single),
                    *((("AdapterFusion at the tuned lr", tuned),) if tuned else ()))}
            ranked = sorted(avg.items(), key=lambda kv: -kv[1])
            out.append(f"  Mean over {', '.join(common)}: " + " > ".join(f"{n} {v:.2f}" for n, v in ranked)
                       + " (the paper's GLUE average: ScaLearn > AdapterFusion > adapter).")
    return out


# ------------------------------------------------------------------------------------------------------------- figure


def common_targets(means: dict, targets: list[str]) -> list[str]:
    """Targets that every method of ``means`` has a score for (so averages compare like with like)."""
    return [t for t in targets if means and all(m.get(t) is not None for m in means.values())]


def plot_score_vs_params(means_by_kind: dict, params: dict, targets: list[str], majority: dict,
                         figures: Path) -> str | None:
    """Each method's mean score against its trained transfer parameters, per kind; written into ``figures``."""
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
    figures.mkdir(parents=True, exist_ok=True)
    path = figures / "score_vs_params.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name
