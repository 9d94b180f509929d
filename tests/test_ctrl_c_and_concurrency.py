"""Concurrent pushes and Ctrl-C: pushes from several processes and threads to one repo stay consistent, and an
interrupted push, train-source, transfer or ``--overwrite`` leaves no partial revision or folder, keeps the old
one, and a rerun succeeds."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import (
    TRAIN, custom, invoke, make_adapter, make_source, ok, one_error_line, read_all, repo_dir, staging_leftovers, unique,
)
from scalearn_cli.registry.local import LocalRegistry

pytestmark = pytest.mark.usefixtures("hf_env")  # an isolated HF cache and token, never the real Hub


# ---- concurrent pushes: 2 processes x 12 pushes to one branch; an interrupted push (the library) ---------
def _push_many(root: str, repo_id: str, worker: int, count: int) -> list[str]:
    registry = LocalRegistry(Path(root))
    commits = []
    for i in range(count):
        folder = make_adapter(Path(root).parent / f"src-{worker}-{i}", seed=100 * worker + i)
        commits.append(registry.push(folder, repo_id, commit_message=f"w{worker} #{i}").commit)
    return commits


def test_concurrent_local_pushes_stay_consistent(tmp_path: Path) -> None:
    root, repo_id, count = tmp_path / "registry", "org/race", 12
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(_push_many, [(str(root), repo_id, w, count) for w in (1, 2)])
    pushed = {c for commits in results for c in commits}
    assert len(pushed) == 2 * count

    # one linear history through every commit, each one intact and pulling its own bytes
    registry = LocalRegistry(root)
    repo_dir = root / "models--org--race"
    history, commit = [], registry.resolve(repo_id)
    while commit is not None:
        history.append(commit)
        commit = json.loads((repo_dir / "commits" / f"{commit}.json").read_text())["parent"]
    assert set(history) == pushed and len(history) == 2 * count
    for worker, commits in zip((1, 2), results):
        for i, commit in enumerate(commits):
            assert read_all(registry.pull(repo_id, commit)) == read_all(tmp_path / f"src-{worker}-{i}")
    leftovers = [p for d in ("snapshots", "commits", "refs", "blobs") for p in (repo_dir / d).iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []


def test_interrupted_push_leaves_no_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    repo_id = unique("interrupt")
    before = registry.push(make_adapter(tmp_path / "a", seed=1), repo_id).commit

    def explode(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("scalearn_cli.registry.local._atomic_write", explode)  # dies before the manifest lands
    with pytest.raises(KeyboardInterrupt):
        registry.push(make_adapter(tmp_path / "b", seed=2), repo_id)
    monkeypatch.undo()
    assert registry.resolve(repo_id) == before
    assert read_all(registry.pull(repo_id)) == read_all(tmp_path / "a")
    repo_dir = registry.root / ("models--" + repo_id.replace("/", "--"))
    assert [p.name for p in (repo_dir / "commits").iterdir()] == [f"{before}.json"]


# ---- 8 pushes at once in each shape, through separate LocalRegistry objects and file locks ---------------
@pytest.mark.parametrize("shape", ["one-branch", "eight-branches", "eight-repos"])
def test_eight_concurrent_local_pushes_stay_consistent(shape: str, tmp_path: Path) -> None:
    """8 pushes released together: 8 commits, each tag and branch where it should be, each pull verified."""
    folders = [make_adapter(tmp_path / f"src{i}", seed=i) for i in range(8)]
    repo_ids = [f"org/race-{i}" if shape == "eight-repos" else "org/race" for i in range(8)]
    branches = [f"dev{i}" if shape == "eight-branches" else "main" for i in range(8)]
    root, start = tmp_path / "registry", threading.Barrier(8)

    def push(i: int) -> str:
        start.wait()
        return LocalRegistry(root).push(folders[i], repo_ids[i], revision=branches[i], tag=f"v{i}").commit

    with ThreadPoolExecutor(8) as pool:
        commits = list(pool.map(push, range(8)))
    assert len(set(commits)) == 8
    registry = LocalRegistry(root)
    for i, commit in enumerate(commits):
        assert registry.resolve(repo_ids[i], f"v{i}") == commit
        if shape != "one-branch":
            assert registry.resolve(repo_ids[i], branches[i]) == commit
        assert read_all(registry.pull(repo_ids[i], f"v{i}", local_dir=tmp_path / f"out{i}")) == read_all(folders[i])
        assert read_all(registry.pull(repo_ids[i], commit)) == read_all(folders[i])
    if shape == "one-branch":  # one linear history through all 8 commits
        history, commit = [], registry.resolve("org/race")
        while commit is not None:
            history.append(commit)
            commit = json.loads((repo_dir(registry, "org/race") / "commits" / f"{commit}.json").read_text())["parent"]
        assert sorted(history) == sorted(commits)
    assert [p for p in root.rglob(".*") if p.name != ".locks" and p.parent.name != ".locks"] == []


# ---- Ctrl-C through the CLI, then a rerun (a real SIGINT to train-source: test_train_source.py) ----------
def _interrupt(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, at_call: int = 1) -> list[int]:
    """Make ``owner.name`` raise KeyboardInterrupt on its ``at_call``-th call, as Ctrl-C would at that point."""
    real, calls = getattr(owner, name), []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)
    return calls


@pytest.mark.parametrize("where", ["blob", "snapshot", "manifest"])
def test_ctrl_c_during_push_leaves_no_revision_and_a_rerun_succeeds(
    where: str, pushed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted while copying a blob, linking the snapshot or writing the manifest: main and the store unchanged."""
    from scalearn_cli.registry import local

    registry, repo_id, before, _ = pushed
    spec, folder = f"local:{registry.root}", make_adapter(tmp_path / "next", seed=7)
    owner, name = {"blob": (local.os, "fsync"), "snapshot": (local.os, "symlink"),
                   "manifest": (local, "_atomic_write")}[where]
    calls = _interrupt(monkeypatch, owner, name)
    line = one_error_line(invoke("push", folder, repo_id, "--registry", spec), code=130, prefix="Interrupted: ")
    monkeypatch.undo()
    assert calls and "nothing was written" in line
    assert registry.resolve(repo_id) == before and staging_leftovers(registry.root) == []
    assert [p.name for p in (repo_dir(registry, repo_id) / "commits").iterdir()] == [f"{before}.json"]
    after = ok(invoke("push", folder, repo_id, "--registry", spec)).stdout.strip().split("@")[1]
    assert after != before and read_all(registry.pull(repo_id)) == read_all(folder)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    rows = [{"sentence": f"the movie was {rng.choice(['good', 'great', 'bad', 'awful'])}", "label": i % 2}
            for i in range(48)]
    path = tmp_path_factory.mktemp("interrupt-task") / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def interrupt_training(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Ctrl-C at the second training step (the progress callback the CLI renders runs after each step)."""
    from scalearn_cli.cli.progress import RichProgress

    yield _interrupt(monkeypatch, RichProgress, "step", at_call=2)


def test_ctrl_c_mid_train_source_leaves_nothing_and_a_rerun_succeeds(
    interrupt_training: list[int], tiny_model_dir: Path, task_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """exit 130 and one 'Interrupted:' line; no --out, no staging folder; the same command then succeeds."""
    out = tmp_path / "outs" / "source"
    args = ["train-source", "--model", tiny_model_dir, *custom(task_file), *TRAIN, "--out", out]
    one_error_line(invoke(*args), code=130, prefix="Interrupted: ", alone=False)
    assert len(interrupt_training) == 2 and not out.exists() and staging_leftovers(tmp_path) == []
    monkeypatch.undo()
    ok(invoke(*args))
    assert (out / "scalearn.json").is_file() and staging_leftovers(tmp_path) == []


def test_ctrl_c_mid_transfer_leaves_nothing_and_a_rerun_succeeds(
    interrupt_training: list[int], tiny_model_dir: Path, task_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for transfer: nothing at --out after Ctrl-C mid-training, then a clean re-run."""
    sources = [make_source(tmp_path / f"src{i}", tiny_model_dir, seed=i) for i in range(2)]
    out = tmp_path / "outs" / "composed"
    args = ["transfer", *custom(task_file), "--source", sources[0], "--source", sources[1], *TRAIN, "--out", out]
    one_error_line(invoke(*args), code=130, prefix="Interrupted: ", alone=False)
    assert len(interrupt_training) == 2 and not out.exists() and staging_leftovers(tmp_path) == []
    monkeypatch.undo()
    ok(invoke(*args))
    assert (out / "composition.json").is_file() and staging_leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["training", "saving", "swapping"])
