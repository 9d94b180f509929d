"""The end-to-end section of bench/report.py: ``transfer`` over a shelf of plain-PEFT LoRAs against ``train-source``,
from bench/results/e2e.json (bench/e2e.py)."""

from __future__ import annotations

#: the goal: one epoch of transfer over the shelf ≤ this × train-source on the same rows (wall time, median of pairs)
E2E_GOAL = 1.5
PHASES = [("startup_s", "starting Python"), ("imports", "importing the CLI and library"),
          ("resolve_verify", "resolving and verifying the sources"),
          ("model_build", "building the model (backbone, composition or adapter)"), ("data", "preparing the data"),
          ("training", "training (the steps)"), ("eval", "evaluating (dev in the loop, test, thresholds)"),
          ("save", "saving"), ("other", "the rest")]


def _pair(wall: float, cpu: float, signed: bool) -> str:
    return f"{wall:+.1f} ({cpu:+.1f})" if signed else f"{wall:.1f} ({cpu:.1f})"


def _rows(t: dict, src: dict) -> list[str]:
    """Per phase: wall (CPU) seconds of each command and their difference, then the whole command."""
    out = ["| Phase | transfer: wall (CPU) s | train-source: wall (CPU) s | difference: wall (CPU) s |",
           "|---|---|---|---|"]
    lines = [(name, [(c["phases"].get(key, 0.0), c["cpu_phases"].get(key, 0.0)) for c in (t, src)])
             for key, name in PHASES]
    lines.append(("**the command**", [(c["wall_s"], c["cpu_s"]) for c in (t, src)]))
    for name, cells in lines:
        cells = [*cells, (cells[0][0] - cells[1][0], cells[0][1] - cells[1][1])]
        out.append(f"| {name} | " + " | ".join(_pair(w, c, i == 2) for i, (w, c) in enumerate(cells)) + " |")
    return out


def e2e_section(data: dict | None) -> list[str]:
    """Its heading, the setup, the per-pair ratios against the goal, and where each command's time goes."""
    head = ["#### End to end: transfer over a shelf against train-source", ""]
    if not data or not data.get("pairs"):
        return [*head, "*bench/results/e2e.json not found: run `python -m bench e2e`.*", ""]
    s, m, med = data["setup"], data["machine"], data["medians"]
    ratio = data["ratio_median"]
    verdict = "**met**" if ratio <= E2E_GOAL else "**not met**"
    return [*head, f"`bench/e2e.py` at commit `{(data.get('commit') or '?')[:10]}`: `scalearn transfer` over N = "
            f"{s['n']} plain-PEFT LoRA folders (random, r = 8 on query/value, written by PEFT's `save_pretrained`) "
            f"against `scalearn train-source --adapter lora`, both on {s['target'].upper()} with `--max-train-samples "
            f"{s['rows']}` (the validation file scored as test), {s['epochs']} epoch, batch {s['batch_size']}, max "
            f"length {s['max_length']}, {s['model']}; each command a fresh process at **{s['threads']} torch "
            f"thread(s)**, the two alternating ({data['pairs']} pairs), {m['cpu']}, {m['cpu_count']} CPUs, torch "
            f"{m['torch']}; `uptime` at the end: {data.get('uptime', 'not recorded')}.", "",
            f"transfer ÷ train-source, wall time per pair: {', '.join(f'{r:.2f}×' for r in data['ratios'])}; median "
            f"**{ratio:.2f}×** (goal ≤ {E2E_GOAL:.1f}×: {verdict}); by the commands' own CPU time "
            f"{', '.join(f'{r:.2f}×' for r in data['cpu_ratios'])}, median {data['cpu_ratio_median']:.2f}×. Where "
            "the time goes (medians over the pairs; a phase is the time inside the library functions that do it, "
            "the innermost counted; starting Python's CPU is counted under imports):", "",
            *_rows(med["transfer"], med["train-source"]), "", _remainder(med["transfer"], med["train-source"]), ""]


def _remainder(t: dict, src: dict) -> str:
    """Where transfer's extra CPU time goes, the largest phases first."""
    names = dict(PHASES)
    extra = sorted(((t["cpu_phases"].get(k, 0.0) - src["cpu_phases"].get(k, 0.0), k) for k in names), reverse=True)
    total = t["cpu_s"] - src["cpu_s"]
    parts = [f"{names[k]} {d:+.1f} s ({d / total:.0%})" for d, k in extra if d > 0.05 * total] if total > 0 else []
    return (f"Of transfer's extra {total:.1f} s of CPU time: " + "; ".join(parts) + ". Training is ScaLearn's step "
            "over the shelf against one LoRA's (the dense path's per-step ΔW and weight gradient, see the curve "
            "above); building includes reading and stacking the sources' weights.") if parts else ""
