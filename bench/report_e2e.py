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


def e2e_section(data: dict | None) -> list[str]:
    """Its heading, the setup, the per-pair ratios against the goal, and where each command's wall time goes."""
    head = ["#### End to end: transfer over a shelf against train-source", ""]
    if not data or not data.get("pairs"):
        return [*head, "*bench/results/e2e.json not found: run `python -m bench e2e`.*", ""]
    s, m, med = data["setup"], data["machine"], data["medians"]
    t, src = med["transfer"], med["train-source"]
    ratio = data["ratio_median"]
    verdict = "**met**" if ratio <= E2E_GOAL else "**not met**"
    rows = ["| Phase | transfer (s) | train-source (s) | difference (s) |", "|---|---|---|---|"]
    for key, name in PHASES:
        a, b = t["phases"].get(key, 0.0), src["phases"].get(key, 0.0)
        rows.append(f"| {name} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")
    rows.append(f"| **wall time** | **{t['wall_s']:.1f}** | **{src['wall_s']:.1f}** | "
                f"**{t['wall_s'] - src['wall_s']:+.1f}** |")
    return [*head, f"`bench/e2e.py` at commit `{(data.get('commit') or '?')[:10]}`: `scalearn transfer` over N = {s['n']} "
            "plain-PEFT LoRA folders (random, r = 8 on query/value, written by PEFT's `save_pretrained`) against "
            f"`scalearn train-source --adapter lora`, both on {s['target'].upper()} with `--max-train-samples "
            f"{s['rows']}` (10% of it split off as dev; the validation file scored as test), {s['epochs']} epoch, "
            f"batch {s['batch_size']}, max length {s['max_length']}, {s['model']}; each command a fresh process at "
            f"**{s['threads']} torch thread(s)**, the two alternating ({data['pairs']} pairs), {m['cpu']}, "
            f"{m['cpu_count']} CPUs, torch {m['torch']}; `uptime` at the end: {data.get('uptime', 'not recorded')}.",
            "",
            f"transfer ÷ train-source, per pair: {', '.join(f'{r:.2f}×' for r in data['ratios'])}; median "
            f"**{ratio:.2f}×** (goal ≤ {E2E_GOAL:.1f}×: {verdict}). Where the wall time goes (medians over the "
            "pairs, each phase the time inside the library functions that do it, the innermost counted):", "",
            *rows, ""]