def test_ctrl_c_during_overwrite_keeps_the_old_folder(
    where: str, tiny_model_dir: Path, task_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite interrupted mid-training, mid-save or between the two renames: the old adapter stays whole."""
    from scalearn_cli.artifacts import io
    from scalearn_cli.cli.progress import RichProgress
    from scalearn_cli.sources import folder as source  # where a source folder is written

    out = tmp_path / "outs" / "source"
    args = ["train-source", "--model", tiny_model_dir, *custom(task_file), *TRAIN, "--out", out, "--overwrite"]
    ok(invoke(*args, "--seed", "1"))
    before = read_all(out)
    if where == "swapping":  # Ctrl-C right after the old folder was renamed aside, before the new one moves in
        calls, replace = [], os.replace

        def replace_then_interrupt(src: Any, dst: Any) -> None:
            replace(src, dst)
            if ".old-" in Path(dst).name:
                calls.append(1)
                raise KeyboardInterrupt

        monkeypatch.setattr(io.os, "replace", replace_then_interrupt)
    else:
        owner, name = {"training": (RichProgress, "step"), "saving": (source, "save_tensors")}[where]
        calls = _interrupt(monkeypatch, owner, name, at_call=2 if where == "training" else 1)
    one_error_line(invoke(*args, "--seed", "2"), code=130, prefix="Interrupted: ", alone=False)
    monkeypatch.undo()
    assert calls and read_all(out) == before and staging_leftovers(out.parent) == []
    ok(invoke(*args, "--seed", "2"))
    assert read_all(out)["adapter_model.safetensors"] != before["adapter_model.safetensors"]
