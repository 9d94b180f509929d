"""Where a training step's time goes: each configuration's step under ``torch.profiler`` (the FLOPs it counts for
GEMMs, CPU time by operator), so a ratio of step times can be read as the GEMMs a composition adds.

``profile_steps`` runs ``steps`` training steps of every built configuration and records per step: the GEMMs
(``aten::mm``, ``addmm``, ``bmm``) grouped by operator and input shapes (calls, GFLOP, CPU seconds), their totals,
the CPU seconds of all operators (self time, so nothing counts twice) and the process's CPU seconds around the
steps. bench/decoder_speed.py stores it beside its round-robin; bench/report_curve.py reads it.
"""

from __future__ import annotations

import time

GEMMS = ("aten::mm", "aten::addmm", "aten::bmm")


def _step(model, optimizer, batch: dict) -> None:
    loss, _ = model(**batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def profile_one(model, optimizer, batch: dict, steps: int) -> dict:
    """One configuration: ``steps`` steps under the profiler (after one untimed step), figures per step."""
    from torch.profiler import ProfilerActivity, profile

    _step(model, optimizer, batch)
    c0 = time.process_time()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        for _ in range(steps):
            _step(model, optimizer, batch)
    cpu = (time.process_time() - c0) / steps
    events = prof.key_averages(group_by_input_shape=True)
    gemms = [{"op": e.key, "shapes": [list(s) for s in e.input_shapes if s], "calls": e.count // steps,
              "gflop": e.flops / steps / 1e9, "cpu_s": e.self_cpu_time_total / steps / 1e6}
             for e in events if e.key in GEMMS]
    gemms.sort(key=lambda g: -g["gflop"])
    return {"steps": steps, "process_cpu_s": cpu, "ops_cpu_s": sum(e.self_cpu_time_total for e in events) / steps / 1e6,
            "gemm_gflop": sum(g["gflop"] for g in gemms), "gemm_cpu_s": sum(g["cpu_s"] for g in gemms),
            "gemms": [g for g in gemms if g["gflop"] > 0]}


def profile_steps(built: list[tuple[dict, object, object]], batch: dict, steps: int = 2) -> list[dict]:
    """Every ``(spec, model, optimizer)`` profiled in turn: the spec's method, variant and N beside its figures."""
    return [{"method": spec["method"], "variant": spec.get("variant"), "n": spec["n"],
             **profile_one(model, optimizer, batch, steps)} for spec, model, optimizer in built]
