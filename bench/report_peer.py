"""The peer sections of bench/report.py: the `adapters` library's own AdapterFusion against ours — its training-step
cost (peer.json, beside our round-robin rows) and its scores over a run's own bottleneck sources (peer_score.json)."""

from __future__ import annotations

import statistics

from bench.report_common import fmt
from bench.report_speed import spread_cell


def peer_section(peer: dict | None, speed: dict | None, rr: dict | None) -> list[str]:
    """The `adapters` library's fusion step and memory, each ÷ its own single adapter, beside ours (peer.json)."""
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
           "| Configuration | N | step (s) | step ÷ its own single [min–max] | "
           "saved for backward ÷ its own single |",
           "|---|---|---|---|---|"]
    for r in peer["rows"]:
        out.append(f"| {r['name']} | {r['n']} | {r['step_s']:.3f} | "
                   f"{spread_cell(r, 'step_ratio', 'step_ratio_spread')} | {r['saved_ratio']:.2f} |")
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
            f"`adapters` library's AdapterFusion {peer:.1f}, our AdapterFusion {ours:.1f}{tail} (details under "
            "*Peer*)."]


def peer_score_section(data: dict | None, run: str) -> list[str]:
    """``adapters``' AdapterFusion over our converted bottleneck sources (bench/results/<run>/peer_score.json)."""
    if not data or not data.get("rows"):
        return [f"*bench/results/{run}/peer_score.json not found: run `python -m bench peer-score --run {run}`.*"]
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
           "| Target | `adapters` AdapterFusion | our AdapterFusion | our ScaLearn | our ScaLearnUniform | "
           "our ScaLearn++ | our ScaLearnUniform++ | single adapter | `adapters` fusion params | our fusion params | "
           "parity |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = r["ours"]
        cells = [fmt(ours.get(m, {}).get("main_score"), 1) for m in
                 ("adapterfusion", "scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++", "single")]
        out.append(f"| {r['target']} | {fmt(r['main_score'], 1)} | {' | '.join(cells)} | "
                   f"{r['transfer_parameters']:,} | {(ours.get('adapterfusion', {}).get('parameters') or 0):,} | "
                   f"{r['parity_max_abs_diff']:.1e} |")
    both = [r for r in rows if r["ours"].get("adapterfusion")]
    if both:
        diff = [r["main_score"] - r["ours"]["adapterfusion"]["main_score"] for r in both]
        out += ["", f"The library's fusion minus ours: mean {statistics.mean(diff):+.1f} points over {len(diff)} "
                f"targets (range {min(diff):+.1f} … {max(diff):+.1f}); its median step here was "
                f"{statistics.median(r['step_s_median'] for r in rows):.2f} s for "
                f"{len(first['sources'])} sources.",
                "", "Both implementations train the same number of fusion parameters. Where this run's rows sit near "
                "the majority-class predictor (see the signal check above), the differences between the two "
                "fusions are noise, not evidence of which implementation is better."]
    return out
