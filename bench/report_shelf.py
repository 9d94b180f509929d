"""docs/benchmarks-shelf.md from bench/results/shelf/ (bench/shelf.py's rows and config) only.

Per target: every method on the narrow and the broad shelf, broad − narrow with Welch's verdict against seed noise
(bench/report_quality.py's test), ScaLearn against the target's own adapter and AdapterFusion on the broad shelf, the
selections of K sources, ω's share per source family, wall times, where rows ran, and what is missing.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from bench.report_common import RESULTS, fmt, label, mean_std, read_run
from bench.report_quality import noise_verdict, welch
from bench.shelf_estimate import missing_summary, zoo_hours
from bench.shelf_plan import NARROW, SHARED_TEXT

RUN = RESULTS / "shelf"
ORDER = ["single", "average", "adaptersoup", "scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++",
         "adapterfusion", "adapterfusion-tuned", "lorahub", "merge-linear", "merge-ties", "arrow"]
SELECT_TEXT = {"learned": "learned (`--select K`: a short ScaLearnUniform run with a group lasso, ranked by ω's share)",
               "similarity": "AdapterSoup's similarity ranking (centroids of base-encoder embeddings)",
               "random": "random K (one draw per seed, as LoraHub draws its LoRAs)"}


def name(row: dict) -> str:
    return f"{row['method']}-{row['variant']}" if row["method"] == "merge" else row["variant"] or row["method"]


def method_label(method: str) -> str:
    if method.startswith("merge-"):
        return label("merge", method.removeprefix("merge-"))
    if method.startswith("scalearn"):
        return label("scalearn", method)
    return "LoraHub (gradient-free weights, head trained)" if method == "lorahub" else label(method, None)


def cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows by (stage, target, k, shelf, shelf_n, method name, select), seeds in order."""
    out = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["seed"]):
        out[(r["stage"], r["target"], r.get("k"), r.get("shelf"), r.get("shelf_n"), name(r), r.get("select"))].append(r)
    return out


def scores(rs: list[dict]) -> list[float]:
    return [r["main_score"] for r in rs]


def wall(rs: list[dict]) -> str:
    """Median wall seconds of the CPU rows (a GPU's time says nothing of a CPU's)."""
    cpu = [r["wall_seconds"] for r in rs if r.get("device", "cpu") == "cpu" and r.get("wall_seconds")]
    return f"{statistics.median(cpu):.0f}" if cpu else "–"


def verdict(a: list[float], b: list[float]) -> tuple[str, str]:
    """(gap ± SE, verdict) of two seed samples, as the other benchmark docs test them."""
    if len(a) < 2 or len(b) < 2:
        return (f"{statistics.mean(a) - statistics.mean(b):+.2f}" if a and b else "–"), "too few seeds to test"
    gap, se, p = welch(a, b)
    return f"{gap:+.2f} ± {se:.2f}", noise_verdict(gap, p, min(len(a), len(b)), "3 needed")


def broad_sizes(g: dict, stage: str, target: str, k: int | None) -> list[int]:
    return sorted({key[4] for key in g if key[:4] == (stage, target, k, "broad")})


