"""The training loop's cost on CPU, as ratios measured in one run.

1. ``throughput``: ``train.fit`` (the loop every stage uses) vs a plain PEFT + PyTorch loop on the same batches
   and the same model (MiniLM-L6 + PEFT LoRA r=8 on query/value, no dropout, AdamW), alternating blocks of
   ``--steps`` steps, ``--rounds`` rounds; examples/s of ours ÷ the plain loop's, per round (median, min–max).
   Both loops do the same work per step (forward, backward, AdamW, linear schedule); ``fit`` adds its per-step
   loss checks and progress bookkeeping. Evaluation is excluded here (``fit`` is given a one-row dev set).
   Each round also runs one ``fit`` call of ``--long-steps`` steps whose progress callback runs one step of the
   plain loop between two of ``fit``'s (step-level round robin, as bench/speed.py does it): ``steady_ratio`` is
   the median over steps of plain step time ÷ ``fit`` step time (the interval between callbacks, so ``fit``'s
   per-step bookkeeping counts against it), the fixed per-call costs left out, robust to load drift.
2. ``capped``: end-to-end wall time of ``scalearn train-source --task sst2 --max-train-samples 400 --epochs 2``
   (real SST-2 from ``--data-root``) with this tree and with an older commit (``--before``, default the commit
   before the faster loop) checked out into a temporary worktree; the runs alternate, ``--repeats`` each.

    python -m bench loop [--data-root ../shared/data] [--before 86b943e]   # writes bench/results/loop.json
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
from dataclasses import replace
from pathlib import Path

from bench.speed import machine, spread  # same machine record and spread summary as the speed tables

REPO = Path(__file__).resolve().parents[1]


def throughput(args: argparse.Namespace) -> dict:
    import torch
    from transformers import get_linear_schedule_with_warmup

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.model import TaskHead, TaskModel
    from scalearn_cli.sources import get_kind
    from scalearn_cli.stages.common import DataOptions, prepare
    from scalearn_cli.train import Progress, TrainConfig, fit

    torch.set_num_threads(args.threads)
    config = TrainConfig(epochs=1, lr=5e-4, batch_size=32, max_length=128, seed=0, patience=None)
    data = DataOptions(task="sst2", data_dir=Path(args.data_root) / "glue" / "sst2",
                       max_train_samples=32 * args.long_steps, max_dev_samples=1)
    kind = get_kind("lora")

    def model_and_params():
        encoder, tokenizer, ref = load_backbone(args.model)
        torch.manual_seed(0)
        attached = kind.attach(encoder, kind.settings({"dropout": 0.0}), ref.id)
        head = TaskHead(ref.hidden_size, 2)
        return TaskModel(attached.model, head, "classification"), attached.params + list(head.parameters()), tokenizer

    ours, ours_params, tokenizer = model_and_params()
    plain, plain_params, _ = model_and_params()
    prepared = prepare(data, tokenizer, config)
    every = list(prepared.train)
    blocks = {"short": every[: args.steps], "long": every[: args.long_steps]}

    def run_fit(batches) -> float:
        t0 = time.perf_counter()
        fit(ours, ours_params, batches, prepared.dev, replace(config, max_steps=len(batches)), lambda logits, labels: {})
        return time.perf_counter() - t0

    def run_plain(batches) -> float:
        optimizer = torch.optim.AdamW(plain_params, lr=config.lr, weight_decay=0.0)
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
        plain.train()
        t0 = time.perf_counter()
        for batch in batches:
            loss, _ = plain(**batch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    class Interleaved(Progress):
        """fit's progress callback: times fit's step (since the last callback) and runs one plain step."""

        def start(self, total_steps: int) -> None:
            self.fit_s, self.plain_s, self.mark = [], [], time.perf_counter()
            self.optimizer = torch.optim.AdamW(plain_params, lr=config.lr, weight_decay=0.0)
            self.scheduler = get_linear_schedule_with_warmup(self.optimizer, 0, total_steps)

        def step(self, loss: float, examples_per_second: float) -> None:
            now = time.perf_counter()
            self.fit_s.append(now - self.mark)
            plain.train()
            batch = blocks["long"][len(self.plain_s)]
            plain_loss, _ = plain(**batch)
            plain_loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.mark = time.perf_counter()
            self.plain_s.append(self.mark - now)

    def run_interleaved() -> list[float]:
        progress = Interleaved()
        fit(ours, ours_params, blocks["long"], prepared.dev, replace(config, max_steps=len(blocks["long"])),
            lambda logits, labels: {}, progress=progress)
        return [p / f for p, f in zip(progress.plain_s, progress.fit_s)]

    run_fit(blocks["short"]), run_plain(blocks["short"])  # warm-up
    ours_s, plain_s, per_round = [], [], []
    for _ in range(args.rounds):
        ours_s.append(run_fit(blocks["short"]))
        plain_s.append(run_plain(blocks["short"]))
        per_round.append(statistics.median(run_interleaved()))
    examples = sum(len(b["labels"]) for b in blocks["short"])
    ratio = spread([p / o for o, p in zip(ours_s, plain_s)])  # ours examples/s ÷ plain examples/s
    return {"steps": len(blocks["short"]), "long_steps": len(blocks["long"]), "examples": examples,
            "rounds": args.rounds, "ours_s": ours_s, "plain_s": plain_s,
            "ours_examples_per_s": examples / statistics.median(ours_s),
            "plain_examples_per_s": examples / statistics.median(plain_s), "ratio": ratio,
            "steady_ratio": spread(per_round), "steady_per_round": per_round}


def capped(args: argparse.Namespace) -> dict:
    """Wall time of the same capped train-source command with this tree and with ``--before``."""
    data_dir = Path(args.data_root).resolve() / "glue" / "sst2"
    with tempfile.TemporaryDirectory(prefix="scalearn-loop-") as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before], check=True,
                       capture_output=True)
        try:
            trees = {"before": old, "now": REPO}
            times: dict[str, list[float]] = {name: [] for name in trees}
            scores: dict[str, float] = {}
            for i in range(args.repeats):
                for name, tree in trees.items():
                    out = Path(tmp) / f"{name}-{i}"
                    cmd = [sys.executable, "-m", "scalearn_cli", "train-source", "--task", "sst2", "--data-dir",
                           str(data_dir), "--max-train-samples", "400", "--epochs", "2", "--out", str(out), "--json"]
                    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
                    t0 = time.perf_counter()
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
                    times[name].append(time.perf_counter() - t0)
                    if proc.returncode != 0:
                        raise SystemExit(f"{name}: {proc.stderr.strip().splitlines()[-1:]}")
                    scores[name] = json.loads(proc.stdout)["metrics"]["test"]["accuracy"]
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], capture_output=True)
    return {"command": "train-source --task sst2 --max-train-samples 400 --epochs 2 (LoRA defaults)",
            "before": args.before, "seconds": times, "test_accuracy": scores,
            "speedup": statistics.median(times["before"]) / statistics.median(times["now"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--steps", type=int, default=20, help="training steps of the short block (batch 32)")
    p.add_argument("--long-steps", type=int, default=60, help="steps of the interleaved per-step comparison")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-capped", action="store_true", help="only the throughput part (keep the file's capped result)")
    p.add_argument("--repeats", type=int, default=2, help="end-to-end runs per tree")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--before", default="86b943e", help="the commit to compare the capped run against")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "loop.json")
    args = p.parse_args()
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result = {"machine": machine(args.threads), "throughput": throughput(args),
              "capped": old.get("capped") if args.skip_capped else capped(args),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    t, c = result["throughput"], result["capped"]
    if c is None:
        c = {"speedup": float("nan"), "before": "-", "seconds": {"before": [float("nan")], "now": [float("nan")]}}
    print(f"fit ÷ plain loop examples/s: {t['ratio']['median']:.2f} [{t['ratio']['min']:.2f}–{t['ratio']['max']:.2f}] "
          f"({t['steps']}-step calls), per step (interleaved) "
          f"{t['steady_ratio']['median']:.2f} [{t['steady_ratio']['min']:.2f}–{t['steady_ratio']['max']:.2f}]; "
          f"capped SST-2 run {c['speedup']:.1f}× faster than {c['before']} "
          f"({statistics.median(c['seconds']['before']):.0f} s -> {statistics.median(c['seconds']['now']):.0f} s)")


if __name__ == "__main__":
    main()
