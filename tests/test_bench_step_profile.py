"""Where a step's time goes (bench/step_profile.py) and what the decoder report reads from it
(bench/report_profile.py): GEMMs counted by shape from the profiler, roles and the bound computed, never typed."""

from __future__ import annotations

import torch

from bench import report_profile
from bench.step_profile import profile_one

H, T, R = 512, 1024, 512  # the decoder benchmark's site: hidden, tokens a batch, Σr at N = 64 LoRAs of rank 8


def _gemm(op: str, shapes: list[list[int]], calls: int, scale: float = 1.0) -> dict:
    gflop = 2 * calls * shapes[-2][0] * shapes[-2][1] * shapes[-1][1] / 1e9
    return {"op": op, "shapes": shapes, "calls": calls, "gflop": gflop, "cpu_s": gflop / 75 * scale}


def _data(base_gflop: float) -> dict:
    """A decoder result: one LoRA's step, ScaLearn's with the dense sites' GEMMs (forms of W + ΔW, Gᵀ·X, ·Dᵀ)."""
    base = [_gemm("aten::mm", [[T, H], [H, H]], int(base_gflop / 0.537))]
    lora = [_gemm("aten::mm", [[T, H], [H, 8]], 48)]
    dense = [_gemm("aten::addmm", [[H, H], [H, R], [R, H]], 30), _gemm("aten::mm", [[H, T], [T, H]], 16),
             _gemm("aten::mm", [[H, H], [H, R]], 16)]

    def row(method, variant, gemms):
        return {"method": method, "variant": variant, "n": 1 if variant is None else 64, "steps": 2, "repeats": 3,
                "gemms": gemms, "gemm_gflop": sum(g["gflop"] for g in gemms),
                "gemm_cpu_s": sum(g["cpu_s"] for g in gemms), "process_cpu_s": 2.0}

    profile = [row("single", None, base + lora)] + [row("scalearn", v, base + dense) for v in report_profile.VARIANTS]
    step = sum(g["cpu_s"] for g in base) * 1.25  # GEMMs: 80% of the single LoRA's step
    rr = [{"method": "single", "variant": None, "saved_bytes": 257_000_000, "saved_ratio": 1.0,
           "step_cpu_times": [step, step * 1.1, step * 0.9]}]
    rr += [{"method": "scalearn", "variant": v, "saved_bytes": 260_000_000, "saved_ratio": 1.014,
            "step_cpu_times": [step * 1.15] * 3} for v in report_profile.VARIANTS]
    return {"decoder": {"layers": 8, "hidden": H, "batch": 4, "seq_len": 256, "rank": 8}, "rows": rr,
            "profile": {"rows": profile, "threads": 1, "load_average_at_start": [2.0], "load_average_at_end": [3.0]}}


def test_the_report_names_each_added_gemm_and_says_the_goal_is_out_of_reach_when_the_gemms_alone_exceed_it():
    text = "\n".join(report_profile.profile_lines(_data(base_gflop=100.0)))
    assert "| `addmm` 512×512 + 512×512 · 512×512 | W + (U·diag ω)·D" in text and "| 30 |" in text
    assert "| `mm` 512×1024 · 1024×512 | Gᵀ·X" in text and "(Gᵀ·X)·Dᵀ" in text
    assert "out of reach of exact arithmetic" in text and "median step CPU time is 1.150×" in text
    again = 14 * 2 * H * H * R / 1e9  # the 30 forms less the 16 forward ones: formed again in backward
    assert f"forming ΔW again in backward ({again:.1f} GFLOP)" in text
    assert "within the arithmetic's reach" in "\n".join(report_profile.profile_lines(_data(base_gflop=1000.0)))


def test_a_result_without_a_profile_adds_no_lines():
    data = _data(100.0)
    del data["profile"]
    assert report_profile.profile_lines(data) == []


def test_profile_one_counts_gemm_flops_by_shape_per_step():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(16, 8, bias=False)

        def forward(self, x):
            return self.lin(x).square().mean(), None

    model = Tiny()
    got = profile_one(model, torch.optim.SGD(model.parameters(), lr=0.1), {"x": torch.randn(32, 16)}, steps=2)
    assert got["steps"] == 2 and got["process_cpu_s"] > 0 and got["gemm_cpu_s"] >= 0
    assert {g["op"] for g in got["gemms"]} <= {"aten::mm", "aten::addmm", "aten::bmm"}
    forward = next(g for g in got["gemms"] if g["shapes"] == [[32, 16], [16, 8]])
    assert forward["calls"] == 1 and abs(forward["gflop"] - 2 * 32 * 16 * 8 / 1e9) < 1e-12
    assert abs(got["gemm_gflop"] - sum(g["gflop"] for g in got["gemms"])) < 1e-12