def method_table(g: dict, stage: str, target: str, k: int | None) -> list[str]:
    """Every method: narrow, broad (each size rows were made with), broad − narrow and its verdict, wall times."""
    lines = ["| Method | narrow (7) | wall s | broad (N) | wall s | broad − narrow | verdict |",
             "|---|---|---|---|---|---|---|"]
    own = g.get((stage, target, k, None, None, "single", None), [])
    if own:
        lines.append(f"| {label('single', None)} | {mean_std(scores(own))} | {wall(own)} | (the same adapter) | | | |")
    for method in ORDER[1:]:
        narrow = [rs for key, rs in g.items() if key[:4] == (stage, target, k, "narrow") and key[5] == method]
        narrow = narrow[0] if narrow else []
        made = [n for n in broad_sizes(g, stage, target, k)
                if any(key[:5] == (stage, target, k, "broad", n) and key[5] == method for key in g)]
        for n in made or [None]:  # the sizes this method has broad rows at; none yet: one row, narrow only
            broad = [(key[6], rs) for key, rs in g.items() if key[:5] == (stage, target, k, "broad", n)
                     and key[5] == method]
            sel, rs = broad[0] if broad else (None, [])
            if not (narrow or rs):
                continue
            gap, word = verdict(scores(rs), scores(narrow))
            over = f" over the {sel.replace('-', ' ')}" if sel else ""
            lines.append(f"| {method_label(method)} | {mean_std(scores(narrow))} | {wall(narrow)} | "
                         f"{mean_std(scores(rs))}{f' (N = {n}{over})' if n else ''} | {wall(rs)} | {gap} | {word} |")
    return lines


def broad_comparisons(g: dict, stage: str, target: str, k: int | None) -> list[str]:
    """ScaLearn − own adapter and ScaLearn − AdapterFusion on the broad shelf (the largest one rows were made on)."""
    sizes = broad_sizes(g, stage, target, k)
    if not sizes:
        return ["- No broad-shelf row yet."]
    n = sizes[-1]
    get = {key[5]: rs for key, rs in g.items() if key[:5] == (stage, target, k, "broad", n) and key[6] is None}
    fusion = {(key[5], key[6]): rs for key, rs in g.items() if key[:5] == (stage, target, k, "broad", n)
              and key[5].startswith("adapterfusion")}
    own = g.get((stage, target, k, None, None, "single", None), [])
    out = []
    for variant in ORDER[3:7]:
        others = [(method_label(m) + (f" over the {sel.replace('-', ' ')}" if sel else ""), rs)
                  for (m, sel), rs in fusion.items()]
        for other, xs in [("own adapter", own), *others]:
            if variant in get and xs:
                gap, word = verdict(scores(get[variant]), scores(xs))
                out.append(f"- {label('scalearn', variant)} − {other} (N = {n}): {gap}, {word}.")
    return out or ["- No ScaLearn row on the broad shelf yet."]


def selection_table(g: dict, stage: str, target: str, k: int | None) -> list[str]:
    """The broad shelf's K-source selections against all N, score and wall time (selection included)."""
    keys = sorted({key for key in g if key[:4] == (stage, target, k, "broad") and key[6]
                   and not key[5].startswith("adapterfusion")}, key=lambda key: (key[4], key[6]))
    if not keys:
        return []
    lines = ["| N | selection | method | score | wall s (selection included) | − all N | verdict |",
             "|---|---|---|---|---|---|---|"]
    for key in keys:
        rs, full = g[key], g.get(key[:6] + (None,), [])
        gap, word = verdict(scores(rs), scores(full))
        lines.append(f"| {key[4]} | {key[6]} | {method_label(key[5])} | {mean_std(scores(rs))} | {wall(rs)} | {gap} | "
                     f"{word} |")
    return lines


def family_shares(rows: list[dict]) -> dict[str, dict[str, float]]:
    """ω's share per source family, averaged over the broad shelf's ScaLearn rows (every variant and seed) of each
    target (few-shot ones as 'target k=K'); the composed k-shot adapter counts to its target's family."""
    from scalearn_cli.shelf_tasks import family

    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.get("shelf") != "broad" or r.get("select") or not r.get("omega_shares"):
            continue
        what = r["target"] + (f" k={r['k']}" if r.get("k") else "") + f" (N = {r['shelf_n']})"
        counts[what] += 1
        for s in r["omega_shares"]:
            sums[what][family(s["task"])] += s["share"]
        uniform = f"*ω = 1/N over the same {r['shelf_n']} (reference)*"  # a family's share with no lean at all
        counts[uniform] = 1
        sums[uniform] = defaultdict(float, {f: sum(family(s["task"]) == f for s in r["omega_shares"])
                                            / len(r["omega_shares"]) for f in {family(s["task"]) for s in
                                                                               r["omega_shares"]}})
    return {what: {f: v / counts[what] for f, v in fam.items()} for what, fam in sums.items()}


