"""Where a training step's time goes: the GEMMs each configuration's step runs (``torch.profiler``'s count, by
operator and input shapes), and their CPU time measured alone, so a ratio of step times can be read against the
GEMMs a composition adds.

``profile_steps`` runs ``steps`` training steps of every built configuration under the profiler and records per
step: the GEMMs (``aten::mm``, ``addmm``, ``bmm``) grouped by operator and shapes (calls, GFLOP) and the process's
CPU seconds around the steps. The profiler's own times are wall-clock inside each operator, which other processes'
load inflates, so they are not kept: ``gemm_cpu_s`` runs every GEMM of the step again alone, on random tensors of
its shapes, as many times as the step calls it, and takes the process's CPU time (median of ``repeats``).
bench/decoder_speed.py stores it beside its round-robin; bench/report_profile.py reads it.
"""

from __future__ import annotations

import statistics
import time

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm")


def _step(model, optimizer, batch: dict) -> None:
    loss, _ = model(**batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def gemm_cpu_s(gemm: dict, repeats: int) -> float:
    """CPU seconds of one step's calls of ``gemm`` (op, shapes, calls), run alone: median over ``repeats``."""
    import torch

    g = torch.Generator().manual_seed(0)
    args = [torch.randn(s, generator=g) for s in gemm["shapes"]]
    fn = {"aten::mm": torch.mm, "aten::addmm": torch.addmm, "aten::bmm": torch.bmm}[gemm["op"]]
    fn(*args)  # warm
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        for _ in range(gemm["calls"]):
            fn(*args)
        times.append(time.process_time() - c0)
    return statistics.median(times)


def profile_one(model, optimizer, batch: dict, steps: int, repeats: int = 3) -> dict:
    """One configuration: ``steps`` steps under the profiler (after one untimed step), figures per step."""
    from torch.profiler import ProfilerActivity, profile

    _step(model, optimizer, batch)
    c0 = time.process_time()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        for _ in range(steps):
            _step(model, optimizer, batch)
    cpu = (time.process_time() - c0) / steps
    gemms = [{"op": e.key, "shapes": [list(s) for s in e.input_shapes if s], "calls": e.count // steps,
              "gflop": e.flops / steps / 1e9} for e in prof.key_averages(group_by_input_shape=True)
             if e.key in GEMMS and e.flops]
    gemms.sort(key=lambda g: -g["gflop"])
    for gemm in gemms:
        gemm["cpu_s"] = gemm_cpu_s(gemm, repeats)
    return {"steps": steps, "repeats": repeats, "process_cpu_s": cpu, "gemm_gflop": sum(g["gflop"] for g in gemms),
            "gemm_cpu_s": sum(g["cpu_s"] for g in gemms), "gemms": gemms}


def profile_steps(built: list[tuple[dict, object, object]], batch: dict, steps: int = 2) -> list[dict]:
    """Every ``(spec, model, optimizer)`` profiled in turn: the spec's method, variant and N beside its figures."""
    return [{"method": spec["method"], "variant": spec.get("variant"), "n": spec["n"],
             **profile_one(model, optimizer, batch, steps)} for spec, model, optimizer in built]
