"""Peer score: the ``adapters`` library's own AdapterFusion over *our* trained bottleneck sources, same data.

Run from the project's venv once a quality run has its seed-0 bottleneck sources (``python -m bench run``):

    python -m bench peer-score --run default [--targets rte,mrpc] [--peer-python /tmp/peer/bin/python]

For every target it rebuilds the run's exact transfer inputs with our code (the same capped data, splits,
tokenisation and batches per epoch, and the same source list: the target's own adapter first), converts the
sources' Pfeiffer weights into the library's ``seq_bn`` modules (same placement and layer norms; the first source
alone must reproduce our encoder's output: ``parity_max_abs_diff``), and has ``bench/peer_adapters.py
--score-worker`` train the library's fusion + our head with our protocol (AdamW, the run's fusion lr, linear
decay, best dev-loss epoch). Test logits are scored here with our metrics. Writes
``bench/results/<run>/peer_score.json``, one row per target, next to our own AdapterFusion and ScaLearn rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from bench import quality  # bench/quality.py: the run's options
from bench.quality_plan import Job, csv
from bench.quality_runner import Runner  # the run's data caps and folders

REPO = quality.REPO


def run_args(run: str) -> argparse.Namespace:
    """The quality run's own options, read back from its config.json."""
    out = REPO / "bench" / "results" / run
    config = json.loads((out / "config.json").read_text())
    args = quality.parse_args(["--out", str(out)])
    for key, value in config.items():
        if hasattr(args, key) and key not in ("out", "machine", "started"):
            setattr(args, key, Path(value) if key in ("data_root", "work") else value)
    if not args.data_root.is_absolute():
        args.data_root = REPO / args.data_root
    return args


def ours(out: Path, target: str) -> dict:
    """Our seed-0 bottleneck rows for ``target`` in the run (method or variant -> main score)."""
    rows = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if (r["stage"], r["target"], r["kind"], r["seed"], r.get("k")) == ("transfer", target, "bottleneck", 0, None):
            rows[r["variant"] or r["method"]] = {k: r.get(k) for k in ("main_score", "parameters",
                                                                       "examples_per_second", "train_seconds")}
    return rows


def prepare_job(args: argparse.Namespace, runner: Runner, target: str, folder: Path) -> dict:
    import torch

    from scalearn_cli.backbone import resolve_model_path
    from scalearn_cli.stages.common import prepare
    from scalearn_cli.model import head_outputs
    from scalearn_cli.sources import bottleneck
    from scalearn_cli.stages.source import load_source_model

    job = Job("transfer", target, "bottleneck", "adapterfusion", None, 0)
    sources = [Path(s) for s in runner.transfer_sources(job)]
    missing = [str(s) for s in sources if not (s / "scalearn.json").is_file()]
    if missing:
        raise SystemExit(f"sources missing: {missing}; run `python -m bench run` for this run first")
    model, tokenizer, meta = load_source_model(sources[0])
    config = runner.config(args.fusion_lr, 0, args.epochs)
    prepared = prepare(runner.data(target), tokenizer, config)
    train = [[dict(b) for b in prepared.train] for _ in range(config.epochs)]  # our loader's order, epoch by epoch
    dev, test = [dict(b) for b in prepared.dev], [dict(b) for b in prepared.test]
    with torch.no_grad():
        batch = {k: v for k, v in test[0].items() if k != "labels"}
        parity_hidden = model.encoder(**batch).last_hidden_state
    loaded = [bottleneck.load_weights(s) for s in sources]  # (config, per-layer tensors)
    batches = folder / f"{target}.pt"
    torch.save({"sources": [layers for _, layers in loaded], "train": train, "dev": dev, "test": test, "parity_hidden": parity_hidden}, batches)
    spec = prepared.spec
    return {
        "job": {"batches": str(batches), "model": str(resolve_model_path(meta["base_model"]["id"])), "seed": 0, "lr": args.fusion_lr,
                "threads": args.threads, "reduction_factor": int(loaded[0][0]["reduction_factor"]),
                "outputs": head_outputs(spec.problem_type, spec.num_labels), "problem_type": spec.problem_type},
        "spec": spec, "labels": torch.cat([b["labels"] for b in test]).numpy(),
        "sources": [json.loads((s / "scalearn.json").read_text())["task"]["name"] for s in sources],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="default", help="quality run under bench/results/ whose sources to use")
    p.add_argument("--targets", default=None, help="comma-separated (default: the run's targets)")
    p.add_argument("--peer-python", default="/tmp/peer/bin/python", help="python of the venv with `adapters`")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the worker (default: the run's)")
    cli = p.parse_args()

    import numpy as np
    import torch

    from scalearn_cli.metrics import compute_metrics, main_score

    args = run_args(cli.run)
    if cli.threads:
        args.threads = cli.threads
    torch.set_num_threads(args.threads)
    runner = Runner(args)
    out_file = args.out / "peer_score.json"
    result = json.loads(out_file.read_text()) if out_file.is_file() else {"rows": []}
    versions = subprocess.run([cli.peer_python, "-c", "import adapters, transformers, torch; print(adapters.__version__,"
                               " transformers.__version__, torch.__version__)"], capture_output=True, text=True)
    if versions.returncode != 0:
        raise SystemExit(f"{cli.peer_python} cannot import adapters; install it: see bench/README.md (Peer)")
    result["versions"] = dict(zip(("adapters", "transformers", "torch"), versions.stdout.split()))
    targets = csv(cli.targets) if cli.targets else runner.targets
    with tempfile.TemporaryDirectory(prefix="peer-score-") as tmp:
        for target in targets:
            prep = prepare_job(args, runner, target, Path(tmp))
            t0 = time.perf_counter()
            proc = subprocess.run([cli.peer_python, "-m", "bench.peer_adapters", "--score-worker",
                                   json.dumps(prep["job"])], capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                raise SystemExit(f"peer worker failed on {target}: {proc.stderr.strip().splitlines()[-1:]}")
            peer = json.loads(proc.stdout.strip().splitlines()[-1])
            logits = np.asarray(peer.pop("test_logits"), dtype=np.float32)
            metrics = compute_metrics(prep["spec"], logits, prep["labels"])
            row = {"target": target, "kind": "bottleneck", "seed": 0, "sources": prep["sources"],
                   "lr": args.fusion_lr, "epochs": args.epochs, "test": metrics,
                   "main_score": main_score(prep["spec"], metrics), "wall_seconds": time.perf_counter() - t0,
                   **peer, "ours": ours(args.out, target)}
            result["rows"] = [r for r in result["rows"] if r["target"] != target] + [row]
            result["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads}
            out_file.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
            print(f"{target}: adapters AdapterFusion {row['main_score']:.2f} (parity {peer['parity_max_abs_diff']:.1e}); "
                  f"ours: {json.dumps({k: v['main_score'] for k, v in row['ours'].items()})}", flush=True)


if __name__ == "__main__":
    main()
