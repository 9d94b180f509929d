"""``scalearn zoo build``: train every recipe of a catalog that its registry lacks, push it, and record it (and the
task's majority baseline) in the catalog file."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

from scalearn_cli.data.demo import demo_folder
from scalearn_cli.data.rows import load_raw
from scalearn_cli.data.splits import make_splits
from scalearn_cli.errors import UsageError
from scalearn_cli.metrics import majority_baseline
from scalearn_cli.stages.common import DataOptions
from scalearn_cli.stages.source import train_source
from scalearn_cli.tasks import get_task
from scalearn_cli.train import TrainConfig
from scalearn_cli.zoo.catalog import Catalog, Recipe, record_baseline, record_published, status

logger = logging.getLogger(__name__)


def _data_dir(recipe: Recipe, data_root: Path | None) -> Path | None:
    source = recipe.data.get("source", "hub")
    if source == "hub":
        return None
    if source == "demo":
        return demo_folder(recipe.task, data_root)
    if data_root is None:
        raise UsageError(f"recipe {recipe.name} reads local data: pass --data-root DIR holding {recipe.data['path']}/")
    folder = Path(data_root) / recipe.data["path"]
    if not folder.is_dir():
        raise UsageError(f"recipe {recipe.name} expects its data at {folder}; check --data-root")
    return folder


def build(
    catalog: Catalog,
    registry,
    recipes: list[Recipe],
    data_root: Path | None = None,
    record: bool = False,
    log: Callable[[str], None] = logger.info,
    progress_factory: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Train and push every recipe the registry lacks (same recipe hash = skip); return one row per recipe."""
    done = {row["name"]: row for row in status(catalog, registry)}
    rows = []
    for recipe in recipes:
        row = done[recipe.name]
        if row["baseline"] is None and recipe.data.get("source") != "hub":
            row["baseline"] = _baseline(recipe, data_root)
            if record:
                record_baseline(catalog, recipe.task, row["baseline"])
        if row["state"] in ("built", "shipped"):
            log(f"{row['repo_id']}: already {row['state']} with this recipe, skipped")
            rows.append({**row, "action": "skipped"})
            continue
        log(f"{row['repo_id']}: training {recipe.adapter} on {recipe.task}")
        data = DataOptions(task=recipe.task, data_dir=_data_dir(recipe, data_root),
                           max_train_samples=recipe.data.get("max_train_samples"))
        extra = {"recipe": {"name": recipe.name, "hash": row["recipe_hash"], "catalog": catalog.prefix}}
        with tempfile.TemporaryDirectory(prefix="scalearn-zoo-") as tmp:
            out = Path(tmp) / recipe.name
            meta = train_source(data, out, recipe.adapter, recipe.settings, TrainConfig(**recipe.train),
                                catalog.base_model, progress=progress_factory(recipe.name) if progress_factory else None,
                                extra_meta=extra, pooling=recipe.pooling)
            message = f"zoo build {recipe.name} ({row['recipe_hash'][:12]})"
            pushed = registry.push(out, row["repo_id"], commit_message=message)
        row = {**row, "state": "built", "revision": pushed.commit, "metrics": meta["metrics"]["test"],
               "action": "built"}
        rows.append(row)
        if record:
            record_published(catalog, registry.location, recipe.name, row)
    return rows


def record_baselines(catalog: Catalog, recipes: list[Recipe], data_root: Path | None) -> dict[str, dict[str, float]]:
    """Compute and write into the catalog the majority baseline of every recipe with local data; train nothing."""
    done = {}
    for recipe in recipes:
        if recipe.data.get("source") != "hub":
            done[recipe.task] = _baseline(recipe, data_root)
            record_baseline(catalog, recipe.task, done[recipe.task])
    return done


def _baseline(recipe: Recipe, data_root: Path | None) -> dict[str, float]:
    """The majority baseline's test metrics for a recipe's data (the same splits its source is scored on)."""
    spec = get_task(recipe.task)
    splits = make_splits(spec, load_raw(spec, data_dir=_data_dir(recipe, data_root)),
                         max_train_samples=recipe.data.get("max_train_samples"),
                         sample_seed=int(recipe.train.get("seed", 42)))
    field_ = splits.spec.label_field
    return majority_baseline(splits.spec, splits.train[field_], splits.test[field_])