def family_table(shares: dict[str, dict[str, float]], figures: Path, link: str) -> list[str]:
    if not shares:
        return ["No ScaLearn row on the broad shelf yet."]
    families = sorted({f for fam in shares.values() for f in fam})
    lines = ["| target | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    lines += [f"| {what} | " + " | ".join(fmt(100 * fam.get(f, 0.0), 1) for f in families) + " |"
              for what, fam in sorted(shares.items())]
    plot_shares(shares, families, figures / "omega_families.png")
    return lines + ["", f"![ω share per source family]({link}omega_families.png)"]


def plot_shares(shares: dict, families: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted(shares)
    data = [[100 * shares[t].get(f, 0.0) for f in families] for t in targets]
    fig, ax = plt.subplots(figsize=(1.1 * len(families) + 2, 0.5 * len(targets) + 1.5))
    image = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(families)), families, rotation=45, ha="right")
    ax.set_yticks(range(len(targets)), targets)
    fig.colorbar(image, ax=ax, label="% of Σ|ω|")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def setup(config: dict, rows: list[dict]) -> list[str]:
    from scalearn_cli.shelf_tasks import family

    broad = config.get("shelves_resolved", {}).get("broad", [])
    by_family = defaultdict(list)
    for m in broad:
        by_family[family(m["task"])].append(m["task"])
    used = sorted({r["shelf_n"] for r in rows if r.get("shelf") == "broad"})
    return [f"- **Narrow shelf**: the strong run's seven LoRA sources ({', '.join(NARROW)}), as the zoo ships them.",
            f"- **Broad shelf**: every LoRA source of the zoo built when the run last started: **{len(broad)} of the "
            f"{config.get('shelf_recipes', '?')}** recipes ("
            + "; ".join(f"{f}: {', '.join(ts)}" for f, ts in sorted(by_family.items())) + "). Rows record the shelf "
            f"they composed (ids, revisions, count); broad rows so far used N = {', '.join(map(str, used)) or '–'}, "
            "and the tables label each broad cell with its N.",
            "- The target's own adapter is on both shelves (full size: its zoo source, first; few-shot: the k-shot "
            "adapter of the seed instead of the full-size source).",
            f"- Protocol: the strong run's (transfers up to {config.get('epochs')} epochs, patience "
            f"{config.get('patience')}, max length {config.get('max_length')}; few-shot up to "
            f"{config.get('few_shot_steps')} steps, patience {config.get('few_shot_patience')} evaluations, the best "
            f"dev {config.get('few_shot_select')} kept). AdapterFusion at {config.get('fusion_lr')} (the paper's) and "
            f"{config.get('fusion_tuned_lr')} (tuned); on the broad shelf it composes the learned "
            f"{config.get('fusion_broad_select')} of the shelf (its cost grows with N), labelled in the tables.",
            f"- Selections on the broad shelf at K = {config.get('select_k')}, composed by "
            f"{label('scalearn', config.get('select_variant'))}: "
            + "; ".join(SELECT_TEXT[r] for r in str(config.get("select_rules", "")).split(",") if r in SELECT_TEXT)
            + ". Their wall time includes the selection.",
            "- Wall seconds: the median of a cell's one-thread CPU runs. The machine is shared and cells were made in "
            "different sessions at different loads, so wall times compare within a session's cells, not across "
            "them."]


def shared_text(config: dict) -> list[str]:
    dropped = config.get("glue_eval_overlap_dropped", {})
    lines = []
    for target, tasks in SHARED_TEXT.items():
        for task, why in tasks.items():
            extra = f" (the shelf dropped {dropped[task]} of its rows as equal to a GLUE evaluation sentence)" \
                if dropped.get(task) else ""
            lines.append(f"- {target}: **{task}** — {why}{extra}.")
    return lines


