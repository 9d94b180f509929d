"""docs/benchmarks-small.md from bench/results/small/ (bench/small_targets.py's rows and config) only.

Per target: each method's test score over seeds under each model-selection rule, the kept epoch and how far ω
moved; then Welch's t-test (bench/report_quality.py's) for each ScaLearn variant against the average of its sources
and the target's own adapter, and for each rule against the current defaults.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from bench.report_common import RESULTS, fmt, label, read_run
from bench.report_quality import noise_verdict, welch

RUN = RESULTS / "small"
VARIANTS = ("scalearn++", "scalearn-uniform++")
SELECTION_TEXT = {
    "current": "the library's default: the epoch with the lowest dev loss",
    "fixed-budget": "no selection: the last epoch of the budget",
    "min-steps-40": "the lowest dev loss among the epochs ending at or after 40 steps (`--min-steps 40`)",
    "metric": "the best dev main metric (`--select-on metric`, the paper's few-shot criterion)",
    "metric-min-steps-40": "the best dev main metric among the epochs ending at or after 40 steps",
}
TRAINING_TEXT = {"head-lr-0.1": "the head at a tenth of ω's learning rate (`--head-lr`)"}


def rule_text(rule: str) -> str:
    training, _, selection = rule.rpartition(", ")
    text = SELECTION_TEXT.get(selection, selection)
    return f"{TRAINING_TEXT.get(training, training)}; {text}" if training else text


def method_key(row: dict) -> str:
    return row["variant"] or row["method"]


def scores(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by (target, rule, method key), seeds in order."""
    out = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["seed"]):
        out[(row["target"], row["rule"], method_key(row))].append(row)
    return out


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return "–"
    sd = f" ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else ""
    return f"{statistics.mean(xs):.2f}{sd}"


def score_table(g: dict, target: str, rules: list[str]) -> list[str]:
    """Test score (mean ± sd over seeds), kept epoch and ω's movement per rule and method."""
    lines = ["| Rule | Method | seeds | test score | kept epoch (mean) | of epochs | ω moved from 2/N | "
             "source shares (min–max) |", "|---|---|---|---|---|---|---|---|"]
    own = g.get((target, "own", "single"), [])
    if own:
        lines.append(f"| – | {label('single', None)} | {len(own)} | {mean_sd([r['main_score'] for r in own])} | "
                     f"{fmt(_mean(own, 'kept_epoch'), 1)} | {fmt(_mean(own, 'epochs_run'), 1)} | – | – |")
    for rule in rules:
        for m in ("average", *VARIANTS):
            rs = g.get((target, rule, m), [])
            if not rs:
                continue
            moved = _mean(rs, "mean_relative_change")
            shares = (f"{100 * _mean(rs, 'smallest_share'):.1f}–{100 * _mean(rs, 'largest_share'):.1f}%"
                      if moved is not None else "–")
            lines.append(f"| {rule} | {label(m, None)} | {len(rs)} | {mean_sd([r['main_score'] for r in rs])} | "
                         f"{fmt(_mean(rs, 'kept_epoch'), 1)} | {fmt(_mean(rs, 'epochs_run'), 1)} | "
                         f"{'–' if moved is None else f'{100 * moved:.1f}%'} | {shares} |")
    return lines


def _mean(rows: list[dict], field: str) -> float | None:
    xs = [r[field] for r in rows if r.get(field) is not None]
    return statistics.mean(xs) if xs else None


def comparisons(g: dict, target: str, rules: list[str]) -> list[tuple]:
    """(rule, variant, against, gap, SE, p, seeds): each ScaLearn variant against the average (same rule), the
    target's own adapter, and the same variant under the current defaults."""
    out = []
    for rule in rules:
        for v in VARIANTS:
            xa = [r["main_score"] for r in g.get((target, rule, v), [])]
            others = [(label("average", None), g.get((target, rule, "average"), [])),
                      (label("single", None), g.get((target, "own", "single"), []))]
            if rule != "current":
                others.append((f"{label(v, None)} under current", g.get((target, "current", v), [])))
            for name, rows in others:
                xb = [r["main_score"] for r in rows]
                if len(xa) >= 2 and len(xb) >= 2:
                    out.append((rule, v, name, *welch(xa, xb), min(len(xa), len(xb))))
    return out


def noise_lines(comps: list[tuple]) -> list[str]:
    return ["| Rule | ScaLearn variant | against | gap (points) | SE | Welch p | seeds | verdict |",
            "|---|---|---|---|---|---|---|---|",
            *(f"| {rule} | {label(v, None)} | {name} | {gap:+.2f} | {se:.2f} | {p:.3f} | {n} | "
              f"{noise_verdict(gap, p, n, '3 needed')} |" for rule, v, name, gap, se, p, n in comps)]


def verdict_lines(comps_by_target: dict[str, list[tuple]]) -> list[str]:
    """The answer in bullets: which rules beat the current defaults, and whether ScaLearn beats the average and
    the target's own adapter anywhere, beyond seed noise (p < 0.05, at least 3 seeds); each finding names its target."""
    comps = [(target, *c) for target, cs in comps_by_target.items() for c in cs]
    if not comps:
        return []
    current = "under current"
    avg, own = label("average", None), label("single", None)

    def say(against: str, sign: int) -> str:
        found = sorted({f"{target} {rule} ({label(v, None)}, {gap:+.2f})" for target, rule, v, name, gap, _, p, n
                        in comps if (name.endswith(against) if against == current else name == against)
                        and n >= 3 and p < 0.05 and sign * gap > 0})
        return "; ".join(found) or "none"

    better = say(current, 1)
    keep = ("so the library's default selection stays as it is" if better == "none" else
            "the evidence a default change needs")
    return [f"- Rules above the current defaults beyond seed noise: {better}; below them: "
            f"{say(current, -1)} ({keep}).",
            f"- ScaLearn above the average of its sources (ω fixed at 1/N) beyond seed noise: {say(avg, 1)}; "
            f"below it: {say(avg, -1)}.",
            f"- ScaLearn above the target's own adapter beyond seed noise: {say(own, 1)}; below it: {say(own, -1)}."]


