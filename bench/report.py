"""Generate docs/benchmarks.md (and docs/figures/*.png) from the benchmark's result files only.

Inputs: ``bench/results/<run>/{config.json,results.jsonl,majority.json,omega/*}``, ``bench/results/speed.json``,
``bench/results/peer.json`` and the paper's tables, parsed from the project's reference notes (SCALEARN.md) and
cached in ``bench/results/paper.json``. No number in the generated document is typed by hand.

    python -m bench report --all            # every committed doc (bench/runs.json), from its results
    python -m bench report --all --check    # fail if a committed doc is not what its results make
    python -m bench report --list           # each doc, its runs and the commands that make them
    python -m bench report [--run default] [--out docs/benchmarks.md] [--compare-run other]   # one report
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench import runs
from bench.quality_plan import row_key
from bench.report_common import REPO, RESULTS, epochs_run, fmt, label, read_json, read_jsonl
from bench.report_quality import (SCALEARN, agreement_summary, count_ge, few_shot_noise, few_shot_runs,
                            few_shot_table, group, noise_table, ordering_table, paper_ordering,
                            paper_section, plot_score_vs_params, quality_table, question_answer)
from bench.report_sources import (kept_sources, omega_drift, omega_shares, plot_omega,
                            retrained_sources, source_alternates, source_table)
from bench.report_curve import curve_section, curve_summary, decoder_n64
from bench.report_missing import missing_hours, missing_rows
from bench.report_setting import config_section, discussion, near_majority
from bench.report_device import device_curve_section
from bench.report_e2e import e2e_section
from bench.report_peer import peer_score_section, peer_section, peer_summary
from bench.report_speed import (decoder_section, latency_section, loop_section, round_robin_section, speed_section,
                          sparsity_section, sweep_section, throughput_section)

DOC_DIR = REPO / "docs"
# Every committed benchmark doc: its run under bench/results and the runs compared beside it (bench/runs.json).
# `--all` regenerates them all; `--all --check` (run by the test suite) fails when one differs from what its results
# make; `--list` prints each doc's runs and the commands that make them.
DOCS = runs.docs()


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
        sl, af, single = (means.get(k, {}) for k in (SCALEARN, ("adapterfusion", None), ("single", None)))
        for t in targets:
            if None not in (sl.get(t), af.get(t), single.get(t)):
                cells += 1
                held += sl[t] >= af[t] >= single[t]
    tuned_held, tuned_cells = 0, 0
    for means in means_by_kind.values():
        held_t, cells_t = count_ge(means.get(SCALEARN, {}), means.get(("adapterfusion-tuned", None), {}), targets)
        tuned_held, tuned_cells = tuned_held + len(held_t), tuned_cells + len(cells_t)
    noisy = total and near / total >= 0.3
    out.append("- **Quality:** the paper's full ordering ScaLearn ≥ AdapterFusion ≥ single adapter holds on "
               f"{held} of {cells} (target, kind) pairs with all three; {near} of {total} seed-0 transfer runs score "
               "within 2 points of the majority-class predictor. "
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
    p.add_argument("--extend-run", action="append", default=[],
                   help="another run under bench/results over the same sources and protocol (e.g. more methods run "
                        "later): its rows join this run's tables; repeat for several")
    p.add_argument("--all", action="store_true", help="regenerate every committed doc of bench/runs.json "
                   "(docs/benchmarks*.md)")
    p.add_argument("--check", action="store_true", help="with --all: regenerate into a temporary folder and fail if a "
                   "committed doc differs (edited by hand, or behind its results)")
    p.add_argument("--list", action="store_true", help="print each committed doc, its runs and the commands that "
                   "regenerate it (bench/runs.json), then exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(runs.listing()))
        return
    if args.check and not args.all:
        p.error("--check goes with --all (it checks every committed doc)")
    if not args.all:
        _, n_rows, run_dir = render(args.run, args.out, args.speed, args.reference, args.compare_run,
                                    args.extend_run)
        print(f"wrote {args.out} ({n_rows} result rows from {run_dir})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for name, entry in DOCS.items():
            out = (Path(tmp) if args.check else DOC_DIR) / name
            text, n_rows, run_dir = entry(out) if callable(entry) else render(entry[0], out, args.speed,
                                                                               args.reference, entry[1], entry[2])
            committed = DOC_DIR / name
            if args.check and (not committed.is_file() or committed.read_text() != text):
                stale.append(name)
            print(f"{'checked' if args.check else 'wrote'} docs/{name} ({n_rows} result rows from {run_dir.name})")
    if stale:
        sys.exit(f"docs/{', docs/'.join(stale)} differ from what bench/report.py makes of bench/results/: "
                 "run `python -m bench report --all` and commit the docs with their results")


def render(run: str | None, out: Path, speed: Path, reference: Path, compare_runs: list[str],
           extend_runs: list[str] = ()) -> tuple[str, int, Path]:
    """Write the report of one run to ``out`` (figures beside it, under figures/); returns (text, rows, run folder).
    ``extend_runs``: runs over the same sources and protocol whose rows (keys the run lacks) join its tables."""
    # docs/benchmarks.md keeps docs/figures/; another doc (e.g. a second run) gets docs/figures/<its name>/
    sub = "" if out.stem == "benchmarks" else f"{out.stem}/"
    figures, link = out.resolve().parent / "figures" / sub, f"figures/{sub}"
    speed = speed.resolve()
    run = run or ("default" if (RESULTS / "default" / "results.jsonl").is_file() else "quick")
    run_dir = Path(run) if Path(run).is_dir() else RESULTS / run
    config = read_json(run_dir / "config.json")
    if config is None:
        sys.exit(f"{run_dir}/config.json not found: run `python -m bench run` first")
    rows = list({row_key(r): r
                 for r in reversed(read_jsonl(run_dir / "results.jsonl"))}.values())[::-1]  # one row per run key
    rows, extended = extend_rows(rows, extend_runs)
    majority = read_json(run_dir / "majority.json") or {}
    paper = paper_tables(reference)
    targets = config["targets"].split(",")
    g = group(rows, "transfer")
    means_by_kind = {kind: quality_table(g, kind, targets, majority)[1] for kind in config["kinds"].split(",")}
    doc = ["# Benchmarks", "",
           f"*Generated by `bench/report.py` from `bench/results/{run_dir.name}/` and `bench/results/{speed.name}`, "
           "`peer.json`, `paper.json`; do not edit by "
           "hand — re-run `python -m bench report --all` (after new results) or `bench/run_all.sh`.*", "",
           "Two questions, following the paper's protocol (Frohmann et al., arXiv 2310.01217) at a scale a 2-core "
           "CPU can run: does ScaLearn order against its baselines as in the paper, and what does it cost in step "
           "time and memory?", "", "## Summary", "",
           *summary(rows, read_json(speed), read_json(speed.with_name("steps_round_robin.json")),
                    read_json(speed.with_name("latency.json")), majority, means_by_kind, targets),
           *curve_summary(read_json(speed.with_name("speed_curve.json"))),
           *question_answer(g, rows, config["kinds"].split(","), targets, majority),
           *peer_summary(read_json(run_dir / "peer_score.json")), "",
           "## Configuration that produced these numbers", "",
           *config_section(config, rows, read_jsonl(run_dir / "device_repeats.jsonl")), "",
           "## Reference: the paper's numbers", "", *paper_section(paper, targets), "",
           *paper_ordering(paper, targets), "",
           "## Stage 1: the source adapters", "",
           "Seed-0 sources on their own task's (capped) test split (majority: the constant predictor on the same "
           "rows; STS-B: the train mean). These are what every composition below combines. The strong benchmark's "
           "bar: every "
           "classification source at least 10 points above its majority baseline, STS-B Pearson at least 0.80.", "",
           *source_table(rows, majority, config["batch_size"], source_alternates(config, compare_runs, RESULTS)),
           *retrained_sources(run_dir), *kept_sources(run_dir), "",
           "## Quality: target × method", "",
           "Main metric ×100 on the (capped) test split: CoLA Matthews correlation, STS-B Pearson, accuracy "
           "otherwise. Cells are mean ± standard deviation (number of seeds) when there is more than one seed. "
           "*Transfer params* counts what stage 2 trains besides the head (the single adapter row: the adapter "
           "itself). *Avg* is the GLUE-style unweighted mean over targets (shown only when every target has a "
           "score).", "", *extended]
    doc += quality_sections(config, rows, g, majority, means_by_kind, run_dir, figures, link)
    doc += comparison_sections(config, rows, majority, means_by_kind, run_dir, compare_runs)
    doc += cost_sections(config, rows, run_dir, speed)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(doc)
    out.write_text(text)
    return text, len(rows), run_dir


def extend_rows(rows: list[dict], extend_runs: list[str], results: Path = RESULTS) -> tuple[list[dict], list[str]]:
    """The run's rows plus each extending run's rows of keys the run lacks (the run's own row wins), and a line
    naming what joined."""
    have, said = {row_key(r) for r in rows}, []
    for name in extend_runs:
        added = [r for r in read_jsonl(results / name / "results.jsonl") if row_key(r) not in have]
        have |= {row_key(r) for r in added}
        rows = rows + added
        methods = sorted({label(r["method"], r.get("variant")) for r in added})
        targets = sorted({r["target"] for r in added})
        if added:
            said.append(f"Rows of the `{name}` run join these tables ({len(added)}: {', '.join(methods)} on "
                        f"{', '.join(targets)}; seeds {', '.join(sorted({str(r['seed']) for r in added}))}): "
                        f"{runs.load()[1].get(name, '')}.")
    return rows, [*said, ""] if said else []


def quality_sections(config: dict, rows: list[dict], g: dict, majority: dict, means_by_kind: dict, run_dir: Path,
                     figures: Path, link: str) -> list[str]:
    """Per kind the target × method table, the paper's ordering and the gaps against seed noise; the score vs
    parameters figure; few-shot; ω (heatmaps, drift, per-source shares)."""
    targets, doc = config["targets"].split(","), []
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
    figure = plot_score_vs_params(means_by_kind, g["params"], targets, majority, figures)
    if figure:
        doc += ["### Score vs transfer parameters", "", f"![score vs transfer parameters]({link}{figure})", ""]
    doc += ["## Few-shot", "", "Main metric on the capped test split; the target's own adapter is trained on the "
            "same k examples.", "", *few_shot_table(rows, majority), "", *few_shot_runs(rows), "",
            *few_shot_noise(rows, majority), ""]
    heatmaps = plot_omega(run_dir, figures)
    if heatmaps:
        doc += ["## ω: which sources each layer uses", "",
                "ω per layer (rows) and source (columns) of the seed-0 compositions: ScaLearnUniform's scalars as "
                "learned, ScaLearn's vectors as mean |ω| over hidden units; for LoRA sources the layer's query and "
                "value sites are averaged; the target's own adapter is the first column; ω starts at 2/N. "
                "Read from the saved `omega.safetensors` (copied to `bench/results/<run>/omega/`).", ""]
        doc += [f"![ω {stem}]({link}{name})" for stem, name in heatmaps] + [""]
        doc += ["Mean relative distance of the learned ω from its initialisation 2/N: "
                + "; ".join(omega_drift(run_dir)) + ".", "",
                "Per-source shares of Σ|ω| (all layers; a source's vector ω as its mean |ω|): does a target lean "
                "on some sources — e.g. RTE on the NLI ones, as the paper's analysis shows? The last column sets the "
                "other NLI sources' summed share beside what a uniform ω would give them.", "",
                *omega_shares(run_dir), ""]
    return doc


def comparison_sections(config: dict, rows: list[dict], majority: dict, means_by_kind: dict, run_dir: Path,
                        compare_runs: list[str]) -> list[str]:
    """Where we agree with the paper and why we may not; the compared runs side by side; what is still missing."""
    targets, small = config["targets"].split(","), config["multi_seed_targets"].split(",")
    doc = ["## Comparison with the paper", "", *agreement_summary(means_by_kind, targets, small), "",
           *discussion(config, rows, majority, run_dir), ""]
    compared = {other: compare_section(run_dir.name, config, rows, other) for other in compare_runs}
    checks = [line for _, line in compared.values() if line]
    if checks:
        doc += ["**Other runs on this run's rows** (the sections below; a run made with `--sources-from` composes the "
                "same trained sources with one option changed): " + "; ".join(checks) + ".", ""]
    for other, (lines, _) in compared.items():
        doc += [f"## Compared with the `{other}` run", "", *lines, ""]
    missing = missing_rows(config, rows)
    doc += ["## Missing from this run", ""] + (missing or ["Nothing: every planned run finished."]) + [""]
    if missing:
        hours, unknown = missing_hours(config, rows)
        threads = f" ({config['threads']} torch thread(s), as recorded)" if config.get("threads") else ""
        unknown_note = f"; {unknown} have no like run to go by" if unknown else ""
        doc += ["These planned runs were not started before the run's --deadline (CPU time on the shared machine). "
                "By the longest recorded run like each (same stage, target, kind, method and k; any seed), they take "
                f"about **{hours:.1f} hours of one worker**{threads}, to split over `--shard` workers{unknown_note}. "
                f"`python -m bench run --from-config bench/results/{run_dir.name}/config.json` resumes exactly them "
                f"(finished rows are skipped); `python -m bench device --run {run_dir.name}` computes them on a GPU "
                "machine.",
                ""]
    return doc


def cost_sections(config: dict, rows: list[dict], run_dir: Path, speed: Path) -> list[str]:
    """Step time and memory, decoder LoRAs, the loop against plain PEFT, latency, throughput, the peer library,
    the LoRA-defaults sweep and sparsity: each from its own result file beside ``speed``."""
    doc = ["## Speed and memory", "", "### Cost over N sources: a shelf of hundreds", "",
           *curve_section(read_json(speed.with_name("speed_curve.json"))),
           *device_curve_section(read_json(speed.with_name("speed_curve_device.json"))),
           *e2e_section(read_json(speed.with_name("e2e.json"))),
           "### Training step time, measured round-robin", "",
           *round_robin_section(read_json(speed.with_name("steps_round_robin.json"))), "",
           "### Decoder LoRAs (random Llama), measured round-robin", "",
           *decoder_section(read_json(speed.with_name("decoder_steps.json"))), "",
           *decoder_n64(read_json(speed.with_name("decoder_steps_n64.json"))),
           "### The training loop against a plain PEFT + PyTorch loop", "",
           *loop_section(read_json(speed.with_name("loop.json"))), "",
           "### Per-configuration subprocesses (memory; time as measured in sequence)", "",
           *speed_section(read_json(speed)), "",
           "#### Inference latency, measured round-robin", "",
           *latency_section(read_json(speed.with_name("latency.json"))), "",
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
    return doc


def compare_section(name: str, config: dict, rows: list[dict], other_name: str) -> tuple[list[str], str | None]:
    """Two runs' scores side by side for the run keys both finished (every seed), then the mean difference per
    method: a protocol check (e.g. the same sources and seeds with early stopping off) reads off the last table.
    Also returns a one-line summary of the transfer differences (None when the runs share no transfer row)."""
    other_dir = RESULTS / other_name
    other_config = read_json(other_dir / "config.json")
    if other_config is None:
        return [f"*bench/results/{other_name}/config.json not found.*"], None
    other = {row_key(r): r for r in read_jsonl(other_dir / "results.jsonl")}
    # scheduling and storage options change no score; few-shot options only matter where the other run has few-shot
    few_shot = any(r["stage"] == "few-shot" for r in other.values())
    differs = {k: (config.get(k), other_config.get(k)) for k in sorted(set(config) | set(other_config))
               if k not in ("started", "machine", "out", "work", "deadline", "fit_deadline", "stages", "job_seeds",
                            "job_targets", "job_kinds", "job_methods", "threads", "shard", "shard_index", "shard_count",
                            "sources_from", "keep_sources", "publish_sources", "targets", "extra_sources", "methods",
                            "seeds", "multi_seed_targets", "fusion_tuned_lr")
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
        if r.get("k") or row_key(r) not in other:
            continue
        o = other[row_key(r)]
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
    moved = [f"{key.removeprefix('transfer · ')} {statistics.fmean(d):+.2f} "
             f"({len(d)} seed{'s' if len(d) > 1 else ''}, {min(d):+.2f} to {max(d):+.2f})"
             for key, d in diffs.items() if key.startswith("transfer · ")]
    off = lambda k, v: "off" if "patience" in k and not v else v  # noqa: E731  (patience 0: no early stopping)
    change = ", ".join(f"`{k}` {off(k, a)} → {off(k, b)}" for k, (a, b) in differs.items()) or "no option changed"
    summary = f"`{other_name}` ({change}): " + ", ".join(moved) if moved else None
    return out, summary


if __name__ == "__main__":
    main()
