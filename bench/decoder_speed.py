"""Transfer-step cost over decoder LoRAs, measured like ``speed.py --steps-round-robin``.

No pretrained decoder installs from the package registries, so this builds a random Llama a CPU can step
(``--layers`` × ``--hidden``, default 8 × 512, vocabulary 32,000) with a word-level tokenizer, saves N random PEFT
LoRA sources on it (PEFT's default targets for Llama: q_proj, v_proj; r = 8), and steps, round-robin in one
process, the single trainable LoRA (no dropout) against ScaLearn (and, as the peer, PEFT itself with the N LoRAs
all active as separate branches, head trained) with N = 1, 4, 8, 16 sources at batch
``--batch`` × ``--seq-len`` tokens (default 4 × 256). Every round is kept; ratios are per round; memory is bytes
saved for backward. Then the single LoRA and ScaLearn's variants at the largest N step under ``torch.profiler``
(``--profile-steps``; bench/step_profile.py): the GEMMs each step runs, by shape, with their FLOPs and CPU time.
Writes ``bench/results/decoder_steps.json`` (read by ``report.py``).

    python -m bench decoder-speed [--n 1,4,8,16] [--repeats 10] [--threads 2]
    python -m bench decoder-speed --n 1,64 --fusion-max-n 16 --peer-max-n 16 --threads 1 \
        --out bench/results/decoder_steps_n64.json      # the shelf-sized N (dense path), without the slow peers
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench import speed

REPO = Path(__file__).resolve().parents[1]


def random_llama(folder: Path, layers: int, hidden: int) -> Path:
    """A random LlamaForCausalLM checkpoint + a word-level tokenizer, saved once (re-used when present)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<pad>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(31997)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="</s>", model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=8,
                         max_position_embeddings=1024, pad_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lorahub_iterations(args: argparse.Namespace, model: Path, sources: list[Path], result: dict) -> list[dict]:
    """One LoraHub search iteration per N: set the N merge weights, one no-grad forward over a batch of few-shot rows
    (LoraHub's loss evaluation), timed ``--repeats`` times; ÷ the median ScaLearn training step at that N."""
    import statistics
    import time

    import torch

    from scalearn_cli.combiners import CombinerSpec
    from scalearn_cli.compose import inject
    from scalearn_cli.model import TaskHead, TaskModel
    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.resolve import Resolver

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.seq_len), generator=g)
    out = []
    for n in map(int, args.n.split(",")):
        encoder, _, ref = load_backbone(str(model))
        comp = inject(encoder, [Resolver().source(str(p)) for p in sources[:n]],
                      CombinerSpec("lorahub", None, {"weights": [1.0 / n] * n}))
        task = TaskModel(encoder, TaskHead(ref.hidden_size, 2), "classification").eval()
        times = []
        with torch.no_grad():
            for i in range(args.warmup + args.repeats):
                comp.combiner.set([1.0 / n] * n)  # a new candidate w each iteration
                t0 = time.perf_counter()
                task(input_ids=ids, attention_mask=torch.ones_like(ids))
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
        step = next(r["step_s"] for r in result["rows"] if r["method"] == "scalearn" and r.get("variant") == "scalearn"
                    and r["n"] == n)
        out.append({"n": n, "iteration_s": statistics.median(times), "iteration_times": times,
                    "vs_scalearn_step": statistics.median(times) / step})
    return out


def profile_part(args: argparse.Namespace, model: Path, sources: list[Path]) -> dict:
    """The single LoRA and ScaLearn's four variants at the largest N, ``--profile-steps`` steps each under
    ``torch.profiler`` (bench/step_profile.py), on the round-robin's batch; with the load average around it."""
    import torch

    from bench.speed_models import build
    from bench.step_profile import profile_steps

    torch.set_num_threads(args.threads)
    n = max(map(int, args.n.split(",")))
    specs = [{"model": str(model), "threads": args.threads, "kind": "lora", "method": "single", "n": 1}]
    specs += [{**specs[0], "method": "scalearn", "variant": v, "n": n, "sources": [str(p) for p in sources[:n]]}
              for v in speed.VARIANTS]
    built = []
    for spec in specs:
        net, params, _ = build(spec)
        built.append((spec, net.train(), torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)))
    g = torch.Generator().manual_seed(0)  # the round-robin's batch
    batch = {"input_ids": torch.randint(1000, 20000, (args.batch, args.seq_len), generator=g),
             "attention_mask": torch.ones(args.batch, args.seq_len, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch,), generator=g)}
    load0 = os.getloadavg()
    rows = profile_steps(built, batch, args.profile_steps)
    return {"rows": rows, "threads": args.threads, "load_average_at_start": load0,
            "load_average_at_end": os.getloadavg()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--n", default="1,4,8,16")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile-steps", type=int, default=2,
                   help="steps of each configuration at the largest N under torch.profiler (0: none)")
    p.add_argument("--fusion-max-n", type=int, default=None, help="AdapterFusion only up to this N (default: all)")
    p.add_argument("--peer-max-n", type=int, default=None, help="PEFT all-active only up to this N (default: all)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scalearn-bench" / "decoder")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "decoder_steps.json")
    args = p.parse_args()
    from scalearn_cli.sources.lora import LoraSettings

    model = random_llama(args.work / f"llama-{args.layers}x{args.hidden}", args.layers, args.hidden)
    speed.BATCH, speed.SEQ = args.batch, args.seq_len  # the round-robin measures at these shapes
    rr_args = argparse.Namespace(model=str(model), kinds="lora", n=args.n, warmup=args.warmup,
                                 repeats=args.repeats, threads=args.threads, fusion_max_n=args.fusion_max_n)
    sources = {"lora": speed.make_sources(args.work / "sources", str(model), "lora", max(map(int, args.n.split(","))))}
    peers = [{"model": str(model), "threads": args.threads, "kind": "lora", "method": "peft-all-active", "n": n,
              "sources": [str(p) for p in sources["lora"][:n]]} for n in map(int, args.n.split(","))
             if n <= (args.peer_max_n or n)]
    result = speed.steps_round_robin(rr_args, sources, extra_specs=peers)
    rank = LoraSettings().r  # the sources' rank (make_sources saves the LoRA defaults)
    result.update(decoder={"arch": "llama", "layers": args.layers, "hidden": args.hidden, "vocab": 32000,
                           "lora": f"PEFT default targets (q_proj, v_proj), r={rank}", "rank": rank, "batch": args.batch,
                           "seq_len": args.seq_len})
    result["lorahub"] = lorahub_iterations(args, model, sources["lora"], result)
    if args.profile_steps:
        result["profile"] = profile_part(args, model, sources["lora"])
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for r in result["rows"]:
        print(f"{r['method']:14s} {str(r.get('variant') or '-'):18s} N={r['n']:2d} step {r['step_ratio']:.2f}x "
              f"[{r['step_ratio_spread']['min']:.2f}-{r['step_ratio_spread']['max']:.2f}] saved {r['saved_ratio']:.2f}x")


if __name__ == "__main__":
    main()