def devices(rows: list[dict]) -> list[str]:
    by = defaultdict(int)
    for r in rows:
        by[r.get("device", "cpu")] += 1
    return [f"- {d}: {n} row(s)" for d, n in sorted(by.items())]


def render(out: Path, run: Path = RUN) -> tuple[str, int, Path]:
    """Write the shelf report to ``out``; returns (text, rows, run folder), as ``report.render``."""
    rows, config = read_run(run)
    g = cells(rows)
    figures, link = out.resolve().parent / "figures" / out.stem, f"figures/{out.stem}/"
    lines = ["# Does breadth buy transfer? The shelf benchmark", "",
             "Generated by `python -m bench report --all` from `bench/results/shelf/` (written by `python -m bench run "
             "--from-config bench/results/shelf/config.json`); no number here is typed by hand.", "",
             "The question: with a broad shelf, does ScaLearn beat the target's own adapter and AdapterFusion on the "
             "small targets beyond seed noise, where on the narrow shelf it does not? Scores are test main metrics, "
             "mean ± sd (seeds); verdicts are Welch's t-test at 5% over seeds (3 seeds needed).", "",
             "## Setup", "", *setup(config, rows), "",
             "## Shelf tasks that share source text with a target", "",
             "None is excluded from the broad shelf; these are named so a gain can be read with them in mind:", "",
             *shared_text(config), ""]
    stages = [("transfer", t, None) for t in str(config.get("targets", "")).split(",") if t]
    stages += [("few-shot", t, int(k)) for k in str(config.get("few_shot_k", "")).split(",") if k
               for t in str(config.get("few_shot_targets", "")).split(",") if t]
    for stage, target, k in stages:
        if not any(key[:3] == (stage, target, k) for key in g):
            continue
        title = f"{target}, full train set" if k is None else f"{target}, few-shot k = {k}"
        lines += [f"## {title}", "", *method_table(g, stage, target, k), "",
                  "On the broad shelf:", "", *broad_comparisons(g, stage, target, k), ""]
        selection = selection_table(g, stage, target, k)
        lines += ["Selections of K sources (broad shelf):", "", *selection, ""] if selection else []
    lines += ["## ω's share per source family (broad shelf, ScaLearn rows), %", "",
              *family_table(family_shares(rows), figures, link), "", "## Where the rows ran", "", *devices(rows), ""]
    lines += missing(run, rows, config)
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text, len(rows), run


def missing(run: Path, rows: list[dict], config: dict) -> list[str]:
    if not (run / "config.json").is_file():
        return ["## Missing", "", "The run has not started."]
    now, hours, unknown, count = missing_summary(run, rows)
    total = config.get("shelf_recipes")
    _, full_hours, full_unknown, full_count = missing_summary(run, rows, total)
    zoo, absent = zoo_hours(config)
    cmd = "python -m bench run --from-config bench/results/shelf/config.json --threads 1 --shard i/n --deadline HH:MM"
    return ["## Missing", "",
            f"Over the shelves as recorded ({len(config.get('shelves_resolved', {}).get('broad', []))} broad "
            f"sources): **{count} runs**, about **{hours:.1f} worker-hours** of this machine's 1-thread worker"
            + (f" ({unknown} with no like run to go by, not counted)" if unknown else "") + f". `{cmd}` runs them "
            "(resumes; `python -m bench device --run shelf` on a lent GPU).", "", *now, "",
            f"Over the complete shelf of {total}: {full_count} runs, about {full_hours:.1f} worker-hours"
            + (f" ({full_unknown} not estimated)" if full_unknown else "") + f", after building the {absent} missing "
            f"zoo sources (about {zoo:.1f} worker-hours at the built ones' median training time; "
            "`scalearn zoo build`, or the device call's zoo stage).", ""]
