"""The multi-label target benchmark (bench/multilabel.py, bench/report_multilabel.py): the plan over borrowed
sources, the target's own source trained beside them, and the doc made from a results folder alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conftest import make_source

from bench import multilabel, quality, report_multilabel
from bench.quality_plan import Job
from bench.quality_runner import Runner

METHODS = (("single", None), ("average", None), ("adapterfusion", None), ("scalearn", "scalearn++"))


def row(stage: str, method: str, variant: str | None, seed: int, macro: float, k: int | None = None) -> dict:
    return {"stage": stage, "target": "go_emotions", "kind": "lora", "method": method, "variant": variant,
            "seed": seed, "k": k, "task_main_metric": "macro_f1", "main_score": macro,
            "test": {"macro_f1": macro, "micro_f1": macro + 20}, "parameters": 20000, "best_epoch": 3,
            "lr": 6e-3, "steps": 90, "wall_seconds": 120.0, "train_examples": k or 1000,
            "dev_examples": max(k or 112, 32), "test_examples": 1000}


def fixture_run(tmp_path: Path) -> Path:
    """Three seeds of every full-data method (ScaLearn++ 6 points above the rest on every seed), few-shot k=32
    seed 0 only, and a baseline that predicts no label."""
    rows = []
    for seed in range(3):
        jitter = 0.2 * (seed - 1)
        rows.append({**row("source", "single", None, seed, 24.0 + jitter), "wall_seconds": 300.0})
        for method, variant in METHODS:
            macro = (30.0 if method == "scalearn" else 24.0) + jitter
            rows.append({**row("transfer", method, variant, seed, macro),
                         **({"wall_seconds": 0.0} if method == "single" else {})})  # a copy of its source's row
    rows += [row("few-shot", "single", None, 0, 5.0, k=32), row("few-shot", "scalearn", "scalearn++", 0, 7.0, k=32)]
    run = tmp_path / "multilabel"
    run.mkdir()
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {**multilabel.PLAN, "batch_size": 32, "fusion_tuned_lr": 0.0, "stages": "source,transfer,few-shot",
              "machine": {"cpu_count": 2, "threads": 1, "torch": "x"}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "majority.json").write_text(json.dumps({"go_emotions": {
        "main_metric": "macro_f1", "main_score": 0.0, "test": {"macro_f1": 0.0, "micro_f1": 0.0},
        "test_examples": 1000, "train_examples": 1000}}))
    return run


def test_report_puts_macro_f1_beside_the_baseline_and_tests_scalearn_against_every_method(tmp_path: Path) -> None:
    run = fixture_run(tmp_path)
    text, n, _ = report_multilabel.render(tmp_path / "doc.md", run)
    assert n == 17 and (tmp_path / "doc.md").read_text() == text
    assert "it scores 0 everywhere: it predicts no label): macro_f1 0.00, micro_f1 0.00 on 1000 test rows" in text
    assert "exceeds its own threshold, tuned on dev (`--label-threshold tune`" in text
    assert "- Budget: 90 training steps per full-data run" in text
    assert "| ScaLearn++ | 3 | 30.00 ± 0.20 | 50.00 ± 0.20 | +30.00 | 20.0k | 3.0 | 2.0 min |" in text
    own = "| Single adapter (target's own) | 3 | 24.00 ± 0.20 | 44.00 ± 0.20 | +24.00 | 20.0k | 3.0 | 5.0 min |"
    assert own in text  # its time: its source row's (the transfer row copies it)
    assert "| ScaLearn++ | AdapterFusion | +6.00 |" in text and "**higher**, beyond seed noise" in text
    verdicts = text.split("## Verdicts")[1].split("## Missing")[0]
    assert "- ScaLearn++ against Single adapter (target's own): +6.00 macro-F1 points over 3 seeds, higher" in verdicts
    assert "Above the label-frequency baseline on every seed: Single adapter" in verdicts
    assert "| 32 | ScaLearn++ | 1 | 7.00 | 27.00 | 90 |" in text  # one seed: shown, not tested
    missing = text.split("## Missing")[1]
    assert "- few-shot, seed 0, k = 100: single, scalearn++" in missing
    assert "- few-shot, seed 2, k = 32: single, scalearn++" in missing
    assert "transfer" not in missing and "source" not in missing  # the shelf's sources are borrowed: no rows here
    assert report_multilabel.ROWS_COMMAND in missing


def test_report_of_an_empty_run_names_what_is_missing(tmp_path: Path) -> None:
    run = fixture_run(tmp_path)
    (run / "results.jsonl").write_text("")
    text, n, _ = report_multilabel.render(tmp_path / "doc.md", run)
    assert n == 0 and "No comparison has two seeds of both methods yet" in text
    assert "- source, seed 0: single\n- transfer, seed 0: single, average, scalearn++, adapterfusion" in text


def test_a_target_the_borrowed_shelf_lacks_trains_its_own_source_here(tmp_path: Path) -> None:
    other, work = tmp_path / "other", tmp_path / "work"
    args = argparse.Namespace(out=tmp_path / "out", work=work, sources_from=other, targets="go_emotions",
                              extra_sources="rte")
    runner = Runner(args)
    own, rte = (Job("source", task, "lora", "single", None, 0) for task in ("go_emotions", "rte"))
    (rte.folder(other) / "scalearn.json").parent.mkdir(parents=True)
    (rte.folder(other) / "scalearn.json").write_text("{}")
    assert runner.home(rte) == other and runner.home(own) == work  # the target: not in the other run's folder
    assert runner.home(Job("source", "go_emotions", "lora", "single", None, 1)) == work
    own.folder(other).mkdir(parents=True)
    (own.folder(other) / "scalearn.json").write_text("{}")
    assert runner.home(own) == other  # a protocol check over another run's own targets borrows them, as before


def test_plan_borrows_the_strong_sources_and_takes_the_callers_options_last() -> None:
    from scalearn_cli.sources.lora import LoraKind

    args = quality.parse_args(multilabel.plan_argv(["--job-seeds=0", "--epochs=2"]))
    assert (args.targets, args.extra_sources) == ("go_emotions", "cola,mrpc,qnli,rte,snli,sst2,stsb")
    assert (args.target_max_train, args.test_max, args.epochs, args.job_seeds) == (1000, 1000, 2, "0")
    assert args.source_lr == LoraKind.default_lr and args.few_shot_k == "32,100" and args.threshold == "tune"
    assert args.stages == "transfer,few-shot"  # borrowed sources: no source stage (the own one trains for its row)
    assert args.sources_from.resolve() == multilabel.SHELF_WORK and args.out.resolve() == multilabel.OUT


def test_borrowed_sources_are_pulled_once_from_the_kept_registry(tmp_path: Path, tiny_model_dir: Path) -> None:
    from scalearn_cli.registry.local import LocalRegistry

    kept, dest = tmp_path / "kept", tmp_path / "shelf"
    source = make_source(tmp_path / "rte-src", tiny_model_dir, "lora")
    LocalRegistry(kept).push(source, "strong/rte-lora-single-s0", commit_message="rte")
    folder, = multilabel.borrow_sources(kept, dest, ("rte",))
    assert folder == dest / "runs" / "source" / "rte-lora-single-s0"
    assert (folder / "scalearn.json").read_bytes() == (source / "scalearn.json").read_bytes()
    (folder / "scalearn.json").write_text("{}")  # present: not pulled again
    multilabel.borrow_sources(kept, dest, ("rte",))
    assert (folder / "scalearn.json").read_text() == "{}"
