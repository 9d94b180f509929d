"""End to end, as a user runs it: ``scalearn transfer`` over a shelf of plain-PEFT LoRA folders against
``scalearn train-source`` on the same rows, in one benchmark run.

Each command runs in its own fresh process (``python -m scalearn_cli ...``, exactly the user's command line, at
``--threads`` torch threads), the two alternating ``--repeats`` times (transfer, train-source, transfer, ...), so
load drift on a shared machine falls on both alike; the ratio is taken per pair and its median reported, by wall
time and by the command's CPU time (user + system of the process, which other processes' load inflates less). Inside
each process a thin timer (``bench.e2e_phases``) splits the wall time by the library functions the command passes
through: starting Python and importing the CLI, resolving and verifying the sources, building the model (backbone,
composition or adapter, head), preparing the data, training, evaluating (dev scoring in the loop, test scoring,
thresholds) and saving.

Sources: ``--n`` random LoRAs (r = 8 on query/value, weights ~ N(0, 0.02) as ``bench/speed.py`` makes them) saved
by PEFT's own ``save_pretrained``: adapter_config.json + adapter_model.safetensors, nothing of scalearn's. Target:
RTE's own folder, ``--max-train-samples`` ``--rows`` (a seeded sample; the CLI splits 10% of it off as dev and
scores the validation file, 277 rows, as the test split), one epoch, batch 32, max length 128 (the CLI's
defaults). Writes ``bench/results/e2e.json`` after every run (a stopped run is resumed: pairs already there are
kept while the setup is the same).

    python -m bench e2e                      # N = 256, 512 rows, 3 pairs, 1 thread (~10 min on a busy 2-core CPU)
    python -m bench e2e --n 16 --rows 64 --repeats 1     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("transfer", "train-source")


def make_peft_sources(folder: Path, n: int) -> list[Path]:
    """``n`` random LoRA folders on the default encoder, saved with PEFT's ``save_pretrained`` (plain PEFT)."""
    paths = [folder / f"peft-lora-{i}" for i in range(n)]
    todo = [i for i, p in enumerate(paths) if not (p / "adapter_model.safetensors").is_file()]
    if not todo:
        return paths
    import torch
    from peft import LoraConfig, get_peft_model

    from scalearn_cli.backbone import DEFAULT_MODEL, load_backbone

    encoder, _, _ = load_backbone(DEFAULT_MODEL)
    model = get_peft_model(encoder, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    params = [p for p in model.parameters() if p.requires_grad]
    for i in todo:
        torch.manual_seed(i)
        with torch.no_grad():
            for p in params:
                p.normal_(0, 0.02)
        model.save_pretrained(str(paths[i]), save_embedding_layers=False)  # no hub lookup: offline
    return paths


def command_line(args: argparse.Namespace, command: str, sources: list[Path], out: Path) -> list[str]:
    """The user's command (after ``scalearn``): the same data, rows, epochs, batch and length for both."""
    common = ["--task", args.target, "--data-dir", str(args.data_root / args.target), "--max-train-samples",
              str(args.rows), "--epochs", "1", "--batch-size", "32", "--max-length", str(args.max_length),
              "--seed", "0", "--out", str(out), "--overwrite"]
    if command == "transfer":
        return ["transfer", *common, "--model", args.model, *(a for s in sources for a in ("-s", str(s)))]
    return ["train-source", *common, "--model", args.model, "--adapter", "lora"]


def run_once(args: argparse.Namespace, command: str, sources: list[Path]) -> dict:
    """One command in a fresh process: its wall time (from before Python starts) and its phases."""
    out = args.work / "out" / command
    report = args.work / f"phases-{command}.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "E2E_PHASES": str(report)}
    argv = [sys.executable, "-m", "bench.e2e_phases", *command_line(args, command, sources, out)]
    started, load, cpu0 = time.perf_counter(), os.getloadavg()[0], _children_cpu()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    phases = json.loads(report.read_text())
    walls, cpus = phases["wall"], phases["cpu"]
    walls["startup_s"] = wall - phases["main_s"]  # the interpreter's start (its CPU is in "imports")
    meta = json.loads((out / "scalearn.json").read_text())
    return {"command": command, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "load_average": load,
            "phases": {k: round(v, 3) for k, v in walls.items()},
            "cpu_phases": {k: round(v, 3) for k, v in cpus.items()},
            "steps": meta["training"]["steps"], "train_examples": meta["training"]["train_examples"],
            "train_seconds": meta["training"]["train_seconds"]}


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarize(result: dict) -> dict:
    """Per-pair ratios (transfer ÷ train-source of the same pair), their median, and median phases per command."""
    runs = result["runs"]
    pairs = [(t, s) for t, s in zip((r for r in runs if r["command"] == "transfer"),
                                    (r for r in runs if r["command"] == "train-source"))]
    ratios = [t["wall_s"] / s["wall_s"] for t, s in pairs]
    cpu_ratios = [t["cpu_s"] / s["cpu_s"] for t, s in pairs]
    medians = {}
    for command in COMMANDS:
        mine = [r for r in runs if r["command"] == command]
        if mine:
            medians[command] = {"wall_s": statistics.median(r["wall_s"] for r in mine),
                                "cpu_s": statistics.median(r["cpu_s"] for r in mine),
                                "phases": _median_phases([r["phases"] for r in mine]),
                                "cpu_phases": _median_phases([r["cpu_phases"] for r in mine])}
    return {"ratios": [round(r, 3) for r in ratios], "ratio_median": statistics.median(ratios) if ratios else None,
            "cpu_ratios": [round(r, 3) for r in cpu_ratios],
            "cpu_ratio_median": statistics.median(cpu_ratios) if cpu_ratios else None,
            "medians": medians, "pairs": len(pairs)}


def _median_phases(runs: list[dict]) -> dict:
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in sorted({k for r in runs for k in r})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="plain-PEFT LoRA folders composed")
    p.add_argument("--rows", type=int, default=512, help="target training rows (--max-train-samples)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="pairs (transfer, then train-source)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", default="rte")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scalearn-bench" / "e2e")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "e2e.json")
    args = p.parse_args()
    from bench.speed import machine
    from bench.speed_curve import commit

    sources = make_peft_sources(args.work / "sources", args.n)
    setup = {"n": args.n, "rows": args.rows, "max_length": args.max_length, "threads": args.threads,
             "target": args.target, "model": args.model, "epochs": 1, "batch_size": 32}
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if result.get("setup") != setup:
        result = {"setup": setup, "runs": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "load_average_at_start": os.getloadavg(), "commit": commit()}
    plan = [c for _ in range(args.repeats) for c in COMMANDS][len(result["runs"]):]
    for command in plan:
        row = run_once(args, command, sources)
        result["runs"].append(row)
        result.update(summarize(result), machine=machine(args.threads), load_average_at_end=os.getloadavg(),
                      uptime=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                      finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"{command}: {row['wall_s']:.1f} s ({row['cpu_s']:.1f} s CPU) {row['cpu_phases']}", flush=True)
    print(f"transfer ÷ train-source: wall {result.get('ratio_median')} (pairs {result.get('ratios')}), CPU "
          f"{result.get('cpu_ratio_median')} (pairs {result.get('cpu_ratios')}); wrote {args.out}")


if __name__ == "__main__":
    main()
