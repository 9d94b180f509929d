"""Small targets: what a transfer reports about ω (kept epoch, steps, movement, the warning) and the selection
knobs that let ω move (``--min-steps``, ``--head-lr``)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import invoke, make_source, ok

from scalearn_cli.inspection import BARELY_MOVED, omega_movement, omega_warning

TRAIN = ["--batch-size", "8", "--max-length", "16", "--patience", "0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, list[Path]]:
    """A tiny sentiment task (80 rows: 64 train / 8 dev / 8 test) and three fabricated LoRA sources."""
    root = tmp_path_factory.mktemp("small")
    rng = random.Random(0)
    rows = []
    for _ in range(80):
        label = rng.randint(0, 1)
        rows.append({"sentence": f"the film was {rng.choice(['good', 'great'] if label else ['bad', 'awful'])}",
                     "label": label})
    task = root / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sources = [make_source(root / f"lora{i}", tiny_model_dir, "lora", seed=i) for i in range(3)]
    return task, sources


def transfer(setup: tuple[Path, list[Path]], out: Path, *extra: Any) -> Any:
    task, sources = setup
    variant = [] if "--method" in extra else ["--variant", "scalearn++"]  # a variant is ScaLearn's option only
    args = ["transfer", "--task", "custom", "--data-file", task, "--text-fields", "sentence", *variant,
            *[a for s in sources for a in ("--source", s)], *TRAIN, "--out", out, *extra]
    return ok(invoke(*args))


def test_omega_movement_is_the_mean_relative_change_and_the_share_range() -> None:
    omega = {"a": torch.tensor([[0.5, 0.5], [1.0, 1.0]]), "b": torch.tensor([[0.5, 0.5], [1.5, 1.5]])}
    moved = omega_movement(omega, start=1.0)
    assert moved["mean_relative_change"] == pytest.approx((0.5 * 4 + 0.5 * 2) / 8)
    assert moved["smallest_share"] == pytest.approx(2 / 7) and moved["largest_share"] == pytest.approx(5 / 7)


@pytest.mark.parametrize(("kept", "moved", "warned"), [
    (1, 0.30, True),  # the first of several epochs kept: selection stopped ω before it could move
    (4, 0.01, True),  # a later epoch, but ω is still its start: the composition is the plain average
    (4, 0.30, False),
    (1, BARELY_MOVED, True),
])
def test_omega_warning_fires_when_the_first_epoch_is_kept_or_omega_barely_moved(kept: int, moved: float,
                                                                                 warned: bool) -> None:
    summary = {"kept_epoch": kept, "epochs_run": 5, "steps": 40, "mean_relative_change": moved,
               "largest_share": 0.4, "smallest_share": 0.3}
    line = omega_warning(summary)
    assert (line is not None) == warned
    if warned:
        assert "\n" not in line and f"kept epoch {kept} of 5" in line and "--min-steps" in line
    assert omega_warning(None) is None  # no learned ω (average, fusion): nothing to say


def test_transfer_reports_kept_epoch_steps_and_omega_and_warns_when_omega_did_not_move(setup, tmp_path) -> None:
    """A learning rate too small to move ω: the summary says so (table and --json), and inspect says it too."""
    out = tmp_path / "still"
    summary = json.loads(transfer(setup, out, "--epochs", "3", "--lr", "1e-6", "--json").stdout)
    omega = summary["omega"]
    assert omega["epochs_run"] == 3 and omega["steps"] == 3 * 8 and 1 <= omega["kept_epoch"] <= 3
    assert omega["mean_relative_change"] < BARELY_MOVED
    assert abs(omega["largest_share"] - 1 / 3) < 0.01 and abs(omega["smallest_share"] - 1 / 3) < 0.01
    assert "ω barely moved" in summary["omega_warning"]
    table = transfer(setup, tmp_path / "still-table", "--epochs", "3", "--lr", "1e-6").stdout
    assert "kept epoch" in table and "Warning: ω barely moved" in " ".join(table.split())
    inspected = json.loads(ok(invoke("inspect", out, "--json")).stdout)
    assert inspected["learned"] == omega and inspected["warning"] == summary["omega_warning"]
    assert "ω barely moved" in " ".join(ok(invoke("inspect", out)).stdout.split())


def test_no_omega_warning_when_omega_moved_and_a_later_epoch_was_kept(setup, tmp_path) -> None:
    """--min-steps past the run's steps keeps the last epoch; a large lr moves ω: no warning."""
    summary = json.loads(transfer(setup, tmp_path / "moved", "--epochs", "3", "--lr", "0.05", "--min-steps", "1000",
                                  "--json").stdout)
    omega = summary["omega"]
    assert omega["kept_epoch"] == 3 and omega["mean_relative_change"] > BARELY_MOVED
    assert "omega_warning" not in summary


@pytest.mark.parametrize("method", ["average", "adapterfusion"])
def test_a_combiner_without_learned_omega_has_no_omega_summary(setup, tmp_path, method: str) -> None:
    summary = json.loads(transfer(setup, tmp_path / method, "--epochs", "1", "--method", method, "--json").stdout)
    assert "omega" not in summary and "omega_warning" not in summary


def test_min_steps_keeps_no_epoch_before_it(setup, tmp_path) -> None:
    """8 steps an epoch: with --min-steps 17 epochs 1 and 2 are not candidates, whatever their dev loss."""
    summary = json.loads(transfer(setup, tmp_path / "min", "--epochs", "4", "--lr", "1e-6", "--min-steps", "17",
                                  "--json").stdout)
    assert summary["omega"]["kept_epoch"] >= 3


