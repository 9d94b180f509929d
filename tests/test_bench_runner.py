"""The benchmark's resumable, sharded runner (bench/quality_runner.py, quality_plan.py): its plan, job filters,
shards and deadlines, records, locks, kept sources, and the peer methods' flags. No real training here."""

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

from bench import quality, quality_plan, quality_runner, report_common, report_missing, report_sources
from bench.quality_plan import Job, expected_seconds, plan, selected


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
    assert report_missing.missing_rows(config, done) == [
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
    hours, unknown = report_missing.missing_hours(config, done)
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
    from helpers import make_source

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
    from helpers import make_source

    args, runner = plan_args(tmp_path, "--work", str(tmp_path / "work"))
    job = Job("source", "rte", "lora", "single", None, 0)
    make_source(job.folder(args.work), tiny_model_dir)
    assert not runner.keep(job) and not runner.restore(job)
    assert not (tmp_path / "sources").exists()
    assert quality.parse_args(["--strong"]).keep_sources  # the strong run keeps its sources


def test_a_single_adapter_row_is_its_recorded_source_row_not_a_retrain(tmp_path, tiny_model_dir, monkeypatch):
    """A target's single-adapter row of seed s is its seed-s source: on a new machine the recorded source row
    gives it (retraining MRPC's seed-1 source for it cost 22 minutes); only sources a transfer composes are kept."""
    from helpers import make_source

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
    # trains the source first when it is not: the estimate is then the source's (else a "0-minute" single-adapter
    # job can start a 24-minute source 8 minutes before the deadline)
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
