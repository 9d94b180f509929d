"""The cost-over-N curve (``speed_curve.py``'s LoRA table, bottleneck and AdapterFusion beside it) on an
accelerator, in fp32 and in bf16 mixed precision, from one call on a lent machine.

Such a machine has PyTorch, transformers and peft, no network and no ``datasets``, and takes at most 64 MiB of this
tree per call, so nothing large travels: the encoder is a random one of MiniLM-L6's exact shape (6 layers × 384,
12 heads, 1,536 intermediate, vocabulary 30,522: time and bytes depend on shapes, not on weights) with a word-level
tokenizer, and the N random sources are made there as ``speed.make_sources`` makes them. Then, per dtype, every
configuration is built in one process and stepped round-robin as ``speed.steps_round_robin`` does (one step each
per round, a ratio per round against one trainable LoRA, or bottleneck adapter, of the same round), with the device
synchronised around each step; bf16 is autocast over fp32 weights, as ``--precision bf16`` trains. Bytes saved for
backward as in ``speed.saved_bytes``; on CUDA also each step's peak of allocated memory above what was allocated
before it. Writes ``bench/results/speed_curve_device.json`` (here: ``--out $OUT/...``).

    python3 -m bench curve-device --device cuda --out $OUT/speed_curve_device.json     # on the lent machine
    python -m bench curve-device --dry-run          # here, offline: the same code on the CPU at toy sizes

On the lent machine, through the ``run`` tool, with a timeout that leaves room to rerun: ``python3 -m bench
curve-device --device cuda --out $OUT/speed_curve_device.json``; copy the returned file to bench/results/ and
regenerate the docs. Not yet run on a GPU: its time there is unmeasured (the CPU side, making the 512 sources and
building about 30 models, is most of it; the file is written after every part and dtype, so a call cut off at its limit
still returns what ran, and ``--parts lora`` or ``--n 1,64,256`` shorten it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import speed
from bench.speed_curve import commit, lora_specs, other_specs

REPO = Path(__file__).resolve().parents[1]
#: the packaged encoder's shape (sentence-transformers/all-MiniLM-L6-v2's config.json)
MINILM_SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                    vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12, pad_token_id=0)
#: the dry run's toy encoder and sizes (any machine, seconds)
TOY_SHAPE = {**MINILM_SHAPE, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "vocab_size": 1000}


def random_encoder(folder: Path, shape: dict) -> Path:
    """A random BertModel of ``shape`` and a word-level tokenizer over its vocabulary, saved once."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {**{t: i for i, t in enumerate(specials)}, **{f"w{i}": i for i in range(5, shape["vocab_size"])}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    BertModel(BertConfig(**shape)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_all(args: argparse.Namespace, specs: list[dict]) -> list[tuple]:
    """Every configuration built once on ``args.device`` (both dtypes step the same models), with its optimizer."""
    import torch

    built = []
    for spec in specs:
        model, params, _ = speed.build(spec)
        model.to(args.device).train()
        built.append((model, torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)))
    return built


