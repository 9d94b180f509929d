"""The cost-over-N report (bench/report_curve.py): the goals verdict is read from the rows, never typed."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import report_curve  # noqa: E402


def rows(step: dict[int, float], saved: float = 1.0) -> dict:
    out = [{"kind": "lora", "method": "single", "n": 1, "variant": None, "step_ratio": 1.0, "saved_ratio": 1.0}]
    for variant in report_curve.VARIANTS:
        out += [{"kind": "lora", "method": "scalearn", "variant": variant, "n": n, "step_ratio": ratio,
                 "saved_ratio": saved} for n, ratio in step.items()]
    return {"rows": out}


def test_goals_are_met_only_when_every_variant_is_under_every_bar():
    assert "**met by all four variants**" in report_curve.goals(rows({64: 1.05, 256: 1.19}))[0]
    missed = report_curve.goals(rows({64: 1.05, 256: 1.25}))[0]
    assert "**not met**" in missed and "ScaLearnUniform++ at N = 256: step 1.25× > 1.20×" in missed
    assert "at N = 64: step" not in missed
    memory = report_curve.goals(rows({64: 1.0, 256: 1.0}, saved=1.08))[0]
    assert "saved 1.08× > 1.05×" in memory
    unmeasured = report_curve.goals(rows({64: 1.0}))[0]
    assert "ScaLearn at N = 256: not measured" in unmeasured


def test_a_recheck_at_some_ns_is_judged_only_where_it_measured():
    part = rows({256: 1.15})
    assert "**met by all four variants**" in report_curve.goals(part, measured_only=True)[0]
    assert "at N = 64: not measured" in report_curve.goals(part)[0]
    assert "not measured here: N = 64" in report_curve.goals(part, measured_only=True)[0]


def test_the_device_curve_runs_end_to_end_offline_without_the_packages_a_lent_machine_lacks(tmp_path):
    """``bench curve-device --dry-run``: the GPU script's whole path (random MiniLM-shaped encoder, sources made on
    the spot, both dtypes, round-robin, bytes saved) on the CPU at toy sizes, with ``datasets``, scikit-learn,
    scipy, typer and rich unimportable, as on the lent machine; its report section renders from the file."""
    import json
    import os
    import subprocess

    out = tmp_path / "curve.json"
    blocked = "import sys\nfor m in ('datasets', 'sklearn', 'scipy', 'typer', 'rich'): sys.modules[m] = None\n"
    code = blocked + ("from bench.curve_device import main\n"
                      f"main(['--dry-run', '--parts', 'lora', '--work', {str(tmp_path)!r}, '--out', {str(out)!r}])")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    data = json.loads(out.read_text())
    assert data["dry_run"] and data["ns"] == [1, 2]
    for dtype in ("fp32", "bf16"):
        rows = data[f"lora_{dtype}"]["rows"]
        assert {(r["method"], r.get("variant"), r["n"], r.get("path")) for r in rows} >= {
            ("single", None, 1, None), ("scalearn", "scalearn++", 2, None), ("scalearn", "scalearn", 2, "low-rank")}
        assert all(r["saved_bytes"] > 0 and r["step_s"] > 0 for r in rows)
    import report_device

    assert report_device.device_curve_section(data) == []  # a dry run is never reported as a measurement
    text = "\n".join(report_device.device_curve_section({**data, "dry_run": False, "device": "a test device"}))
    assert "*bf16, LoRA sources: training step" in text and "| ScaLearn, low-rank path forced | – |" in text


def test_e2e_phases_count_each_moment_once_for_the_innermost_timed_call(monkeypatch):
    """Training's per-epoch dev scoring is evaluation, not training: nested timed calls never double count."""
    import time

    import e2e_phases

    monkeypatch.setattr(e2e_phases, "totals", {})
    monkeypatch.setattr(e2e_phases, "cpu_totals", {})
    evaluate = e2e_phases._timed("eval", lambda: time.sleep(0.05))

    def fit():
        time.sleep(0.05)
        evaluate()

    e2e_phases._timed("training", fit)()
    assert 0.05 <= e2e_phases.totals["eval"] < 0.09 and 0.05 <= e2e_phases.totals["training"] < 0.09
    assert set(e2e_phases.cpu_totals) == {"eval", "training"}


def test_e2e_verdict_and_phase_differences_are_read_from_the_result():
    import report_e2e

    phases = {"startup_s": 1.0, "imports": 3.0, "training": 10.0, "eval": 2.0}
    run = {"wall_s": 16.0, "cpu_s": 15.0, "phases": phases, "cpu_phases": phases}
    other = {**run, "wall_s": 26.0, "phases": {**phases, "training": 20.0}, "cpu_phases": {**phases, "training": 19.0}}
    data = {"setup": {"n": 256, "rows": 512, "target": "rte", "epochs": 1, "batch_size": 32, "max_length": 128,
                      "model": "m", "threads": 1}, "machine": {"cpu": "c", "cpu_count": 2, "torch": "t"}, "pairs": 3,
            "ratios": [1.6, 1.7, 1.62], "ratio_median": 1.62, "cpu_ratios": [1.2, 1.3, 1.25], "cpu_ratio_median": 1.25,
            "medians": {"transfer": other, "train-source": run}, "uptime": "up"}
    text = "\n".join(report_e2e.e2e_section(data))
    assert "median **1.62×** (goal ≤ 1.5×: **not met**)" in text
    assert "| training (the steps) | 20.0 (19.0) | 10.0 (10.0) | +10.0 (+9.0) |" in text
    data["ratio_median"] = 1.4
    assert "**met**" in "\n".join(report_e2e.e2e_section(data))