def test_head_lr_trains_the_head_in_its_own_group() -> None:
    from scalearn_cli.train import TrainConfig, _param_groups

    omega, head = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    groups = _param_groups([omega, head], [head], TrainConfig(lr=1e-2, head_lr=1e-3))
    assert [(g["params"], g.get("lr")) for g in groups] == [([omega], None), ([head], 1e-3)]
    assert _param_groups([omega, head], [head], TrainConfig(lr=1e-2)) == [{"params": [omega, head]}]


@pytest.mark.parametrize(("field", "value", "needle"), [("min_steps", -1, "--min-steps"),
                                                         ("head_lr", 0.0, "--head-lr")])
def test_bad_selection_knobs_are_refused(field: str, value: float, needle: str) -> None:
    from scalearn_cli.errors import UsageError
    from scalearn_cli.train import TrainConfig

    with pytest.raises(UsageError, match=needle):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("moved", [0.01, 0.4])
def test_quickstart_summary_says_whether_omega_was_learned_within_one_screen(capsys, moved: float) -> None:
    from helpers import fake_result

    from scalearn_cli.cli.quickstart import render

    result = fake_result(Path("qs"), None)
    learned = {"kept_epoch": 1 if moved < BARELY_MOVED else 7, "epochs_run": 10, "steps": 20,
               "mean_relative_change": moved, "largest_share": 0.5, "smallest_share": 0.2}
    result["omega"].update(learned=learned, warning=omega_warning(learned))
    render(result)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 48 and max(len(line) for line in lines) <= 80
    text = " ".join(" ".join(lines).split())
    assert f"kept epoch {learned['kept_epoch']} of 10" in text and f"{100 * moved:.1f}% from its start" in text
    assert ("note: ω barely moved" in text) == (moved < BARELY_MOVED)


def test_small_report_tests_each_rule_against_the_defaults_the_average_and_the_own_adapter(tmp_path) -> None:
    """bench/report_small.py from made-up rows: a rule 5 points above the defaults on every seed is 'higher,
    beyond seed noise'; one within a point is not; the doc is written from the files alone."""
    from bench import report_small

    run = tmp_path / "small"
    run.mkdir()
    rows = []
    for seed in range(5):
        base = {"target": "cr-250", "training": "default", "seed": seed, "train_examples": 250, "dev_examples": 32,
                "test_examples": 250, "epochs_run": 10, "wall_seconds": 60.0, "method": "scalearn",
                "variant": "scalearn++"}
        jitter = 0.3 * (seed - 2)
        rows += [{**base, "rule": "current", "main_score": 80 + jitter, "kept_epoch": 1, "mean_relative_change": 0.02,
                  "largest_share": 0.15, "smallest_share": 0.13},
                 {**base, "rule": "fixed-budget", "main_score": 85 - jitter, "kept_epoch": 10,
                  "mean_relative_change": 0.4, "largest_share": 0.3, "smallest_share": 0.05},
                 {**base, "method": "average", "variant": None, "rule": "current", "main_score": 80.5 - jitter,
                  "kept_epoch": 1},
                 {**base, "method": "average", "variant": None, "rule": "fixed-budget", "main_score": 80 + jitter,
                  "kept_epoch": 10},
                 {**base, "training": "own", "method": "single", "variant": None, "rule": "own",
                  "main_score": 78 + jitter, "kept_epoch": 3}]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(json.dumps({"targets": ["cr-250"], "trainings": ["default"], "seeds": [0, 1],
                                                 "selections": {"current": [], "fixed-budget": []}, "epochs": 10}))
    text, n, _ = report_small.render(tmp_path / "doc.md", run)
    assert n == len(rows) and (tmp_path / "doc.md").read_text() == text
    assert "| fixed-budget | ScaLearn++ | ScaLearn++ under current | +5.00 |" in text
    verdicts = text.split("## Verdicts")[1]
    assert "current defaults beyond seed noise: cr-250 fixed-budget (ScaLearn++, +5.00); below them: none" in verdicts
    assert "above the average of its sources (ω fixed at 1/N) beyond seed noise: cr-250 fixed-budget (ScaLearn++" in verdicts
    assert "| current | ScaLearn++ | Average (ω = 1/N, fixed) | -0.50 |" in text  # within noise: no verdict claimed


def test_small_report_answers_the_question_per_target_under_the_defaults_only() -> None:
    """The verdict's first line: per target, ScaLearn under `current` against the average and the own adapter, each
    with its gap, p, seeds and verdict; other rules and other comparisons stay in their own lines."""
    from bench.report_small import question_lines

    avg, own = "Average (ω = 1/N, fixed)", "Single adapter (target's own)"
    comps = {"cr-250": [("current", "scalearn++", avg, 3.2, 0.8, 0.013, 5),
                        ("current", "scalearn++", own, 1.1, 1.1, 0.43, 5),
                        ("metric", "scalearn++", avg, 9.0, 0.1, 0.001, 5)],  # another rule: its own line
             "rte-250": [("current", "scalearn++", own, -0.5, 1.0, 0.6, 2)]}
    line, = question_lines(comps)
    assert ("cr-250: ScaLearn++ against the average +3.20 (p 0.013, 5 seeds): higher, beyond seed noise; ScaLearn++ "
            "against the own adapter +1.10 (p 0.430, 5 seeds): within seed noise. rte-250: ScaLearn++ against the own "
            "adapter -0.50 (p 0.600, 2 seeds): too few seeds to test (3 needed).") in line
    assert "+9.00" not in line and question_lines({"cr-250": []}) == []
