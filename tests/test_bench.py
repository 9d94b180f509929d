"""The benchmark's own logic (bench/): the committed docs are what their results make, the seed-noise verdicts,
the strong benchmark's source bar, and the resumable, sharded runner's plan, records and locks. No training here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from argparse import Namespace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from scipy import stats

from bench import quality, quality_plan, quality_runner, report, report_common, report_quality, report_sources
from bench.quality_plan import Job, expected_seconds, plan, selected

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
    assert report.extra_source_scores(rows, ["qnli", "snli"]) == "qnli 78.6, snli 74.3"
    rows.append(source_row("snli", 77.65, kind="bottleneck"))
    assert report.extra_source_scores(rows, ["qnli", "snli"]) == "qnli 78.6, snli 77.7 (bottleneck) / 74.3 (lora)"


def plan_args(tmp_path: Path, *extra: str) -> tuple[Namespace, quality_runner.Runner]:
    args = quality.parse_args(["--targets", "rte,mrpc", "--extra-sources", "snli", "--kinds", "lora",
                               "--methods", "single,average,scalearn", "--seeds", "0,1", "--multi-seed-targets", "rte",
                               "--few-shot-k", "16", "--few-shot-targets", "rte", "--out", str(tmp_path), *extra])
    return args, quality_runner.Runner(args)


def test_plan_runs_sources_then_each_target_fully_then_few_shot(tmp_path):
    args, _ = plan_args(tmp_path)
    jobs = list(plan(args))
    first_transfer = next(i for i, j in enumerate(jobs) if j.stage == "transfer")
    assert all(j.stage == "source" and j.seed == 0 for j in jobs[:first_transfer])  # every seed-0 source first
    assert all(j.stage == "few-shot" for j in jobs[next(i for i, j in enumerate(jobs) if j.stage == "few-shot"):])
    assert [(j.target, j.seed) for j in jobs[:first_transfer]] == [("rte", 0), ("mrpc", 0), ("snli", 0)]
    # rte gets both seeds (its seed-1 source just before the seed-1 transfers) before mrpc starts; mrpc seed 0 only
    rest = [(j.stage, j.target, j.method, j.seed) for j in jobs if j.stage != "source" or j.seed]
    assert rest[:4] == [("transfer", "rte", "single", 0), ("transfer", "rte", "average", 0),
                        ("transfer", "rte", "scalearn", 0), ("source", "rte", "single", 1)]
    assert [r for r in rest if r[1] == "mrpc"] == [("transfer", "mrpc", m, 0)
                                                   for m in ("single", "average", "scalearn")]
    assert max(i for i, r in enumerate(rest) if r[1] == "rte" and r[0] == "transfer") < rest.index(
        ("transfer", "mrpc", "single", 0))
    assert {(j.method, j.k) for j in jobs if j.stage == "few-shot"} == {("single", 16), ("scalearn", 16)}
    assert len(set(jobs)) == len(jobs)


def test_job_filters_pick_jobs_out_of_the_same_plan(tmp_path):
    args, runner = plan_args(tmp_path, "--stages", "transfer", "--job-targets", "rte", "--job-seeds", "1",
                             "--job-methods", "single,scalearn")
    picked = [j for j in plan(args) if selected(args, j)]
    assert [(j.stage, j.target, j.method, j.variant, j.seed) for j in picked] == [
        ("transfer", "rte", "single", None, 1), ("transfer", "rte", "scalearn", "scalearn", 1)]
    assert runner.tasks == ["rte", "mrpc", "snli"]  # what a transfer composes is the unfiltered run's
    for flag, value in (("--job-kinds", "bottleneck"), ("--job-methods", "scalern"), ("--job-targets", "cola"),
                        ("--job-seeds", "7"), ("--stages", "fewshot")):
        with pytest.raises(SystemExit):  # not in this plan: a one-line usage error, not a worker that runs nothing
            plan_args(tmp_path, flag, value)
    args, _ = plan_args(tmp_path, "--stages", "source", "--job-targets", "snli")  # a source-only task is a target
    assert [(j.stage, j.target) for j in plan(args) if selected(args, j)] == [("source", "snli")]


def test_job_filters_that_each_name_a_planned_value_but_select_nothing_together_are_a_usage_error(tmp_path, capsys):
    args, _ = plan_args(tmp_path, "--few-shot-seeds", "0,3", "--stages", "few-shot", "--job-seeds", "3")
    assert {j.seed for j in plan(args) if selected(args, j)} == {3}
    for extra in (("--stages", "transfer", "--job-seeds", "3"),  # seed 3 is a few-shot seed only
                  ("--stages", "source", "--job-methods", "average"),  # sources are single adapters
                  ("--stages", "few-shot", "--job-targets", "mrpc")):  # few-shot targets: rte only
        with pytest.raises(SystemExit) as exc:
            plan_args(tmp_path, "--few-shot-seeds", "0,3", *extra)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "no planned job matches" in err and " ".join(extra[2:]) in err


def test_missing_rows_counts_the_planned_runs_without_a_record(tmp_path):
    args, _ = plan_args(tmp_path)
    config = {k: getattr(args, k) for k in ("targets", "extra_sources", "kinds", "methods", "seeds",
                                              "multi_seed_targets", "few_shot_k", "few_shot_targets")}
    done = [dict(job.key()) for job in plan(args) if job.stage == "source"]
    assert report.missing_rows(config, done) == [
        "- few-shot: seed 0, k=16: 2 run(s) (rte lora 2)", "- transfer: seed 0: 6 run(s) (rte lora 3, mrpc lora 3)",
        "- transfer: seed 1: 3 run(s) (rte lora 3)"]


def test_missing_hours_go_by_the_longest_like_run(tmp_path):
    args, _ = plan_args(tmp_path)
    config = {k: getattr(args, k) for k in ("targets", "extra_sources", "kinds", "methods", "seeds",
                                              "multi_seed_targets", "few_shot_k", "few_shot_targets")}
    wall = {"source": 600.0, "single": 0.0, "average": 300.0, "scalearn": 900.0}
    done = [{**dict(job.key()), "wall_seconds": wall["source" if job.stage == "source" else job.method]}
            for job in plan(args) if job.seed == 0 and (job.stage == "source" or job.stage == "transfer"
                                                         and job.target == "rte")]
    done.append({**done[-1], "wall_seconds": 60.0, "seed": 7})  # a shorter like run: the longest one counts
    # left: rte's seed-1 source (600) and transfers (average 300, scalearn 900; single copies its source: 0),
    # mrpc's transfers by rte's (300 + 900); the two few-shot runs have no like run at all
    hours, unknown = report.missing_hours(config, done)
    assert hours == pytest.approx(3000 / 3600) and unknown == 2


@pytest.mark.parametrize("bad", ["2/2", "1", "a/b", "-1/2"])
def test_a_malformed_shard_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        quality.parse_args([f"--shard={bad}"])
    assert exc.value.code == 2 and "--shard must be i/n" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["2:10", "24:00", "02:60", "0210"])
def test_a_malformed_deadline_is_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        quality.parse_args([f"--deadline={bad}"])
    assert exc.value.code == 2 and "--deadline must be UTC HH:MM" in capsys.readouterr().err


def test_a_deadline_past_midnight_is_tomorrows_not_already_reached():
    """A run started at 23:40 with --deadline 02:10 (a session crossing midnight) works until 02:10 the next day;
    comparing "HH:MM" strings stopped it before its first job."""
    evening = datetime(2026, 12, 2, 23, 40, tzinfo=timezone.utc).timestamp()
    assert quality_plan.deadline_at("02:10", evening) == datetime(2026, 12, 3, 2, 10, tzinfo=timezone.utc).timestamp()
    assert quality_plan.deadline_at("23:50", evening) == datetime(2026, 12, 2, 23, 50, tzinfo=timezone.utc).timestamp()
    # a deadline just passed is reached, not tomorrow's: a chained worker started after it must start nothing
    assert quality_plan.deadline_at("23:40", evening) == evening
    assert quality_plan.deadline_at("22:45", evening) == datetime(2026, 12, 2, 22, 45, tzinfo=timezone.utc).timestamp()
    assert quality_plan.deadline_at("10:00", evening) == datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc).timestamp()


def test_results_see_rows_another_worker_appended(tmp_path):
    path = tmp_path / "results.jsonl"
    mine, theirs = quality_plan.Results(path), quality_plan.Results(path)
    job = Job("transfer", "rte", "lora", "scalearn", "scalearn", 1)
    assert not mine.has(**job.key())
    theirs.add({**job.key(), "main_score": 56.0})
    assert mine.has(**job.key())  # read back from the file, not only from this process's memory
    assert not mine.has(**{**job.key(), "seed": 2})


def test_job_lock_waits_for_a_live_owner_and_takes_over_a_dead_ones(tmp_path):
    path = tmp_path / "locks" / "rte.lock"
    lock = quality_plan.JobLock(path)
    assert lock.acquire()
    assert not quality_plan.JobLock(path).acquire(wait=False)  # held by a live process (this one)
    lock.release()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(dead.stdout.strip())  # a killed worker's lock: its pid no longer runs
    assert quality_plan.JobLock(path).acquire(wait=False)
    assert json.loads(path.read_text()) == os.getpid()


def test_a_worker_retrains_the_free_missing_sources_before_waiting_for_a_busy_one(tmp_path, monkeypatch):
    """A new machine has the run's records but not its adapters: each transfer retrains its missing sources,
    first those no other worker holds (two workers retrain in parallel instead of queueing on one)."""
    args, runner = plan_args(tmp_path, "--work", str(tmp_path / "work"))
    sources = [Job("source", t, "lora", "single", None, 0) for t in ("rte", "mrpc", "snli")]
    for job in sources:  # recorded by an earlier session, folders gone
        runner.results.add({**job.key(), "task_main_metric": "accuracy", "main_score": 60.0,
                            "test": {"accuracy": 60.0}})
    trained = []

    def train_source(job):
        trained.append(job.target)
        job.folder(args.work).mkdir(parents=True)
        (job.folder(args.work) / "scalearn.json").write_text(json.dumps({"metrics": {"test": {"accuracy": 60.0}}}))

    monkeypatch.setattr(runner, "train_source", train_source)
    busy = runner.lock(sources[1])
    assert busy.acquire()  # "another worker" is retraining mrpc
    for job in sources:
        runner.ensure(job, wait=False)
    assert trained == ["rte", "snli"]
    runner.ensure(sources[1], wait=False)
    assert trained == ["rte", "snli"]  # still busy: left for the waiting pass
    busy.release()
    runner.ensure(sources[1])
    runner.ensure(sources[0])  # present: not trained twice
    assert trained == ["rte", "snli", "mrpc"]
    assert [e["target"] for e in report_common.read_jsonl(tmp_path / "retrained.jsonl")] == ["rte", "snli", "mrpc"]


def test_a_retrained_source_is_recorded_beside_its_row_and_reported(tmp_path, monkeypatch):
    args, runner = plan_args(tmp_path, "--work", str(tmp_path / "work"))
    job = Job("source", "rte", "lora", "single", None, 0)
    runner.results.add({**job.key(), "task_main_metric": "accuracy", "main_score": 50.54, "test": {"accuracy": 50.54}})

    def train_source(job, score=50.54):
        job.folder(args.work).mkdir(parents=True)
        (job.folder(args.work) / "scalearn.json").write_text(json.dumps({"metrics": {"test": {"accuracy": score}}}))

    monkeypatch.setattr(runner, "train_source", train_source)
    runner.ensure(job)
    [entry] = report_common.read_jsonl(tmp_path / "retrained.jsonl")
    assert (entry["target"], entry["recorded"], entry["retrained"]) == ("rte", 50.54, 50.54)
    [_, line] = report_sources.retrained_sources(tmp_path)
    assert "rte (lora, seed 0) 50.54 → 50.54" in line and "every one reproduces its recorded test score" in line

    shutil.rmtree(job.folder(args.work))  # another machine, another result
    monkeypatch.setattr(runner, "train_source", lambda job: train_source(job, 56.32))
    runner.ensure(job)
    [_, line] = report_sources.retrained_sources(tmp_path)
    assert "**rte (lora, seed 0) differs**" in line and "50.54 → 50.54, 56.32" in line  # one value a retrain
    assert report_sources.retrained_sources(tmp_path / "elsewhere") == []


def test_a_kept_source_is_pulled_verified_on_a_new_machine_instead_of_retrained(tmp_path, tiny_model_dir, monkeypatch):
    """--keep-sources: a trained source is pushed to the run's registry (<out>/sources, committed with the
    results); a new machine pulls that very adapter, its files checked against their sha256, instead of
    retraining it, and refuses a tampered or a different one."""
    from conftest import make_source

    from scalearn_cli.errors import RegistryError

    args, runner = plan_args(tmp_path, "--work", str(tmp_path / "work"), "--keep-sources")
    job = Job("source", "rte", "lora", "single", None, 0)
    runner.results.add({**job.key(), "task_main_metric": "accuracy", "main_score": 50.0, "test": {"accuracy": 50.0}})
    folder = make_source(job.folder(args.work), tiny_model_dir)  # what train-source wrote (test accuracy 50.0)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert runner.publish_sources() == [f"{tmp_path.name}/rte-lora-single-s0"]
    assert not runner.keep(job)  # already kept: no second commit
    assert [e.repo_id for e in runner.registry().list()] == [f"{tmp_path.name}/rte-lora-single-s0"]
    [_, line] = report_sources.kept_sources(tmp_path)
    where = f"bench/results/{tmp_path.name}/sources"
    assert line.startswith(f"The 1 source adapters transfers compose are kept in `{where}`")

    shutil.rmtree(args.work)  # a new machine: rows and registry committed, adapters gone
    monkeypatch.setattr(runner, "train_source", lambda job: pytest.fail("retrained a kept source"))
    runner.ensure(job)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert not (tmp_path / "retrained.jsonl").exists()

    shutil.rmtree(args.work)
    commit = runner.kept_commit(job)
    weights = runner.registry().pull(runner.repo_id(job), commit) / "adapter_model.safetensors"
    blob = weights.resolve()
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-4] + b"\0\0\0\0")  # a corrupted (or edited) commit of the registry
    with pytest.raises(RegistryError, match="tampered"):
        runner.ensure(job)
    assert not folder.exists()  # nothing half-restored

    blob.write_bytes(files["adapter_model.safetensors"])
    runner.results.add({**job.key(), "task_main_metric": "accuracy", "main_score": 61.0, "test": {"accuracy": 61.0}})
    with pytest.raises(SystemExit, match="not the recorded adapter"):  # kept adapter != the row's
        runner.ensure(job)
    assert not folder.exists()


def test_without_keep_sources_nothing_is_pushed_or_pulled(tmp_path, tiny_model_dir):
    from conftest import make_source

    args, runner = plan_args(tmp_path, "--work", str(tmp_path / "work"))
    job = Job("source", "rte", "lora", "single", None, 0)
    make_source(job.folder(args.work), tiny_model_dir)
    assert not runner.keep(job) and not runner.restore(job)
    assert not (tmp_path / "sources").exists()
    assert quality.parse_args(["--strong"]).keep_sources  # the strong run keeps its sources


def test_a_single_adapter_row_is_its_recorded_source_row_not_a_retrain(tmp_path, tiny_model_dir, monkeypatch):
    """A target's single-adapter row of seed s is its seed-s source: on a new machine the recorded source row
    gives it (retraining MRPC's seed-1 source for it cost 22 minutes); only sources a transfer composes are kept."""
    from conftest import make_source

    args, runner = plan_args(tmp_path, "--work", str(tmp_path / "work"), "--keep-sources")
    source = Job("source", "rte", "lora", "single", None, 1)
    recorded = {**source.key(), "task_main_metric": "accuracy", "main_score": 56.68, "test": {"accuracy": 56.68},
                "wall_seconds": 512.0}
    runner.results.add(recorded)
    monkeypatch.setattr(runner, "train_source", lambda job: pytest.fail("retrained a recorded source for its row"))
    single = Job("transfer", "rte", "lora", "single", None, 1)
    assert runner.run(single)
    assert runner.results.row(**single.key()) == {**recorded, **single.key(), "wall_seconds": 0.0}

    make_source(source.folder(args.work), tiny_model_dir, seed=1)
    assert not runner.keep(source)  # seed 1: no transfer composes it
    few_shot = Job("few-shot", "rte", "lora", "single", None, 1, 16)
    make_source(few_shot.folder(args.work), tiny_model_dir, seed=1)
    assert not runner.keep(few_shot)  # composed, but a seed-1 few-shot source retrains in minutes: not committed
    assert not (tmp_path / "sources").exists()


def test_fit_deadline_expects_the_longest_like_run_of_any_seed():
    job = Job("transfer", "stsb", "lora", "adapterfusion", None, 1)
    rows = [{**job.key(), "seed": 0, "wall_seconds": 4800.0}, {**job.key(), "seed": 2, "wall_seconds": 3900.0},
            {**job.key(), "seed": 0, "method": "average", "wall_seconds": 840.0},  # another method
            {**job.key(), "seed": 0, "target": "mrpc", "wall_seconds": 2100.0},  # another target
            {**job.key(), "stage": "few-shot", "k": 16, "wall_seconds": 900.0}]  # another stage and k
    assert expected_seconds(rows, job) == 4800.0
    assert expected_seconds(rows, Job("transfer", "cola", "lora", "adapterfusion", None, 0)) == 4800.0
    # a transfer's single-adapter row copies its source's row (wall 0) when that seed's source is recorded, and
    # trains the source first when it is not: the estimate is then the source's (this session's miss: a
    # "0-minute" single-adapter job started a 24-minute source 8 minutes before the deadline)
    single = Job("transfer", "stsb", "lora", "single", None, 2)
    copied = {**single.key(), "seed": 0, "wall_seconds": 0.0}
    source = {**single.key(), "stage": "source", "seed": 0, "wall_seconds": 1425.0}
    assert expected_seconds([copied], single) is None
    assert expected_seconds([copied, source], single) == 1425.0
    assert expected_seconds([copied, source, {**source, "seed": 2, "wall_seconds": 1248.0}], single) == 0.0
    # a kind's first runs (bottleneck after LoRA): the other kinds' like runs, its own once it has some
    bottleneck = Job("transfer", "stsb", "bottleneck", "adapterfusion", None, 0)
    assert expected_seconds(rows, bottleneck) == 4800.0
    own = {**bottleneck.key(), "wall_seconds": 3000.0}
    assert expected_seconds([*rows, own], bottleneck) == 3000.0
    # a target's first runs: the same method's on the other targets (CoLA's average started with no estimate)
    assert expected_seconds(rows, Job("transfer", "cola", "bottleneck", "average", None, 0)) == 840.0
    assert expected_seconds(rows, Job("transfer", "cola", "lora", "scalearn", "scalearn", 0)) is None


def test_fit_deadline_skips_only_the_runs_that_would_end_after_it(tmp_path, monkeypatch, caplog):
    """Under --fit-deadline a run whose like runs took longer than the time left is left for a later session, and
    the worker goes on to shorter runs instead of stopping (a run cut at the session's end is lost whole)."""
    out = tmp_path / "out"
    args = quality.parse_args(["--strong", "--out", str(out), "--work", str(tmp_path / "work"), "--shard", "1/2",
                               "--deadline", time.strftime("%H:%M", time.gmtime(time.time() + 7200)), "--fit-deadline"])
    long, short = (Job("transfer", "stsb", "lora", m, None, 1) for m in ("adapterfusion", "average"))
    results = quality_plan.Results(out / "results.jsonl")
    results.add({**long.key(), "seed": 0, "wall_seconds": 10 * 86400.0})  # longer than any time left
    results.add({**short.key(), "seed": 0, "wall_seconds": 1.0})
    ran = []
    monkeypatch.setattr(quality, "parse_args", lambda argv=None: args)
    monkeypatch.setattr(quality, "plan", lambda args: iter([long, short]))
    monkeypatch.setattr(quality_runner.Runner, "run", lambda self, job, wait=True: ran.append(job) or True)
    with caplog.at_level("INFO", logger="bench.quality"):
        quality.main([])
    assert ran == [short]
    assert "like runs took up to 14400 min" in caplog.text


def test_fit_deadline_without_a_deadline_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        quality.parse_args(["--fit-deadline"])
    assert exc.value.code == 2 and "--fit-deadline needs --deadline" in capsys.readouterr().err


def test_rows_computed_on_a_gpu_are_named_and_kept_out_of_cpu_timings():
    """A row records its device; the report says which ran on a GPU and keeps their times out of CPU figures."""
    from bench import report_speed

    def row(seed, device=None, wall=100.0):
        r = {"stage": "transfer", "target": "mrpc", "kind": "bottleneck", "method": "scalearn",
             "variant": "scalearn", "seed": seed, "k": None, "wall_seconds": wall, "examples_per_second": 10.0}
        return {**r, "device": device, "torch": "2.11.0+cu130", "transformers": "5.17.0"} if device else r

    rows = [row(0), row(1, "cpu", 300.0), row(2, "NVIDIA H200", 5.0)]
    rows[2]["examples_per_second"] = 900.0
    line = report.accelerator_line({"gpu": None}, rows)
    assert line.startswith("- Accelerator: 1 of 3 runs were computed on NVIDIA H200 (torch 2.11.0+cu130")
    assert "mrpc bottleneck seed 2: ScaLearn." in line
    assert report.accelerator_line({"gpu": None}, rows[:2]).startswith("- Accelerator: none (CPU only)")
    repeat = {**row(1, "NVIDIA H200"), "main_score": 71.5, "best_epoch": 4}
    rows[1].update(main_score=70.25, best_epoch=4)
    assert line + (" The same run on both machines (the CPU row is the one in the tables): mrpc bottleneck ScaLearn "
                   "seed 1: CPU 70.25, GPU 71.50 (best epoch 4 and 4).") == report.accelerator_line({}, rows, [repeat])
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


def test_peft_peer_methods_are_planned_and_configured_from_the_run_flags(tmp_path):
    """merge-<type> is method merge with PEFT's combination type as its variant; arrow takes --arrow-top-k."""
    args, _ = plan_args(tmp_path, "--methods", "single,merge-linear,merge-ties,arrow", "--stages", "transfer",
                        "--job-methods", "merge-ties,arrow", "--merge-density", "0.4", "--arrow-top-k", "2")
    picked = [j for j in plan(args) if selected(args, j)]
    assert {(j.method, j.variant) for j in picked} == {("merge", "ties"), ("arrow", None)}
    options = {j.method: quality_runner.combiner_options(args, j, j.method) for j in picked}
    assert options == {"merge": {"merge_type": "ties", "density": 0.4}, "arrow": {"top_k": 2}}
    linear = next(j for j in plan(args) if j.variant == "linear")
    assert quality_runner.combiner_options(args, linear, "merge") == {"merge_type": "linear"}
    assert linear.folder(tmp_path).name == "rte-lora-merge-linear-s0"
