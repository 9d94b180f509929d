"""The cost of a composition as the shelf grows: a training step, bytes saved for backward and inference over
N ∈ {1, 16, 64, 256} random sources, measured like ``speed.py --steps-round-robin`` (every configuration built in
one process, one step each per round, ratios per round against the single trainable adapter of the same round),
plus how long resolving and verifying the whole shelf takes. Writes ``bench/results/speed_curve.json``.

Three round-robins, each against its own single adapter in the same rounds:

* ``lora``: the four ScaLearn variants over LoRA sources at every N (the path each site takes is the cost
  model's: low-rank for few sources, W + ΔW(ω) for many; ``scaling.dense_is_cheaper``), and ScaLearn forced onto
  the low-rank path at the largest Ns (what every N cost before the dense path);
* ``others`` (fewer rounds: their ratios are large): bottleneck sources under ScaLearn (a ReLU between the
  projections: no ΔW exists, so the low-rank path is the only one) and AdapterFusion over both kinds up to
  ``--fusion-max-n`` (its (batch, seq, N, hidden) stack grows with N);
* ``latency``: forward in eval mode, the bare encoder vs ScaLearn over N LoRAs unfolded (ω folded lazily into
  W + ΔW, cached) and folded into the base weights.

``shelf``: a fresh process resolves and verifies the N folder sources (every file's sha256 against its record),
reads their weights, then resolves them again (as eval or export would in the same run); the files it hashed are
counted.

    python -m bench speed-curve --threads 1            # ~30 min on a loaded 2-core machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import speed

REPO = Path(__file__).resolve().parents[1]


def lora_specs(args: argparse.Namespace, sources: dict[str, list[Path]]) -> list[dict]:
    base = dict(model=args.model, threads=args.threads, kind="lora")
    specs = [{**base, "method": "single", "n": 1}]
    for n in args.ns:
        srcs = [str(p) for p in sources["lora"][:n]]
        specs += [{**base, "method": "scalearn", "variant": v, "n": n, "sources": srcs} for v in speed.VARIANTS]
        if n in args.low_rank_ns:
            specs.append({**base, "method": "scalearn", "variant": "scalearn", "n": n, "sources": srcs,
                          "path": "low-rank"})
    return specs


def other_specs(args: argparse.Namespace, sources: dict[str, list[Path]]) -> list[dict]:
    base = dict(model=args.model, threads=args.threads)
    specs = [{**base, "kind": kind, "method": "single", "n": 1} for kind in ("lora", "bottleneck")]
    for n in args.ns:
        specs.append({**base, "kind": "bottleneck", "method": "scalearn", "variant": "scalearn", "n": n,
                      "sources": [str(p) for p in sources["bottleneck"][:n]]})
        if n <= args.fusion_max_n:
            specs += [{**base, "kind": kind, "method": "adapterfusion", "variant": None, "n": n,
                       "sources": [str(p) for p in sources[kind][:n]]} for kind in ("lora", "bottleneck")]
    return specs


def latency_specs(args: argparse.Namespace, sources: dict[str, list[Path]]) -> list[dict]:
    base = dict(model=args.model, threads=args.threads, kind="lora")
    n = max(args.ns)
    srcs = [str(p) for p in sources["lora"][:n]]
    return [{**base, "method": "bare", "n": 0}, {**base, "method": "single", "n": 1},
            {**base, "method": "scalearn", "variant": "scalearn", "n": n, "sources": srcs},
            {**base, "method": "merged", "variant": "scalearn", "n": n, "sources": srcs}]


def shelf_worker(folders: list[str]) -> dict:
    """Resolve + verify every folder, read its weights, resolve again: wall and CPU seconds of each, files hashed."""
    marks = [(time.perf_counter(), time.process_time())]
    from scalearn_cli.artifacts import digests
    from scalearn_cli.compose import check_sources
    from scalearn_cli.resolve import Resolver

    marks.append((time.perf_counter(), time.process_time()))
    resolved = [Resolver().source(f) for f in folders]
    check_sources(resolved)
    marks.append((time.perf_counter(), time.process_time()))
    for src in resolved:
        src.kind.read_sites(src.folder)
    marks.append((time.perf_counter(), time.process_time()))
    again = [Resolver().recorded(src.ref) for src in resolved]
    marks.append((time.perf_counter(), time.process_time()))
    out = {"n": len(folders), "sources": len(again), "files": sum(len(src.ref.files) for src in resolved),
           "files_hashed": sum(digests.HASHED.values()), "load_average": os.getloadavg(),
           "bytes": sum((Path(src.folder) / name).stat().st_size for src in resolved for name in src.ref.files)}
    for i, phase in enumerate(("import", "resolve_verify", "read_weights", "re_resolve")):
        out[f"{phase}_s"] = marks[i + 1][0] - marks[i][0]
        out[f"{phase}_cpu_s"] = marks[i + 1][1] - marks[i][1]
    return out


def shelf(folders: list[Path]) -> dict:
    """``shelf_worker`` in a fresh process (nothing hashed or imported before it)."""
    proc = subprocess.run([sys.executable, "-m", "bench.speed_curve", "--shelf-worker",
                           json.dumps([str(f) for f in folders])], capture_output=True, text=True, check=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def commit() -> str | None:
    run = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return run.stdout.strip() or None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shelf-worker", help=argparse.SUPPRESS)
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--n", default="1,16,64,256", help="numbers of sources")
    p.add_argument("--low-rank-n", default="64,256", help="Ns at which ScaLearn also runs forced onto the low-rank path")
    p.add_argument("--fusion-max-n", type=int, default=64, help="AdapterFusion only up to this N")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="rounds of the LoRA ScaLearn round-robin")
    p.add_argument("--other-repeats", type=int, default=3, help="rounds of the bottleneck + AdapterFusion one")
    p.add_argument("--latency-repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parts", default="shelf,latency,lora,others",
                   help="which parts to run (a re-run keeps the rest); recheck: the LoRA round-robin again at --n, "
                        "stored beside the curve (e.g. after a change, at the Ns that matter)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed_curve.json")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scalearn-bench" / "speed-sources")
    args = p.parse_args()
    if args.shelf_worker:
        print(json.dumps(shelf_worker(json.loads(args.shelf_worker))))
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    args.ns = [int(v) for v in args.n.split(",")]
    args.low_rank_ns = {int(v) for v in args.low_rank_n.split(",") if v}
    sources = {kind: speed.make_sources(args.work, args.model, kind, max(args.ns)) for kind in ("lora", "bottleneck")}
    head = commit()  # the code that measures: taken once, before anything runs
    for part in args.parts.split(","):
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if part == "shelf":
            measured = {**shelf(sources["lora"][:max(args.ns)]), "kind": "lora"}
        elif part == "latency":
            rr = argparse.Namespace(**{**vars(args), "repeats": args.latency_repeats, "warmup": 1})
            measured = speed.latency(rr, sources, latency_specs(args, sources))
        elif part in ("lora", "recheck", "others"):  # recheck: the LoRA curve again at --n, kept beside it
            rr = argparse.Namespace(**{**vars(args), "repeats": args.other_repeats if part == "others" else args.repeats})
            specs = (other_specs if part == "others" else lora_specs)(args, sources)
            measured = {**speed.steps_round_robin(rr, sources, specs=specs), "fusion_max_n": args.fusion_max_n}
        else:
            raise SystemExit(f"unknown part '{part}': use shelf, latency, lora, recheck or others")
        # re-read before writing: a stopped run keeps its parts, and runs of different parts can share the file
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result.update(machine=speed.machine(args.threads), model=args.model, batch=speed.BATCH, seq_len=speed.SEQ,
                      commit=head)
        result[part] = {**measured, "started": started, "commit": head}
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"{part} done at {time.strftime('%H:%M:%S')}; wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
