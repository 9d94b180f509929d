"""The cost sections of bench/report.py: step time and memory (round-robin and per-subprocess), decoder LoRAs, the
training loop against plain PEFT, inference latency, the LoRA-defaults sweep and sparsity (the peer library's
sections: bench/report_peer.py)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from bench.quality_plan import ran_on_cpu
from bench.report_common import METHODS, fmt, human, label


def speed_section(speed: dict | None) -> list[str]:
    if not speed:
        return ["*bench/results/speed.json not found: run `python -m bench speed`.*"]
    m = speed["machine"]
    out = [f"Measured {speed['started']}–{speed['finished']} on `{m['platform']}`, {m['cpu']}, {m['cpu_count']} "
           f"CPUs, **{m['threads']} torch thread(s)**, torch {m['torch']}, transformers {m['transformers']}; model "
           f"`{speed['model']}`, batch {speed['batch']} × {speed['seq_len']} tokens, {speed['dtype']}, median of "
           f"{speed['repeats']} timed steps after {speed['warmup']} warm-up steps, one subprocess per configuration. "
           f"Load average at the end: {', '.join(f'{x:.1f}' for x in speed['load_average_at_end'])} (the machine "
           "was shared; ratios within one run are what to read).", "",
           "What each column measures: *step time* — wall time of forward + backward + AdamW step on the trainable "
           "parameters; *peak RSS growth* — `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the timed steps minus "
           "the resident set size just before the first step, with the kernel's peak counter reset (via "
           "`/proc/self/clear_refs`) right before that step so model loading does not count — activations, "
           "gradients, optimizer state *and* allocator slack; *saved for backward* — bytes of the distinct "
           "storages autograd keeps for backward during one step (`torch.autograd.graph.saved_tensors_hooks`), "
           "parameters and buffers excluded — the activation memory proper, independent of the allocator. The "
           "single-adapter baseline trains one adapter + head, so its backward runs through the whole encoder, "
           "as ScaLearn's does. Sources are random-weight adapters saved as `train-source` saves them.", "",
           "Caveat: these configurations ran one after another, so their *time* ratios carry load drift: quote "
           "step-time ratios from the round-robin table above (the summary does). This table is kept for peak RSS, "
           "which needs one process per configuration.", ""]
    rows = [r for r in speed["rows"] if "error" not in r]
    errors = [r for r in speed["rows"] if "error" in r]
    for kind in sorted({r["kind"] for r in rows}):
        single = next((r for r in rows if r["kind"] == kind and r["method"] == "single"), None)
        if single is None:
            continue
        out += [f"#### {kind} sources", "",
                f"Single-adapter baseline: step {single['step_s']:.3f} s ({single['train_examples_per_s']:.1f} "
                f"examples/s), peak RSS growth {human(single['peak_rss_delta'])}B, saved-for-backward "
                f"{human(single['saved_bytes'])}B, {human(single['transfer_parameters'])} trainable adapter "
                "parameters. (Forward latencies were measured here too and are kept in speed.json; quote the "
                "round-robin latency table instead.)", ""]
        ns = sorted({r["n"] for r in rows
                     if r["kind"] == kind and r["n"] >= 1 and r["method"] not in ("single", "bare")})
        for title, field in (("training step time ÷ single adapter", "step_ratio"),
                             ("peak RSS growth ÷ single adapter", "memory_ratio"),
                             ("bytes saved for backward ÷ single adapter", "saved_ratio")):
            out += [f"*{title}*", "", "| Method | " + " | ".join(f"N={n}" for n in ns) + " |",
                    "|" + "---|" * (len(ns) + 1)]
            for method, variant in METHODS:
                cells = []
                for n in ns:
                    r = next((x for x in rows if x["kind"] == kind and x["n"] == n and x["method"] == method
                              and x.get("variant") == variant), None)
                    cells.append(fmt(r.get(field)) if r else "–")
                if any(c != "–" for c in cells):
                    out.append(f"| {label(method, variant)} | " + " | ".join(cells) + " |")
            out.append("")
    for r in errors:
        out.append(f"- failed: {r['kind']} {r['method']} {r.get('variant')} N={r['n']}: {r['error']}")
    return out


def spread_cell(r: dict | None, field: str, spread_field: str) -> str:
    """``median [min–max]`` of a per-round ratio, with ⚠ when its IQR is too wide to read."""
    if not r:
        return "–"
    sp = r.get(spread_field)
    if not sp:
        return fmt(r.get(field))
    flag = " ⚠" if r.get("wide_spread") else ""
    return f"{sp['median']:.2f} [{sp['min']:.2f}–{sp['max']:.2f}]{flag}"


def round_robin_section(rr: dict | None) -> list[str]:
    """Training-step ratios and bytes saved for backward, all configurations in one process (steps_round_robin.json)."""
    if not rr:
        return ["*bench/results/steps_round_robin.json not found: run `python -m bench steps`.*"]
    if rr.get("method") != "round-robin" or "step_ratio_spread" not in rr["rows"][0]:
        return ["*bench/results/steps_round_robin.json predates per-round spreads: re-run `python -m bench speed "
                "--steps-round-robin` (this report does not mix measuring methods).*"]
    rows = rr["rows"]
    ns = sorted({r["n"] for r in rows if not r["method"].startswith("single")})
    m = rr["machine"]
    out = [f"Every configuration built in one process and stepped round-robin (one training step each per round; "
           f"{rr['repeats']} rounds after {rr['warmup']} warm-up round(s), every round kept; **{m['threads']} torch "
           f"thread(s)**, {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']}; load average at the end "
           f"{', '.join(f'{x:.1f}' for x in rr.get('load_average_at_end', []))}; finished {rr['finished']}). A ratio "
           "is taken per round (the configuration ÷ its kind's single adapter *in the same round*) and shown as "
           "median [min–max] over the rounds; ⚠ marks a ratio whose interquartile range exceeds "
           f"{100 * rr['wide_spread']:.0f}% of its median (too noisy to read). Baseline: {rr['baseline']}. Memory "
           "is the bytes autograd saves for backward during one step (activation memory proper, deterministic); "
           "peak RSS, which mixes in allocator behaviour, is in the per-subprocess table below.", ""]
    for kind in sorted({r["kind"] for r in rows}):
        single = next(r for r in rows if r["kind"] == kind and r["method"] == "single")
        out += [f"*{kind} sources: training step ÷ single adapter ({single['step_s']:.2f} s median, "
                f"{single['train_examples_per_s']:.1f} examples/s)*", "",
                "| Method | " + " | ".join(f"N={n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
        dropout = next((r for r in rows if r["kind"] == kind and r["method"] == "single-dropout"), None)
        if dropout:
            out.append(f"| single LoRA with dropout 0.1 (train-source's default) | "
                       f"{spread_cell(dropout, 'step_ratio', 'step_ratio_spread')} |" + " |" * (len(ns) - 1))
        for method, variant in METHODS:
            if method == "single":
                continue
            cells = [spread_cell(next((r for r in rows if r["kind"] == kind and r["n"] == n and r["method"] == method
                                       and r.get("variant") == variant), None), "step_ratio", "step_ratio_spread")
                     for n in ns]
            if any(c != "–" for c in cells):
                out.append(f"| {label(method, variant)} | " + " | ".join(cells) + " |")
        out += ["", f"*{kind} sources: bytes saved for backward ÷ single adapter "
                f"({human(single['saved_bytes'])}B)*", "",
                "| Method | " + " | ".join(f"N={n}" for n in ns) + " |", "|" + "---|" * (len(ns) + 1)]
        if dropout:
            out.append(f"| single LoRA with dropout 0.1 | {dropout['saved_ratio']:.2f} |" + " |" * (len(ns) - 1))
        for method, variant in METHODS:
            if method == "single":
                continue
            cells = [next((f"{r['saved_ratio']:.2f}" for r in rows if r["kind"] == kind and r["n"] == n
                           and r["method"] == method and r.get("variant") == variant), "–") for n in ns]
            if any(c != "–" for c in cells):
                out.append(f"| {label(method, variant)} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def decoder_section(data: dict | None) -> list[str]:
    """The round-robin table over decoder LoRA sources (bench/decoder_speed.py)."""
    if not data:
        return ["*bench/results/decoder_steps.json not found: run `python -m bench decoder-speed`.*"]
    d = data["decoder"]
    return [f"A random {d['arch']} with {d['layers']} layers × {d['hidden']} hidden (vocabulary {d['vocab']:,}), "
            f"{d['lora']} sources, batch {d['batch']} × {d['seq_len']} tokens — the shape of a decoder a CPU can "
            "step; no pretrained decoder installs here, so this measures cost, not quality.", "",
            *round_robin_section(data),
            *([f"One LoraHub search iteration (set N merge weights, one no-grad forward over a batch of "
               f"{d['batch']} few-shot rows) ÷ one ScaLearn training step at the same N: " + ", ".join(
                  f"N={r['n']}: {r['vs_scalearn_step']:.2f}× ({r['iteration_s'] * 1000:.0f} ms)"
                  for r in data["lorahub"])
               + f"; LoraHub's default budget is {40} iterations."] if data.get("lorahub") else [])]


def loop_section(data: dict | None) -> list[str]:
    """``train.fit`` vs a plain PEFT loop, and a capped run before/after the faster loop (bench/loop.py)."""
    if not data:
        return ["*bench/results/loop.json not found: run `python -m bench loop`.*"]
    t, c = data["throughput"], data["capped"]
    r = t["ratio"]
    before, now = statistics.median(c["seconds"]["before"]), statistics.median(c["seconds"]["now"])
    steady = t.get("steady_ratio")
    return [f"**{data['machine']['threads']} torch thread(s)**, {data['machine']['cpu']}; finished "
            f"{data['finished']}.", "",
            f"- `train.fit` (the loop of `train-source` and `transfer`) vs a plain PEFT + PyTorch loop on the same "
            f"{t['steps']} batches of 32 (same model, AdamW, linear schedule), alternating, {t['rounds']} rounds: "
            f"examples/s of ours ÷ plain = **{r['median']:.2f}** [{r['min']:.2f}–{r['max']:.2f}] "
            f"({t['ours_examples_per_s']:.1f} vs {t['plain_examples_per_s']:.1f} examples/s), whole calls "
            "(fit's fixed per-call costs included: accelerate's prepare, the initial and final one-row dev "
            "evaluations, the weight snapshots).",
            *([f"- Per step, {t['long_steps']} steps per round, step-level round robin (one plain step inside each "
               "of fit's progress callbacks; fit's step time is the interval between callbacks, so its per-step "
               "bookkeeping counts), the median per round, then the spread over rounds: "
               f"**{steady['median']:.2f}** [{steady['min']:.2f}–{steady['max']:.2f}]."] if steady else []),
            f"- `{c['command']}` end to end (load, train, dev after each epoch, test), alternating "
            f"{len(c['seconds']['now'])} runs each: **{c['speedup']:.1f}× faster** than commit `{c['before']}` "
            f"({before:.0f} s → {now:.0f} s median; test accuracy "
            f"{c['test_accuracy'].get('before', float('nan')):.1f} → "
            f"{c['test_accuracy'].get('now', float('nan')):.1f}; the dev split is now 10% of the capped pool and "
            "evaluation runs length-sorted in inference mode)."]


def latency_section(lat: dict | None) -> list[str]:
    """Inference latency of all models timed round-robin in one process (bench/results/latency.json)."""
    if not lat:
        return ["*bench/results/latency.json not found: run `python -m bench latency`.*"]
    rows = lat["rows"]
    bare = next(r for r in rows if r["method"] == "bare")
    ns = sorted({r["n"] for r in rows if r["method"] not in ("bare", "single")})
    out = [f"All models built in one process and timed round-robin (forward, eval mode, no grad; "
           f"{lat['repeats']} rounds after {lat['warmup']} warm-up rounds, every round kept, ratio per round shown "
           f"as median [min–max]; **{lat['machine']['threads']} torch thread(s)**, batch {lat['batch']} × "
           f"{lat['seq_len']}; finished {lat['finished']}), so load drift hits every model alike. Bare encoder + "
           f"head: {bare['infer_s'] * 1000:.0f} ms. LoRA compositions in eval mode run W + ΔW (ω folded lazily, "
           "cached until it changes), so their unfolded inference costs what the bare model's does.", "",
           "| Kind | Method | single ÷ bare | " + " | ".join(f"N={n} ÷ bare (÷ single)" for n in ns) + " |",
           "|" + "---|" * (len(ns) + 3)]
    for kind in sorted({r["kind"] for r in rows if r["method"] != "bare"}):
        single = next(r for r in rows if r["kind"] == kind and r["method"] == "single")
        for method, variant in (("scalearn", "scalearn"), ("adapterfusion", None), ("merged", None)):
            if not any(x["kind"] == kind and x["method"] == method for x in rows):
                continue
            cells = []
            for n in ns:
                r = next((x for x in rows if x["kind"] == kind and x["method"] == method and x["n"] == n), None)
                cells.append(f"{spread_cell(r, 'infer_vs_bare', 'infer_vs_bare_spread')} ({r['infer_vs_single']:.2f})"
                             if r else "–")
            out.append(f"| {kind} | {label(method, variant)} | {single['infer_vs_bare']:.2f} | "
                       + " | ".join(cells) + " |")
    return out


def throughput_section(rows: list[dict]) -> list[str]:
    """End-to-end examples/s of the quality runs (training loop incl. per-epoch dev evaluation, shared machine); CPU
    rows only (a row computed on a GPU says nothing about this machine's loop)."""
    by = defaultdict(list)
    for r in rows:
        if r["stage"] in ("source", "transfer") and r["wall_seconds"] > 0 and ran_on_cpu(r):
            name = "source training" if r["stage"] == "source" else f"transfer: {label(r['method'], r['variant'])}"
            by[(name, r["kind"])].append(r["examples_per_second"])
    out = ["| Run | Kind | median examples/s | runs |", "|---|---|---|---|"]
    for (name, kind), v in sorted(by.items()):
        out.append(f"| {name} | {kind} | {statistics.median(v):.1f} | {len(v)} |")
    return out


# ------------------------------------------------------------------------------------------------- sweep and sparsity


def choose_config(configs: dict[tuple, dict[str, dict]], tasks: list[str], incumbent: tuple) -> tuple[tuple, float]:
    """The defaults change only on evidence: keep ``incumbent`` (the library's current defaults) unless another
    configuration's dev mean beats it by more than one standard error; then the best of those.

    SE of the mean over tasks of binomial dev accuracies at the incumbent (sqrt(p(100-p)/n) per task, n = dev
    rows). Returns the chosen key (lr, r, alpha, targets) and the SE.
    """
    def dev_mean(c: tuple) -> float:
        return statistics.mean(configs[c][t]["dev"] for t in tasks)

    base = incumbent if incumbent in configs else max(configs, key=dev_mean)
    per_task = []
    for t in tasks:
        r = configs[base][t]
        n = r.get("dev_examples") or round(r["max_train"] / 0.9) - r["max_train"]
        per_task.append(r["dev"] * (100 - r["dev"]) / n)
    se = math.sqrt(sum(per_task)) / len(tasks)
    better = [c for c in configs if dev_mean(c) > dev_mean(base) + se]
    return (max(better, key=dev_mean) if better else base), se


def sweep_section(rows: list[dict]) -> list[str]:
    """The LoRA-defaults sweep (bench/lora_sweep.py): configurations chosen on dev, test beside it."""
    if not rows:
        return ["*bench/results/lora_sweep.jsonl not found: run `python -m bench lora-sweep`.*"]
    from scalearn_cli.sources.lora import LoraSettings, LoraKind

    budgets = sorted({(r["max_train"], r["epochs_budget"]) for r in rows}, reverse=True)
    budget = max(budgets, key=lambda b: sum(1 for r in rows if (r["max_train"], r["epochs_budget"]) == b))
    rows = [r for r in rows if (r["max_train"], r["epochs_budget"]) == budget]
    tasks = sorted({r["task"] for r in rows})
    configs: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        configs.setdefault((r["lr"], r["r"], r["alpha"], r["targets"]), {})[r["task"]] = r
    complete = {c: by for c, by in configs.items() if set(by) == set(tasks)}
    default = LoraSettings()
    library = (LoraKind.default_lr, default.r, default.alpha,
               "attention" if not default.target_modules else ",".join(default.target_modules))
    best, se = choose_config(complete, tasks, library) if complete else (None, 0.0)
    m = rows[0]["machine"]
    out = [f"MiniLM-L6 (packaged), {budget[0]} training rows per task (seeded sample; dev = 10% of the pool), "
           f"{budget[1]} epochs, batch 32, max length 128, head pooling `auto` (mean), seed 0, alpha = 2r; the "
           "best epoch by dev loss. Configurations are ranked by the **dev** mean over tasks (test: the official "
           f"validation split, shown, never used to choose). {m['threads']} torch thread(s) per process, "
           f"{m['cpu']}. `attention` = query, value (PEFT's default for BERT); `attention+ffn` = query, key, "
           "value, attention output, intermediate and output dense layers.", "",
           "| lr | r | targets | params | " + " | ".join(f"{t} dev" for t in tasks) + " | dev mean | "
           + " | ".join(f"{t} test" for t in tasks) + " | test mean | best epochs |",
           "|" + "---|" * (2 * len(tasks) + 7)]
    for c in sorted(configs, key=lambda c: (c[3], c[1], c[0])):
        by = configs[c]
        dev = [by[t]["dev"] if t in by else None for t in tasks]
        test = [by[t]["test"] if t in by else None for t in tasks]
        done = all(v is not None for v in dev)
        mark = "**" if c == best else ""
        out.append(f"| {mark}{c[0]:g}{mark} | {c[1]} | {c[3]} | {next(iter(by.values()))['parameters']:,} | "
                   + " | ".join(fmt(v, 1) for v in dev) + f" | {fmt(statistics.mean(dev), 1) if done else '–'} | "
                   + " | ".join(fmt(v, 1) for v in test) + f" | {fmt(statistics.mean(test), 1) if done else '–'} | "
                   + "/".join(str(by[t]["best_epoch"]) if t in by else "–" for t in tasks) + " |")
    if best:
        top = max(complete, key=lambda c: statistics.mean(complete[c][t]["dev"] for t in tasks))
        out += ["", "Rule: the library's defaults change only on evidence — another configuration must beat their "
                f"dev mean by more than one standard error ({se:.1f} points: the dev sets are small). Best on dev: lr "
                f"{top[0]:g}, r {top[1]}, {top[3]}. Chosen (**bold**): **lr {best[0]:g}, r {best[1]}, alpha "
                f"{best[2]}, {best[3]}**" + (" (the defaults: no configuration beats them by more than one SE)."
                                             if best == library else ".")
                + f" The library's defaults (`LoraKind.default_lr` and `LoraSettings`, the one place they are set; "
                f"`attention` = PEFT's per-architecture default): lr {library[0]:g}, r {library[1]}, alpha "
                f"{library[2]}, {library[3]}"
                + (" — the same." if library == best else " — **they differ from the chosen configuration**.")]
    return out


def sparsity_section(data: dict | None) -> list[str]:
    """The group-lasso penalty's effect on ω's concentration and on pruning (bench/results/sparsity.json)."""
    if not data:
        return ["*bench/results/sparsity.json not found: run `python -m bench sparsity`.*"]
    rows = data["rows"]
    first = rows[0]
    out = [f"ScaLearnUniform over the `{data['run']}` run's seed-0 {first['kind']} sources for target "
           f"`{first['target']}` ({', '.join(first['sources'])}; the target's own first), trained with a group-lasso "
           f"penalty λ·Σ_i ||ω_i||₂ on each source's ω, then `prune --keep {first['keep']}` and a brief refit. "
           f"*Top share*: the largest source's share of Σ|ω| (1/N = {1 / len(first['sources']):.2f} is uniform). "
           f"Finished {data['finished']}.", "",
           f"| λ | {first['metric']} before | after pruning | top share | shares | kept |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        shares = " / ".join(f"{v:.2f}" for v in r["shares"])
        out.append(f"| {r['lambda']:g} | {fmt(r['score'])} | {fmt(r['pruned_score'])} | {max(r['shares']):.2f} | "
                   f"{shares} | {', '.join(r['kept'])} |")
    return out
