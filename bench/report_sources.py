"""The source and ω sections of bench/report.py: how good the composed sources are (against the bar), where
they are kept, and how far ω moved from its initialisation and which sources it leans on (tables, heatmaps)."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from bench.quality_plan import REPRODUCED
from bench.quality_runner import kept_registry
from bench.report_common import LABEL, epochs_done, fmt, label, read_json, read_jsonl


def source_bar(target: str, majority: dict) -> float | None:
    """The bar a source must clear: STS-B Pearson 80; classification majority + 10 points (None: no majority)."""
    base = majority.get(target, {}).get("main_score")
    return 80.0 if target == "stsb" else None if base is None else base + 10


#: the options that change how a source adapter trains (another run differing in these retrains the same sources)
SOURCE_OPTIONS = ("source_lr", "source_epochs", "source_patience", "max_length", "pooling", "batch_size",
                  "group_by_length", "model")


def source_table(rows: list[dict], majority: dict, batch_size: int = 32,
                 alternates: list[tuple[str, str, list[dict]]] = ()) -> list[str]:
    """Stage 1: how good the seed-0 source adapters are (the material ω has to work with). ``alternates``: other
    runs (name, the source options they changed, rows) whose sources of a task below the bar are named beside it
    (e.g. an lr sweep on the weak sources; ``source_alternates`` builds them)."""
    src = sorted((r for r in rows if r["stage"] == "source" and r["seed"] == 0), key=lambda r: (r["kind"], r["target"]))
    if not src:
        return ["*No source rows finished.*"]
    out = ["| Task | Kind | train / dev / test rows | steps | best epoch | main metric | score | majority | "
           "above majority | the bar |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in src:
        base = majority.get(r["target"], {}).get("main_score")
        threshold = source_bar(r["target"], majority)
        bar = None if threshold is None else r["main_score"] >= threshold
        above = None if base is None else r["main_score"] - base
        out.append(f"| {r['target']} | {r['kind']} | {r['train_examples']} / {r['dev_examples']} / "
                   f"{r['test_examples']} | {r['steps']} | {r['best_epoch']} of {r.get('epochs', '–')} | "
                   f"{r['task_main_metric']} | {r['main_score']:.2f} | {fmt(base)} | {fmt(above)} | "
                   f"{'–' if bar is None else 'met' if bar else '**not met**'} |")
    return out + unmet_sources(rows, majority, src, batch_size, alternates)


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
                                if gap > REPRODUCED))
    verdict = (f"**{', '.join(differ)} differ{'s' if len(differ) == 1 else ''}**: transfers run after that retrain "
               "compose a different adapter than the recorded row describes" if differ else
               f"every one reproduces its recorded test score (largest |Δ| {max(gaps):.4f} points), so transfers run "
               "before and after a retrain compose the same adapters")
    return ["", f"Sources retrained on a later machine (their folders were gone; `retrained.jsonl`; one value a "
                f"retrain): {'; '.join(cells)} — {verdict}."]


def kept_sources(run_dir: Path) -> list[str]:
    """The run's kept sources (``--keep-sources``): a local scalearn registry committed beside the results."""
    registry = kept_registry(run_dir)
    if not registry.exists():
        return []
    entries = registry.list()
    size = sum(f.stat().st_size for f in registry.root.rglob("blobs/*"))
    where = f"bench/results/{run_dir.name}/sources"
    return ["", f"The {len(entries)} source adapters transfers compose are kept in `{where}` ({size / 2**20:.1f} MiB), "
                f"a local scalearn registry: `scalearn list --registry local:{where}` lists them, `scalearn transfer "
                f"--registry local:{where} --source {entries[0].repo_id} ...` composes them, and a new machine pulls "
                "them (sha256-verified, test score checked against the row) instead of retraining them."]


def unmet_sources(rows: list[dict], majority: dict, src: list[dict], batch_size: int,
                  alternates: list[tuple[str, str, list[dict]]] = ()) -> list[str]:
    """For each seed-0 source below the bar, what the run says about why: when its dev loss stopped
    improving, what its other seeds score, the same source trained with other options (``alternates``), and the
    best transfer on the same test rows."""
    out = []
    for r in src:
        bar = source_bar(r["target"], majority)
        if bar is None or r["main_score"] >= bar:
            continue
        same = [x for x in rows if x["target"] == r["target"] and x["kind"] == r["kind"]]
        seeds = sorted((x["seed"], x["main_score"]) for x in same if x["stage"] == "source" and not x.get("k"))
        others = [f"seed {s} {v:.2f}" for s, v in seeds if s != 0]
        transfers = [x for x in same if x["stage"] == "transfer" and x["method"] != "single"]
        best = max(transfers, key=lambda x: x["main_score"], default=None)
        threshold = "Pearson 80" if r["target"] == "stsb" else f"majority + 10 = {bar:.2f}"
        text = (f"- **{r['target']} ({r['kind']}) is below the bar** ({threshold}): its dev loss was lowest after "
                f"epoch {r['best_epoch']} (epochs run: {epochs_done(r, batch_size) or '–'} of "
                f"{r.get('epochs', '–')}, with {r['train_examples']:,} training examples"
                + chance_loss(r) + ")")
        text += f"; retrained with other seeds: {', '.join(others)}" if others else ""
        kinds = sorted((x["kind"], x["main_score"]) for x in src
                       if x["target"] == r["target"] and x["kind"] != r["kind"])
        text += "; the " + ", the ".join(f"{k} source on the same rows scores {v:.2f}" for k, v in kinds) \
            if kinds else ""
        text += "".join(alternate_sources(r, alternates, batch_size))
        if best is not None:
            text += (f". The best transfer onto {r['target']} in this run, "
                     f"{label(best['method'], best.get('variant'))} (seed {best['seed']}), scores "
                     f"{best['main_score']:.2f} on the same test rows: "
                     + ("the task is learnable from these sources beyond what its own adapter reached"
                        if best["main_score"] >= bar else "no method here clears the bar either"))
        out.append(text + ".")
    return ([""] + out) if out else []


