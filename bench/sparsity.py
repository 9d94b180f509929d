"""The effect of the group-lasso penalty on per-source ω (``transfer --sparsity λ``) on pruning.

For each λ, compose the quality run's seed-0 LoRA sources for one target with ScaLearnUniform (one scalar per
layer, site and source, so each source's share of Σ|ω| is easy to read), then ``prune --keep K`` and refit
briefly. Reported per λ: the test score before and after pruning, the sources' shares of Σ|ω| (how concentrated
ω became), and the kept sources. Results go to ``bench/results/sparsity.json``; ``python -m bench report``
renders them.

    python -m bench sparsity --run medium --target rte --lambdas 0,0.01,0.05 --keep 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="medium", help="quality run whose sources and data to reuse")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scalearn-bench")
    p.add_argument("--target", default="rte")
    p.add_argument("--kind", default="lora")
    p.add_argument("--variant", default="scalearn-uniform")
    p.add_argument("--lambdas", default="0,0.01,0.05")
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--prune-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sparsity.json")
    args = p.parse_args()

    import torch

    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.inspection import omega_table
    from scalearn_cli.prune import prune
    from scalearn_cli.train import TrainConfig
    from scalearn_cli.stages.transfer import TransferOptions, transfer

    torch.set_num_threads(args.threads)
    root = args.work / args.run
    config = json.loads((REPO / "bench" / "results" / args.run / "config.json").read_text())
    sources = sorted(root.glob(f"runs/source/*-{args.kind}-single-s0"))
    own = root / "runs" / "source" / f"{args.target}-{args.kind}-single-s0"
    if own not in sources:
        raise SystemExit(f"no {args.kind} source for {args.target} under {root}: run "
                         f"`python -m bench run --out bench/results/{args.run}`")
    sources = [own] + [s for s in sources if s != own]  # the target's own adapter first, as in the quality run
    data_dir = next(root.glob(f"data/{args.target}-*"))
    data = DataOptions(task=args.target, data_dir=data_dir)
    train = TrainConfig(epochs=args.epochs, lr=6e-3, batch_size=config.get("batch_size", 32),
                        max_length=config.get("max_length", 64), seed=0, patience=None)
    rows = []
    for lam in [float(v) for v in args.lambdas.split(",")]:
        out = root / "sparsity" / f"{args.target}-{args.variant}-l{lam:g}"
        t0 = time.time()
        transfer(TransferOptions(tuple(str(s) for s in sources), data, out, "scalearn", args.variant, train=train,
                                 overwrite=True, sparsity=lam))
        table = omega_table(out)
        pruned = prune(out, out.with_name(out.name + f"-keep{args.keep}"), keep=args.keep, epochs=args.prune_epochs,
                       overwrite=True)
        main = pruned["metric"]
        rows.append({
            "lambda": lam, "target": args.target, "kind": args.kind, "variant": args.variant,
            "sources": [s["task"] for s in table["sources"]],
            "shares": [round(s["share"], 4) for s in table["sources"]],
            "score": pruned["score"]["before"], "metric": main,
            "pruned_score": pruned["score"]["after"], "keep": args.keep,
            "kept": [s["task"] for s in pruned["kept"]],
            "lora_rank": pruned.get("lora_rank"),
            "seconds": round(time.time() - t0, 1),
        })
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"run": args.run, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "rows": rows}, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