def round_robin(args: argparse.Namespace, specs: list[dict], built: list[tuple], dtype: str) -> dict:
    """``speed.steps_round_robin`` on ``args.device`` in ``dtype`` (fp32, or bf16 autocast): every round kept."""
    import torch

    autocast = (lambda: torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16)) if dtype == "bf16" else (
        contextlib.nullcontext)
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 1000, (speed.BATCH, speed.SEQ), generator=g),
             "attention_mask": torch.ones(speed.BATCH, speed.SEQ, dtype=torch.long),
             "labels": torch.randint(0, 2, (speed.BATCH,), generator=g)}
    batch = {k: v.to(args.device) for k, v in batch.items()}
    cuda = args.device.startswith("cuda")
    times: list[list[float]] = [[] for _ in built]
    peaks: list[int] = [0 for _ in built]
    for round_ in range(args.warmup + args.repeats):
        for i, (model, optimizer) in enumerate(built):
            _sync(args.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            with autocast():
                loss, _ = model(**batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(args.device)
            if round_ >= args.warmup:
                times[i].append(time.perf_counter() - t0)
                if cuda:
                    peaks[i] = max(peaks[i], torch.cuda.max_memory_allocated() - before)
    saved = []
    for model, _ in built:
        with autocast():
            saved.append(speed.saved_bytes(model, batch))
    rows = []
    for i, spec in enumerate(specs):
        j = next(k for k, s in enumerate(specs) if s["method"] == "single" and s["kind"] == spec["kind"])
        stats = speed.spread([a / b for a, b in zip(times[i], times[j])])
        rows.append({**{k: v for k, v in spec.items() if k != "sources"}, "step_times": [round(t, 6) for t in times[i]],
                     "step_s": statistics.median(times[i]), "step_ratio": stats["median"], "step_ratio_spread": stats,
                     "wide_spread": stats["iqr_rel"] > speed.WIDE_SPREAD, "saved_bytes": saved[i],
                     "saved_ratio": saved[i] / saved[j],
                     **({"peak_step_bytes": peaks[i], "peak_ratio": peaks[i] / max(1, peaks[j])} if cuda else {})})
    return {"dtype": dtype, "repeats": args.repeats, "warmup": args.warmup, "rows": rows,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({speed.machine(1)['cpu']})"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:1, or cpu")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16 (autocast over fp32 weights)")
    p.add_argument("--n", default="1,16,64,256", help="numbers of sources")
    p.add_argument("--low-rank-n", default="64,256", help="Ns at which ScaLearn also runs on the low-rank path")
    p.add_argument("--fusion-max-n", type=int, default=64, help="AdapterFusion only up to this N")
    p.add_argument("--parts", default="lora,others", help="lora (the four variants) and/or others (bottleneck, fusion)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=8, help="torch CPU threads (building, the CPU side of each step)")
    p.add_argument("--dry-run", action="store_true", help="the CPU, a toy encoder, N ≤ 2, one round: checks the "
                                                         "script end to end offline in seconds")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "scalearn-bench" / "curve-device")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "speed_curve_device.json")
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.n, args.low_rank_n, args.fusion_max_n = "cpu", "1,2", "2", 2
        args.warmup, args.repeats, args.threads = 0, 1, 1
        args.work = args.work / "dry-run"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    shape = TOY_SHAPE if args.dry_run else MINILM_SHAPE
    args.model = str(random_encoder(args.work / ("toy-encoder" if args.dry_run else "minilm-shape"), shape))
    args.ns = [int(v) for v in args.n.split(",")]
    args.low_rank_ns = {int(v) for v in args.low_rank_n.split(",") if v}
    parts = args.parts.split(",")
    kinds = ("lora", "bottleneck") if "others" in parts else ("lora",)
    sources = {kind: speed.make_sources(args.work / "sources", args.model, kind, max(args.ns)) for kind in kinds}
    made = time.perf_counter() - t0
    result = {"device": device_name(args.device), "device_arg": args.device, "machine": speed.machine(args.threads),
              "encoder": {"random": True, **shape}, "batch": speed.BATCH, "seq_len": speed.SEQ, "ns": args.ns,
              "dry_run": args.dry_run, "commit": commit(), "started": started, "sources_s": round(made, 1),
              "fusion_max_n": args.fusion_max_n, "load_average_at_start": os.getloadavg()}
    dtypes = args.dtypes.split(",")
    if set(dtypes) - {"fp32", "bf16"} or set(parts) - {"lora", "others"}:
        raise SystemExit(f"--dtypes takes fp32,bf16 and --parts lora,others; got {args.dtypes} and {args.parts}")
    for part in parts:
        specs = {"lora": lora_specs, "others": other_specs}[part](args, sources)
        built = build_all(args, specs)
        for dtype in dtypes:
            result[f"{part}_{dtype}"] = round_robin(args, specs, built, dtype)
            result.update(seconds=round(time.perf_counter() - t0, 1), load_average_at_end=os.getloadavg())
            write(args.out, result)  # after every part: a call cut off at its time limit still returns what ran
            print(f"{part} {dtype} done at {time.perf_counter() - t0:.0f} s", flush=True)
        del built
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(f"wrote {args.out} in {result['seconds']} s")


def write(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