def chance_loss(r: dict) -> str:
    """A classification source's kept dev loss beside ln C, the cross-entropy of a uniform guess over C classes: a
    loss near it says the adapter learned next to nothing on this encoder (whatever its accuracy)."""
    from scalearn_cli.tasks import get_task

    task = get_task(r["target"])
    loss = (r.get("dev") or {}).get("loss")
    if task.problem_type != "classification" or loss is None:
        return ""
    return (f"; kept dev loss {loss:.3f} against ln {task.num_labels} = {math.log(task.num_labels):.3f} for a "
            "uniform guess")


def alternate_sources(r: dict, alternates: list[tuple[str, str, list[dict]]], batch_size: int) -> list[str]:
    """The seed-0 source of ``r``'s task and kind in each other run that trained it with other source options."""
    out = []
    for name, changed, other_rows in alternates:
        same = next((x for x in other_rows if x["stage"] == "source" and x["target"] == r["target"]
                     and x["kind"] == r["kind"] and x["seed"] == 0 and not x.get("k")), None)
        if same is not None:
            loss = (same.get("dev") or {}).get("loss")
            seeds = sorted((x["seed"], x["main_score"]) for x in other_rows if x["stage"] == "source"
                           and x["target"] == r["target"] and x["kind"] == r["kind"] and x["seed"] and not x.get("k"))
            out.append(f"; trained with {changed} (the `{name}` run; here lr {r['lr']:g}): {same['main_score']:.2f}, "
                       f"best epoch {same['best_epoch']} of {epochs_done(same, batch_size) or '–'} run"
                       + (f", kept dev loss {loss:.3f}" if loss is not None else "")
                       + "".join(f", seed {seed} {v:.2f}" for seed, v in seeds))
    return out


def source_alternates(config: dict, runs: list[str], results: Path) -> list[tuple[str, str, list[dict]]]:
    """(name, the source options it changed, rows) of each run in ``runs`` whose source training differs."""
    out = []
    for name in runs:
        other = read_json(results / name / "config.json")
        if other is None:
            continue
        changed = [f"`{k}` {other.get(k)}" for k in SOURCE_OPTIONS if other.get(k) != config.get(k)]
        if changed:
            out.append((name, ", ".join(changed), read_jsonl(results / name / "results.jsonl")))
    return out


# ------------------------------------------------------------------------------------------------------------------ ω


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
    """Per saved composition: (mean |ω − 2/N| ÷ 2/N, max ω − min ω), how far ω moved from its
    initialisation."""
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
    out = ["| Target | Kind | Variant | ω moved (mean relative) | shares of Σ\\|ω\\|, largest first | "
           "other NLI sources (uniform share) |", "|---|---|---|---|---|---|"]
    for path in sorted((run_dir / "omega").glob("*.safetensors")):
        target, kind, variant = path.stem.split("-", 2)
        matrix, sources, _ = omega_matrix(path)
        totals = [sum(abs(row[i]) for row in matrix) for i in range(len(sources))]
        shares = {src: t / sum(totals) for src, t in zip(sources, totals)}
        nli = [src for src in sources if src in NLI_TASKS and src != target]
        order = ", ".join(f"{src} {share:.3f}" for src, share in sorted(shares.items(), key=lambda kv: -kv[1]))
        out.append(f"| {target} | {kind} | {label('scalearn', variant)} | {100 * drifts[path.stem][0]:.1f}% | "
                   f"{order} | {sum(shares[s] for s in nli):.3f} ({len(nli) / len(sources):.3f}) |")
    return out


def omega_drift(run_dir: Path) -> list[str]:
    return [f"{stem}: {100 * d:.1f}% (range of ω {r:.3f})" for stem, (d, r) in omega_drifts(run_dir).items()]


def plot_omega(run_dir: Path, figures: Path) -> list[tuple[str, str]]:
    """One figure per (kind, variant) in ``figures``: a layers × sources heatmap per target."""
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
        figures.mkdir(parents=True, exist_ok=True)
        name = f"omega_{kind}_{variant}.png"
        fig.savefig(figures / name, dpi=110)
        plt.close(fig)
        made.append((f"{LABEL[variant]}, {kind} sources", name))
    return made
