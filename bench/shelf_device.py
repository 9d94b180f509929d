"""The shelf run on a lent GPU machine (``python -m bench device --run shelf``): bench/device.py's model, wheels and
workers, plus what the shelf needs there — the data (the zoo's missing sources train on it) and a *zoo stage* that
builds the catalog's missing LoRA sources first.

Calls (``--pack`` prints them; each within the 64 MiB a call carries and its time limit):

1. and 2. one model part each, copied to ``/root/parts`` (bench/device.py's);
3. the last part, the model's other files, the hash, the stand-in module, the wheels and ``.gpu/shelfdata.tgz``
   (GLUE, SNLI and the shelf's tasks, ~24 MB): ``python3 -m bench device --run shelf --stage zoo --seconds 400``
   unpacks the data to ``/root/data``, puts the model together, installs the wheels and runs ``scalearn zoo build``
   for the missing recipes in ``--shards`` processes into ``/root/zoo-new``; every source built comes back as its
   registry folder under ``$OUT/zoo/`` (~1 MB each), to be copied into ``zoo/registry`` here;
4. ``python3 -m bench device --run shelf --seconds 420 --skip-wheels``: the shelf's workers, with the broad shelf
   read from the shipped registries and ``/root/zoo-new``; the rows come back in ``$OUT/new_rows.jsonl``
   (``python -m bench merge-rows`` here). Repeat 4 while device time is left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from bench import device

DATA_TGZ = "shelfdata.tgz"
ZOO_NEW = Path("/root/zoo-new")
DATA = Path("/root/data")


def pack(run: str, bundle: Path, data_root: Path) -> list[str]:
    """device.pack's bundle plus the data archive; the calls to make, zoo stage first."""
    calls = device.pack(run, bundle)
    with tarfile.open(bundle / DATA_TGZ, "w:gz") as tar:
        for part in ("glue", "snli", "shelf"):
            tar.add(data_root / part, arcname=part)
    last = next(i for i, c in enumerate(calls) if "bench device" in c)
    carry = [".gpu/" + p for p in (f"p{last}", "minilm", "minilm.sha256", "shim", "whl", DATA_TGZ)]
    calls[last] = f"run(command='python3 -m bench device --run {run} --stage zoo --seconds 400', carry={carry})"
    notes = [c for c in calls[last + 1:] if "wheels" in c]  # the data-copy note is not the shelf's: it has /root/data
    rows = f"run(command='python3 -m bench device --run {run} --seconds 420 --skip-wheels')  (repeat while time is left)"
    return [*calls[:last + 1], rows, *notes]


def missing_recipes(zoo_registry: str | None) -> list[str]:
    """The catalog's LoRA shelf recipes not built in its registries nor in ``zoo_registry``."""
    from bench.shelf_plan import catalog_shelf
    from scalearn_cli.zoo.catalog import load_catalog

    built = {m.ref.removeprefix("zoo:") for m in catalog_shelf(zoo_registry)[0]}
    return [r.name for r in load_catalog().recipes
            if r.adapter == "lora" and r.data.get("source") != "demo" and r.name not in built]


def build_zoo(recipes: list[str], shards: int, seconds: float, env: dict[str, str], python: str, data: Path,
              logs: Path) -> None:
    """``scalearn zoo build`` of ``recipes`` in ``shards`` processes (round robin) into ZOO_NEW, for ``seconds``."""
    groups = [recipes[i::shards] for i in range(shards) if recipes[i::shards]]
    commands = [[python, "-m", "scalearn_cli", "zoo", "build", "--tasks", ",".join(group),
                 "--registry", f"local:{ZOO_NEW}", "--data-root", str(data), "--json"] for group in groups]
    device.run_workers(commands, env, seconds, logs)  # each worker's log: logs/w<i>.log


def hand_back_zoo(out: Path) -> list[str]:
    """Copy every source pushed to ZOO_NEW (a repo with refs/main: a killed push has none) to ``out/zoo``."""
    done = [p for p in sorted(ZOO_NEW.glob("models--*")) if (p / "refs" / "main").is_file()]
    for repo in done:
        shutil.copytree(repo, out / "zoo" / repo.name, dirs_exist_ok=True)
    return [p.name for p in done]


def run(cli, config: Path, stage: str) -> None:
    """On the GPU machine: the zoo stage, or the shelf's workers (with the zoo built there)."""
    out = Path(cli.out or os.environ.get("OUT") or "device-out")
    out.mkdir(parents=True, exist_ok=True)
    if (cli.bundle / DATA_TGZ).is_file() and not (DATA / "glue").is_dir():
        with tarfile.open(cli.bundle / DATA_TGZ) as tar:
            tar.extractall(DATA, filter="data")
    if (cli.bundle / "minilm.sha256").is_file():
        device.assemble_model(cli.bundle, cli.parts, cli.model_dir)
    if (cli.bundle / "whl").is_dir() and not cli.skip_wheels:
        wheels = sorted(str(w) for w in (cli.bundle / "whl").glob("*.whl"))
        subprocess.run([cli.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                        str(cli.site), *wheels], check=True)
    env = device.environment(cli.bundle, cli.site, cli.model_dir)
    registry = f"local:{ZOO_NEW}" if ZOO_NEW.is_dir() else None
    if stage == "zoo":
        recipes = missing_recipes(registry)
        print(f"zoo stage: {len(recipes)} missing recipe(s): {', '.join(recipes)}")
        build_zoo(recipes, cli.shards, cli.seconds, env, cli.python, DATA, cli.logs)
        built = hand_back_zoo(out)
        print(f"built {len(built)} source(s), in {out / 'zoo'}: copy those folders into zoo/registry here")
        return
    extra = ["--data-root", str(DATA), *(["--zoo-registry", registry] if registry else []), *cli.extra]
    commands = device.worker_commands(config, cli.shards, cli.threads, extra, cli.python)
    results = config.with_name("results.jsonl")
    before = len(results.read_text().splitlines()) if results.is_file() else 0
    device.run_workers(commands, env, cli.seconds, cli.logs)
    added = device.collect(results, before, cli.logs, out)
    print(f"new rows: {added} in {out / 'new_rows.jsonl'}; merge them here with `python -m bench merge-rows "
          f"new_rows.jsonl --out {os.path.relpath(config.parent, device.REPO)}`")


def dry_run(config: Path, shards: int, threads: int, extra: list[str], python: str) -> list[str]:
    """What the device calls would do: the missing zoo recipes, the missing rows, the worker commands."""
    from bench.report_common import read_jsonl
    from bench.shelf_estimate import missing_jobs

    jobs = missing_jobs(config.parent, read_jsonl(config.with_name("results.jsonl")))
    recipes = missing_recipes(None)
    commands = device.worker_commands(config, shards, threads, ["--data-root", str(DATA), *extra], python)
    return [f"zoo stage: {len(recipes)} missing recipe(s): {', '.join(recipes)}",
            f"{len(jobs)} missing run(s) of {config.parent.name} over the recorded shelves"
            + "".join(f"\n  {job}" for job in jobs[:20]) + (f"\n  ... {len(jobs) - 20} more" if len(jobs) > 20 else ""),
            *(" ".join(cmd) for cmd in commands)]
