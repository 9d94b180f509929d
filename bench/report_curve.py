"""The cost-over-N section of bench/report.py, from bench/results/speed_curve.json (bench/speed_curve.py)."""

from __future__ import annotations

from bench.report_common import human, label

#: the goals a composition over N LoRA sources is held to: step time ÷ one trainable LoRA's, by N; bytes saved
STEP_GOALS = {64: 1.10, 256: 1.20}
SAVED_GOAL = 1.05
VARIANTS = ("scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++")


def _cell(r: dict | None) -> str:
    """Wall-time ratio ``median [min–max]``, ⚠ when its IQR is wide, and the CPU-time ratio's median."""
    if not r:
        return "–"
    sp, cpu = r["step_ratio_spread"], r.get("step_cpu_ratio")
    flag = " ⚠" if r.get("wide_spread") else ""
    return f"{sp['median']:.2f} [{sp['min']:.2f}–{sp['max']:.2f}]{flag}" + (f" ({cpu['median']:.2f})" if cpu else "")


def _load(part: dict) -> str:
    start, end = part.get("load_average_at_start"), part.get("load_average_at_end")
    return (f"{start[0]:.1f} → {end[0]:.1f}" if start else f"{end[0]:.1f} at the end") if end else "not recorded"


def _find(rows: list[dict], kind: str, method: str, n: int, variant: str | None = None,
          path: str | None = None) -> dict | None:
    return next((r for r in rows if r["kind"] == kind and r["method"] == method and r["n"] == n
                 and r.get("variant") == variant and r.get("path") == path), None)


