"""The profile beside the decoder round-robin at a shelf-sized N (``profile`` in decoder_steps_n64.json, written by
bench/step_profile.py): the GEMMs ScaLearn adds to one trainable LoRA's step, what each computes, and the step ratio
those GEMMs alone account for: what bounds the ratio on the dense path."""

from __future__ import annotations

import statistics

from bench.report_common import human, label
from bench.report_curve import SAVED_GOAL, STEP_GOALS
from scalearn_cli.scaling import dense_is_cheaper, up_grad_via_input_first

VARIANTS = ("scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++")


def _key(gemm: dict) -> tuple:
    return gemm["op"], tuple(tuple(s) for s in gemm["shapes"])


def _roles(d: dict, n: int) -> dict[tuple, str]:
    """What each dense-site GEMM computes, by operator and input shapes (G: the output's gradient, X: the input);
    of ω's gradient only the order the library takes at these shapes (the two may share shapes)."""
    t, h, r = d["batch"] * d["seq_len"], d["hidden"], n * d["rank"]
    forms = {("aten::addmm", ((h, h), (h, r), (r, h))): "W + (U·diag ω)·D, i.e. W + ΔW: in forward, and again "
                                                          "in backward where it is not kept"}
    if up_grad_via_input_first(t, r, h, h):
        return {**forms, ("aten::mm", ((t, h), (h, r))): "X·Dᵀ, the first factor of ω's gradient",
                ("aten::mm", ((h, t), (t, r))): "Gᵀ·(X·Dᵀ), the gradient of U·diag ω"}
    forms[("aten::bmm", ((h * n, 1, d["rank"]), (h * n, d["rank"], 1)))] = (
        "ω's gradient (vector ω): U contracted per source with the gradient of U·diag ω")
    return {**forms, ("aten::mm", ((h, t), (t, h))): "Gᵀ·X, the first factor of ω's gradient",
            ("aten::mm", ((h, h), (h, r))): "(Gᵀ·X)·Dᵀ, the gradient of U·diag ω"}


def _shape(gemm: dict) -> str:
    op, shapes = _key(gemm)
    mats = [s for s in shapes if len(s) > 1]
    body = " · ".join("×".join(map(str, s)) for s in mats[-2:])
    return f"`{op.split('::')[1]}` " + (f"{'×'.join(map(str, mats[0]))} + " if len(mats) == 3 else "") + body


def _added(single: dict, row: dict) -> tuple[list[dict], dict]:
    """GEMMs of ``row`` beyond the single's (calls, GFLOP, CPU s alone, per step), and the single's own GEMMs that
    ``row`` does not run (the trainable LoRA's rank-r products), summed."""
    base = {_key(g): g for g in single["gemms"]}
    mine = {_key(g): g for g in row["gemms"]}
    added = []
    for key, g in mine.items():
        b = base.get(key, {"calls": 0, "gflop": 0.0, "cpu_s": 0.0})
        if g["calls"] > b["calls"]:  # the same shape's calls cost the same alone: the single's share out
            per_call = g["cpu_s"] / g["calls"]
            added.append({**g, "calls": g["calls"] - b["calls"], "gflop": g["gflop"] - b["gflop"],
                          "cpu_s": per_call * (g["calls"] - b["calls"])})
    gone = [g for key, g in base.items() if key not in mine]
    return added, {"gflop": sum(g["gflop"] for g in gone), "cpu_s": sum(g["cpu_s"] for g in gone)}


def _step_cpu(data: dict, method: str, variant: str | None) -> float:
    """The round-robin's median CPU seconds per step of one configuration."""
    row = next(r for r in data["rows"] if r["method"] == method and r.get("variant") == variant)
    return statistics.median(row["step_cpu_times"])


def profile_lines(data: dict) -> list[str]:
    """Where the decoder step's extra time goes, and the step ratio the dense path's arithmetic allows."""
    prof, d = data.get("profile"), data["decoder"]
    if not prof:
        return []
    rows = prof["rows"]
    single = next(r for r in rows if r["method"] == "single")
    rows = [next(r for r in rows if r.get("variant") == v) for v in VARIANTS if any(r.get("variant") == v for r in rows)]
    n = rows[0]["n"]
    added, gone = _added(single, rows[0])
    t, h = d["batch"] * d["seq_len"], d["hidden"]
    dense = dense_is_cheaper(t, n * d["rank"], h, h)  # the path the sites took (else low-rank: no role, no bound)
    roles = _roles(d, n) if dense else {}
    load = prof["load_average_at_start"][0], prof["load_average_at_end"][0]
    base_cpu = _step_cpu(data, "single", None)
    out = [f"*Where the time goes*: the GEMMs of one step of each (`torch.profiler`'s count, "
           f"`bench/step_profile.py`), each run again alone on random tensors of its shapes as many times as the "
           f"step calls it (CPU time, median of {single['repeats']}; load average {load[0]:.1f} → {load[1]:.1f}), "
           "against the round-robin's median CPU time per step:", "",
           "| Method | GEMM GFLOP | its GEMMs alone, CPU s | step, CPU s | GEMMs' share of the step |",
           "|---|---|---|---|---|"]
    for r in [single, *rows]:
        name = "One trainable LoRA" if r is single else label("scalearn", r["variant"])
        step = _step_cpu(data, r["method"], r["variant"])
        out.append(f"| {name} | {r['gemm_gflop']:.1f} | {r['gemm_cpu_s']:.2f} | {step:.2f} | "
                   f"{r['gemm_cpu_s'] / step:.0%} |")
    out += ["", f"GEMMs {label('scalearn', rows[0]['variant'])} runs beyond the single LoRA's (its {2 * d['layers']} "
            f"sites, N = {n}, Σr = {n * d['rank']}, {t:,} tokens), per step; the other variants run the same (the scalar "
            "ones without the `bmm`):", "",
            "| GEMM | computes | calls | GFLOP | CPU s alone |", "|---|---|---|---|---|"]
    for g in sorted(added, key=lambda g: -g["gflop"]):
        out.append(f"| {_shape(g)} | {roles.get(_key(g), '–')} | {g['calls']} | {g['gflop']:.2f} | {g['cpu_s']:.3f} |")
    if not dense:
        return out + [""]
    return out + ["", *_bound(d, base_cpu, rows, added, gone, data), ""]


