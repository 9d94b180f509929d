"""bench/ as a harness: one entry point listing every script, a package (no sys.path edits), docs described by
bench/runs.json, runs resumed from their config.json, and the device runner for a run's missing rows."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import device, quality, report, report_missing, runs
from bench.__main__ import COMMANDS

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def test_help_lists_every_command_and_every_script_has_one():
    help_text = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=60, check=True).stdout
    for name in COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\b", help_text, re.M), name
    scripts = {f.stem for f in BENCH.glob("*.py") if 'if __name__ == "__main__":' in f.read_text()} - {"__main__"}
    assert scripts == {command.module for command in COMMANDS.values()}  # a new script needs a COMMANDS line
    unknown = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=REPO, capture_output=True, text=True,
                             timeout=60)
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr


def test_a_command_runs_its_module_with_the_options_after_it(capsys):
    from bench.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["merge-rows", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m bench merge-rows")


def test_no_bench_file_edits_sys_path_or_imports_a_sibling_by_bare_name():
    siblings = "|".join(f.stem for f in BENCH.glob("*.py") if not f.stem.startswith("__"))
    bare = re.compile(rf"^\s*(import ({siblings})\b|from ({siblings}) import)", re.M)
    for f in BENCH.rglob("*.py"):
        text = f.read_text()
        assert "sys.path" not in text, f"{f.name} edits sys.path: import bench modules as bench.<module>"
        assert not bare.search(text), f"{f.name} imports a bench module by bare name: use bench.<module>"


def test_report_list_names_each_doc_its_runs_and_the_commands(capsys):
    report.main(["--list"])
    out = capsys.readouterr().out
    data = json.loads((BENCH / "runs.json").read_text())
    assert list(report.DOCS) == list(data["docs"])
    for name, entry in data["docs"].items():
        assert f"docs/{name}: " in out and (REPO / "docs" / name).is_file()
        if entry.get("generator"):  # a doc with its own report: made by --all, its rows by its own command
            assert f"  doc       python -m bench report --all  (docs/{name} by {entry['generator']}.render)\n" in out
            assert f"  rows      {entry['rows']}\n" in out
        else:
            command = " ".join([f"python -m bench report --run {entry['run']} --out docs/{name}",
                                *(f"--compare-run {other}" for other in entry["compare"]),
                                *(f"--extend-run {other}" for other in entry.get("extend", []))])
            assert f"  doc       {command}\n" in out
            assert f"python -m bench run --from-config bench/results/{entry['run']}/config.json" in out
        for run in (entry["run"], *entry["compare"], *entry.get("extend", [])):
            assert (REPO / "bench" / "results" / run / "config.json").is_file(), run
    assert out.rstrip().endswith("every doc: python -m bench report --all   (--check: fail where a doc is not what "
                                 "its results make)")


def test_a_doc_naming_an_undescribed_run_is_an_error(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"docs": {"x.md": {"run": "a", "compare": ["b"]}}, "runs": {"a": "the a run"}}))
    with pytest.raises(SystemExit, match='run\\(s\\) b named by a doc but not described under "runs"'):
        runs.docs(path)
    path.write_text(json.dumps({"docs": {"x.md": {"run": "a", "compare": ["b"]}}, "runs": {"a": "", "b": ""}}))
    assert runs.docs(path) == {"x.md": ("a", ["b"], [])}
    path.write_text(json.dumps({"docs": {"x.md": {"run": "a", "extend": ["c"]}}, "runs": {"a": ""}}))
    with pytest.raises(SystemExit, match='run\\(s\\) c named by a doc'):  # an extending run is named too
        runs.docs(path)


def test_from_config_resumes_the_recorded_run_and_flags_given_still_win(capsys):
    path = BENCH / "results" / "strong-nostop" / "config.json"
    config = json.loads(path.read_text())
    args = quality.parse_args(["--from-config", str(path)])
    for key in ("targets", "extra_sources", "kinds", "methods", "seeds", "patience", "pooling", "max_length",
                "source_caps", "epochs", "fusion_tuned_lr", "few_shot_steps"):
        assert getattr(args, key) == config[key], key
    assert args.out == path.parent and args.stages == "transfer"  # the recorded stages (no other stage has rows)
    assert args.sources_from == REPO / config["sources_from"]  # recorded relative to the checkout
    assert args.threads == 2 and args.shard == "0/1" and args.job_seeds is None  # a process's own, not the run's
    args = quality.parse_args(["--from-config", str(path), "--seeds", "0", "--threads", "1"])
    assert (args.seeds, args.threads, args.targets) == ("0", 1, config["targets"])
    with pytest.raises(SystemExit) as exc:
        quality.parse_args(["--from-config", str(path), "--strong"])
    assert exc.value.code == 2 and "drop --quick/--strong" in capsys.readouterr().err


OWN_GENERATOR = {d.run for d in runs.load()[0] if d.generator}  # runs of another runner (e.g. small targets)


@pytest.mark.parametrize("run", sorted(p.parent.name for p in (BENCH / "results").glob("*/config.json")
                                       if p.parent.name not in OWN_GENERATOR))
def test_device_runner_finds_the_rows_the_report_names_missing(run):
    path = BENCH / "results" / run / "config.json"
    rows = [json.loads(line) for line in path.with_name("results.jsonl").read_text().splitlines() if line]
    assert device.missing_jobs(path) == report_missing.missing_jobs(json.loads(path.read_text()), rows)


def test_device_dry_run_prints_the_missing_jobs_and_one_worker_per_shard(capsys):
    device.main(["--run", "medium-mean", "--dry-run", "--shards", "2", "--python", "py", "--", "--job-targets",
                 "stsb"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "7 missing run(s) of medium-mean"
    assert out[-2:] == [f"py -m bench run --from-config bench/results/medium-mean/config.json --threads 2 --shard {i}/2 "
                        "--job-targets stsb" for i in range(2)]
    device.main(["--run", "strong", "--dry-run"])
    assert capsys.readouterr().out.splitlines() == ["0 missing run(s) of strong", "nothing to run"]


def test_device_puts_the_model_together_from_its_parts_and_checks_its_hash(tmp_path):
    weights = bytes(range(256)) * 10
    bundle, parts, model = tmp_path / ".gpu", tmp_path / "parts", tmp_path / "model"
    for folder, name, chunk in ((parts, "part0", weights[:1000]), (parts, "part1", weights[1000:2000]),
                                (bundle / "p2", "part2", weights[2000:])):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(chunk)
    (bundle / "minilm").mkdir()
    (bundle / "minilm" / "config.json").write_text("{}")
    (bundle / "minilm.sha256").write_text(hashlib.sha256(weights).hexdigest() + "\n")
    device.assemble_model(bundle, parts, model)
    assert (model / "model.safetensors").read_bytes() == weights and (model / "config.json").is_file()
    (model / "model.safetensors").unlink()
    (parts / "part1").unlink()
    with pytest.raises(SystemExit, match="sha256 differs .*parts found: \\['part0', 'part2'\\]"):
        device.assemble_model(bundle, parts, model)


def test_device_workers_hand_back_only_the_rows_they_appended(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text('{"old": 1}\n')
    append = "import sys; open(sys.argv[1], 'a').write('{\"new\": %s}\\n' % sys.argv[2])"
    commands = [[sys.executable, "-c", append, str(results), str(i)] for i in range(2)]
    commands.append([sys.executable, "-c", "import time; time.sleep(60)"])  # stopped at the deadline
    logs = tmp_path / "logs"
    device.run_workers(commands, {}, 5, logs)
    assert device.collect(results, 1, logs, tmp_path / "out") == 2
    assert sorted((tmp_path / "out" / "new_rows.jsonl").read_text().splitlines()) == ['{"new": 0}', '{"new": 1}']
    assert (tmp_path / "out" / "logs.tgz").is_file() and sorted(p.name for p in logs.iterdir()) == [
        "w0.log", "w1.log", "w2.log"]


def test_a_workers_job_filters_and_deadline_stay_out_of_the_runs_config(tmp_path):
    args = quality.parse_args(["--out", str(tmp_path), "--job-seeds", "1", "--job-targets", "rte", "--deadline",
                               "23:00", "--fit-deadline", "--shard", "1/2", "--seeds", "0,1"])
    quality.write_config(args)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["seeds"] == "0,1" and config["machine"]["threads"] == args.threads  # the run's own options stay
    kept = {k for k in config if k.startswith("job_") or k in quality.WORKER_FILTERS}
    assert not kept, f"one worker's filters written into the run's config: {sorted(kept)}"
