"""Several processes: ``accelerate launch --multi_gpu --num_processes 2 -m scalearn_cli`` on CPU (gloo).

Each stage runs once in this process (batch 16) and once as two processes (batch 8 each: the same global batch,
the same shuffled order, gradients averaged by DDP). Dropout draws differ between a batch of 16 and two of 8, so
trained losses agree within ``TOL``; the initial weights' dev loss (gathered over both processes) agrees exactly.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import invoke

TOL = 0.02  # dev/test loss, 1 vs 2 processes (measured: <= 0.006 after 3 epochs; LoRA and head dropout masks differ)
EXACT = 1e-5  # the same weights evaluated on one process or gathered over two
COMMON = ["--epochs", "3", "--max-length", "16", "--seed", "3", "--lr", "0.003", "--json"]


def _task(path: Path) -> Path:
    """80 rows: the custom 80/10/10 split gives 64 train rows (4 global batches of 16, no padding), 8 dev, 8 test."""
    rng = random.Random(0)
    pos, neg, filler = "good great fun".split(), "bad awful boring".split(), "the a movie film plot actor".split()
    rows = []
    for i in range(80):
        words = [rng.choice(filler) for _ in range(5)] + [rng.choice(pos if i % 2 else neg)]
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "label": i % 2})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("distributed")
    model = root / "tiny-no-dropout"  # fewer random draws, so the tolerance can be tight
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    return root, model, _task(root / "task.jsonl")


def _one_process(args: list[str]) -> dict:
    result = invoke(*args, "--batch-size", "16")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _free_port() -> int:
    with socket.socket() as s:  # another suite may be running on the default 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(args: list[str]) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    done = subprocess.run([*launch, "-m", "scalearn_cli", *args, "--batch-size", "8"], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("epoch 1:") == 1, "progress is drawn by the main process only"
    return json.loads(done.stdout)  # exactly one JSON summary (one process reports)


def _compare(one: Path, two: Path) -> dict[str, float]:
    a, b = (json.loads((p / "scalearn.json").read_text()) for p in (one, two))
    assert (a["training"]["processes"], b["training"]["processes"]) == (1, 2)
    for key in ("train_examples", "dev_examples", "test_examples", "steps"):
        assert a["training"][key] == b["training"][key], key
    assert abs(a["training"]["initial_dev_loss"] - b["training"]["initial_dev_loss"]) < EXACT
    diffs = {f"epoch {x['epoch']} dev": abs(x["dev_loss"] - y["dev_loss"])
             for x, y in zip(a["training"]["history"], b["training"]["history"])}
    diffs.update({f"{s} loss": abs(a["metrics"][s]["loss"] - b["metrics"][s]["loss"]) for s in ("dev", "test")})
    assert max(diffs.values()) < TOL, diffs
    return diffs


def _single_output(parent: Path, name: str) -> None:
    """The main process wrote exactly one folder and left no staging folder beside it."""
    assert [p.name for p in parent.iterdir() if name in p.name] == [name]


def test_two_processes_match_one_for_train_source_and_transfer(setup: tuple[Path, Path, Path]) -> None:
    root, model, task = setup
    data = ["--task", "custom", "--data-file", str(task), "--text-fields", "sentence", *COMMON]
    (root / "one").mkdir(), (root / "two").mkdir()
    src_one, src_two = root / "one" / "src", root / "two" / "src"
    _one_process(["train-source", "--model", str(model), *data, "--out", str(src_one)])
    summary = _two_processes(["train-source", "--model", str(model), *data, "--out", str(src_two)])
    assert summary["out"] == str(src_two)
    _single_output(root / "two", "src")
    print("train-source", _compare(src_one, src_two))

    sources = ["--source", str(src_one), "--source", str(src_two)]
    comp_one, comp_two = root / "one" / "comp", root / "two" / "comp"
    _one_process(["transfer", *sources, *data, "--out", str(comp_one)])
    _two_processes(["transfer", *sources, *data, "--out", str(comp_two)])
    _single_output(root / "two", "comp")
    print("transfer", _compare(comp_one, comp_two))


def test_cpu_launch_that_starts_one_process_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """``accelerate launch --cpu --num_processes 2`` without mpirun starts ONE process: say so, do not train."""
    from scalearn_cli.errors import UsageError
    from scalearn_cli.processes import check_launch

    for var in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # what the launcher sets for --num_processes > 1
    with pytest.raises(UsageError, match="accelerate launch --multi_gpu --num_processes N"):
        check_launch()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    check_launch()
