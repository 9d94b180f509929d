"""``--out`` can never destroy an input: decisions on resolved paths, --overwrite only over a verified scalearn
folder, a final rename that never replaces, and leftovers of a killed run restored. Offline, CPU, tiny BERT."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import TRAIN, invoke, two_source_workspace

from scalearn_cli.artifacts import outputs
from scalearn_cli.artifacts.folders import record_folder
from scalearn_cli.errors import ArtifactError


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(result: Any, *words: str) -> str:
    """A one-line refusal on stderr (exit 1) that contains ``words``."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def work(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two LoRA sources, an rte data folder and a scalearn composition of the two."""
    root = tmp_path_factory.mktemp("out-safety")
    return two_source_workspace(root, tiny_model_dir, "--max-length", "16")


@pytest.fixture
def comp_copy(work: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the composition (its sources are recorded by absolute path, so it still resolves)."""
    return Path(shutil.copytree(work["comp"], tmp_path / "C"))


# ---- --overwrite replaces only a verified scalearn folder ------------------------------------------------------
def test_overwrite_refuses_a_folder_with_a_hand_written_scalearn_json(comp_copy: Path, tmp_path: Path) -> None:
    target = tmp_path / "P"
    target.mkdir()
    (target / "scalearn.json").write_text(json.dumps({"kind": "source"}))
    (target / "thesis.tex").write_text("years of work")
    before = snapshot(target)
    refused(invoke("export", comp_copy, "--out", target, "--overwrite"), "does not verify", "--overwrite")
    assert snapshot(target) == before


def test_overwrite_refuses_a_scalearn_folder_holding_the_users_own_files(comp_copy: Path, work: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    target = Path(shutil.copytree(work["s0"], tmp_path / "P"))
    (target / "notes.txt").write_text("mine")
    before = snapshot(target)
    refused(invoke("export", comp_copy, "--out", target, "--overwrite"), "notes.txt", "in no record")
    assert snapshot(target) == before


def test_overwrite_replaces_an_unchanged_scalearn_folder(comp_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "E"
    assert invoke("export", comp_copy, "--out", out).exit_code == 0
    first = snapshot(out)
    assert invoke("export", comp_copy, "--out", out, "--format", "merged", "--overwrite").exit_code == 0
    assert snapshot(out) != first and (out / "scalearn.json").is_file()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


# ---- never an input, the working directory or a registry ---------------------------------------------------------
def test_export_into_its_own_composition_from_inside_it(comp_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(comp_copy)
    monkeypatch.chdir(comp_copy)
    refused(invoke("export", ".", "--out", "../C", "--overwrite"), "working directory")
    refused(invoke("export", ".", "--out", "sub/../../C", "--overwrite"))
    monkeypatch.chdir(comp_copy.parent)
    refused(invoke("export", "C", "--out", "C", "--overwrite"), "is an input of this command")
    refused(invoke("export", "C", "--out", "C/../C", "--overwrite"), "is an input of this command")
    assert snapshot(comp_copy) == before
    assert [p.name for p in comp_copy.parent.iterdir() if p.name.startswith(".")] == []


def test_export_through_a_symlink_to_its_own_composition(comp_copy: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(comp_copy)
    before = snapshot(comp_copy)
    refused(invoke("export", comp_copy, "--out", link, "--overwrite"), "is an input of this command")
    assert snapshot(comp_copy) == before


def test_export_onto_a_source_of_the_composition(comp_copy: Path, work: dict[str, Path]) -> None:
    before = snapshot(work["s1"])
    refused(invoke("export", comp_copy, "--out", work["s1"], "--overwrite"), "is an input of this command")
    refused(invoke("export", comp_copy, "--out", work["s1"] / "inside"), "lies inside an input")
    assert snapshot(work["s1"]) == before


def test_transfer_onto_one_of_its_sources(work: dict[str, Path]) -> None:
    before = snapshot(work["s1"])
    result = invoke("transfer", "--task", "rte", "--data-dir", work["data"], "-s", work["s0"], "-s", work["s1"],
                    *TRAIN, "--out", work["s1"], "--overwrite")
    refused(result, "is an input of this command")
    assert snapshot(work["s1"]) == before


def test_train_source_over_its_data_folder(work: dict[str, Path], tiny_model_dir: Path) -> None:
    before = snapshot(work["data"])
    result = invoke("train-source", "--task", "rte", "--data-dir", work["data"], "--model", tiny_model_dir, *TRAIN,
                    "--out", work["data"], "--overwrite")
    refused(result, "contains an input of this command")
    assert snapshot(work["data"]) == before


def test_prune_onto_its_own_composition(comp_copy: Path) -> None:
    before = snapshot(comp_copy)
    refused(invoke("prune", comp_copy, "--keep", "1", "--epochs", "1", "--out", comp_copy, "--overwrite"),
            "is an input of this command")
    assert snapshot(comp_copy) == before


def test_out_inside_a_registry_snapshot_is_refused(work: dict[str, Path], comp_copy: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    pushed = invoke("push", work["s0"], "org/s0", "--registry", f"local:{registry}")
    assert pushed.exit_code == 0, pushed.output
    snapshot_dir = next(registry.glob("models--org--s0/snapshots/*"))
    before = snapshot(registry)
    refused(invoke("export", comp_copy, "--out", snapshot_dir / "x"), "registry")
    refused(invoke("export", comp_copy, "--out", registry / "new", "--registry", f"local:{registry}"), "registry")
    assert snapshot(registry) == before
    assert invoke("pull", "org/s0", "--registry", f"local:{registry}").exit_code == 0


# ---- without --overwrite the final rename never replaces ------------------------------------------------------
def test_a_concurrent_writer_to_the_same_new_out_loses_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "new"
    with pytest.raises(ArtifactError, match="written by another process") as exc:
        with outputs.staged_output(out) as first:
            (first / "a.txt").write_text("first")
            with outputs.staged_output(out) as second:  # another writer finishes while the first still runs
                (second / "b.txt").write_text("second")
    assert "\n" not in str(exc.value)
    assert snapshot(out) == {"b.txt": b"second"}
    assert [p.name for p in tmp_path.iterdir()] == ["new"]


def test_two_processes_racing_for_one_out_leave_one_whole_folder(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path; from scalearn_cli.artifacts.outputs import staged_output\n"
        "print('ready', flush=True)\n"
        "while not Path(sys.argv[3]).exists(): time.sleep(0.01)\n"
        "try:\n"
        "    with staged_output(Path(sys.argv[1])) as tmp:\n"
        "        (tmp / 'who').write_text(sys.argv[2]); time.sleep(0.3)\n"
        "except Exception as exc: print(exc); sys.exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out, go = tmp_path / "race", tmp_path / "go"
    runs = [subprocess.Popen([sys.executable, "-c", script, str(out), str(i), str(go)], env=env,
                             stdout=subprocess.PIPE, text=True) for i in range(2)]
    assert [run.stdout.readline().strip() for run in runs] == ["ready", "ready"]  # type: ignore[union-attr]
    go.write_text("")  # both start writing at once: both see no folder yet
    codes = sorted(run.wait() for run in runs)
    assert codes == [0, 1]
    assert (out / "who").read_text() in ("0", "1") and len(list(out.iterdir())) == 1
    loser = next(run for run in runs if run.returncode == 1).stdout.read()  # type: ignore[union-attr]
    assert "written by another process" in loser or "already holds files" in loser
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "race"]


def test_rename_noreplace_refuses_an_existing_target(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with pytest.raises(FileExistsError):  # an empty folder too: os.rename would silently replace it
        outputs.rename_noreplace(src, dst)
    assert src.is_dir() and dst.is_dir()


def test_without_renameat2_a_lock_keeps_the_rename_from_replacing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "_renameat2", lambda src, dst, flags: False)  # an old libc or another kernel
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (dst / "kept").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        outputs.rename_noreplace(src, dst)
    (dst / "kept").rmdir()
    dst.rmdir()
    outputs.rename_noreplace(src, dst)
    assert dst.is_dir() and not src.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


def test_inspect_plot_never_writes_into_its_composition(comp_copy: Path) -> None:
    before = snapshot(comp_copy)
    refused(invoke("inspect", comp_copy, "--plot", comp_copy / "omega.png"), "--plot", "lies inside")
    assert snapshot(comp_copy) == before


# ---- leftovers of a killed run ----------------------------------------------------------------------------------
def test_a_folder_renamed_aside_by_a_killed_run_is_restored(work: dict[str, Path], tmp_path: Path) -> None:
    pid = dead_pid()
    out = tmp_path / "A"
    aside = Path(shutil.copytree(work["s0"], tmp_path / f".A.old-{pid}"))
    before = snapshot(aside)
    (tmp_path / f".A.tmp-{pid}-xyz").mkdir()
    (tmp_path / f".A.tmp-{pid}-xyz" / "half.safetensors").write_text("half")
    with pytest.raises(ArtifactError, match="already holds files"):  # restored first: then never replaced silently
        outputs.check_out_dir(out)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A"]


def test_leftovers_of_a_live_process_are_left_alone(tmp_path: Path) -> None:
    busy = tmp_path / f".A.tmp-{os.getpid()}-abc"
    busy.mkdir()
    outputs.check_out_dir(tmp_path / "A")
    assert busy.is_dir()


def test_record_folder_only_records_a_folder_without_a_record(work: dict[str, Path], tmp_path: Path) -> None:
    folder = Path(shutil.copytree(work["s0"], tmp_path / "s"))
    with pytest.raises(ArtifactError, match="already has its record"):
        record_folder(folder)
