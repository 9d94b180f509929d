"""The cost-over-N curve on an accelerator (fp32 and bf16), from bench/results/speed_curve_device.json
(bench/curve_device.py); nothing when no such run was made (or only its offline dry run)."""

from __future__ import annotations

from bench.report_common import human, label
from bench.report_curve import VARIANTS, _cell, _find, _table


def device_curve_section(data: dict | None) -> list[str]:
    """Per dtype: the LoRA table (step, bytes saved, peak memory per step) and bottleneck / AdapterFusion beside."""
    if not data or data.get("dry_run"):
        return []
    enc = data["encoder"]
    out = [f"#### On {data['device']} (fp32 and bf16)", "",
           f"`bench/curve_device.py` at commit `{(data.get('commit') or '?')[:10]}`, one call on a lent machine "
           f"({data['seconds']:.0f} s, making the sources {data['sources_s']:.0f} s of it): a random encoder of "
           f"MiniLM-L6's shape ({enc['num_hidden_layers']} layers × {enc['hidden_size']}), batch {data['batch']} × "
           f"{data['seq_len']} tokens, torch {data['machine']['torch']}; bf16 is autocast over fp32 weights. Cells as "
           "above (wall-time ratio per round, median [min–max]; the device synchronised around each step).", ""]
    for dtype in ("fp32", "bf16"):
        lora = data.get(f"lora_{dtype}")
        if lora:
            out += _part(lora, dtype)
        others = data.get(f"others_{dtype}")
        if others:
            out += _others(others, dtype, data.get("fusion_max_n"))
    return out


def _part(lora: dict, dtype: str) -> list[str]:
    rows = lora["rows"]
    ns = sorted({r["n"] for r in rows if r["method"] == "scalearn"})
    single = _find(rows, "lora", "single", 1)
    lines = [(label("scalearn", v), "lora", "scalearn", v, None) for v in VARIANTS] + [
        ("ScaLearn, low-rank path forced", "lora", "scalearn", "scalearn", "low-rank")]
    peak = any("peak_ratio" in r for r in rows)
    return [f"*{dtype}, LoRA sources: training step ÷ one trainable LoRA ({single['step_s'] * 1000:.1f} ms median; "
            f"{lora['repeats']} rounds after {lora['warmup']} warm-up)*", "", *_table(rows, ns, lines, _cell), "",
            f"*{dtype}: bytes saved for backward ÷ one trainable LoRA ({human(single['saved_bytes'])}B)"
            + ("; in parentheses the step's peak allocated memory above the model's, ÷ the same" if peak else "")
            + "*", "",
            *_table(rows, ns, lines, lambda r: (f"{r['saved_ratio']:.2f}" + (f" ({r['peak_ratio']:.2f})"
                                                                               if "peak_ratio" in r else ""))
                    if r else "–"), ""]


def _others(others: dict, dtype: str, fusion_max: int | None) -> list[str]:
    rows = others["rows"]
    ns = sorted({r["n"] for r in rows if r["method"] != "single"})
    lines = [("ScaLearn, bottleneck sources", "bottleneck", "scalearn", "scalearn", None),
             ("AdapterFusion, LoRA sources", "lora", "adapterfusion", None, None),
             ("AdapterFusion, bottleneck sources", "bottleneck", "adapterfusion", None, None)]
    return [f"*{dtype}, beside it (each ÷ its kind's single adapter; AdapterFusion up to N = {fusion_max}): training "
            "step, then bytes saved for backward*", "", *_table(rows, ns, lines, _cell), "",
            *_table(rows, ns, lines, lambda r: f"{r['saved_ratio']:.2f}" if r else "–"), ""]
