"""Speed and memory of a transfer training step vs a single-adapter training step, as ratios measured in one run.

Packaged MiniLM-L6, batch 32 x 64 tokens, fp32, ``torch.set_num_threads(2)``. Each configuration runs in its own
subprocess (so memory figures do not mix) and reports:

* ``step_s``: median wall time of a training step (forward + backward + AdamW step), ``--warmup`` untimed steps
  then ``--repeats`` timed ones;
* ``infer_s``: median forward time in eval mode under ``torch.no_grad()`` (same batch);
* ``peak_rss_delta``: peak resident set size during the timed training steps minus the RSS just before the first
  step, in bytes. The kernel's peak counter (``VmHWM``, which ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  reports) is reset through ``/proc/self/clear_refs`` right before the first step, so model loading does not
  count; it includes activations, gradients, optimizer state and allocator slack;
* ``saved_bytes``: bytes of the distinct tensors autograd saves for backward during one training step
  (``torch.autograd.graph.saved_tensors_hooks``), excluding storages of parameters and buffers (frozen weights
  saved by reference cost nothing extra): the activation memory a step must keep until backward.

Baselines, per adapter kind: ``single`` = one trainable source adapter + head (LoRA: PEFT LoRA r=8 on query/value
without dropout, like the compositions; ``single-dropout``: with train-source's 0.1; bottleneck: one Pfeiffer
adapter per layer). Its backward runs through the whole encoder, as ScaLearn's does
(ω sits in every layer). ``bare`` = the encoder + head without adapters (inference only). Sources for N > 1 are
random-weight adapters saved exactly as ``train-source`` saves them.

    python -m bench speed     # writes bench/results/speed.json (one subprocess per configuration)
    python -m bench steps     # the headline (--steps-round-robin): step time ratios + bytes saved for backward
    python -m bench latency   # forward latency (--latency-only), round-robin in one process

Round-robin files keep every round and report the per-round ratio's median, min–max and IQR; a ratio whose IQR is
above ``WIDE_SPREAD`` of its median is flagged as too noisy to read. The thread count is recorded in every file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.speed_models import build, make_sources, saved_bytes

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("scalearn", "scalearn-uniform", "scalearn++", "scalearn-uniform++")
BATCH, SEQ = 32, 64


# ----------------------------------------------------------------------------------------------- worker


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM, the peak that getrusage's ru_maxrss reports
        return True
    except OSError:
        return False


def worker(config: dict) -> dict:
    import torch

    torch.set_num_threads(config["threads"])
    model, params, n_transfer = build(config)
    g = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 20000, (BATCH, SEQ), generator=g),
        "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long),
        "labels": torch.randint(0, 2, (BATCH,), generator=g),
    }
    out = {**{k: v for k, v in config.items() if k != "sources"}, "transfer_parameters": n_transfer}
    if config["method"] != "bare" or config.get("train_bare"):
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
        model.train()
        rss0, reset = _rss(), _reset_peak()
        times = []
        for i in range(config["warmup"] + config["repeats"]):
            t0 = time.perf_counter()
            loss, _ = model(**batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= config["warmup"]:
                times.append(time.perf_counter() - t0)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out.update(step_s=statistics.median(times), step_times=[round(t, 4) for t in times],
                   peak_rss_delta=peak - rss0, rss_before=rss0, peak_reset=reset,
                   saved_bytes=saved_bytes(model, batch))
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    times = []
    with torch.no_grad():
        for i in range(config["warmup"] + config["repeats"]):
            t0 = time.perf_counter()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            if i >= config["warmup"]:
                times.append(time.perf_counter() - t0)
    out.update(infer_s=statistics.median(times))
    return out


def latency(args: argparse.Namespace, sources: dict[str, list[Path]], specs: list[dict] | None = None) -> dict:
    """Forward latency of every model built in one process and timed round-robin (robust to load drift).

    ``specs`` replaces the default models (it must hold the bare encoder, and a single adapter per kind)."""
    import torch

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    if specs is None:
        specs = latency_specs(args, sources)
    models = []
    for spec in specs:
        model = build(spec)[0]
        model.eval()
        models.append(model)
    ids = torch.randint(1000, 20000, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for round_ in range(args.warmup + args.repeats):
            for i, model in enumerate(models):
                t0 = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                if round_ >= args.warmup:
                    times[i].append(time.perf_counter() - t0)
    rows = []
    for spec, t in zip(specs, times):
        single = next(statistics.median(times[j]) for j, s in enumerate(specs)
                      if s["method"] == "single" and s["kind"] == spec["kind"]) if spec["method"] != "bare" else None
        per_round = spread([a / b for a, b in zip(t, times[0])])
        rows.append({**{k: v for k, v in spec.items() if k != "sources"}, "infer_s": statistics.median(t),
                     "infer_times": [round(x, 5) for x in t], "infer_vs_bare": per_round["median"],
                     "infer_vs_bare_spread": per_round, "wide_spread": per_round["iqr_rel"] > WIDE_SPREAD,
                     "infer_vs_single": statistics.median(t) / single if single else None})
    return {"machine": machine(args.threads), "method": "round-robin", "batch": BATCH, "seq_len": SEQ, "warmup": args.warmup,
            "repeats": args.repeats, "model": args.model, "rows": rows, "load_average_at_start": load0,
            "load_average_at_end": os.getloadavg(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def latency_specs(args: argparse.Namespace, sources: dict[str, list[Path]]) -> list[dict]:
    """The bare encoder, a single adapter per kind, and per N ScaLearn, AdapterFusion and (LoRA) the merged fold."""
    base = dict(model=args.model, threads=args.threads)
    specs = [{**base, "kind": "lora", "method": "bare", "n": 0}]
    for kind in args.kinds.split(","):
        specs.append({**base, "kind": kind, "method": "single", "n": 1})
        for n in [int(v) for v in args.n.split(",")]:
            folds = (("merged", "scalearn"),) if kind == "lora" else ()  # only LoRA compositions fold
            for method, variant in (("scalearn", "scalearn"), ("adapterfusion", None), *folds):
                specs.append({**base, "kind": kind, "method": method, "variant": variant, "n": n,
                              "sources": [str(p) for p in sources[kind][:n]]})
    return specs


def spread(values: list[float]) -> dict:
    """Median, min, max, quartiles and the relative IQR of a list of measurements."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values), "p25": q[0], "p75": q[2],
            "iqr_rel": (q[2] - q[0]) / median if median else 0.0}