def _table(rows: list[dict], ns: list[int], lines: list[tuple[str, str, str, str | None, str | None]],
           cell) -> list[str]:
    out = ["| Method | " + " | ".join(f"N={n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
    for name, kind, method, variant, path in lines:
        cells = [cell(_find(rows, kind, method, n, variant, path)) for n in ns]
        if any(c != "–" for c in cells):
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def goals(lora: dict, measured_only: bool = False) -> list[str]:
    """Which variant meets the step and memory goals at each N (read from the rows, never typed); with
    ``measured_only`` an N the part did not measure is skipped instead of counted as missed."""
    missed = []
    for variant in VARIANTS:
        for n, bar in STEP_GOALS.items():
            r = _find(lora["rows"], "lora", "scalearn", n, variant)
            if r is None:
                if not measured_only:
                    missed.append(f"{label('scalearn', variant)} at N = {n}: not measured")
                continue
            if r["step_ratio"] > bar:
                missed.append(f"{label('scalearn', variant)} at N = {n}: step {r['step_ratio']:.2f}× > {bar:.2f}×")
            if r["saved_ratio"] > SAVED_GOAL:
                missed.append(f"{label('scalearn', variant)} at N = {n}: saved {r['saved_ratio']:.2f}× > "
                              f"{SAVED_GOAL:.2f}×")
    head = (f"Goals: training step ≤ {STEP_GOALS[64]:.2f}× one trainable LoRA's at N = 64 and ≤ {STEP_GOALS[256]:.2f}× "
            f"at N = 256, bytes saved for backward ≤ {SAVED_GOAL:.2f}× at both, for every variant (medians of the "
            "wall-time ratios): ")
    unjudged = [n for n in STEP_GOALS if not any(r["n"] == n for r in lora["rows"])] if measured_only else []
    if unjudged:
        head = head.replace("for every variant", f"for every variant (not measured here: N = "
                                                  f"{', '.join(map(str, unjudged))})")
    return [head + ("**met by all four variants**." if not missed else "**not met**: " + "; ".join(missed) + ".")]


def curve_section(curve: dict | None) -> list[str]:
    """Step time, bytes saved and inference over N sources, and loading the shelf."""
    if not curve or "lora" not in curve:
        return ["*bench/results/speed_curve.json not found: run `python -m bench speed-curve --threads 1`.*"]
    lora, m = curve["lora"], curve["machine"]
    rows = lora["rows"]
    ns = sorted({r["n"] for r in rows if r["method"] == "scalearn"})
    single = _find(rows, "lora", "single", 1)
    out = [f"`bench/speed_curve.py` at commit `{(lora.get('commit') or '?')[:10]}`: {curve['model']}, batch "
           f"{curve['batch']} × {curve['seq_len']} tokens, fp32, **{m['threads']} torch thread(s)**, {m['cpu']}, "
           f"{m['cpu_count']} CPUs, torch {m['torch']}. Random LoRA sources (r = 8 on query and value, as "
           "`train-source` saves them). Every configuration is built in one process and stepped round-robin; a ratio "
           "is taken per round against one trainable LoRA (no dropout) in the same round: median [min–max] of "
           f"{lora['repeats']} rounds after {lora['warmup']} warm-up round(s), ⚠ where the interquartile range exceeds "
           f"10% of the median, and in parentheses the median ratio of the process's CPU time per step, which other "
           f"processes' load does not inflate. The machine was shared: load average {_load(lora)} (1-minute, start "
           "→ end).", "",
           "Each site picks its path by the cost model `scaling.dense_is_cheaper` (multiply-adds of forward + "
           "backward): with few sources two low-rank GEMMs (rank Σr = N·r), with many ΔW(ω) = (U·diag ω)·D formed "
           "once per step and the site run as one GEMM with W + ΔW, so nothing of rank Σr is saved for backward and "
           "the per-token cost does not grow with N (forming ΔW and its gradient costs Σr·D_in·D_out per step, not "
           "per token). *low-rank path forced* is ScaLearn kept on the two GEMMs: what every N cost without the "
           "dense path.", "",
           f"*LoRA sources: training step ÷ one trainable LoRA ({single['step_s']:.2f} s median here)*", "",
           *_table(rows, ns, [(label("scalearn", v), "lora", "scalearn", v, None) for v in VARIANTS]
                   + [("ScaLearn, low-rank path forced", "lora", "scalearn", "scalearn", "low-rank")], _cell), "",
           f"*LoRA sources: bytes saved for backward ÷ one trainable LoRA ({human(single['saved_bytes'])}B)*", "",
           *_table(rows, ns, [(label("scalearn", v), "lora", "scalearn", v, None) for v in VARIANTS]
                   + [("ScaLearn, low-rank path forced", "lora", "scalearn", "scalearn", "low-rank")],
                   lambda r: f"{r['saved_ratio']:.2f}" if r else "–"), "",
           *goals(lora), "", *recheck_lines(curve.get("recheck"), lora)]
    out += others_section(curve.get("others"), ns) + latency_lines(curve.get("latency")) + shelf_lines(
        curve.get("shelf"))
    return out


def recheck_lines(recheck: dict | None, lora: dict) -> list[str]:
    """The LoRA round-robin run again at some Ns after a later commit, beside (not mixed into) the curve."""
    if not recheck:
        return []
    rows = recheck["rows"]
    ns = sorted({r["n"] for r in rows if r["method"] == "scalearn"})
    single = _find(rows, "lora", "single", 1)
    return [f"*Re-measured at N = {', '.join(map(str, ns))}* at commit `{(recheck.get('commit') or '?')[:10]}` "
            f"(the curve above: `{(lora.get('commit') or '?')[:10]}`), the same way: {recheck['repeats']} rounds "
            f"after {recheck['warmup']} warm-up round(s), load average {_load(recheck)}; one trainable LoRA "
            f"{single['step_s']:.2f} s median. Training step, and bytes saved for backward:", "",
            *_table(rows, ns, [(label("scalearn", v), "lora", "scalearn", v, None) for v in VARIANTS],
                    lambda r: f"{_cell(r)}; saved {r['saved_ratio']:.2f}×" if r else "–"), "",
            *goals(recheck, measured_only=True), ""]


def others_section(others: dict | None, ns: list[int]) -> list[str]:
    """Bottleneck sources (no fold) and AdapterFusion beside the LoRA curve."""
    if not others:
        return ["*The bottleneck and AdapterFusion curve was not run (`--parts others`).*", ""]
    rows = others["rows"]
    lines = [("ScaLearn, bottleneck sources", "bottleneck", "scalearn", "scalearn", None),
             ("AdapterFusion, LoRA sources", "lora", "adapterfusion", None, None),
             ("AdapterFusion, bottleneck sources", "bottleneck", "adapterfusion", None, None)]
    fusion_max = others.get("fusion_max_n")
    top = _find(rows, "lora", "adapterfusion", fusion_max) if fusion_max else None
    return [f"*Beside it: bottleneck sources and AdapterFusion* (its own round-robin, {others['repeats']} rounds "
            f"after {others['warmup']} warm-up round(s), each ÷ its kind's single adapter in the same rounds; load "
            f"average {_load(others)}). Training step:", "",
            *_table(rows, ns, lines, _cell), "", "Bytes saved for backward:", "",
            *_table(rows, ns, lines, lambda r: f"{r['saved_ratio']:.2f}" if r else "–"), "",
            "What bounds the bottleneck curve: a ReLU sits between each source's down and up projection, so "
            "Σ_i ω_i ⊙ U_i ReLU(D_i x) is not one matrix and cannot fold into W + ΔW; every token runs the rank-Σr "
            "down projection, the ReLU and the up projection (Σr = N × hidden/16 here), and the rank-Σr ReLU output "
            "is saved for backward, so its step time and memory grow linearly in N. AdapterFusion additionally "
            "builds the (batch, seq, N, hidden) stack of source outputs for its attention"
            + (f"; it is measured up to N = {fusion_max}, where it already saves {top['saved_ratio']:.1f}× the "
               f"single adapter's bytes for backward (over LoRA sources)."
               if fusion_max and fusion_max < max(ns) and top else "."), ""]


def latency_lines(lat: dict | None) -> list[str]:
    if not lat:
        return []
    rows = lat["rows"]
    bare = next(r for r in rows if r["method"] == "bare")
    cells = []
    for r in rows:
        if r["method"] == "bare":
            continue
        sp = r["infer_vs_bare_spread"]
        name = {"single": "one LoRA (PEFT)", "scalearn": f"ScaLearn over N = {r['n']} LoRAs, unfolded",
                "merged": f"the same folded into the base weights"}[r["method"]]
        cells.append(f"{name} {sp['median']:.2f}× [{sp['min']:.2f}–{sp['max']:.2f}]")
    return [f"*Inference* (eval mode, no grad, round-robin, {lat['repeats']} rounds; load average {_load(lat)}): "
            f"forward ÷ the bare encoder's ({bare['infer_s'] * 1000:.0f} ms): " + "; ".join(cells) + ". Unfolded, "
            "ω is folded lazily into W + ΔW once and cached until it changes, so N does not enter the forward.", ""]


def shelf_lines(shelf: dict | None) -> list[str]:
    if not shelf:
        return []
    cpu = (lambda phase: f" ({shelf[phase + '_cpu_s']:.1f} s of CPU)") if "resolve_verify_cpu_s" in shelf else (
        lambda phase: "")
    load = f"; load average {shelf['load_average'][0]:.1f}" if shelf.get("load_average") else ""
    return [f"*Loading the shelf* (a fresh process{load}): resolving and verifying N = {shelf['n']} {shelf['kind']} "
            f"folder sources ({shelf['files']} files, {human(shelf['bytes'])}B, every sha256 checked against its "
            f"record) took **{shelf['resolve_verify_s']:.1f} s**{cpu('resolve_verify')} (imports before it "
            f"{shelf['import_s']:.1f} s), reading their weights {shelf['read_weights_s']:.1f} s{cpu('read_weights')}, "
            f"and re-finding all of them from their records (as eval or export does in the same run) "
            f"{shelf['re_resolve_s']:.1f} s{cpu('re_resolve')}; {shelf['files_hashed']} file reads for hashing in "
            f"all, {shelf['files_hashed'] / shelf['files']:.1f} per file (a file's digest is kept per process while "
            "its size, times and inode are unchanged).", ""]


def curve_summary(curve: dict | None) -> list[str]:
    """One headline line for the summary: the largest N against one LoRA."""
    if not curve or "lora" not in curve:
        return []
    rows = curve["lora"]["rows"]
    n = max(r["n"] for r in rows)
    cells = [(v, _find(rows, "lora", "scalearn", n, v)) for v in VARIANTS]
    if not all(r for _, r in cells):
        return []
    steps = [r["step_ratio"] for _, r in cells]
    saved = [r["saved_ratio"] for _, r in cells]
    low = _find(rows, "lora", "scalearn", n, "scalearn", "low-rank")
    return [f"- **A shelf of N = {n} LoRAs vs one trainable LoRA:** ScaLearn's training step "
            f"{min(steps):.2f}–{max(steps):.2f}× over the four variants, bytes saved for backward "
            f"{min(saved):.2f}–{max(saved):.2f}×"
            + (f" (on the low-rank path alone: {low['step_ratio']:.2f}×, {low['saved_ratio']:.2f}×)" if low else "")
            + recheck_summary(curve.get("recheck"), n) + " (details under *Cost over N sources*)."]


def recheck_summary(recheck: dict | None, n: int) -> str:
    rows = [_find(recheck["rows"], "lora", "scalearn", n, v) for v in VARIANTS] if recheck else []
    if not rows or not all(rows):
        return ""
    steps = [r["step_ratio"] for r in rows]
    return f"; re-measured at a later commit, {min(steps):.2f}–{max(steps):.2f}×"


def decoder_n64(data: dict | None) -> list[str]:
    """The decoder round-robin at a shelf-sized N (bench/decoder_speed.py --out decoder_steps_n64.json)."""
    from bench.report_profile import profile_lines
    from scalearn_cli.scaling import keeps_summed_weight  # the library's rule, not a copy of it

    if not data:
        return []
    d, rows = data["decoder"], data["rows"]
    ns = sorted({r["n"] for r in rows if r["method"] == "scalearn"})
    single = _find(rows, "lora", "single", 1)
    lines = [(label("scalearn", v), "lora", "scalearn", v, None) for v in VARIANTS]
    sites, n = 2 * d["layers"], max(ns)
    omega = 2 * sites * n * d["hidden"] * 4  # per site: ω after dropout and its dropout mask, (N, D_out) fp32 each
    hidden = sites * d["batch"] * d["seq_len"] * 8 * 4  # per site: the single LoRA's rank-8 activation
    hub = [f"N={r['n']}: {r['vs_scalearn_step']:.2f}× ({r['iteration_s'] * 1000:.0f} ms)" for r in data.get("lorahub", [])]
    return [f"#### Decoder LoRAs at N = {', '.join(map(str, ns))}", "",
            f"The same random {d['arch']} ({d['layers']} layers × {d['hidden']} hidden, batch {d['batch']} × "
            f"{d['seq_len']} tokens, {d['lora']}) at a shelf-sized N, each site on the path the cost model picks; "
            f"{data['repeats']} rounds after {data['warmup']} warm-up round(s), **{data['machine']['threads']} torch "
            f"thread(s)**, load average {_load(data)}; cells as in the curve above (wall-time ratio median [min–max], "
            "CPU-time ratio in parentheses). AdapterFusion and PEFT with every LoRA active are left out at this N "
            "(their cost up to N = 16 is in the table above).", "",
            f"*Training step ÷ one trainable LoRA ({single['step_s']:.2f} s median here)*", "",
            *_table(rows, ns, lines, _cell), "", "*Bytes saved for backward ÷ one trainable LoRA*", "",
            *_table(rows, ns, lines, lambda r: f"{r['saved_ratio']:.3f}" if r else "–"), "",
            f"On the dense path a site keeps its input for backward (the base layer's GEMM keeps the same tensor) "
            f"and ω's weights; W + ΔW ({d['hidden']} × {d['hidden']}) is "
            + ("kept too, being at most a quarter of the input's bytes" if keeps_summed_weight(
                d["batch"] * d["seq_len"], d["hidden"]) else f"not kept, being more than a quarter of the input's "
               f"bytes at {d['batch'] * d['seq_len']:,} tokens, and backward forms ΔW again") +
            " (`scaling.keeps_summed_weight`, `scalearn_cli/dense_site.py`). What remains "
            f"beyond the single LoRA, for the vector variants: ω after dropout and its dropout mask, N × hidden "
            f"each per site, {human(omega)}B over the {sites} sites at N = {n}, less the single LoRA's rank-8 "
            f"activations ({human(hidden)}B), which the composition does not keep: "
            f"{(omega - hidden) / single['saved_bytes']:+.3f}× of the single LoRA's {human(single['saved_bytes'])}B; "
            "the scalar variants keep N numbers per site. Forming ΔW again in backward costs Σr·D_in·D_out "
            "multiply-adds per site and step, in the step ratio above.", "", *profile_lines(data),
            *goals(data, measured_only=True), "",
            *([f"One LoraHub search iteration ÷ one ScaLearn training step at the same N: " + ", ".join(hub) + "."]
              if hub else []), ""]
