"""The shelf benchmark as a run of the bench harness: its plan over a narrow and a broad shelf (a row made on one
broad size never stands for another), its dispatch from `bench run --from-config`, the device's zoo stage and pack
(dry, offline), and the doc generated from its rows."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bench import device, shelf_device, shelf_estimate
from bench.__main__ import harness
from bench.quality_plan import Job, row_key
from bench.report_shelf import render
from bench.shelf import parse_args
from bench.shelf_plan import NARROW, Member, ShelfJob, catalog_shelf, composed, plan, selected

REPO = Path(__file__).resolve().parents[1]


def members(tasks: list[str]) -> list[Member]:
    return [Member(t, f"zoo:{t}-lora", f"scalearn-zoo/minilm-l6-{t}-lora", "0" * 40) for t in tasks]


def found(n_broad: int) -> dict[str, list[Member]]:
    extra = ["mnli", "scitail", "anli", "sick_entailment", "sick_relatedness", "paws", "boolq", "trec", "cr"]
    return {"narrow": members(list(NARROW)), "broad": members(list(NARROW) + extra[:n_broad - 7])}


def test_every_target_and_seed_gets_each_method_on_both_shelves_and_the_selections_on_the_broad_one():
    args = parse_args([])
    jobs = [j for j in plan(args, found(10)) if (j.stage, j.target, j.seed) == ("transfer", "rte", 0)]
    assert jobs[0] == ShelfJob("transfer", "rte", "lora", "single", None, 0, None)  # the own adapter: no shelf
    per_shelf = {s: [j for j in jobs if j.shelf == s and not (j.select and j.method == "scalearn")]
                 for s in ("narrow", "broad")}
    assert len(per_shelf["narrow"]) == len(per_shelf["broad"]) == 12
    assert {j.shelf_n for j in per_shelf["narrow"]} == {7} and {j.shelf_n for j in per_shelf["broad"]} == {10}
    fusion = [j for j in per_shelf["broad"] if j.method.startswith("adapterfusion")]
    assert {j.select for j in fusion} == {"learned-8"}  # AdapterFusion over the learned 8 of a broad shelf
    selections = sorted(j.select for j in jobs if j.select and j.method == "scalearn")
    assert selections == sorted(f"{r}-{k}" for r in ("learned", "similarity", "random") for k in (4, 8))
    few = [j for j in plan(args, found(10)) if j.stage == "few-shot"]
    assert {(j.target, j.k) for j in few} == {(t, k) for t in ("rte", "mrpc") for k in (16, 32, 100)}
    assert {j.seed for j in few} == {0, 1, 2, 3, 4}


def test_a_row_made_on_a_smaller_broad_shelf_does_not_stand_for_the_larger_ones():
    args = parse_args(["--targets", "rte", "--seeds", "0", "--few-shot-targets", "", "--methods", "single,average"])
    small = {row_key(j.key()) for j in plan(args, found(10))}
    large = {row_key(j.key()) for j in plan(args, found(12))}
    assert small & large == {row_key(j.key()) for j in plan(args, found(10)) if j.shelf != "broad"}
    old = Job("transfer", "rte", "lora", "average", None, 0)  # a quality run's row keeps its key
    assert row_key(old.key()) == row_key({**old.key(), "device": "cpu"})
    assert ShelfJob(*old.key().values()).folder(Path("w")) == old.folder(Path("w"))
    assert ShelfJob("transfer", "rte", "lora", "average", None, 0, None, "broad", 12).folder(Path("w")).name == \
        "rte-lora-average-s0-broad12"


def test_a_full_size_target_composes_its_own_source_first_and_a_few_shot_one_leaves_it_out():
    shelf = members(["mrpc", "rte", "mnli"])
    full = ShelfJob("transfer", "rte", "lora", "average", None, 0, None, "broad", 3)
    few = ShelfJob("few-shot", "rte", "lora", "average", None, 0, 16, "broad", 3)
    assert [m.task for m in composed(full, shelf)] == ["rte", "mrpc", "mnli"]
    assert [m.task for m in composed(few, shelf)] == ["mrpc", "mnli"]  # the k-shot adapter takes its place


def test_no_selection_is_planned_that_would_keep_the_whole_shelf():
    args = parse_args(["--targets", "rte", "--seeds", "0", "--few-shot-targets", "", "--methods", "average"])
    small = {"narrow": found(7)["narrow"], "broad": members(["rte", "mrpc", "mnli", "anli", "snli", "cola"])}
    assert sorted(j.select for j in plan(args, small) if j.select) == ["learned-4", "random-4", "similarity-4"]


def test_a_worker_picks_the_whole_shelf_rows_or_named_selections_without_changing_the_plan():
    args = parse_args(["--targets", "rte", "--seeds", "0", "--few-shot-targets", "", "--methods",
                       "scalearn++,adapterfusion", "--select-variant", "scalearn++", "--job-shelves", "broad",
                       "--job-select", "none,learned-8"])
    picked = [(j.method, j.variant, j.select) for j in plan(args, found(10)) if selected(args, j)]
    assert sorted(picked, key=str) == sorted([("scalearn", "scalearn++", None),
                                              ("scalearn", "scalearn++", "learned-8"),
                                              ("adapterfusion", None, "learned-8")], key=str)
    everything = parse_args(["--targets", "rte", "--seeds", "0", "--few-shot-targets", "", "--methods",
                             "scalearn++,adapterfusion", "--select-variant", "scalearn++"])
    assert list(plan(args, found(10))) == list(plan(everything, found(10)))  # a filter never changes the run


def test_a_job_select_typo_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--job-select", "none,learnd-8"])
    assert exit_.value.code != 0
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--job-select: learnd-8 unknown" in message and "learned" in message


def test_the_broad_shelf_is_every_built_lora_recipe_of_the_catalog_and_the_narrow_one_among_them():
    built, total = catalog_shelf()
    assert total == 35 and set(NARROW) <= {m.task for m in built}
    assert all(m.revision and m.ref.startswith("zoo:") for m in built)
    missing = shelf_device.missing_recipes(None)
    assert len(missing) + len(built) == total and not {m.ref[4:] for m in built} & set(missing)


def test_bench_run_from_a_shelf_config_runs_the_shelf_harness(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"harness": "shelf", "targets": "rte"}))
    assert harness(["--from-config", str(config), "--threads", "1"]) == "shelf"
    assert harness([f"--from-config={config}"]) == "shelf"
    assert harness(["--from-config", str(REPO / "bench" / "results" / "strong" / "config.json")]) is None
    args = parse_args(["--from-config", str(config), "--seeds", "1"])
    assert (args.targets, args.seeds, args.out) == ("rte", "1", tmp_path)  # recorded plan; flags given still win


def run_folder(tmp_path: Path, rows: list[dict], n_broad: int = 10) -> Path:
    run = tmp_path / "shelf"
    run.mkdir()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(parse_args([])).items()}
    config.update(harness="shelf", shelf_recipes=35, zoo_build_seconds={"mnli": 600.0, "anli": 720.0},
                  glue_eval_overlap_dropped={"sick_entailment": 55},
                  shelves_resolved={k: [m.record() for m in v] for k, v in found(n_broad).items()})
    (run / "config.json").write_text(json.dumps(config))
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def row(method: str, variant: str | None, seed: int, score: float, shelf: str | None = None, n: int | None = None,
        device_name: str = "cpu", **extra) -> dict:
    return {"stage": "few-shot", "target": "rte", "kind": "lora", "method": method, "variant": variant, "seed": seed,
            "k": 16, "shelf": shelf, "shelf_n": n, "select": None, "main_score": score, "wall_seconds": 100.0 + seed,
            "n_sources": n or 1, "device": device_name, **extra}


def slice_rows() -> list[dict]:
    shares = [{"task": "rte", "share": 0.2}, {"task": "mnli", "share": 0.5}, {"task": "sst2", "share": 0.3}]
    out = []
    for seed in range(3):
        out += [row("single", None, seed, 50.0 + seed),
                row("average", None, seed, 52.0 + seed, "narrow", 7), row("average", None, seed, 60.0 + seed, "broad", 10),
                row("scalearn", "scalearn++", seed, 53.0 + seed, "narrow", 7, omega_shares=shares),
                row("scalearn", "scalearn++", seed, 53.5 + seed, "broad", 10, omega_shares=shares,
                    device_name="NVIDIA H100" if seed == 2 else "cpu")]
    return out


def test_the_doc_sets_broad_against_narrow_with_verdicts_family_shares_devices_and_whats_missing(tmp_path):
    run = run_folder(tmp_path, slice_rows())
    text, n, _ = render(tmp_path / "docs" / "benchmarks-shelf.md", run)
    assert n == 15
    assert "**10 of the 35** recipes" in text and "broad rows so far used N = 10" in text
    average = next(line for line in text.splitlines() if line.startswith("| Average"))
    assert "+8.00 ± 0.82" in average and "**higher**, beyond seed noise" in average and "(N = 10)" in average
    scalearn = next(line for line in text.splitlines() if line.startswith("| ScaLearn++"))
    assert "+0.50" in scalearn and "within seed noise" in scalearn
    assert "- ScaLearn++ − own adapter (N = 10): +3.50 ± 0.82, **higher**, beyond seed noise." in text
    assert "| rte k=16 (N = 10) |" in text and (tmp_path / "docs/figures/benchmarks-shelf/omega_families.png").is_file()
    assert "- NVIDIA H100: 1 row(s)" in text and "- cpu: 14 row(s)" in text
    assert "**sick_entailment** — SICK's sentences" in text and "dropped 55 of its rows" in text
    missing = text[text.index("## Missing"):]
    planned = len(list(plan(parse_args([]), found(10))))
    assert f"**{planned - 15} runs**" in missing and "Over the complete shelf of 35" in missing
    assert "after building the 25 missing zoo sources (about 4.6 worker-hours" in missing  # 25 × their 660 s median


def test_a_missing_row_is_estimated_by_its_like_rows_scaled_by_the_sources_it_composes(tmp_path):
    rows = slice_rows()
    job = ShelfJob("few-shot", "rte", "lora", "average", None, 3, 16, "broad", 20)
    assert shelf_estimate.estimate(job, rows, []) == pytest.approx(102.0 * 20 / 10)
    own = ShelfJob("transfer", "rte", "lora", "single", None, 0, None)
    assert shelf_estimate.estimate(own, rows, []) == 0.0  # the zoo's source: nothing to train
    assert shelf_estimate.estimate(ShelfJob("transfer", "cola", "lora", "lorahub", None, 0, None, "narrow", 7),
                                   rows, []) is None


def test_device_pack_carries_the_data_and_puts_the_zoo_stage_before_the_rows(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for part in ("glue/rte", "snli", "shelf/mnli"):
        (data / part).mkdir(parents=True)
        (data / part / "train.jsonl").write_text('{"x": 1}\n')
    fake = ["run(command='cp p0', carry=['.gpu/p0'])", "run(command='cp p1', carry=['.gpu/p1'])",
            "run(command='python3 -m bench device --run shelf --shards 8 --seconds 420', carry=[...])",
            "download the wheels the GPU machine lacks into .gpu/whl (see `python -m bench device --help`)"]
    monkeypatch.setattr(device, "pack", lambda run, bundle: list(fake))
    calls = shelf_device.pack("shelf", tmp_path, data)
    assert calls[:2] == fake[:2]
    assert "--stage zoo --seconds 400" in calls[2] and "'.gpu/shelfdata.tgz'" in calls[2] and "'.gpu/p2'" in calls[2]
    assert "--seconds 420 --skip-wheels" in calls[3] and calls[4].startswith("download the wheels")
    with tarfile.open(tmp_path / "shelfdata.tgz") as tar:
        assert {"glue/rte/train.jsonl", "snli/train.jsonl", "shelf/mnli/train.jsonl"} <= set(tar.getnames())


def test_the_zoo_stage_builds_in_parallel_and_hands_back_only_finished_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(shelf_device, "ZOO_NEW", tmp_path / "zoo-new")
    fake = tmp_path / "fake.py"  # stands for `python -m scalearn_cli zoo build`: records its recipes, pushes one
    fake.write_text("import sys, pathlib\nargs = sys.argv\nroot = pathlib.Path(args[args.index('--registry') + 1][6:])\n"
                    "for name in args[args.index('--tasks') + 1].split(','):\n"
                    "    (root / f'models--z--{name}' / 'refs').mkdir(parents=True, exist_ok=True)\n"
                    "    if name != 'c':\n        (root / f'models--z--{name}' / 'refs' / 'main').write_text('x')\n")
    runner = tmp_path / "py"
    runner.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {fake} \"$@\"\n")
    runner.chmod(0o755)
    shelf_device.build_zoo(["a", "b", "c"], 2, 30, {}, str(runner), tmp_path, tmp_path / "logs")
    assert shelf_device.hand_back_zoo(tmp_path / "out") == ["models--z--a", "models--z--b"]  # c's push never ended
    assert (tmp_path / "out" / "zoo" / "models--z--a" / "refs" / "main").is_file()


def test_device_dry_run_of_the_shelf_names_the_zoo_stage_and_the_workers(tmp_path, capsys):
    run = run_folder(tmp_path, slice_rows())
    device.main(["--run", str(run), "--dry-run", "--shards", "2", "--python", "py"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("zoo stage: ") and "missing run(s) of shelf over the recorded shelves" in out[1]
    assert out[-1].endswith("--threads 2 --shard 1/2 --data-root /root/data")


def test_bench_help_lists_the_shelf_command():
    out = subprocess.run([sys.executable, "-m", "bench", "shelf", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "--select-k" in out and "--fusion-broad-select" in out


def test_a_prebuilt_source_whose_recorded_data_is_gone_reads_the_same_rows_from_a_copy_in_the_work_folder(
        tmp_path, monkeypatch):
    from dataclasses import replace

    from bench.shelf_runner import ShelfRunner
    from scalearn_cli.resolve import Resolver

    source = Resolver.source  # the strong run's mrpc source, as recorded on a machine whose capped copy is gone

    def moved(self, ref):
        found = source(self, ref)
        found.meta = replace(found.meta, data={**found.meta.data, "data_dir": str(tmp_path / "gone" / "mrpc-0-2000")})
        return found

    monkeypatch.setattr(Resolver, "source", moved)

    data = tmp_path / "data" / "glue" / "mrpc"
    data.mkdir(parents=True)
    rows = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "label": i % 2, "idx": i} for i in range(6)]
    for split in ("train", "validation"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = parse_args(["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                       "--data-root", str(tmp_path / "data")])
    member = next(m for m in catalog_shelf()[0] if m.task == "mrpc")
    found = ShelfRunner(args, {"narrow": [member]}).resolve(member)
    assert found.meta.data["data_dir"] == str(tmp_path / "work" / "data" / "mrpc-0-2000")  # the recorded name
    assert (tmp_path / "work" / "data" / "mrpc-0-2000" / "train.jsonl").read_text().count("\n") == 6