#: a configuration whose per-round ratio has a relative IQR above this is flagged as too noisy to read
WIDE_SPREAD = 0.10


def rr_specs(args: argparse.Namespace, sources: dict[str, list[Path]]) -> list[dict]:
    base = dict(model=args.model, threads=args.threads)
    specs = []
    for kind in args.kinds.split(","):
        specs.append({**base, "kind": kind, "method": "single", "n": 1})
        if kind == "lora":
            specs.append({**base, "kind": kind, "method": "single-dropout", "n": 1})
        for n in [int(v) for v in args.n.split(",")]:
            srcs = [str(p) for p in sources[kind][:n]]
            specs += [{**base, "kind": kind, "method": "scalearn", "variant": v, "n": n, "sources": srcs} for v in VARIANTS]
            if n <= (getattr(args, "fusion_max_n", None) or n):
                specs.append({**base, "kind": kind, "method": "adapterfusion", "variant": None, "n": n, "sources": srcs})
    return specs


def steps_round_robin(args: argparse.Namespace, sources: dict[str, list[Path]], extra_specs: list[dict] | None = None,
                      specs: list[dict] | None = None) -> dict:
    """Training-step time of every configuration built in one process, one step each per round (drift-robust).

    Every round is stored. A ratio is taken per round (configuration ÷ its kind's single adapter in the same
    round) and summarised by median, min–max and IQR; memory is the bytes autograd saves for backward, measured
    in the same process (deterministic, so no spread). The process's CPU time per step is kept beside the wall
    time (``step_cpu_ratio``: the same ratio from CPU time, which other processes' load does not inflate).
    ``specs`` replaces the default configurations (``rr_specs``).
    """
    import torch

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    specs = (rr_specs(args, sources) if specs is None else list(specs)) + list(extra_specs or [])
    built = []
    for spec in specs:
        model, params, _ = build(spec)
        model.train()
        built.append((model, torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)))
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (BATCH, SEQ), generator=g),
             "attention_mask": torch.ones(BATCH, SEQ, dtype=torch.long), "labels": torch.randint(0, 2, (BATCH,), generator=g)}
    times: list[list[float]] = [[] for _ in built]
    cpu: list[list[float]] = [[] for _ in built]
    for round_ in range(args.warmup + args.repeats):
        for i, (model, optimizer) in enumerate(built):
            t0, c0 = time.perf_counter(), time.process_time()
            loss, _ = model(**batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if round_ >= args.warmup:
                times[i].append(time.perf_counter() - t0)
                cpu[i].append(time.process_time() - c0)
    saved = [saved_bytes(model, batch) for model, _ in built]
    rows = []
    for i, spec in enumerate(specs):
        j = next(k for k, s in enumerate(specs) if s["method"] == "single" and s["kind"] == spec["kind"])
        ratios = [a / b for a, b in zip(times[i], times[j])]
        stats = spread(ratios)
        rows.append({**{k: v for k, v in spec.items() if k != "sources"}, "step_times": [round(t, 5) for t in times[i]],
                     "step_cpu_times": [round(t, 5) for t in cpu[i]],
                     "step_cpu_ratio": spread([a / b for a, b in zip(cpu[i], cpu[j])]),
                     "step_s": statistics.median(times[i]), "step_ratio": stats["median"], "step_ratio_spread": stats,
                     "wide_spread": stats["iqr_rel"] > WIDE_SPREAD, "saved_bytes": saved[i],
                     "saved_ratio": saved[i] / saved[j], "train_examples_per_s": BATCH / statistics.median(times[i])})
    return {"machine": machine(args.threads), "method": "round-robin", "batch": BATCH, "seq_len": SEQ,
            "warmup": args.warmup, "repeats": args.repeats, "model": args.model, "wide_spread": WIDE_SPREAD,
            "baseline": "single = one trainable adapter without input dropout (LoRA dropout 0, as the compositions); "
                        "single-dropout = LoRA dropout 0.1 (train-source's default), for reference",
            "load_average_at_start": load0, "load_average_at_end": os.getloadavg(), "rows": rows,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ----------------------------------------------------------------------------------------------- driver


def configs(args: argparse.Namespace, sources: dict[str, list[Path]]) -> list[dict]:
    """Baselines first, then N = 1, 2, ... with both kinds interleaved, so a partial run is still useful."""
    base = dict(model=args.model, threads=args.threads, warmup=args.warmup, repeats=args.repeats)
    kinds = args.kinds.split(",")
    out = [{**base, "kind": kind, "method": m, "n": int(m == "single")} for kind in kinds for m in ("single", "bare")]
    for n in [int(v) for v in args.n.split(",")]:
        for kind in kinds:
            srcs = [str(p) for p in sources[kind][:n]]
            for variant in VARIANTS:
                out.append({**base, "kind": kind, "method": "scalearn", "variant": variant, "n": n, "sources": srcs})
            out.append({**base, "kind": kind, "method": "adapterfusion", "variant": None, "n": n, "sources": srcs})
    return out


def run_one(config: dict) -> dict:
    # the bench package, not this file: the worker imports bench.speed_models
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "bench.speed", "--worker", json.dumps(config)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        return {**{k: v for k, v in config.items() if k != "sources"}, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_ratios(rows: list[dict]) -> None:
    """Each row's step time, peak memory, saved bytes and latency ÷ its kind's single adapter (latency also ÷ bare)."""
    ref = {(r["kind"], r["method"]): r for r in rows if r["method"] in ("single", "bare") and "error" not in r}
    for r in rows:
        single, bare = ref.get((r["kind"], "single")), ref.get((r["kind"], "bare"))
        if "error" in r or single is None:
            continue
        if "step_s" in r:
            r["step_ratio"] = r["step_s"] / single["step_s"]
            r["memory_ratio"] = r["peak_rss_delta"] / single["peak_rss_delta"]
            r["saved_ratio"] = r["saved_bytes"] / single["saved_bytes"]
            r["train_examples_per_s"] = BATCH / r["step_s"]
        r["infer_vs_single"] = r["infer_s"] / single["infer_s"]
        if bare is not None:
            r["infer_vs_bare"] = r["infer_s"] / bare["infer_s"]


def machine(threads: int) -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--steps-round-robin", action="store_true",
                   help="only training-step time: all configurations in one process, one step each per round")
    p.add_argument("--latency-only", action="store_true",
                   help="only inference latency: all models in one process, timed round-robin -> latency.json")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--kinds", default="lora,bottleneck")
    p.add_argument("--n", default="1,2,4,8,16", help="numbers of sources")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7, help="timed steps (per-subprocess) or rounds (round-robin)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed.json")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scalearn-bench" / "speed-sources")
    args = p.parse_args()
    if args.worker:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        print(json.dumps(worker(json.loads(args.worker))))
        return
    max_n = max(int(v) for v in args.n.split(","))
    sources = {kind: make_sources(args.work, args.model, kind, max_n) for kind in args.kinds.split(",")}
    if args.steps_round_robin:
        out = args.out.with_name("steps_round_robin.json")
        out.write_text(json.dumps(steps_round_robin(args, sources), indent=2, sort_keys=True) + "\n")
        print(f"wrote {out}")
        return
    if args.latency_only:
        out = args.out.with_name("latency.json")
        out.write_text(json.dumps(latency(args, sources), indent=2, sort_keys=True) + "\n")
        print(f"wrote {out}")
        return
    rows, started = [], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for config in configs(args, sources):
        rows.append(run_one(config))
        r = rows[-1]
        print(f"{r['kind']:10s} {r['method']:13s} {str(r.get('variant') or '-'):18s} N={r['n']:2d} "
              f"step {r.get('step_s', float('nan')):.3f}s infer {r.get('infer_s', float('nan')):.3f}s "
              f"{r.get('error', '')}", flush=True)
        write(args, started, rows)  # after every configuration: a stopped run keeps what it measured
    print(f"wrote {args.out}")


def write(args: argparse.Namespace, started: str, rows: list[dict]) -> None:
    rows = [dict(r) for r in rows]
    add_ratios(rows)
    result = {"machine": machine(args.threads), "batch": BATCH, "seq_len": SEQ, "dtype": "float32",
              "warmup": args.warmup, "repeats": args.repeats, "model": args.model, "started": started,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "load_average_at_end": os.getloadavg(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
