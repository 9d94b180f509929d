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