def _bound(d: dict, base_cpu: float, rows: list[dict], added: list[dict], gone: dict, data: dict) -> list[str]:
    """The step ratio the added GEMMs alone make against the single LoRA's step, with and without forming ΔW
    again in backward, and what keeping W + ΔW instead would cost in bytes."""
    extra_gflop = sum(g["gflop"] for g in added) - gone["gflop"]
    extra_s = sum(g["cpu_s"] for g in added) - gone["cpu_s"]
    h, n, sites = d["hidden"], rows[0]["n"], 2 * d["layers"]
    forms = next((g for g in added if _key(g)[0] == "aten::addmm" and g["calls"] > sites), None)
    again = (forms["calls"] - sites) / forms["calls"] if forms else 0.0  # the share of forms made in backward
    floor, floor_kept = 1 + extra_s / base_cpu, 1 + (extra_s - again * (forms or {}).get("cpu_s", 0)) / base_cpu
    keep_bytes = sites * h * h * 4  # W + ΔW kept, fp32, at every site
    single_saved = next(r for r in data["rows"] if r["method"] == "single")["saved_bytes"]
    saved = max(r["saved_ratio"] for r in data["rows"] if r["method"] == "scalearn")
    t, rank = d["batch"] * d["seq_len"], n * d["rank"]  # tokens, Σr
    low_rank = sites * 2 * t * rank * 5 * h / 1e9
    measured = statistics.median(_step_cpu(data, "scalearn", r["variant"]) for r in rows) / base_cpu
    goal = STEP_GOALS[64]
    keeps_fit = saved + keep_bytes / single_saved <= SAVED_GOAL  # keeping W + ΔW within the bytes goal
    reachable = (floor_kept if keeps_fit else floor) <= goal
    return [f"So the dense path adds {extra_gflop:.1f} GFLOP of GEMMs to the single LoRA's "
            f"{rows[0]['gemm_gflop'] - extra_gflop:.1f} (+{extra_gflop / (rows[0]['gemm_gflop'] - extra_gflop):.0%}, "
            f"net of the LoRA's own rank-{d['rank']} products, {gone['gflop']:.2f} GFLOP), {extra_s:.2f} s of CPU "
            f"run alone against the single LoRA's {base_cpu:.2f} s step: **{floor:.3f}×** from the added GEMMs "
            f"alone, whatever else is trimmed. The four variants' median step CPU time is {measured:.3f}× here; "
            f"the {measured - floor:+.3f}× beyond the GEMMs alone is the dense sites' other work (ω's dropout, "
            "U·diag ω, the Function's bookkeeping) and the added GEMMs running slower inside the step than "
            "alone (repeated alone, a GEMM finds its operands in cache). "
            f"Of the added GEMMs only forming ΔW again in backward ({again * forms['gflop'] if forms else 0:.1f} GFLOP) trades "
            f"for memory: keeping W + ΔW at all {sites} sites instead costs {human(keep_bytes)}B, "
            f"+{keep_bytes / single_saved:.3f}× of the single LoRA's bytes saved for backward on top of the "
            f"{saved:.3f}× measured (the goal is ≤ {SAVED_GOAL:.2f}×), and would still leave **{floor_kept:.3f}×**. The "
            "rest is "
            "the least this arithmetic allows: ΔW's forward, Σr·D² multiply-adds per site (the low-rank forward "
            "costs 2·tokens·Σr·D), and ω's gradient Gᵀ·X·Dᵀ, min((tokens + Σr)·D², 2·tokens·Σr·D) multiply-adds "
            f"per site in the cheaper order (`scaling.up_grad_via_input_first`; at Σr = {rank} and {t:,} tokens "
            f"{'Gᵀ·(X·Dᵀ)' if up_grad_via_input_first(t, rank, h, h) else '(Gᵀ·X)·Dᵀ'}), where one trainable LoRA "
            f"differentiates only its rank-{d['rank']} factors. The low-rank path would add more, "
            f"{low_rank:.1f} GFLOP (2·tokens·Σr·(2·D_in + 3·D_out) per site, `scaling.dense_is_cheaper`). "
            + (f"So at this shape the ≤ {goal:.2f}× step goal is out of reach of exact arithmetic on either path "
               f"within the ≤ {SAVED_GOAL:.2f}× bytes goal: it needs the added GEMMs under {goal - 1:.0%} of the "
               f"step, and alone they are {floor - 1:.1%}." if not reachable else
               f"So the ≤ {goal:.2f}× step goal is within the arithmetic's reach here"
               + ("." if floor <= goal else ", by keeping W + ΔW within the bytes goal."))]