def question_lines(comps_by_target: dict[str, list[tuple]]) -> list[str]:
    """The benchmark's question answered per target under the library's defaults (rule ``current``): is ScaLearn
    above the average of its sources and the target's own adapter beyond seed noise?"""
    avg, own = label("average", None), label("single", None)
    answers = []
    for target, comps in comps_by_target.items():
        said = [f"{label(v, None)} against {'the average' if name == avg else 'the own adapter'} {gap:+.2f} "
                f"(p {p:.3f}, {n} seeds): {noise_verdict(gap, p, n, '3 needed').replace('**', '')}"
                for rule, v, name, gap, _, p, n in comps if rule == "current" and name in (avg, own)]
        if said:
            answers.append(f"{target}: {'; '.join(said)}")
    if not answers:
        return []
    return ["- The question, under the library's defaults (`current`): does ScaLearn beat the average of its sources "
            "(ω fixed at 1/N) and the target's own adapter beyond seed noise on a small target? "
            + ". ".join(answers) + "."]


def not_run(config: dict, rows: list[dict]) -> list[str]:
    """The planned trainings with no finished run (e.g. left for lack of time): named, not passed over."""
    ran = {r["training"] for r in rows}
    missing = [t for t in config.get("trainings", []) if t not in ran]
    return [f"- Planned but not run yet: training {', '.join(f'`{t}`' for t in missing)}."] if missing else []


def setup_lines(config: dict, rows: list[dict]) -> list[str]:
    """How the rows were made, from the run's config.json and the rows themselves."""
    machine = config.get("machine", {})
    sizes = sorted({(r["target"], r["train_examples"], r["dev_examples"], r["test_examples"]) for r in rows})
    size_text = "; ".join(f"{t}: {a} train / {b} dev / {c} test rows" for t, a, b, c in sizes)
    runs = {(r["target"], r["training"], r["method"], r["variant"], r["seed"]): r["wall_seconds"] for r in rows}
    walls = list(runs.values())
    return [
        f"- Targets: {', '.join(config.get('targets', []))} — a seeded subsample of the task's train file per seed "
        f"(dev: the library's 10% of the pool, at least 32 rows; test: the task's test split, at most "
        f"{config.get('test_max')} rows). {size_text}.",
        f"- Sources: the strong benchmark's seed-0 LoRA adapters ({', '.join(config.get('source_tasks', []))}), "
        "composed by id from its registry; a target's own full-data adapter is left off its shelf.",
        f"- Every run: {config.get('epochs')} epochs, batch 32, max length 128, lr {config.get('lr')} for ω and "
        "the head (the paper's); the own adapter: `train-source --adapter lora` with the library's defaults and "
        "the same epochs, on the same rows.",
        "- One run per target, seed, method and training: every epoch runs and its trainable tensors are kept; each "
        "rule's epoch is then read off the run's dev log exactly as the library would pick it, and scored on test.",
        f"- Seeds planned: {', '.join(str(s) for s in config.get('seeds', []))} (the tables' *seeds* column: how many "
        f"finished); {len(walls)} runs, "
        f"{sum(walls) / 60:.0f} minutes in all ({statistics.mean(walls or [0]):.0f} s a run) on "
        f"{machine.get('cpu_count', '?')} shared CPU cores at {machine.get('threads', '?')} thread, "
        f"torch {machine.get('torch', '?')}.",
    ]


def render(out: Path, run: Path = RUN) -> tuple[str, int, Path]:
    """Write the small-target report to ``out``; returns (text, rows, run folder), as ``report.render``."""
    rows, config = read_run(run)
    g = scores(rows)
    targets = [t for t in config.get("targets", []) if any(r["target"] == t for r in rows)]
    named = [sel if t == "default" else f"{t}, {sel}" for t in config.get("trainings", [])
             for sel in [*SELECTION_TEXT, *config.get("selections", {})]]  # the rules' order, then any other
    named = list(dict.fromkeys(named))
    rules = [r for r in named if any(row["rule"] == r for row in rows)]
    lines = ["# Small targets: does ScaLearn learn ω on a few hundred rows?", "",
             "Generated by `python -m bench report --all` from `bench/results/small/` (written by "
             "`python -m bench small-targets`); no number here is typed by hand.", "",
             "On a target of a few hundred rows the dev set is a few dozen rows. The question: under which "
             "model-selection rule does ScaLearn move ω away from its start (2/N, where the composition is the "
             "plain average of its sources), and does it then beat the average (ω fixed at 1/N) and the target's "
             "own adapter beyond seed noise?", "", "## Setup", "", *setup_lines(config, rows), "", "## Rules", "",
             *(f"- `{r}`: {rule_text(r)}." for r in rules), ""]
    by_target: dict[str, list[tuple]] = {}
    for target in targets:
        comps = comparisons(g, target, rules)
        by_target[target] = comps
        lines += [f"## {target}", "", *score_table(g, target, rules), "",
                  "Welch's t-test over seeds, as in the other benchmark docs (a verdict from 3 seeds up). The rules "
                  "of one training share its runs, so against `current` the test ignores a pairing it could use: it "
                  "is the conservative one.", "", *noise_lines(comps), ""]
    lines += ["## Verdicts", "", *question_lines(by_target),
              *(verdict_lines(by_target) or ["- No comparison has two seeds yet."]),
              *not_run(config, rows), ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text, len(rows), run

