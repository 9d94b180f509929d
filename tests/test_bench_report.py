"""The benchmark's reports (bench/): the committed docs are what their results make, the seed-noise verdicts, the
summary, few-shot gaps, the strong benchmark's source bar, GPU rows kept apart and merged rows. No training here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from bench import quality_runner, report, report_quality, report_setting, report_sources
from bench.quality_plan import Job, expected_seconds

REPO = Path(__file__).resolve().parents[1]


def test_committed_benchmark_docs_are_what_their_results_make():
    """No number in docs/benchmarks*.md is typed by hand or left behind its results: regenerating every doc
    from bench/results/ gives the committed text byte for byte."""
    run = subprocess.run([sys.executable, "-m", "bench", "report", "--all", "--check"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("checked docs/") == len(report.DOCS)


def test_check_names_a_doc_that_differs_from_its_results(tmp_path, monkeypatch, capsys):
    name = "benchmarks-medium-mean.md"
    monkeypatch.setattr(report, "DOCS", {name: report.DOCS[name]})
    monkeypatch.setattr(report, "DOC_DIR", tmp_path)
    shutil.copyfile(REPO / "docs" / name, tmp_path / name)
    report.main(["--all", "--check"])  # the committed doc, unchanged: passes
    assert f"checked docs/{name}" in capsys.readouterr().out

    edited = (tmp_path / name).read_text().replace("## Summary", "## Summary\n\nScaLearn wins everywhere.", 1)
    (tmp_path / name).write_text(edited)
    with pytest.raises(SystemExit) as exc:
        report.main(["--all", "--check"])
    assert f"docs/{name} differ" in str(exc.value) and "python -m bench report --all" in str(exc.value)
    assert (tmp_path / name).read_text() == edited  # --check never writes the committed doc

    with pytest.raises(SystemExit) as exc:  # a usage error, not a silent full regeneration
        report.main(["--check"])
    assert exc.value.code == 2


def groups(scores: dict[tuple, list[float]]) -> dict:
    return {"scores": {("lora", *m, "rte", None): v for m, v in scores.items()}, "params": {}}


def row_of(table: list[str], comparison: str) -> list[str]:
    [row] = [line for line in table if f"| {comparison} |" in line]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_noise_table_is_welchs_test_with_a_verdict_only_from_three_seeds():
    single, scalearn, fusion = [50.5, 56.7, 50.2], [56.3, 57.4, 54.5], [65.0, 62.1, 64.3]
    table = report_quality.noise_table(groups({("single", None): single, ("scalearn", "scalearn"): scalearn,
                                       ("adapterfusion", None): fusion}), "lora", ["rte"])
    cells = row_of(table, "ScaLearn − Single adapter (target's own)")
    assert float(cells[2]) == pytest.approx(sum(scalearn) / 3 - sum(single) / 3, abs=0.006)
    assert float(cells[4]) == pytest.approx(stats.ttest_ind(scalearn, single, equal_var=False).pvalue, abs=6e-4)
    assert cells[-1] == "within seed noise"
    assert row_of(table, "ScaLearn − AdapterFusion")[-1] == "**lower**, beyond seed noise"
    assert row_of(table, "AdapterFusion − Single adapter (target's own)")[-1] == "**higher**, beyond seed noise"

    two = report_quality.noise_table(groups({("single", None): single[:2], ("scalearn", "scalearn"): [70.0, 71.0]}),
                             "lora", ["rte"])
    assert row_of(two, "ScaLearn − Single adapter (target's own)")[-1] == "too few seeds to test (3 each needed)"
    assert report_quality.noise_table(groups({("single", None): single}), "lora", ["rte"]) == [
        "*No target has two or more seeds of both methods of a pair yet.*"]


def test_the_summary_answers_the_strong_question_from_three_seed_targets_only():
    single, scalearn, fusion = [50.5, 56.7, 50.2], [56.3, 57.4, 54.5], [65.0, 62.1, 64.3]
    g = groups({("single", None): single, ("scalearn", "scalearn"): scalearn, ("adapterfusion", None): fusion})
    g["scores"][("lora", "scalearn", "scalearn", "mrpc", None)] = [77.0, 76.0]  # two seeds: no verdict, not listed
    g["scores"][("lora", "single", None, "mrpc", None)] = [77.0, 76.5, 78.0]
    few = [{"stage": "few-shot", "target": "rte", "kind": "lora", "k": 16, "method": m, "variant": v, "seed": seed,
            "main_score": x}
           for m, v, xs in (("single", None, [49.8, 56.0, 52.7]), ("scalearn", "scalearn", [53.1, 58.8, 56.3]))
           for seed, x in enumerate(xs)]
    [line] = report_quality.question_answer(g, few, ["lora"], ["rte", "mrpc"])
    p_single = stats.ttest_ind(scalearn, single, equal_var=False).pvalue
    gap = sum(scalearn) / 3 - sum(single) / 3
    assert f"ScaLearn − Single adapter (lora): rte {gap:+.2f} (within seed noise, p {p_single:.2f})." in line
    assert "ScaLearn − AdapterFusion (lora): rte -7.73 (beyond seed noise" in line and "mrpc" not in line
    assert "few-shot, ScaLearn − the target's own few-shot adapter (paired by seed): rte k=16 +3.23 (beyond" in line
    assert report_quality.question_answer(groups({("single", None): single}), [], ["lora"], ["rte"]) == []


def test_few_shot_gaps_are_paired_by_seed_the_same_k_examples():
    """A few-shot run of seed s draws the same k examples for every method: ScaLearn is tested against the single
    adapter on the per-seed differences (paired), not as two independent samples."""
    single, scalearn = [49.8, 56.0, 52.7], [53.1, 58.8, 56.3]  # seed noise larger than the gap, the gap steady

    def fs(method, variant, scores):
        return [{"stage": "few-shot", "target": "rte", "kind": "lora", "k": 16, "method": method, "variant": variant,
                 "seed": seed, "main_score": v} for seed, v in enumerate(scores)]

    table = report_quality.few_shot_noise(fs("single", None, single) + fs("scalearn", "scalearn", scalearn)
                                  + fs("scalearn", "scalearn++", [50.0, 51.0]))
    cells = row_of(table, "ScaLearn − Single adapter (target's own)")
    assert float(cells[4]) == pytest.approx(sum(scalearn) / 3 - sum(single) / 3, abs=0.006)
    assert float(cells[6]) == pytest.approx(stats.ttest_rel(scalearn, single).pvalue, abs=6e-4)
    assert stats.ttest_ind(scalearn, single, equal_var=False).pvalue > 0.05  # unpaired: within noise
    assert cells[-1] == "**higher**, beyond seed noise"
    assert row_of(table, "ScaLearn++ − Single adapter (target's own)")[-1] == "too few seeds to test (3 needed)"
    assert report_quality.few_shot_noise(fs("single", None, single)) == []


def test_few_shot_scores_are_tested_against_the_majority_class():
    """ScaLearn beating the few-shot adapter can be ScaLearn predicting the majority class where the adapter does
    not (MRPC k=16): each method's seeds are tested against the constant predictor's fixed score."""
    single, scalearn = [60.1, 65.2, 62.0], [66.6, 66.4, 66.9]
    rows = [{"stage": "few-shot", "target": "mrpc", "kind": "lora", "k": 16, "method": m, "variant": v, "seed": seed,
             "main_score": x} for m, v, xs in (("single", None, single), ("scalearn", "scalearn", scalearn))
            for seed, x in enumerate(xs)]
    majority = {"mrpc": {"main_score": 66.49}}
    table = report_quality.few_shot_noise(rows, majority)
    cells = row_of(table, "ScaLearn")
    assert float(cells[4]) == pytest.approx(sum(scalearn) / 3 - 66.49, abs=0.006)
    assert float(cells[6]) == pytest.approx(stats.ttest_1samp(scalearn, 66.49).pvalue, abs=6e-4)
    assert cells[-1] == "within seed noise"
    assert row_of(table, "Single adapter (target's own)")[-1] == "within seed noise"
    assert row_of(table, "ScaLearn − Single adapter (target's own)")[-1] == "within seed noise"
    g = groups({("single", None): [1.0]})
    [line] = report_quality.question_answer(g, rows, ["lora"], ["mrpc"], majority)
    assert "few-shot, ScaLearn − the majority class: mrpc k=16 +0.14 (within seed noise" in line
    assert report_quality.few_shot_above_majority(rows, {}) == []  # no majority recorded: no row, no error


def source_row(target: str, score: float, seed: int = 0, **extra) -> dict:
    return {"stage": "source", "target": target, "kind": "lora", "method": "single", "variant": None, "seed": seed,
            "k": None, "main_score": score, "best_epoch": 2, "epochs": 10, "steps": 284, "train_examples": 2241,
            "dev_examples": 249, "test_examples": 277, "task_main_metric": "accuracy", **extra}


def test_source_bar_says_which_sources_are_below_it_and_why():
    majority = {"rte": {"main_score": 52.71}, "sst2": {"main_score": 50.92}, "stsb": {"main_score": -3.0}}
    assert report_sources.source_bar("rte", majority) == pytest.approx(62.71)
    assert report_sources.source_bar("stsb", majority) == 80.0  # Pearson, whatever the train mean scores
    assert report_sources.source_bar("cola", majority) is None  # no baseline: no verdict
    rows = [source_row("rte", 50.54), source_row("rte", 56.68, seed=1), source_row("sst2", 85.78),
            source_row("stsb", 84.8),
            {**source_row("rte", 64.98), "stage": "transfer", "method": "adapterfusion"}]
    table = report_sources.source_table(rows, majority)
    assert [line.split("|")[-2].strip() for line in table if line.startswith("| ") and "Task" not in line] == [
        "**not met**", "met", "met"]
    [why] = [line for line in table if line.startswith("- ")]
    assert why.startswith("- **rte (lora) is below the bar** (majority + 10 = 62.71)")
    assert "seed 1 56.68" in why and "AdapterFusion (seed 0), scores 64.98" in why
    assert "learnable from these sources beyond what its own adapter reached" in why
    # the other kind's source on the same task, beside it
    table = report_sources.source_table([*rows, source_row("rte", 48.01, kind="bottleneck")], majority)
    [bottleneck, lora] = [line for line in table if line.startswith("- ")]
    assert "rte (bottleneck) is below the bar" in bottleneck
    assert "the lora source on the same rows scores 50.54" in bottleneck
    assert "the bottleneck source on the same rows scores 48.01" in lora


def test_extra_source_scores_name_the_kind_when_a_run_has_two():
    rows = [source_row("snli", 74.35), source_row("qnli", 78.61), source_row("rte", 50.54),
            source_row("snli", 70.0, seed=1)]
    assert report_setting.extra_source_scores(rows, ["qnli", "snli"]) == "qnli 78.6, snli 74.3"
    rows.append(source_row("snli", 77.65, kind="bottleneck"))
    assert report_setting.extra_source_scores(rows, ["qnli", "snli"]) == \
        "qnli 78.6, snli 77.7 (bottleneck) / 74.3 (lora)"


def test_rows_computed_on_a_gpu_are_named_and_kept_out_of_cpu_timings():
    """A row records its device; the report says which ran on a GPU and keeps their times out of CPU figures."""
    from bench import report_speed

    def row(seed, device=None, wall=100.0):
        r = {"stage": "transfer", "target": "mrpc", "kind": "bottleneck", "method": "scalearn",
             "variant": "scalearn", "seed": seed, "k": None, "wall_seconds": wall, "examples_per_second": 10.0}
        return {**r, "device": device, "torch": "2.11.0+cu130", "transformers": "5.17.0"} if device else r

    rows = [row(0), row(1, "cpu", 300.0), row(2, "NVIDIA H200", 5.0)]
    rows[2]["examples_per_second"] = 900.0
    line = report_setting.accelerator_line({"gpu": None}, rows)
    assert line.startswith("- Accelerator: 1 of 3 runs were computed on NVIDIA H200 (torch 2.11.0+cu130")
    assert "mrpc bottleneck seed 2: ScaLearn." in line
    assert report_setting.accelerator_line({"gpu": None}, rows[:2]).startswith("- Accelerator: none (CPU only)")
    repeat = {**row(1, "NVIDIA H200"), "main_score": 71.5, "best_epoch": 4}
    rows[1].update(main_score=70.25, best_epoch=4)
    assert line + (" The same run on both machines (the CPU row is the one in the tables): mrpc bottleneck ScaLearn "
                   "seed 1: CPU 70.25, GPU 71.50 (best epoch 4 and 4).") == \
        report_setting.accelerator_line({}, rows, [repeat])
    table = report_speed.throughput_section(rows)
    assert table[-1] == "| transfer: ScaLearn | bottleneck | 10.0 | 2 |"
    job = Job("transfer", "mrpc", "bottleneck", "scalearn", "scalearn", 1, None)
    assert expected_seconds(rows, job) == 300.0
    assert expected_seconds(rows[2:], job) is None  # only a GPU's time: no CPU estimate
    assert set(quality_runner.run_device()) == {"device", "torch", "transformers"}


def test_merge_rows_adds_new_runs_and_keeps_repeats_apart(tmp_path):
    """Rows from another machine: new runs are appended, an already recorded run goes to device_repeats.jsonl."""
    from bench import merge_rows

    def row(seed, device, score):
        return {"stage": "transfer", "target": "rte", "kind": "lora", "method": "average", "variant": None,
                "seed": seed, "k": None, "main_score": score, **({"device": device} if device else {})}

    (tmp_path / "results.jsonl").write_text(json.dumps(row(0, None, 50.0)) + "\n")
    assert merge_rows.merge([row(0, "NVIDIA H200", 51.0), row(1, "NVIDIA H200", 52.0)], tmp_path) == (1, 1)
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["main_score"]) for r in results] == [(0, 50.0), (1, 52.0)]
    repeats = [json.loads(x) for x in (tmp_path / "device_repeats.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["main_score"]) for r in repeats] == [(0, 51.0)]
    with pytest.raises(SystemExit, match="do not record their device"):
        merge_rows.merge([row(2, None, 1.0)], tmp_path)
    with pytest.raises(SystemExit, match="pass --out"):
        merge_rows.merge([row(2, "cpu", 1.0)], tmp_path / "nowhere")


def test_a_source_below_the_bar_names_the_same_source_from_runs_that_trained_it_otherwise(tmp_path):
    """An lr sweep on a weak source (another run, other source options) is named beside it in the source notes."""
    from bench import report_sources

    def source(lr, score, epoch):
        return {"stage": "source", "target": "rte", "kind": "bottleneck", "method": "single", "variant": None,
                "seed": 0, "k": None, "main_score": score, "best_epoch": epoch, "epochs": 10, "lr": lr,
                "steps": 71 * 4, "train_examples": 2241, "dev_examples": 249, "test_examples": 277,
                "task_main_metric": "accuracy"}

    config = {"source_lr": None, "source_epochs": 10, "batch_size": 32, "threads": 1}
    for name, lr, score in (("sweep", 1e-3, 58.12), ("same", None, 50.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({**config, "source_lr": lr, "threads": 2}))
        other_seed = {**source(lr or 3e-4, score + 1, 3), "seed": 1}
        (tmp_path / name / "results.jsonl").write_text(json.dumps(source(lr or 3e-4, score, 3)) + "\n"
                                                       + json.dumps(other_seed) + "\n")
    alternates = report_sources.source_alternates(config, ["sweep", "same", "absent"], tmp_path)
    assert [(name, changed) for name, changed, _ in alternates] == [("sweep", "`source_lr` 0.001")]
    notes = report_sources.source_table([source(3e-4, 48.01, 2)], {"rte": {"main_score": 52.71}}, 32, alternates)
    assert "; trained with `source_lr` 0.001 (the `sweep` run; here lr 0.0003): 58.12, best epoch 3 of 4 run, " \
        "seed 1 59.12" in notes[-1]
    source_row = {**source(3e-4, 48.01, 2), "dev": {"loss": 0.688}}
    assert report_sources.chance_loss(source_row) == "; kept dev loss 0.688 against ln 2 = 0.693 for a uniform guess"
    assert report_sources.chance_loss({**source_row, "target": "stsb"}) == ""  # regression: no chance loss


def test_an_extending_runs_rows_join_the_tables_where_the_run_has_no_row_of_that_key(tmp_path):
    row = {"stage": "transfer", "target": "rte", "kind": "lora", "method": "average", "variant": None, "seed": 0,
           "k": None, "main_score": 60.0}
    peer = {**row, "method": "arrow", "main_score": 52.0}
    (tmp_path / "peers").mkdir()
    (tmp_path / "peers" / "results.jsonl").write_text(
        json.dumps({**row, "main_score": 1.0}) + "\n" + json.dumps(peer) + "\n")  # its own average: not taken
    rows, said = report.extend_rows([row], ["peers"], results=tmp_path)
    assert [r["main_score"] for r in rows] == [60.0, 52.0]
    assert said[0].startswith("Rows of the `peers` run join these tables (1: PEFT Arrow routing") and "rte" in said[0]
    assert report.extend_rows([row], [], results=tmp_path) == ([row], [])
